"""Masked reductions and normalisations over padded `[B, T]` batches.

Conventions shared by every function here:

* `mask` is True on valid entries; values at masked entries are ignored, even
  when they are NaN or inf (they are replaced with 0 before any arithmetic).
* Arithmetic is float32 whatever the input dtype.
* Outputs shaped like the input are exactly 0 at masked entries.
* `axis=None` reduces over the whole batch (verl's batch-global statistics).
"""

import functools
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from cajax import _checks

__all__ = [
    "Axis", "Moments", "broadcast_to_tokens", "fused_reduce", "fused_sum",
    "last_token_mask", "last_valid_index", "masked_count", "masked_mean",
    "masked_min_max", "masked_softmax", "masked_sum", "masked_var",
    "masked_whiten", "next_valid", "prefix_mask", "reduced_moments",
    "safe_divide", "sequence_lengths",
]

Axis = int | tuple[int, ...] | None


def _prepare(x, mask, name: str):
  x = _checks.as_float(x, name)
  mask = _checks.as_mask(mask)
  _checks.check_same_shape(mask, x, "mask", name)
  return jnp.where(mask, x, 0.0), mask


def masked_sum(x: ArrayLike, mask: ArrayLike, axis: Axis = None) -> jax.Array:
  """Σ x·m over `axis`; masked entries contribute nothing (NaN-safe).

  Args:
    x: values, any shape.
    mask: bool, same shape as `x`.
    axis: axes to reduce; None reduces everything.

  Returns:
    float32 sums with `axis` removed.
  """
  x, _ = _prepare(x, mask, "x")
  return jnp.sum(x, axis=axis)


def masked_count(mask: ArrayLike, axis: Axis = None) -> jax.Array:
  """Number of True entries of `mask` over `axis`, as float32."""
  return jnp.sum(_checks.as_mask(mask).astype(jnp.float32), axis=axis)


def masked_mean(x: ArrayLike, mask: ArrayLike, axis: Axis = None,
                eps: float = 1e-8) -> jax.Array:
  """Masked mean Σ(x·m) / (Σm + eps), as verl and Tunix define it.

  With `eps=0` an empty selection gives 0 instead of NaN (the denominator is
  floored at 1 in that case).

  Args:
    x: values, any shape.
    mask: bool, same shape as `x`.
    axis: axes to reduce; None reduces everything.
    eps: added to the count in the denominator.

  Returns:
    float32 means with `axis` removed.
  """
  x, mask = _prepare(x, mask, "x")
  count = jnp.sum(mask.astype(jnp.float32), axis=axis)
  denom = count + eps if eps > 0 else jnp.maximum(count, 1.0)
  return jnp.sum(x, axis=axis) / denom


class Moments(NamedTuple):
  """Overflow-free statistics of the valid entries of each reduction cell.

  Attributes:
    count: number of valid entries.
    mean: their mean (0 for an empty cell).
    std: their standard deviation with the requested ddof (0 when count ≤
      ddof).
    scale: a = max |x − max x| over the valid entries, the unit in which the
      squares are taken (0 when every valid entry is equal).
    centred: entry-shaped (x − mean)/a at valid entries, 0 elsewhere: exactly
      0 everywhere in a cell whose valid entries are all equal.
    spread: Σ centred², exactly 0 iff the cell's valid entries are all equal.
  """
  count: jax.Array
  mean: jax.Array
  std: jax.Array
  scale: jax.Array
  centred: jax.Array
  spread: jax.Array


