"""The clipped PPO value loss, as a `(sum, denominator)` pair."""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import masking
from cajax.losses import _inputs
from cajax.losses import aggregation

__all__ = ["value_loss"]

_sg = jax.lax.stop_gradient


def value_loss(values: ArrayLike, old_values: ArrayLike, returns: ArrayLike,
               mask: ArrayLike, *, clip: float | None = 0.5,
               mode: str = "token-mean", loss_scale_factor: float | None = None,
               num_micro_batches: int = 1, return_metrics: bool = False):
  """Clipped PPO value loss as a `(sum, denominator)` pair.

  v̂c = clip(v̂, v_old − c, v_old + c),
  L = ½·agg(max((v̂ − R)², (v̂c − R)²)).

  verl `compute_value_loss` / OpenRLHF `ValueLoss` / Tunix
  `ppo_value_loss_fn`; `clip=None` gives the unclipped ½·agg((v̂ − R)²).
  The default c = 0.5 is verl's `critic.cliprange_value`. `old_values` and
  `returns` are stop-gradient'ed.
  See "Proximal Policy Optimization Algorithms" (Schulman et al., arXiv
  1707.06347).

  Args:
    values: [B, T] current value predictions v̂.
    old_values: [B, T] value predictions at rollout time.
    returns: [B, T] regression targets R.
    mask: [B, T] bool.
    clip: value clip range c > 0, or None.
    mode: one of `AGGREGATION_MODES`.
    loss_scale_factor: as in `aggregate`.
    num_micro_batches: as in `aggregate`.
    return_metrics: also return {"vf_clipfrac": fraction of valid tokens
      where the clipped term is larger}.

  Returns:
    (sum, denominator) float32 scalars (and metrics if asked).

  Raises:
    ValueError: on shape mismatches, an unknown mode or c ≤ 0.
  """
  clip = _inputs.check_optional_positive(clip, "clip")
  _checks.check_batch(mask)
  names = ("values", "old_values", "returns")
  arrays = [_checks.as_float_like(a, mask, n)
            for n, a in zip(names, (values, old_values, returns))]
  mask = _checks.as_mask(mask)
  v, v_old, target = (jnp.where(mask, a, 0.0) for a in arrays)
  v_old, target = _sg(v_old), _sg(target)
  unclipped = jnp.square(v - target)
  if clip is None:
    loss, larger = unclipped, jnp.zeros(mask.shape, bool)
  else:
    clipped = jnp.square(jnp.clip(v, v_old - clip, v_old + clip) - target)
    loss, larger = jnp.maximum(unclipped, clipped), clipped > unclipped
  pair = aggregation.aggregate(0.5 * loss, mask, mode,
                               loss_scale_factor=loss_scale_factor,
                               num_micro_batches=num_micro_batches)
  if return_metrics:
    return pair, {"vf_clipfrac": _sg(masking.masked_mean(larger, mask))}
  return pair
