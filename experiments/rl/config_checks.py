"""Checks a training config before anything is built or compiled.

Names (task, estimator, policy loss, aggregation mode, KL kind) are checked
against the registries, with the valid names in the error; the estimator's
and the loss's keyword arguments are checked by tracing them abstractly
(`jax.eval_shape`) on a tiny batch, which compiles nothing.
"""

import jax
import jax.numpy as jnp
import numpy as np

import cajax

# Rollouts fields the loop can fill (besides mask), and how.
SUPPLIED = {
    "token_rewards": "the task's outcome (and step rewards)",
    "group_ids": "the prompt of each row",
    "step_ids": "the task's step layout",
    "step_rewards": "the task's process reward model",
    "step_mask": "the task's step layout",
    "old_logprobs": "the trainer before the update",
    "logprobs": "the trainer before the update",
    "ref_logprobs": "the frozen reference policy",
    "entropy": "the trainer",
    "self_certainty": "the trainer",
    "token_logits": "the trainer",
    "sum_pi_squared": "the trainer",
    "values": "the value head (rl.value_coef > 0)",
    "baseline_scores": "the reward of a greedy response (ReMax)",
}


def _choice(value, valid, name):
  if value not in valid:
    raise ValueError(f"{name}={value!r} is not one of {sorted(valid)}.")


def check_config(config) -> None:
  """Raises ValueError naming the bad key, its value and the valid choices."""
  rl = config.rl
  _choice(rl.estimator, cajax.estimator_names(), "rl.estimator")
  _choice(rl.policy_loss, cajax.losses.policy_loss_names(), "rl.policy_loss")
  _choice(rl.aggregation, cajax.losses.AGGREGATION_MODES, "rl.aggregation")
  missing = [f for f in cajax.required_fields(rl.estimator)
             if f not in SUPPLIED]
  if missing:
    raise ValueError(f"rl.estimator={rl.estimator!r} reads Rollouts fields "
                     f"{missing}, which this loop cannot supply; it supplies "
                     f"{sorted(SUPPLIED)}.")
  if "values" in cajax.required_fields(rl.estimator) and rl.value_coef <= 0:
    raise ValueError(f"rl.estimator={rl.estimator!r} needs a critic: set "
                     f"rl.value_coef > 0 (got {rl.value_coef}).")
  if rl.num_steps < 0:
    raise ValueError(f"rl.num_steps must be >= 0 (0: warm start only), got "
                     f"{rl.num_steps}.")
  for key in ("prompts_per_step", "samples_per_prompt",
              "ppo_epochs", "num_minibatches", "num_microbatches"):
    if int(rl[key]) < 1:
      raise ValueError(f"rl.{key} must be >= 1, got {rl[key]}.")
  rows = rl.prompts_per_step * rl.samples_per_prompt
  pieces = rl.num_minibatches * rl.num_microbatches
  if rows % pieces:
    raise ValueError(
        f"prompts_per_step x samples_per_prompt = {rows} rows must split "
        f"into num_minibatches x num_microbatches = {pieces} equal pieces.")
  if rl.token_rewards not in ("outcome", "steps"):
    raise ValueError(f"rl.token_rewards must be 'outcome' or 'steps', got "
                     f"{rl.token_rewards!r}.")
  if not 0 <= rl.retry_samples < rl.samples_per_prompt:
    raise ValueError(f"rl.retry_samples must be in [0, samples_per_prompt="
                     f"{rl.samples_per_prompt}), got {rl.retry_samples}.")
  if not 0.0 <= rl.verifiable_fraction <= 1.0:
    raise ValueError(f"rl.verifiable_fraction must be in [0, 1], got "
                     f"{rl.verifiable_fraction}.")
  for key in ("kl_coef", "entropy_coef", "value_coef", "tis_cap"):
    if not rl[key] >= 0:
      raise ValueError(f"rl.{key} must be >= 0, got {rl[key]}.")
  if config.sampling.max_new_tokens < 1:
    raise ValueError(f"sampling.max_new_tokens must be >= 1, got "
                     f"{config.sampling.max_new_tokens}.")
  _trace_estimator(rl.estimator, dict(rl.estimator_kwargs))
  _trace_losses(rl)


def _tiny_rollouts(name: str):
  b, t, s = 4, 6, 3
  fields = {f: jnp.zeros((b, t), jnp.float32)
            for f in cajax.required_fields(name)}
  fields.update(
      group_ids=jnp.array([0, 0, 1, 1], jnp.int32),
      step_ids=jnp.zeros((b, t), jnp.int32),
      step_rewards=jnp.zeros((b, s), jnp.float32),
      step_mask=jnp.ones((b, s), bool))
  if "baseline_scores" in fields:
    fields["baseline_scores"] = jnp.zeros((b,), jnp.float32)
  fields = {k: v for k, v in fields.items()
            if k in cajax.required_fields(name) or k == "group_ids"}
  return cajax.Rollouts(mask=jnp.ones((b, t), bool), num_groups=2, **fields)


def _trace_estimator(name: str, kwargs: dict) -> None:
  rollouts = _tiny_rollouts(name)
  extra = cajax.example_inputs(name, rollouts, np.random.default_rng(0))
  try:
    jax.eval_shape(lambda r: cajax.estimate(name, r, **extra, **kwargs),
                   rollouts)
  except (TypeError, ValueError) as e:
    raise ValueError(f"rl.estimator_kwargs {kwargs} do not fit estimator "
                     f"{name!r}: {e}") from e


def _trace_losses(rl) -> None:
  x = jnp.zeros((2, 3), jnp.float32)
  mask = jnp.ones((2, 3), bool)
  try:
    jax.eval_shape(lambda a: cajax.losses.policy_loss(
        rl.policy_loss, a, a, a, mask, **dict(rl.policy_loss_kwargs)), x)
  except (TypeError, ValueError) as e:
    raise ValueError(f"rl.policy_loss_kwargs do not fit policy loss "
                     f"{rl.policy_loss!r}: {e}") from e
  if rl.kl_coef > 0:
    try:
      jax.eval_shape(lambda a: cajax.losses.kl_penalty(rl.kl_kind, a, a), x)
    except ValueError as e:
      raise ValueError(f"rl.kl_kind: {e}") from e
