"""Time-axis primitives over padded `[B, T]` batches: scans, runs and steps.

Skip semantics: an interior False token of `mask` (a tool or environment
observation) is *skipped* by the recurrences here. The running value passes
across it unchanged and no discount is applied for it; its own input is
ignored and its output is exactly 0. Trailing False tokens are padding and are
handled by the same rule.

Steps: `step_ids: int32[B, T]` gives the step index of each token (−1 outside
any step); step-level arrays are `[B, S]`.
"""

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from cajax import _checks
from cajax import step_totals

__all__ = [
    "contiguous_runs", "masked_cumsum", "prefix_count",
    "reverse_discounted_cumsum", "step_end_mask", "step_prefix_mask",
    "step_token_counts", "steps_to_tokens", "suffix_min", "tokens_to_steps",
]


def _check_tokens(x, mask, name: str):
  _checks.check_batch(mask)
  return _checks.as_float_like(x, mask, name), _checks.as_mask(mask)


# Rows this long take a two-level scan in time-major blocks [n, c, B]
# (2c + n loop iterations instead of T); docs/performance.md has the
# measurements behind this and the formulations that were slower.
_BLOCKED_SCAN_MIN_LENGTH = 512


def _scan_block(length: int) -> int:
  """Block size c (a power of two near √T) for the two-level scan."""
  return 1 << max(4, (int(length).bit_length() + 1) // 2)


def _to_time_blocks(a, block: int, fill) -> jax.Array:
  """[B, T] -> [n, c, B] (time-major blocks), padding T up with `fill`."""
  batch, length = a.shape
  blocks = -(-length // block)
  a = a.T
  if blocks * block != length:
    a = jnp.pad(a, ((0, blocks * block - length), (0, 0)),
                constant_values=fill)
  return a.reshape(blocks, block, batch)


def _reverse_linear_scan(x, mask, gamma) -> jax.Array:
  """G_t = x_t + γ_t G_{next valid} over [B, T] (see the notes above)."""
  batch, length = mask.shape
  if length < _BLOCKED_SCAN_MIN_LENGTH:
    def step(carry, inputs):
      x_t, gamma_t, m_t = inputs
      value = x_t + gamma_t * carry
      return jnp.where(m_t, value, carry), jnp.where(m_t, value, 0.0)
    gamma_t = (jnp.broadcast_to(gamma, (length, batch)) if gamma.ndim == 0
               else gamma.T)
    _, out = jax.lax.scan(step, jnp.zeros(batch, jnp.float32),
                          (x.T, gamma_t, mask.T), reverse=True)
    return out.T

  block = _scan_block(length)
  xs = _to_time_blocks(x, block, 0.0)
  ms = _to_time_blocks(mask, block, False)
  gs = gamma if gamma.ndim == 0 else _to_time_blocks(gamma, block, 1.0)
  blocks = xs.shape[0]

  def at(i):
    x_i, m_i = xs[:, i], ms[:, i]
    return x_i, m_i, (gs if gs.ndim == 0 else gs[:, i])

  def summarize(carry, i):  # pass 1: per-block return and discount product
    value, product = carry
    x_i, m_i, g_i = at(i)
    return (jnp.where(m_i, x_i + g_i * value, value),
            jnp.where(m_i, g_i * product, product)), None

  zeros = jnp.zeros((blocks, batch), jnp.float32)
  (value, product), _ = jax.lax.scan(
      summarize, (zeros, jnp.ones_like(zeros)), jnp.arange(block),
      reverse=True)

  def across(carry, inputs):  # pass 2: return entering each block
    value_j, product_j = inputs
    return value_j + product_j * carry, carry

  _, entering = jax.lax.scan(across, jnp.zeros(batch, jnp.float32),
                             (value, product), reverse=True)

  def expand(carry, i):  # pass 3: per-token returns from the carries
    x_i, m_i, g_i = at(i)
    value = x_i + g_i * carry
    return jnp.where(m_i, value, carry), jnp.where(m_i, value, 0.0)

  _, out = jax.lax.scan(expand, entering, jnp.arange(block), reverse=True)
  out = out.transpose(2, 1, 0).reshape(batch, blocks * block)
  return out[:, :length]


# Static scalar γ (a Python float) takes chunked matmuls instead: with k_t
# the number of valid tokens before t in its chunk of c tokens, the in-chunk
# return is L_t = γ^{-k_t} Σ_{s ≥ t} m_s γ^{k_s} x_s, a product with a
# constant triangular [c, c] matrix (k is another), and a scan over the T/c
# chunk summaries chains the chunks. Only γ^{±k}, k < c, occur, so nothing
# blows up along a row; XLA:CPU runs these dots at about the speed of an
# elementwise pass (docs/performance.md). Traced or per-token γ, and γ so
# small that γ^c < 1e-7, keep the blocked scan: x·γ^k must stay a normal
# float32 for every |x| ≥ 1e-30, else tiny rewards late in a chunk flush to 0.
_MATMUL_CHUNKS = (64, 32, 16)
_MIN_CHUNK_DECAY = 1e-7


def _matmul_chunk(gamma: float):
  """Chunk size for the matmul path at static γ, or None (use the scan)."""
  if not 0.0 < gamma <= 1.0:
    return None
  for chunk in _MATMUL_CHUNKS:
    if gamma ** chunk >= _MIN_CHUNK_DECAY:
      return chunk
  return None


def _chunked_matmul_scan(x, mask, gamma: float, chunk: int) -> jax.Array:
  """Reverse discounted cumsum for static scalar γ (see the notes above)."""
  batch, length = mask.shape
  blocks = -(-length // chunk)
  if blocks * chunk != length:
    pad = ((0, 0), (0, blocks * chunk - length))
    x, mask = jnp.pad(x, pad), jnp.pad(mask, pad)
  m = mask.reshape(batch * blocks, chunk)
  x = x.reshape(batch * blocks, chunk)
  # suffix[s, t] = 1 if s >= t: (y @ suffix)_t = Σ_{s ≥ t} y_s.
  suffix = jnp.asarray(np.tril(np.ones((chunk, chunk), np.float32)))
  if gamma == 1.0:
    sums = jnp.where(m, x, 0.0) @ suffix
    scale = decay = None
  else:
    log_gamma = jnp.float32(math.log(gamma))
    # before[s, t] = 1 if s < t: k_t = valid tokens before t in the chunk.
    before = jnp.asarray(np.triu(np.ones((chunk, chunk), np.float32), 1))
    counts = m.astype(jnp.float32) @ before  # exact small integers
    sums = jnp.where(m, x * jnp.exp(counts * log_gamma), 0.0) @ suffix
    scale = jnp.exp(-counts * log_gamma)
    total = counts[:, -1] + m[:, -1]
    decay = jnp.exp(total * log_gamma).reshape(batch, blocks)
  first = sums[:, 0].reshape(batch, blocks)  # k = 0 there: no rescaling

  def across(carry, inputs):  # the return carried into each chunk
    if decay is None:
      return inputs + carry, carry
    first_j, decay_j = inputs
    return first_j + decay_j * carry, decay_j * carry

  _, after = jax.lax.scan(
      across, jnp.zeros(batch, jnp.float32),
      first.T if decay is None else (first.T, decay.T), reverse=True)
  after = after.T.reshape(batch * blocks, 1)
  out = sums + after if scale is None else scale * (sums + after)
  out = jnp.where(m, out, 0.0).reshape(batch, blocks * chunk)
  return out[:, :length]


def reverse_discounted_cumsum(x: ArrayLike, mask: ArrayLike,
                              gamma: ArrayLike = 1.0) -> jax.Array:
  """Reward-to-go with skip semantics: Gₜ = xₜ + γₜ·G_{next valid}.

  At a valid token t, G_t = x_t + γ_t · G_{t'} where t' is the next valid
  token after t (G = 0 past the last one). Masked tokens are skipped: their
  input is ignored, no discount is applied for them, and their output is 0.
  This is verl's current REINFORCE++ / GAE carry rule and rlax's V-trace
  `sample_mask` rule. A static Python-number γ runs chunked matmuls, other
  discounts a (blocked) scan (see the performance notes in the source);
  results agree with the sequential recurrence to float32 rounding.

  Args:
    x: [B, T] per-token values (rewards).
    mask: [B, T] bool, True on valid tokens.
    gamma: scalar γ or [B, T] per-token γ_t (applied at token t to the
      return of the next valid token).

  Returns:
    f32[B, T] discounted suffix sums, 0 at masked tokens.

  Raises:
    ValueError: `mask` not rank 2, or `x`/`gamma` not shaped like it.
  """
  x, mask = _check_tokens(x, mask, "x")
  if _checks.is_static_number(gamma):
    chunk = _matmul_chunk(float(gamma))
    if chunk is not None:
      return _chunked_matmul_scan(x, mask, float(gamma), chunk)
  return _reverse_linear_scan(
      x, mask, _checks.scalar_or_like(gamma, mask, "gamma", "mask"))


def suffix_min(x: ArrayLike, mask: ArrayLike) -> jax.Array:
  """min_{s ≥ t, s valid} x_s at each valid t; 0 at masked entries.

  Works on any `[B, L]` layout: tokens with a token mask, or steps with a
  step mask (PURE's strict min-form return over valid steps only).

  Args:
    x: [B, L] values.
    mask: [B, L] bool.

  Returns:
    f32[B, L] suffix minima over valid entries.
  """
  x, mask = _check_tokens(x, mask, "x")
  running = jax.lax.cummin(jnp.where(mask, x, jnp.inf), axis=1, reverse=True)
  return jnp.where(mask, running, 0.0)


def contiguous_runs(mask: ArrayLike) -> tuple[jax.Array, jax.Array]:
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
  counts = prefix_count(mask & ~previous)
  return jnp.where(mask, counts - 1, -1), counts[:, -1]


def _chunked_prefix_sum(y) -> jax.Array:
  """Σ_{s ≤ t} y_s along the rows of an f32[B, T] array (no mask).

  The γ = 1 matmul path run forwards: in-chunk prefix sums as one
  [B·T/c, c] @ [c, c] product with an upper-triangular matrix, the chunk
  totals chained by a scan. Reversing the row around the suffix-sum path
  instead costs two more copies of the array.
  """
  batch, length = y.shape
  chunk = _MATMUL_CHUNKS[0]
  blocks = -(-length // chunk)
  if blocks * chunk != length:
    y = jnp.pad(y, ((0, 0), (0, blocks * chunk - length)))
  # prefix[s, t] = 1 if s <= t: (y @ prefix)_t = Σ_{s ≤ t} y_s.
  prefix = jnp.asarray(np.triu(np.ones((chunk, chunk), np.float32)))
  sums = y.reshape(batch * blocks, chunk) @ prefix
  totals = sums[:, -1].reshape(batch, blocks)
  _, before = jax.lax.scan(lambda carry, t: (carry + t, carry),
                           jnp.zeros(batch, jnp.float32), totals.T)
  out = sums + before.T.reshape(batch * blocks, 1)
  return out.reshape(batch, blocks * chunk)[:, :length]


def masked_cumsum(x: ArrayLike, mask: ArrayLike) -> jax.Array:
  """f32[B, T] Σ_{s ≤ t, s valid} x_s at valid t, 0 at masked tokens.

  Args:
    x: [B, T] values.
    mask: [B, T] bool.

  Returns:
    f32[B, T] inclusive prefix sums over the valid tokens.
  """
  x, mask = _check_tokens(x, mask, "x")
  return jnp.where(mask, _chunked_prefix_sum(jnp.where(mask, x, 0.0)), 0.0)


def prefix_count(flags: ArrayLike) -> jax.Array:
  """int32[B, T] inclusive prefix counts cₜ = Σ_{s ≤ t} flags[b, s].

  Args:
    flags: [B, T] bool (numbers are taken as True where non-zero).

  Returns:
    int32[B, T] counts of True entries up to and including t.

  Computed by the chunked-matmul prefix sum (exact in float32 below 2^24
  tokens); jnp.cumsum is an associative scan on XLA CPU, ~3x slower.
  """
  _checks.check_batch(flags, "flags")
  flags = _checks.as_mask(flags, "flags")
  return _chunked_prefix_sum(flags.astype(jnp.float32)).astype(jnp.int32)


def _check_steps(step_ids, num_steps: int, batch: int):
  _checks.check_rank(step_ids, 2, "step_ids")
  if step_ids.shape[0] != batch:
    raise ValueError(f"step_ids must have {batch} rows, got shape "
                     f"{tuple(step_ids.shape)}.")
  _checks.check_positive_int(num_steps, "num_steps")
  return _checks.as_int(step_ids, "step_ids")


def steps_to_tokens(step_values: ArrayLike, step_ids: ArrayLike) -> jax.Array:
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


def tokens_to_steps(token_values: ArrayLike, step_ids: ArrayLike,
                    num_steps: int, mask: ArrayLike | None = None,
                    reduce: str = "sum", ordered: bool = True) -> jax.Array:
  """Reduces `[B, T]` token values into `[B, S]` steps through `step_ids`.

  Ordered steps (the default) are the layout segmenters produce: along each
  row the step ids of the kept tokens never decrease. They are reduced by a
  two-level search (`cajax.step_totals`) with no scatter; `ordered=False`
  accepts ids in any order and scatters (XLA:CPU applies scatter updates
  one at a time). The scatter is also used when S is too large for the
  search to beat it.

  Args:
    token_values: [B, T] per-token values.
    step_ids: [B, T] int step index per token (−1 or ≥ num_steps ignored).
    num_steps: static S.
    mask: optional [B, T] bool; False tokens are ignored.
    reduce: "sum", "mean", "max" or "min" (empty steps give 0).
    ordered: the kept tokens' ids never decrease along a row (concrete ids
      are checked, `step_totals.check_order`; traced ones only under
      checkify, and unordered traced ids give wrong results).

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
  if _checks.check_bool(ordered, "ordered"):
    step_totals.check_order(step_ids, keep)
  if reduce in ("sum", "mean"):
    out = step_totals.totals(step_ids, keep, num_steps, sums=(values,),
                             ordered=ordered)
    total = out.sums[0]
    return total if reduce == "sum" else total / jnp.maximum(out.count, 1)
  sign = 1.0 if reduce == "max" else -1.0
  out = step_totals.totals(step_ids, keep, num_steps,
                           maxima=(sign * values,), ordered=ordered)
  return jnp.where(out.count > 0, sign * out.maxima[0], 0.0)


def step_token_counts(step_ids: ArrayLike, num_steps: int,
                      mask: ArrayLike | None = None,
                      ordered: bool = True) -> jax.Array:
  """Number of (valid) tokens in each step, f32[B, S] (see
  `tokens_to_steps` for `ordered`)."""
  return tokens_to_steps(jnp.ones(jnp.shape(step_ids), jnp.float32),
                         step_ids, num_steps, mask=mask, ordered=ordered)


def step_end_mask(step_ids: ArrayLike,
                  mask: ArrayLike | None = None) -> jax.Array:
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


def step_prefix_mask(step_ids: ArrayLike,
                     num_prefix_steps: ArrayLike) -> jax.Array:
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
