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

With one epoch and one mini-batch there is one optimizer step, and every
micro-batch's forward runs at the parameters the batch was sampled with:
π_old is then π itself, and `update(..., own_old_logprobs=True)` takes it
from the update's own forward under a stop-gradient instead of a separate
forward pass beforehand (`takes_own_old_logprobs` says when a trainer may).
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import cajax

from experiments.rl import policy as policy_lib

__all__ = [
    "TrainState", "UpdateBatch", "jit_sft_update", "jit_token_outputs",
    "jit_update", "make_optimizer", "sft_update", "takes_own_old_logprobs",
    "update",
]


class UpdateBatch(NamedTuple):
  """One RL batch on device; every field has B rows."""
  prompt_tokens: jax.Array    # int32[B, P]
  prompt_valid: jax.Array     # bool[B, P]
  response_tokens: jax.Array  # int32[B, T]
  response_valid: jax.Array   # bool[B, T] tokens attended to
  mask: jax.Array             # bool[B, T] tokens trained on
  advantages: jax.Array       # f32[B, T]
  returns: jax.Array          # f32[B, T] (value targets)
  old_logprobs: jax.Array     # f32[B, T]
  ref_logprobs: jax.Array     # f32[B, T] (zeros without KL)
  old_values: jax.Array       # f32[B, T] (zeros without a critic)
  sampler_logprobs: jax.Array  # f32[B, T]


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


def takes_own_old_logprobs(rl) -> bool:
  """Whether the trainer can leave the old log-probs to the update
  (`update(..., own_old_logprobs=True)`): one optimizer step (one epoch,
  one mini-batch), no critic, and an estimator that reads none of the
  trainer's per-token statistics (it runs before the update)."""
  reads = set(rl.resolved.fields) & (set(policy_lib.STATISTICS)
                                     | {"old_logprobs", "values"})
  return (rl.ppo_epochs == 1 and rl.num_mini_batches == 1
          and rl.value_coef <= 0 and not reads)


def _loss_sums(rl, sampling, graphdef, own_old_logprobs: bool, params, rest,
               mb: UpdateBatch, key: jax.Array | None):
  """The un-normalised loss terms of one micro-batch, and its metrics (and
  its per-token log-probs and entropies when `own_old_logprobs`)."""
  policy = policy_lib.merge(graphdef, params, rest)
  out = policy_lib.token_outputs(
      policy, mb.prompt_tokens, mb.prompt_valid, mb.response_tokens,
      mb.response_valid, temperature=sampling.temperature,
      values=rl.value_coef > 0, banned_tokens=sampling.banned_tokens)
  mask = mb.mask
  old = (jax.lax.stop_gradient(out["logprobs"]) if own_old_logprobs
         else mb.old_logprobs)
  per_token, pg_metrics = rl.loss(out["logprobs"], old, mb.advantages, mask,
                                  rng=key, return_metrics=True)
  if rl.tis_ratio_cap > 0:
    weight = jnp.minimum(jnp.exp(old - mb.sampler_logprobs),
                         rl.tis_ratio_cap)
    per_token = per_token * jax.lax.stop_gradient(weight)

  def agg(x):
    return cajax.losses.aggregate(x, mask, rl.aggregation)[0]

  terms = {"pg": agg(per_token), "entropy": agg(out["entropy"])}
  total = terms["pg"] - rl.entropy_coef * terms["entropy"]
  if rl.kl_coef > 0:
    terms["kl"] = agg(cajax.losses.kl_penalty(
        rl.kl_kind, out["logprobs"], mb.ref_logprobs, mask))
    total = total + rl.kl_coef * terms["kl"]
  if rl.value_coef > 0:
    (terms["value"], _), vf = cajax.losses.value_loss(
        out["values"], mb.old_values, mb.returns, mask, clip=rl.value_clip,
        mode=rl.aggregation, return_metrics=True)
    total = total + rl.value_coef * terms["value"]
    pg_metrics = {**pg_metrics, **vf}
  tokens = ({k: jax.lax.stop_gradient(out[k]) for k in ("logprobs", "entropy")}
            if own_old_logprobs else {})
  return total, (terms, pg_metrics, tokens)


