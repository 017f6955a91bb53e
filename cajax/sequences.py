"""Time-axis primitives over padded `[B, T]` batches: scans, runs and steps.

Skip semantics: an interior False token of `mask` (a tool or environment
observation) is *skipped* by the recurrences here. The running value passes
across it unchanged and no discount is applied for it; its own input is
ignored and its output is exactly 0. Trailing False tokens are padding and are
handled by the same rule.

Steps: `step_ids: int32[B, T]` gives the step index of each token (−1 outside
any step); step-level arrays are `[B, S]`.
"""

import jax
import jax.numpy as jnp

from cajax import _checks


def _check_tokens(x, mask, name: str):
  _checks.check_batch(mask)
  _checks.check_same_shape(x, mask, name, "mask")
  return _checks.as_float(x, name), _checks.as_mask(mask)


def _discount_array(discount, mask) -> jax.Array:
  if jnp.ndim(discount) == 0:
    return jnp.full(mask.shape, discount, jnp.float32)
  _checks.check_same_shape(discount, mask, "discount", "mask")
  return _checks.as_float(discount, "discount")


def reverse_discounted_cumsum(x, mask, discount=1.0) -> jax.Array:
  """Reward-to-go with skip semantics: Gₜ = xₜ + γₜ·G_{next valid}.

  At a valid token t, G_t = x_t + γ_t · G_{t'} where t' is the next valid
  token after t (G = 0 past the last one). Masked tokens are skipped: their
  input is ignored, no discount is applied for them, and their output is 0.
  This is verl's current REINFORCE++ / GAE carry rule and rlax's V-trace
  `sample_mask` rule.

  Args:
    x: [B, T] per-token values (rewards).
    mask: [B, T] bool, True on valid tokens.
    discount: scalar γ or [B, T] per-token γ_t (applied at token t to the
      return of the next valid token).

  Returns:
    f32[B, T] discounted suffix sums, 0 at masked tokens.
  """
  x, mask = _check_tokens(x, mask, "x")
  gamma = _discount_array(discount, mask)

  def step(carry, inputs):
    x_t, gamma_t, m_t = inputs
    value = x_t + gamma_t * carry
    return jnp.where(m_t, value, carry), jnp.where(m_t, value, 0.0)

  _, out = jax.lax.scan(step, jnp.zeros(mask.shape[0], jnp.float32),
                        (x.T, gamma.T, mask.T), reverse=True)
  return out.T


def suffix_min(x, mask) -> jax.Array:
  """min_{s ≥ t, s valid} x_s at each valid t; 0 at masked entries.

  Works on any `[B, N]` layout: tokens with a token mask, or steps with a
  step mask (PURE's strict min-form return over valid steps only).

  Args:
    x: [B, N] values.
    mask: [B, N] bool.

  Returns:
    f32[B, N] suffix minima over valid entries.
  """
  x, mask = _check_tokens(x, mask, "x")
  running = jax.lax.cummin(jnp.where(mask, x, jnp.inf), axis=1, reverse=True)
  return jnp.where(mask, running, 0.0)


def contiguous_runs(mask) -> tuple[jax.Array, jax.Array]:
  """Numbers the maximal runs of True in each row (turns of a response).

  Args:
    mask: [B, T] bool.

  Returns:
    (run_ids, num_runs): int32[B, T] run index of each True token (0-based
    within the row, −1 on False tokens) and int32[B] runs per row.
  """
  _checks.check_batch(mask)
  mask = _checks.as_mask(mask)
  previous = jnp.pad(mask[:, :-1], ((0, 0), (1, 0)))
  starts = mask & ~previous
  run_ids = jnp.cumsum(starts, axis=1, dtype=jnp.int32) - 1
  return jnp.where(mask, run_ids, -1), jnp.sum(starts, axis=1,
                                               dtype=jnp.int32)


def _check_steps(step_ids, num_steps: int, batch: int):
  _checks.check_rank(step_ids, 2, "step_ids")
  if step_ids.shape[0] != batch:
    raise ValueError(f"step_ids must have {batch} rows, got shape "
                     f"{tuple(step_ids.shape)}.")
  _checks.check_positive_int(num_steps, "num_steps")
  return _checks.as_int(step_ids, "step_ids")


def steps_to_tokens(step_values, step_ids) -> jax.Array:
  """Gathers `[B, S]` step values onto tokens through `step_ids`.

  Args:
    step_values: [B, S] per-step values.
    step_ids: [B, T] int step index per token, −1 (or ≥ S) outside a step.

  Returns:
    f32[B, T], 0 on tokens outside any step.
  """
  _checks.check_rank(step_values, 2, "step_values")
  step_ids = _check_steps(step_ids, step_values.shape[1],
                          step_values.shape[0])
  step_values = _checks.as_float(step_values, "step_values")
  inside = (step_ids >= 0) & (step_ids < step_values.shape[1])
  gathered = jnp.take_along_axis(step_values, jnp.where(inside, step_ids, 0),
                                 axis=1)
  return jnp.where(inside, gathered, 0.0)