def reduced_moments(x: ArrayLike, valid: ArrayLike, reduce_sum: Callable,
                    reduce_max: Callable, expand: Callable, ddof: int,
                    count_max_min: ArrayLike | None = None) -> Moments:
  """Count, mean and std of the valid `x` of each cell, at any finite scale.

  The cells are whatever `reduce_sum` / `reduce_max` reduce over (an axis, or
  the segments of a group id) and `expand` maps a per-cell array back to the
  entries. The values are shifted by the cell's max (one of its members, so
  equal values give exactly zero deviations and an all-equal cell has std
  0.0, not the rounding residue of Σx/n) and divided by the cell's largest
  deviation a before they are squared, so that no finite input scale
  overflows (x ~ 1e30: x² = inf) or underflows (x ~ 1e-30: x² = 0):
  mean = max + a·mean(u), std = a·std(u), u = (x − max)/a ∈ [−1, 0].

  Args:
    x: float32 values, 0 (or anything finite) at invalid entries.
    valid: bool like `x`.
    reduce_sum: per-cell sum of an entry-shaped array.
    reduce_max: per-cell max of an entry-shaped array (−inf when empty).
    expand: per-cell array → entry-shaped array.
    ddof: delta degrees of freedom of the std.
    count_max_min: optional (x, valid) → per-cell (count, max, min) of the
      valid entries in one pass; the largest deviation is then max − min
      (fl(max − x) decreases with x, so this is exactly the max of the
      rounded deviations).

  Returns:
    `Moments`.
  """
  if count_max_min is None:
    count = reduce_sum(valid.astype(jnp.float32))
    pivot = reduce_max(jnp.where(valid, x, -jnp.inf))
  else:
    count, pivot, low = count_max_min(x, valid)
  pivot = jnp.where(count > 0, pivot, 0.0)
  shifted = jnp.where(valid, x - expand(pivot), 0.0)  # ≤ 0
  if count_max_min is None:
    scale = jnp.maximum(reduce_max(-shifted), 0.0)
  else:
    scale = jnp.where(count > 0, jnp.maximum(pivot - low, 0.0), 0.0)
  unit = shifted / expand(jnp.where(scale > 0, scale, 1.0))
  unit_mean = reduce_sum(unit) / jnp.maximum(count, 1.0)
  centred = jnp.where(valid, unit - expand(unit_mean), 0.0)
  spread = reduce_sum(centred * centred)
  dof = count - ddof
  unit_var = jnp.where(dof > 0, spread / jnp.where(dof > 0, dof, 1.0), 0.0)
  return Moments(count=count, mean=pivot + scale * unit_mean,
                 std=scale * jnp.sqrt(unit_var), scale=scale,
                 centred=centred, spread=spread)


_PLAIN_REDUCTIONS = {jnp.add: jnp.sum, jnp.maximum: jnp.max,
                     jnp.minimum: jnp.min}