def _split(tree, parts: int):
  """[B, ...] leaves -> [parts, B / parts, ...]."""
  return jax.tree.map(
      lambda x: x.reshape((parts, x.shape[0] // parts) + x.shape[1:]), tree)


def _minibatch_step(rl, sampling, graphdef, tx, own_old_logprobs: bool, rest,
                    state: TrainState, pieces):
  """One optimizer step on a mini-batch, accumulating micro-batch grads.

  `pieces` is (the mini-batch, its micro-batches' loss keys or None).
  Returns the new state and (the metrics, the mini-batch's per-token
  statistics: see `_loss_sums`).
  """
  mb, keys = pieces
  denominator = cajax.losses.aggregate(
      jnp.zeros(mb.mask.shape, jnp.float32), mb.mask, rl.aggregation)[1]
  scale = jnp.where(denominator > 0, 1.0 / jnp.maximum(denominator, 1e-30),
                    0.0)
  grad_fn = jax.value_and_grad(
      functools.partial(_loss_sums, rl, sampling, graphdef, own_old_logprobs),
      has_aux=True)

  def micro(grads, piece):
    piece, key = piece
    (total, (terms, metrics, tokens)), g = grad_fn(state.params, rest, piece,
                                                   key)
    grads = jax.tree.map(lambda a, b: a + b.astype(jnp.float32) * scale,
                         grads, g)
    return grads, (total * scale, jax.tree.map(lambda t: t * scale, terms),
                   metrics, tokens)

  # Accumulated in float32 whatever the parameter dtype.
  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32),
                       state.params)
  grads, (totals, terms, metrics, tokens) = jax.lax.scan(
      micro, zeros, (_split(mb, rl.num_micro_batches), keys))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  summary = {"loss": jnp.sum(totals), "grad_norm": optax.tree.norm(grads),
             **{f"{k}_loss" if k in ("pg", "value") else k: jnp.sum(v)
                for k, v in terms.items()},
             **{k: jnp.mean(v) for k, v in metrics.items()}}
  tokens = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tokens)
  return TrainState(params, opt_state, state.step + 1), (summary, tokens)


def update(rl, sampling, graphdef, tx, state: TrainState, rest,
           batch: UpdateBatch, key: jax.Array, *,
           own_old_logprobs: bool = False):
  """`rl.ppo_epochs` passes over `batch` in `rl.num_mini_batches` shuffled
  pieces.

  Args:
    rl: the typed `rl` config section (`run_config.RL`): the bound policy
      loss, aggregation mode, coefficients and update schedule.
    sampling: the `SamplingConfig` the batch was drawn with (temperature,
      banned tokens: the log-probs are of that distribution).
    graphdef, tx: the policy's graph and the optimizer.
    state, rest: the train state and the policy's non-parameter state.
    batch: the RL batch.
    key: PRNG key (mini-batch order; the loss's own draws, if any).
    own_old_logprobs: take π_old from the update's own forward (stop
      gradient) and ignore `batch.old_logprobs`; needs one epoch and one
      mini-batch (see the module docstring).

  Returns:
    The new state, the metrics averaged over every mini-batch, and with
    `own_old_logprobs` the policy's per-token `logprobs` and `entropy`
    before the update (f32[B, T], what a separate forward would give;
    otherwise an empty dict).
  """
  if own_old_logprobs and (rl.ppo_epochs, rl.num_mini_batches) != (1, 1):
    raise ValueError(
        "own_old_logprobs needs rl.ppo_epochs = 1 and rl.num_mini_batches = "
        f"1, got {rl.ppo_epochs} and {rl.num_mini_batches}")
  rows = batch.mask.shape[0]
  step = functools.partial(_minibatch_step, rl, sampling, graphdef, tx,
                           own_old_logprobs, rest)
  history = []
  for epoch in range(rl.ppo_epochs):
    order = (jax.random.permutation(jax.random.fold_in(key, epoch), rows)
             if rl.num_mini_batches > 1 else jnp.arange(rows))
    shuffled = jax.tree.map(lambda x, o=order: x[o], batch)
    # Only a loss that draws randomness (clip_cov) gets keys.
    keys = (jax.random.split(
        jax.random.fold_in(jax.random.fold_in(key, epoch), 1),
        (rl.num_mini_batches, rl.num_micro_batches))
            if rl.loss.takes_rng else None)
    state, (metrics, tokens) = jax.lax.scan(
        step, state, (_split(shuffled, rl.num_mini_batches), keys))
    history.append(metrics)
  metrics = jax.tree.map(lambda *m: jnp.mean(jnp.concatenate(m)), *history)
  # One epoch of one unshuffled mini-batch: rows in the batch's order.
  tokens = jax.tree.map(lambda x: x[0], tokens)
  return state, metrics, tokens


def jit_update(rl, sampling, graphdef, tx, *, own_old_logprobs: bool = False):
  """The update jitted once (settings bound, not traced), with the train
  state donated."""
  return jax.jit(functools.partial(update, rl, sampling, graphdef, tx,
                                   own_old_logprobs=own_old_logprobs),
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
