"""Masked reductions and normalisations over padded `[B, T]` batches.

Conventions shared by every function here:

* `mask` is True on valid entries; values at masked entries are ignored, even
  when they are NaN or inf (they are replaced with 0 before any arithmetic).
* Arithmetic is float32 whatever the input dtype.
* Outputs shaped like the input are exactly 0 at masked entries.
* `axis=None` reduces over the whole batch (verl's batch-global statistics).
"""

import jax
import jax.numpy as jnp

from cajax import _checks

Axis = int | tuple[int, ...] | None


def _prepare(x, mask, name: str):
  x = _checks.as_float(x, name)
  mask = _checks.as_mask(mask)
  _checks.check_same_shape(mask, x, "mask", name)
  return jnp.where(mask, x, 0.0), mask


def masked_sum(x, mask, axis: Axis = None) -> jax.Array:
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


def masked_count(mask, axis: Axis = None) -> jax.Array:
  """Number of True entries of `mask` over `axis`, as float32."""
  return jnp.sum(_checks.as_mask(mask).astype(jnp.float32), axis=axis)


def masked_mean(x, mask, axis: Axis = None, eps: float = 1e-8) -> jax.Array:
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


def masked_var(x, mask, axis: Axis = None, ddof: int = 1,
               eps: float = 1e-8) -> jax.Array:
  """Two-pass masked variance with a guarded Bessel correction.

  var = MM((x − MM(x))², m) · N / (N − ddof), N = Σm.

  With `ddof=1` this is verl's `masked_var(unbiased=True)`. When N ≤ ddof the
  correction factor is taken as 1 (the biased variance, 0 for a single valid
  entry) instead of verl's error or Tunix's NaN, so a batch with fewer than two
  valid tokens never produces NaN.

  Args:
    x: values, any shape.
    mask: bool, same shape as `x`.
    axis: axes to reduce; None reduces everything.
    ddof: delta degrees of freedom (0 biased, 1 unbiased).
    eps: passed to the inner masked means.

  Returns:
    float32 variances with `axis` removed.
  """
  x, mask = _prepare(x, mask, "x")
  return _mean_var(x, mask, axis, ddof, eps)[1]


def _mean_var(x, mask, axis: Axis, ddof: int, eps: float):
  """(mean, var) of prepared inputs (x already 0 where masked), one count."""
  count = jnp.sum(mask.astype(jnp.float32), axis=axis)
  denom = count + eps if eps > 0 else jnp.maximum(count, 1.0)
  mean = jnp.sum(x, axis=axis) / denom
  mean_b = jnp.expand_dims(mean, axis) if axis is not None else mean
  centred = jnp.where(mask, x - mean_b, 0.0)
  var = jnp.sum(centred * centred, axis=axis) / denom
  if ddof:
    safe = count > ddof
    var = var * jnp.where(safe, count / jnp.where(safe, count - ddof, 1.0),
                          1.0)
  return mean, var


def masked_whiten(x, mask, axis: Axis = None, shift_mean: bool = True,
                  ddof: int = 1, eps: float = 1e-8,
                  eps_mode: str = "add") -> jax.Array:
  """Whitens `x` over its valid entries: (x − μ) / sqrt(var (+) eps).

  `eps_mode="add"` is verl/Tunix `masked_whiten` (rsqrt(var + eps), ddof=1);
  `eps_mode="max"` with `ddof=0` is OpenRLHF's batch whitening
  (rsqrt(max(var, eps))). `shift_mean=False` adds the mean back (verl's
  option).

  Args:
    x: values, any shape.
    mask: bool, same shape as `x`.
    axis: axes holding the statistics; None is batch-global.
    shift_mean: subtract the mean (True) or keep it.
    ddof: delta degrees of freedom of the variance.
    eps: variance guard.
    eps_mode: "add" or "max".

  Returns:
    float32 array shaped like `x`, 0 at masked entries.
  """
  _checks.check_choice(eps_mode, ("add", "max"), "eps_mode")
  x, mask = _prepare(x, mask, "x")
  mean, var = _mean_var(x, mask, axis, ddof, 1e-8)
  if axis is not None:
    mean, var = jnp.expand_dims(mean, axis), jnp.expand_dims(var, axis)
  inv_std = jax.lax.rsqrt(var + eps if eps_mode == "add"
                          else jnp.maximum(var, eps))
  out = (x - mean) * inv_std
  if not shift_mean:
    out = out + mean
  return jnp.where(mask, out, 0.0)


def safe_divide(numerator, denominator) -> jax.Array:
  """numerator / denominator in float32, with 0 (not NaN/inf) where the
  denominator is 0."""
  numerator = jnp.asarray(numerator, jnp.float32)
  denominator = jnp.asarray(denominator, jnp.float32)
  nonzero = denominator != 0
  return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1.0),
                   0.0)


def masked_min_max(x, mask, axis: Axis = None) -> tuple[jax.Array,
                                                        jax.Array]:
  """Min and max of the valid entries (0 and 0 when nothing is valid)."""
  x, mask = _prepare(x, mask, "x")
  lo = jnp.min(jnp.where(mask, x, jnp.inf), axis=axis)
  hi = jnp.max(jnp.where(mask, x, -jnp.inf), axis=axis)
  any_valid = jnp.any(mask, axis=axis)
  return jnp.where(any_valid, lo, 0.0), jnp.where(any_valid, hi, 0.0)


def masked_softmax(x, mask, axis: int = -1,
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


def prefix_mask(lengths, length: int) -> jax.Array:
  """bool[B, length], True where t < lengths[b]."""
  _checks.check_rank(lengths, 1, "lengths")
  lengths = _checks.as_int(lengths, "lengths")
  return jnp.arange(length)[None, :] < lengths[:, None]


def sequence_lengths(mask) -> jax.Array:
  """Number of valid tokens of each row of a `[B, T]` mask, as int32."""
  _checks.check_batch(mask)
  return jnp.sum(_checks.as_mask(mask), axis=-1, dtype=jnp.int32)


def last_valid_index(mask) -> jax.Array:
  """Index of the last True token of each row; -1 for an empty row."""
  _checks.check_batch(mask)
  mask = _checks.as_mask(mask)
  positions = jnp.arange(mask.shape[-1], dtype=jnp.int32)
  return jnp.max(jnp.where(mask, positions[None, :], -1), axis=-1)


def last_token_mask(mask) -> jax.Array:
  """bool[B, T], True only at the last valid token of each row."""
  last = last_valid_index(mask)
  return jnp.arange(mask.shape[-1])[None, :] == last[:, None]


def broadcast_to_tokens(row_values, mask) -> jax.Array:
  """Broadcasts `[B]` row values over the valid tokens of `mask` `[B, T]`."""
  _checks.check_batch(mask)
  _checks.check_shape(row_values, (mask.shape[0],), "row_values",
                      like=f"mask {tuple(mask.shape)}")
  row_values = _checks.as_float(row_values, "row_values")
  return jnp.where(_checks.as_mask(mask), row_values[:, None], 0.0)