def fused_reduce(operands: Sequence[ArrayLike], inits: Sequence[float],
                 ops: Sequence[Callable], axis: Axis = None):
  """Per-cell float32 reductions of `operands` in one pass, with the count.

  XLA:CPU hands float sums and maxima to a library reduction that reads a
  materialised input: one extra [B, T] pass per reduction. A variadic
  `lax.reduce` that also carries an int32 operand (here the valid count) is
  not taken by the library and runs as one loop that computes its operands
  on the fly. Derivatives are those of the plain reductions.

  Args:
    operands: float32 arrays, then a bool mask (all the same shape); the
      mask's True count is reduced alongside.
    inits: the identity of each float reduction.
    ops: jnp.add, jnp.maximum or jnp.minimum, one per float operand.
    axis: axes to reduce; None reduces everything.

  Returns:
    (tuple of the float results, f32 counts of the mask).
  """
  *values, valid = operands
  axis = axis if axis is None or isinstance(axis, int) else tuple(axis)
  return _fused_reduce(tuple(values), valid, tuple(float(i) for i in inits),
                       tuple(ops), axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _fused_reduce(values, valid, inits, ops, axis):
  ndim = valid.ndim
  axes = tuple(range(ndim)) if axis is None else tuple(
      a % ndim for a in np.atleast_1d(axis))

  def combine(a, b):
    return tuple(op(x, y) for op, x, y in zip(ops + (jnp.add,), a, b))

  operands = tuple(values) + (valid.astype(jnp.int32),)
  starts = tuple(np.float32(i) for i in inits) + (np.int32(0),)
  if axis is None and ndim == 2:
    # Rows in chunks of up to 128 first: a loop that reduces straight to a
    # scalar is one sequential chain (slow, and less accurate).
    batch, length = valid.shape
    chunk = math.gcd(length, 128)
    operands = tuple(o.reshape(batch, length // chunk, chunk)
                     for o in operands)
    operands = jax.lax.reduce(operands, starts, combine, (2,))
    axes = (0, 1)
  out = jax.lax.reduce(operands, starts, combine, axes)
  return tuple(out[:-1]), out[-1].astype(jnp.float32)


@_fused_reduce.defjvp
def _fused_reduce_jvp(inits, ops, axis, primals, tangents):
  """The plain reductions' derivatives (lax.reduce has none with an int
  operand)."""
  del inits
  values, valid = primals
  def plain(values):
    return tuple(_PLAIN_REDUCTIONS[op](v, axis=axis)
                 for op, v in zip(ops, values))
  outs, douts = jax.jvp(plain, (values,), (tangents[0],))
  count = jnp.sum(valid.astype(jnp.float32), axis=axis)
  return (outs, count), (douts, jnp.zeros_like(count))


def fused_sum(x: ArrayLike, valid: ArrayLike, axis: Axis = None) -> jax.Array:
  """Σ x over `axis` as one fused pass (`fused_reduce`); x is summed as
  given (mask it first), `valid` only rides along."""
  (total,), count = fused_reduce((x, valid), (0.0,), (jnp.add,), axis)
  # Reading the (never negative) count keeps XLA from dropping it, which
  # would turn the reduction back into a single library one.
  return jnp.where(count >= 0, total, jnp.nan)


def _axis_moments(x, mask, axis: Axis, ddof: int) -> Moments:
  """`reduced_moments` over `axis` of prepared inputs, in three passes."""
  def expand(cell):
    return cell if axis is None else jnp.expand_dims(cell, axis)

  def reduce_sum(v):
    return fused_sum(v, mask, axis)

  def count_max_min(x, valid):
    (high, low), count = fused_reduce(
        (jnp.where(valid, x, -jnp.inf), jnp.where(valid, x, jnp.inf), valid),
        (-np.inf, np.inf), (jnp.maximum, jnp.minimum), axis)
    return count, high, low

  return reduced_moments(x, mask, reduce_sum,
                         lambda v: jnp.max(v, axis=axis), expand, ddof,
                         count_max_min)


def masked_var(x: ArrayLike, mask: ArrayLike, axis: Axis = None, ddof: int = 1,
               eps: float = 1e-8) -> jax.Array:
  """Two-pass masked variance with a guarded Bessel correction.

  var = Σ_valid (x − μ)² / (N − ddof),  μ the mean of the valid entries,
  N = Σm, which is verl's `masked_var(unbiased=True)` for `ddof=1` (verl's
  1e-8 in its count denominators changes nothing in float32 once N ≥ 1).
  When N ≤ ddof the correction factor is taken as 1 (the biased variance, 0
  for a single valid entry) instead of verl's error or Tunix's NaN, so a
  batch with fewer than two valid tokens never produces NaN. Deviations are
  rescaled before squaring, so the variance is exact wherever it is
  representable in float32 (it is inf only when the true value exceeds
  float32's range, e.g. deviations of 1e20).

  Args:
    x: values, any shape.
    mask: bool, same shape as `x`.
    axis: axes to reduce; None reduces everything.
    ddof: delta degrees of freedom (0 biased, 1 unbiased).
    eps: added to N in the denominator when N ≤ ddof (kept for verl's
      signature; it does not change a float32 result otherwise).

  Returns:
    float32 variances with `axis` removed.
  """
  del eps  # N ≤ ddof falls back to the biased variance instead.
  x, mask = _prepare(x, mask, "x")
  moments = _axis_moments(x, mask, axis, 0)
  count = moments.count
  biased = moments.std * moments.std
  safe = count > ddof
  return biased * jnp.where(safe, count / jnp.where(safe, count - ddof, 1.0),
                            1.0)


def masked_whiten(x: ArrayLike, mask: ArrayLike, axis: Axis = None,
                  shift_mean: bool = True, ddof: int = 1, eps: float = 1e-8,
                  eps_mode: str = "add") -> jax.Array:
  """Whitens `x` over its valid entries: (x − μ) / sqrt(var (+) eps).

  `eps_mode="add"` is verl/Tunix `masked_whiten` (rsqrt(var + eps), ddof=1);
  `eps_mode="max"` with `ddof=0` is OpenRLHF's batch whitening
  (rsqrt(max(var, eps))). `shift_mean=False` adds the mean back (verl's
  option).

  Computed without squaring the raw values: sqrt(var + eps) is
  hypot(σ, √eps) with σ from `reduced_moments`, so inputs of any finite
  scale neither overflow nor underflow (the result is scale-invariant where
  σ ≫ √eps and follows the formula exactly where it is not), and valid
  entries that are all equal (a one-row batch, or every row scoring the
  same) whiten to exactly 0, not to the rounding residue of μ divided by
  √eps.

  Args:
    x: values, any shape.
    mask: bool, same shape as `x`.
    axis: axes holding the statistics; None is batch-global.
    shift_mean: subtract the mean (True) or keep it.
    ddof: delta degrees of freedom of the variance.
    eps: variance guard, ≥ 0.
    eps_mode: "add" or "max".

  Returns:
    float32 array shaped like `x`, 0 at masked entries.
  """
  _checks.check_choice(eps_mode, ("add", "max"), "eps_mode")
  eps = _checks.check_number(eps, "eps", low=0.0)
  ddof = _checks.check_int(ddof, "ddof", low=0)
  x, mask = _prepare(x, mask, "x")
  moments = _axis_moments(x, mask, axis, ddof)

  def expand(cell):
    return cell if axis is None else jnp.expand_dims(cell, axis)

  root_eps = jnp.float32(eps) ** 0.5
  std = moments.std
  denom = jnp.hypot(std, root_eps) if eps_mode == "add" else jnp.maximum(
      std, root_eps)
  out = safe_divide(expand(moments.scale) * moments.centred, expand(denom))
  if not shift_mean:
    out = out + expand(moments.mean)
  return jnp.where(mask, out, 0.0)


def safe_divide(numerator: ArrayLike, denominator: ArrayLike) -> jax.Array:
  """numerator / denominator in float32, with 0 (not NaN/inf) where the
  denominator is 0."""
  numerator = jnp.asarray(numerator, jnp.float32)
  denominator = jnp.asarray(denominator, jnp.float32)
  nonzero = denominator != 0
  return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1.0),
                   0.0)


