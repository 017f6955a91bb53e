"""THE jitted update: PPO-style epochs over mini-batches of one RL batch.

    loss = [ Σ L_pg  + c_v·Σ L_v − c_H·Σ H + c_KL·Σ KL(π‖π_ref) ] / D

Each Σ is the `sum` of a `cajax.losses.aggregate` pair over a mini-batch
and D its denominator for the chosen aggregation mode. D depends only on the
mask, so it is computed once per mini-batch and every micro-batch adds the
gradient of its own sums divided by D: the accumulated gradient equals the
full mini-batch gradient exactly, for every mode.

The advantages (and returns) are inputs computed beforehand by
`cajax.estimate`; they are never differentiated. `old_logprobs` are the
trainer's log-probs before the update (the PPO ratio's denominator); the
sampler's log-probs enter only through the optional truncated importance
weight min(π_old/μ_sampler, C) on each token's loss (TIS; Yao et al., "Your
efficient RL framework secretly brings you off-policy RL training", 2025).
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import cajax

from experiments.rl import policy as policy_lib


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Static settings of the update (hashable: part of the jit key)."""
  policy_loss: str = "vanilla"
  policy_loss_kwargs: tuple = ()
  aggregation: str = "token-mean"
  loss_scale_factor: float | None = None
  kl_coef: float = 0.0
  kl_kind: str = "k3"
  entropy_coef: float = 0.0
  value_coef: float = 0.0
  value_clip: float | None = 0.5
  temperature: float = 1.0
  banned_tokens: tuple = ()
  tis_cap: float = 0.0
  ppo_epochs: int = 1
  num_minibatches: int = 1
  num_microbatches: int = 1


class UpdateBatch(NamedTuple):
  """One RL batch on device; every field has B rows."""
  prompt_tokens: jax.Array    # int32[B, P]
  prompt_valid: jax.Array     # bool[B, P]
  response_tokens: jax.Array  # int32[B, N]
  response_valid: jax.Array   # bool[B, N] tokens attended to
  mask: jax.Array             # bool[B, N] tokens trained on
  advantages: jax.Array       # f32[B, N]
  returns: jax.Array          # f32[B, N] (value targets)
  old_logprobs: jax.Array     # f32[B, N]
  ref_logprobs: jax.Array     # f32[B, N] (zeros without KL)
  old_values: jax.Array       # f32[B, N] (zeros without a critic)
  sampler_logprobs: jax.Array  # f32[B, N]


class TrainState(NamedTuple):
  params: Any
  opt_state: Any
  step: jax.Array


def make_optimizer(learning_rate: float, *, warmup_steps: int = 0,
                   b1: float = 0.9, b2: float = 0.999,
                   weight_decay: float = 0.0,
                   grad_clip: float = 1.0) -> optax.GradientTransformation:
  """AdamW with linear warm-up and global-norm clipping, its state in fp32.

  Gradients, parameters and the optimizer state are cast to float32 inside
  the update, and the updates back to each parameter's dtype, so bf16
  parameters keep fp32 Adam moments.
  """
  schedule = (optax.linear_schedule(0.0, learning_rate, warmup_steps)
              if warmup_steps > 0 else learning_rate)
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  parts.append(optax.adamw(schedule, b1=b1, b2=b2,
                           weight_decay=weight_decay))
  return _float32_state(optax.chain(*parts))


def _float32_state(
    inner: optax.GradientTransformation) -> optax.GradientTransformation:
  def f32(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float32), tree)

  def update(updates, state, params=None):
    out, state = inner.update(f32(updates), state,
                              None if params is None else f32(params))
    return jax.tree.map(lambda u, g: u.astype(g.dtype), out, updates), state

  return optax.GradientTransformation(lambda p: inner.init(f32(p)), update)


def _loss_sums(cfg: LossConfig, graphdef, params, rest, mb: UpdateBatch):
  """The un-normalised loss terms of one micro-batch, and its metrics."""
  policy = policy_lib.merge(graphdef, params, rest)
  out = policy_lib.token_outputs(
      policy, mb.prompt_tokens, mb.prompt_valid, mb.response_tokens,
      mb.response_valid, temperature=cfg.temperature,
      values=cfg.value_coef > 0, banned_tokens=cfg.banned_tokens)
  mask = mb.mask
  per_token, pg_metrics = cajax.losses.policy_loss(
      cfg.policy_loss, out["logprobs"], mb.old_logprobs, mb.advantages,
      mask, return_metrics=True, **dict(cfg.policy_loss_kwargs))
  if cfg.tis_cap > 0:
    weight = jnp.minimum(jnp.exp(mb.old_logprobs - mb.sampler_logprobs),
                         cfg.tis_cap)
    per_token = per_token * jax.lax.stop_gradient(weight)

  def agg(x):
    return cajax.losses.aggregate(x, mask, cfg.aggregation,
                                  loss_scale_factor=cfg.loss_scale_factor)[0]

  terms = {"pg": agg(per_token), "entropy": agg(out["entropy"])}
  total = terms["pg"] - cfg.entropy_coef * terms["entropy"]
  if cfg.kl_coef > 0:
    terms["kl"] = agg(cajax.losses.kl_penalty(
        cfg.kl_kind, out["logprobs"], mb.ref_logprobs, mask))
    total = total + cfg.kl_coef * terms["kl"]
  if cfg.value_coef > 0:
    (terms["value"], _), vf = cajax.losses.value_loss(
        out["values"], mb.old_values, mb.returns, mask, clip=cfg.value_clip,
        mode=cfg.aggregation, loss_scale_factor=cfg.loss_scale_factor,
        return_metrics=True)
    total = total + cfg.value_coef * terms["value"]
    pg_metrics = {**pg_metrics, **vf}
  return total, (terms, pg_metrics)