def tokens_to_steps(token_values, step_ids, num_steps: int, mask=None,
                    reduce: str = "sum") -> jax.Array:
  """Reduces `[B, T]` token values into `[B, S]` steps through `step_ids`.

  Args:
    token_values: [B, T] per-token values.
    step_ids: [B, T] int step index per token (−1 or ≥ num_steps ignored).
    num_steps: static S.
    mask: optional [B, T] bool; False tokens are ignored.
    reduce: "sum", "mean", "max" or "min" (empty steps give 0).

  Returns:
    f32[B, S].
  """
  _checks.check_choice(reduce, ("sum", "mean", "max", "min"), "reduce")
  _checks.check_rank(token_values, 2, "token_values")
  step_ids = _check_steps(step_ids, num_steps, token_values.shape[0])
  _checks.check_same_shape(step_ids, token_values, "step_ids", "token_values")
  values = _checks.as_float(token_values, "token_values")
  keep = (step_ids >= 0) & (step_ids < num_steps)
  if mask is not None:
    _checks.check_same_shape(mask, token_values, "mask", "token_values")
    keep = keep & _checks.as_mask(mask)
  batch = values.shape[0]
  flat_size = batch * num_steps
  flat_ids = jnp.where(keep, jnp.arange(batch)[:, None] * num_steps + step_ids,
                       flat_size).reshape(-1)
  count = jax.ops.segment_sum(keep.reshape(-1).astype(jnp.float32), flat_ids,
                              num_segments=flat_size + 1)[:-1]
  if reduce in ("sum", "mean"):
    total = jax.ops.segment_sum(jnp.where(keep, values, 0.0).reshape(-1),
                                flat_ids, num_segments=flat_size + 1)[:-1]
    out = total / jnp.maximum(count, 1.0) if reduce == "mean" else total
  else:
    op = jax.ops.segment_max if reduce == "max" else jax.ops.segment_min
    out = op(values.reshape(-1), flat_ids, num_segments=flat_size + 1)[:-1]
    out = jnp.where(count > 0, out, 0.0)
  return out.reshape(batch, num_steps)


def step_token_counts(step_ids, num_steps: int, mask=None) -> jax.Array:
  """Number of (valid) tokens in each step, f32[B, S]."""
  return tokens_to_steps(jnp.ones(jnp.shape(step_ids), jnp.float32),
                         step_ids, num_steps, mask=mask)


def step_end_mask(step_ids, mask=None) -> jax.Array:
  """bool[B, T], True at the last (valid) token of each step.

  A token ends its step when the next valid token inside a step carries a
  different id (or there is none). Steps are taken to be contiguous among the
  valid tokens, as they are when `step_ids` come from a segmenter.
  """
  _checks.check_rank(step_ids, 2, "step_ids")
  step_ids = _checks.as_int(step_ids, "step_ids")
  inside = step_ids >= 0
  if mask is not None:
    _checks.check_same_shape(mask, step_ids, "mask", "step_ids")
    inside = inside & _checks.as_mask(mask)
  length = step_ids.shape[1]
  positions = jnp.arange(length, dtype=jnp.int32)[None, :]
  next_inside = jax.lax.cummin(jnp.where(inside, positions, length), axis=1,
                               reverse=True)
  next_inside = jnp.pad(next_inside[:, 1:], ((0, 0), (0, 1)),
                        constant_values=length)
  next_id = jnp.take_along_axis(step_ids, jnp.minimum(next_inside,
                                                      length - 1), axis=1)
  next_id = jnp.where(next_inside < length, next_id, -1)
  return inside & (next_id != step_ids)


def step_prefix_mask(step_ids, num_prefix_steps) -> jax.Array:
  """bool[B, T], True on tokens of steps with index < num_prefix_steps[b].

  The shared primitive behind R³L pivotal credit, SLATE's shared prefix and
  InT's intervention masks: `mask & ~step_prefix_mask(...)` drops the first k
  steps (or turns) of each row.

  Args:
    step_ids: [B, T] int step (or turn) index per token, −1 outside.
    num_prefix_steps: int[B] (or scalar) steps to cover per row.
  """
  _checks.check_rank(step_ids, 2, "step_ids")
  step_ids = _checks.as_int(step_ids, "step_ids")
  k = _checks.as_int(num_prefix_steps, "num_prefix_steps")
  if k.ndim:
    _checks.check_shape(k, (step_ids.shape[0],), "num_prefix_steps",
                        like=f"step_ids rows {tuple(step_ids.shape)}")
  k = jnp.broadcast_to(k, (step_ids.shape[0],))
  return (step_ids >= 0) & (step_ids < k[:, None])
