"""The entropy bonus, aggregated like the policy loss."""

import jax
from jax.typing import ArrayLike

from cajax.losses import aggregation

__all__ = ["entropy_bonus", "entropy_loss"]


def entropy_bonus(entropy: ArrayLike, mask: ArrayLike, mode: str = "token-mean",
                  *, loss_scale_factor: float | None = None,
                  num_micro_batches: int = 1) -> tuple[jax.Array, jax.Array]:
  """Aggregated token entropy as a `(sum, denominator)` pair (to maximise).

  All peers aggregate the token entropy with the policy loss's mode and
  subtract `coef · H` from the loss (verl `entropy_coeff`, default 0).

  Args:
    entropy: [B, T] per-token entropies.
    mask: [B, T] bool.
    mode: one of `AGGREGATION_MODES`.
    loss_scale_factor: as in `aggregate`.
    num_micro_batches: as in `aggregate`.

  Returns:
    (sum, denominator) float32 scalars.
  """
  return aggregation.aggregate(entropy, mask, mode,
                               loss_scale_factor=loss_scale_factor,
                               num_micro_batches=num_micro_batches)


def entropy_loss(entropy: ArrayLike, mask: ArrayLike, mode: str = "token-mean",
                 *, loss_scale_factor: float | None = None,
                 num_micro_batches: int = 1) -> tuple[jax.Array, jax.Array]:
  """Negated `entropy_bonus`: a `(sum, denominator)` pair to minimise.

  Add `coef · sum / denominator` to the loss to encourage exploration.
  """
  total, denominator = entropy_bonus(
      entropy, mask, mode, loss_scale_factor=loss_scale_factor,
      num_micro_batches=num_micro_batches)
  return -total, denominator