def _split(tree, parts: int):
  """[B, ...] leaves -> [parts, B / parts, ...]."""
  return jax.tree.map(
      lambda x: x.reshape((parts, x.shape[0] // parts) + x.shape[1:]), tree)


def _minibatch_step(cfg: LossConfig, graphdef, tx, rest, state: TrainState,
                    mb: UpdateBatch):
  """One optimizer step on a mini-batch, accumulating micro-batch grads."""
  denominator = cajax.losses.aggregate(
      jnp.zeros(mb.mask.shape, jnp.float32), mb.mask, cfg.aggregation,
      loss_scale_factor=cfg.loss_scale_factor)[1]
  scale = jnp.where(denominator > 0, 1.0 / jnp.maximum(denominator, 1e-30),
                    0.0)
  grad_fn = jax.value_and_grad(
      functools.partial(_loss_sums, cfg, graphdef), has_aux=True)

  def micro(grads, piece):
    (total, (terms, metrics)), g = grad_fn(state.params, rest, piece)
    grads = jax.tree.map(lambda a, b: a + b.astype(jnp.float32) * scale,
                         grads, g)
    return grads, (total * scale, jax.tree.map(lambda t: t * scale, terms),
                   metrics)

  # Accumulated in float32 whatever the parameter dtype.
  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32),
                       state.params)
  grads, (totals, terms, metrics) = jax.lax.scan(
      micro, zeros, _split(mb, cfg.num_microbatches))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  summary = {"loss": jnp.sum(totals), "grad_norm": optax.tree.norm(grads),
             **{f"{k}_loss" if k in ("pg", "value") else k: jnp.sum(v)
                for k, v in terms.items()},
             **{k: jnp.mean(v) for k, v in metrics.items()}}
  return TrainState(params, opt_state, state.step + 1), summary


def update(cfg: LossConfig, graphdef, tx, state: TrainState, rest,
           batch: UpdateBatch, key: jax.Array):
  """`ppo_epochs` passes over `batch` in `num_minibatches` shuffled pieces.

  Returns the new state and the metrics averaged over every mini-batch.
  """
  rows = batch.mask.shape[0]
  step = functools.partial(_minibatch_step, cfg, graphdef, tx, rest)
  history = []
  for epoch in range(cfg.ppo_epochs):
    order = (jax.random.permutation(jax.random.fold_in(key, epoch), rows)
             if cfg.num_minibatches > 1 else jnp.arange(rows))
    shuffled = jax.tree.map(lambda x, o=order: x[o], batch)
    state, metrics = jax.lax.scan(step, state,
                                  _split(shuffled, cfg.num_minibatches))
    history.append(metrics)
  metrics = jax.tree.map(lambda *m: jnp.mean(jnp.concatenate(m)), *history)
  return state, metrics


def jit_update(cfg: LossConfig, graphdef, tx):
  """The update jitted once, with the train state donated."""
  return jax.jit(functools.partial(update, cfg, graphdef, tx),
                 donate_argnums=(0,))


def _sft_loss(graphdef, banned_tokens, params, rest, batch: dict):
  policy = policy_lib.merge(graphdef, params, rest)
  out = policy_lib.token_outputs(
      policy, batch["prompt_tokens"], batch["prompt_valid"],
      batch["response_tokens"], batch["response_valid"], temperature=1.0,
      banned_tokens=banned_tokens)
  nll, count = cajax.losses.aggregate(-out["logprobs"], batch["mask"],
                                      "token-mean")
  return cajax.losses.safe_divide(nll, count)


def sft_update(graphdef, tx, banned_tokens, state: TrainState, rest,
               batch: dict):
  """One supervised step: mean token negative log-likelihood on `mask`."""
  loss, grads = jax.value_and_grad(functools.partial(
      _sft_loss, graphdef, banned_tokens))(state.params, rest, batch)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return (TrainState(params, opt_state, state.step + 1),
          {"loss": loss, "grad_norm": optax.tree.norm(grads)})


def jit_sft_update(graphdef, tx, banned_tokens: tuple = ()):
  return jax.jit(functools.partial(sft_update, graphdef, tx, banned_tokens),
                 donate_argnums=(0,))


def jit_token_outputs(graphdef, *, temperature: float, stats: tuple,
                      values: bool, banned_tokens: tuple = ()):
  """Jitted per-token statistics (old/ref log-probs, entropy, values...)."""
  def run(params, rest, prompt_tokens, prompt_valid, response_tokens,
          response_valid):
    policy = policy_lib.merge(graphdef, params, rest)
    return policy_lib.token_outputs(
        policy, prompt_tokens, prompt_valid, response_tokens,
        response_valid, temperature=temperature, stats=stats, values=values,
        banned_tokens=banned_tokens)
  return jax.jit(run)
