"""Every policy loss, aggregation mode and KL kind trains from one config
setting, and every estimator option that changes the trainer's inputs runs
one trainer step (the smoke config, no warm start)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cajax
from experiments.ablation import spec
from experiments.configs import smoke
from experiments.rl import experiment
from experiments.rl import policy as policy_lib
from experiments.rl import trainer
from experiments.rl import train_step

_LOSSES = cajax.losses.policy_loss_names()
_MODES = cajax.losses.AGGREGATION_MODES
_KINDS = cajax.losses.KL_KINDS


def _experiment(overrides: dict) -> experiment.Experiment:
  """The smoke config without a warm start, with dotted `overrides` set as
  the command line sets them (`--config.rl.policy_loss=gpg`)."""
  config = smoke.get_config()
  config.warm_start.steps = 0
  spec.apply(config, overrides)
  return experiment.Experiment(config)


# Each policy loss once; aggregation modes and KL kinds spread over the same
# eleven runs, so every mode and kind is set (by one setting) in some run.
_VARIANTS = [{"rl.policy_loss": loss, "rl.aggregation": _MODES[i % 5],
              "rl.kl_kind": _KINDS[i % len(_KINDS)], "rl.kl_coef": 0.1}
             for i, loss in enumerate(_LOSSES)]


def test_variants_cover_every_loss_mode_and_kind():
  assert {v["rl.policy_loss"] for v in _VARIANTS} == set(_LOSSES)
  assert {v["rl.aggregation"] for v in _VARIANTS} == set(_MODES)
  assert {v["rl.kl_kind"] for v in _VARIANTS} == set(_KINDS)


def _batch(exp, graphdef, params, rest, rows):
  """An off-policy update batch: random tokens, advantages and ratios."""
  rng = np.random.default_rng(0)
  vocab, prompt, length = exp.task.tokenizer.vocab_size, 4, 6
  prompt_tokens = jnp.asarray(rng.integers(3, vocab, (rows, prompt)),
                              jnp.int32)
  tokens = jnp.asarray(rng.integers(3, vocab, (rows, length)), jnp.int32)
  valid = jnp.asarray(np.arange(length)[None] < rng.integers(
      2, length + 1, (rows, 1)))
  out = policy_lib.token_outputs(
      policy_lib.merge(graphdef, params, rest), prompt_tokens,
      jnp.ones((rows, prompt), bool), tokens, valid,
      temperature=exp.sampling.temperature,
      banned_tokens=exp.sampling.banned_tokens)
  noise = jnp.asarray(rng.normal(0.0, 0.3, (rows, length)), jnp.float32)
  old = jnp.where(valid, out["logprobs"] + noise, 0.0)
  return train_step.UpdateBatch(
      prompt_tokens=prompt_tokens, prompt_valid=jnp.ones((rows, prompt), bool),
      response_tokens=tokens, response_valid=valid, mask=valid,
      advantages=jnp.asarray(rng.normal(size=(rows, length)), jnp.float32),
      returns=jnp.zeros((rows, length)), old_logprobs=old,
      ref_logprobs=jnp.where(valid, out["logprobs"] - noise, 0.0),
      old_values=jnp.zeros((rows, length)), sampler_logprobs=old), out


@pytest.mark.parametrize("overrides", _VARIANTS,
                         ids=lambda v: "-".join(map(str, v.values())))
def test_policy_loss_aggregation_and_kl_kind_reach_the_update(overrides):
  exp = _experiment(overrides)
  rl = exp.config.rl
  assert (rl.loss.name, rl.aggregation, rl.kl_kind) == (
      overrides["rl.policy_loss"], overrides["rl.aggregation"],
      overrides["rl.kl_kind"])
  graphdef, params, rest = exp.new_policy(value_head=False)
  tx = trainer.optimizer(exp.config, 1e-2)
  state = trainer.initial_state(exp, tx, params)
  batch, out = _batch(exp, graphdef, params, rest, rl.batch_size)
  before = jax.tree.map(np.asarray, params)  # the state is donated
  update = train_step.jit_update(rl, exp.sampling, graphdef, tx)
  new, metrics, _ = update(state, rest, batch, jax.random.key(0))
  changed = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))),
                         before, new.params)
  assert any(jax.tree.leaves(changed))
  assert np.isfinite(float(metrics["grad_norm"])) and metrics["grad_norm"] > 0
  # The update's terms are the bound loss, the mode and the KL kind named.
  agg = functools.partial(cajax.losses.aggregate_mean, mask=batch.mask,
                          mode=rl.aggregation)
  want = {"entropy": agg(out["entropy"]),
          "kl": agg(cajax.losses.kl_penalty(rl.kl_kind, out["logprobs"],
                                            batch.ref_logprobs, batch.mask))}
  if not rl.loss.takes_rng:
    want["pg_loss"] = agg(rl.loss(out["logprobs"], batch.old_logprobs,
                                  batch.advantages, batch.mask))
  for key, value in want.items():
    np.testing.assert_allclose(metrics[key], value, rtol=2e-5, atol=2e-6,
                               err_msg=key)


def _one_trainer_step(overrides: dict) -> dict:
  """One RL step with random 0/1 outcomes (a fresh policy scores 0)."""
  exp = _experiment(overrides)
  rl = exp.config.rl
  graphdef, params, rest = exp.new_policy(value_head=rl.value_coef > 0)
  tx = trainer.optimizer(exp.config, 1e-3)
  score, rng = exp.task.score, np.random.default_rng(0)

  def coin(problem, ids, observation=None):
    scored = score(problem, ids, observation)
    scored.outcome = float(rng.integers(0, 2))
    return scored

  exp.task.score = coin
  step = trainer.RLStep(exp, graphdef, rest,
                        params if rl.needs_reference else None, tx)
  _, record = step(0, trainer.initial_state(exp, tx, params))
  return record


@pytest.mark.parametrize("overrides", [
    {"rl.estimator": "ucas",
     "rl.estimator_kwargs": {"certainty": "negative_entropy"}},
    {"rl.estimator": "pure", "rl.estimator_kwargs": {"kl_in_reward": True}},
], ids=lambda v: v["rl.estimator"])
def test_estimator_options_run_in_the_trainer(overrides):
  record = _one_trainer_step(overrides)
  for key in ("update/loss", "update/grad_norm", "rollout/advantage_mean",
              "rollout/advantage_std"):
    assert np.isfinite(record[key]), key
  assert record["rollout/advantage_std"] > 0
  if overrides["rl.estimator"] == "pure":
    assert "rollout/kl_to_ref" in record  # the reference policy was built