def masked_min_max(x: ArrayLike, mask: ArrayLike,
                   axis: Axis = None) -> tuple[jax.Array, jax.Array]:
  """Min and max of the valid entries (0 and 0 when nothing is valid)."""
  x, mask = _prepare(x, mask, "x")
  lo = jnp.min(jnp.where(mask, x, jnp.inf), axis=axis)
  hi = jnp.max(jnp.where(mask, x, -jnp.inf), axis=axis)
  any_valid = jnp.any(mask, axis=axis)
  return jnp.where(any_valid, lo, 0.0), jnp.where(any_valid, hi, 0.0)


def masked_softmax(x: ArrayLike, mask: ArrayLike, axis: int = -1,
                   temperature: float = 1.0) -> jax.Array:
  """Softmax of x / temperature over valid entries; 0 on masked ones.

  A slice with no valid entry gives all zeros (never NaN).
  """
  x, mask = _prepare(x, mask, "x")
  logits = jnp.where(mask, x / temperature, -jnp.inf)
  peak = jnp.max(logits, axis=axis, keepdims=True)
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  weights = jnp.where(mask, jnp.exp(logits - peak), 0.0)
  total = jnp.sum(weights, axis=axis, keepdims=True)
  return weights / jnp.where(total > 0, total, 1.0)


def prefix_mask(lengths: ArrayLike, length: int) -> jax.Array:
  """bool[B, length], True where t < lengths[b]."""
  _checks.check_rank(lengths, 1, "lengths")
  lengths = _checks.as_int(lengths, "lengths")
  return jnp.arange(length)[None, :] < lengths[:, None]


def sequence_lengths(mask: ArrayLike) -> jax.Array:
  """Number of valid tokens of each row of a `[B, T]` mask, as int32."""
  _checks.check_batch(mask)
  return jnp.sum(_checks.as_mask(mask), axis=-1, dtype=jnp.int32)


def last_valid_index(mask: ArrayLike) -> jax.Array:
  """Index of the last True token of each row; -1 for an empty row."""
  _checks.check_batch(mask)
  mask = _checks.as_mask(mask)
  positions = jnp.arange(mask.shape[-1], dtype=jnp.int32)
  return jnp.max(jnp.where(mask, positions[None, :], -1), axis=-1)


def last_token_mask(mask: ArrayLike) -> jax.Array:
  """bool[B, T], True only at the last valid token of each row."""
  last = last_valid_index(mask)
  return jnp.arange(mask.shape[-1])[None, :] == last[:, None]


def next_valid(x: ArrayLike, mask: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """x at the first valid token strictly after each position.

  Args:
    x: f[B, T] values.
    mask: bool[B, T] valid tokens.

  Returns:
    (f32[B, T] x at the next valid token, 0 where there is none;
    bool[B, T] whether a next valid token exists).

  Examples:
    >>> import jax.numpy as jnp
    >>> from cajax import masking
    >>> x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    >>> mask = jnp.array([[True, False, True, False]])
    >>> after, exists = masking.next_valid(x, mask)
    >>> after.tolist(), exists.tolist()
    ([[3.0, 3.0, 0.0, 0.0]], [[True, True, False, False]])
  """
  _checks.check_batch(mask)
  x = _checks.as_float_like(x, mask, "x")
  mask = _checks.as_mask(mask)
  length = mask.shape[1]
  positions = jnp.arange(length, dtype=jnp.int32)[None, :]
  first_at_or_after = jax.lax.cummin(jnp.where(mask, positions, length),
                                     axis=1, reverse=True)
  after = jnp.pad(first_at_or_after[:, 1:], ((0, 0), (0, 1)),
                  constant_values=length)
  exists = after < length
  gathered = jnp.take_along_axis(x, jnp.minimum(after, length - 1), axis=1)
  return jnp.where(exists, gathered, 0.0), exists


def broadcast_to_tokens(row_values: ArrayLike, mask: ArrayLike,
                        name: str = "row_values") -> jax.Array:
  """Broadcasts `[B]` row values over the valid tokens of `mask` `[B, T]`.

  `name` is the caller's name for `row_values` in error messages.
  """
  _checks.check_batch(mask)
  _checks.check_shape(row_values, (mask.shape[0],), name,
                      like=f"mask {tuple(mask.shape)}")
  row_values = _checks.as_float(row_values, name)
  return jnp.where(_checks.as_mask(mask), row_values[:, None], 0.0)
