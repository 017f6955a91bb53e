"""Aggregation: a per-token loss to a `(sum, denominator)` pair.

Pairs from micro-batches or devices combine exactly: sum the sums, sum the
denominators, divide once (`safe_divide`). This is Tunix's deferred
`WeightedMetric` pattern and gives verl's global-batch normalisation without
passing global counts around.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import masking
from cajax import registry

__all__ = ["AGGREGATION_MODES", "AGGREGATORS", "aggregate", "aggregate_mean",
           "safe_divide"]


class _Rows(NamedTuple):
  """Per-row loss sums and valid-token counts, and the mode's constants."""
  sums: jax.Array
  counts: jax.Array
  length: int
  loss_scale_factor: float | None
  num_micro_batches: int


def _num_seqs(rows: _Rows) -> jax.Array:
  return jnp.sum((rows.counts > 0).astype(jnp.float32))


def _token_mean(rows: _Rows):
  return jnp.sum(rows.sums), jnp.sum(rows.counts)


def _token_sum(rows: _Rows):
  return jnp.sum(rows.sums), jnp.asarray(1.0 / rows.num_micro_batches,
                                         jnp.float32)


def _seq_mean_token_mean(rows: _Rows):
  return (jnp.sum(rows.sums / jnp.maximum(rows.counts, 1.0)),
          _num_seqs(rows))


def _seq_mean_token_sum(rows: _Rows):
  return jnp.sum(rows.sums), _num_seqs(rows)


def _seq_mean_token_sum_norm(rows: _Rows):
  scale = (rows.length if rows.loss_scale_factor is None
           else rows.loss_scale_factor)
  return jnp.sum(rows.sums) / scale, _num_seqs(rows)


# Mode name -> `(rows) -> (sum, denominator)`; see `aggregate`.
AGGREGATORS = registry.Registry("aggregation mode", {
    "token-mean": _token_mean,
    "token-sum": _token_sum,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum": _seq_mean_token_sum,
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
})
AGGREGATION_MODES = AGGREGATORS.names()


def aggregate(per_token_loss: ArrayLike, mask: ArrayLike,
              mode: str = "token-mean", *,
              loss_scale_factor: float | None = None,
              num_micro_batches: int = 1) -> tuple[jax.Array, jax.Array]:
  """Reduces a per-token loss to a `(sum, denominator)` pair.

  With L the loss, m the mask, n_b = Σ_t m, S_b = Σ_t L·m and N_seq the
  number of rows with n_b > 0 (empty rows are excluded, as in verl):

  * token-mean: sum Σ_b S_b, denominator Σ_b n_b. verl token-mean; TRL
    bnpo (and dapo/cispo with the global count); Tunix token-mean; OpenRLHF
    `token_level_loss=True`.
  * token-sum: sum Σ_b S_b, denominator 1/`num_micro_batches`. verl
    token-sum.
  * seq-mean-token-mean: sum Σ_b S_b/n_b, denominator N_seq. verl; Tunix
    sequence-mean-token-mean; TRL grpo and OpenRLHF `token_level_loss=False`
    count empty rows too (equal when no row is empty).
  * seq-mean-token-sum: sum Σ_b S_b, denominator N_seq. verl; Tunix
    seq-mean-token-sum.
  * seq-mean-token-sum-norm: sum Σ_b S_b / C, denominator N_seq. verl
    (current); TRL dr_grpo (C = max_completion_length, rows counted as in
    grpo); Tunix sequence-mean-token-scale (C = its `norm`).

  C is `loss_scale_factor`, or T (`mask.shape[-1]`) when None, verl's
  current semantics (older verl divided the token sum by C only, like
  Tunix sequence-mean-token-sum-norm). C divides the sum, so micro-batches
  padded to different T keep verl's per-micro-batch behaviour; pass a
  constant C to make the loss independent of padding.

  Micro-batches and devices: summing the sums and the denominators of the
  pieces and dividing once (`safe_divide`) equals the full-batch value, for
  every mode. token-sum has no natural count, so each piece reports
  1/`num_micro_batches` (the total number of pieces) and the pieces' shares
  add up to 1.

  Args:
    per_token_loss: [B, T] per-token loss (values at masked tokens are
      ignored, even NaN).
    mask: [B, T] bool, True on tokens that count.
    mode: one of `AGGREGATION_MODES`.
    loss_scale_factor: C of seq-mean-token-sum-norm (ignored otherwise).
    num_micro_batches: number of pieces the token-sum batch is split into.

  Returns:
    (sum, denominator) float32 scalars; the loss is sum / denominator.

  Raises:
    ValueError: on an unknown mode, shape mismatch or bad constants.
  """
  reduce = AGGREGATORS.lookup(mode, "mode")
  _, length = _checks.check_batch(mask)
  _checks.check_same_shape(per_token_loss, mask, "per_token_loss", "mask")
  if loss_scale_factor is not None:
    loss_scale_factor = _checks.check_number(
        loss_scale_factor, "loss_scale_factor", low=0.0, low_open=True)
  num_micro_batches = _checks.check_positive_int(num_micro_batches,
                                                 "num_micro_batches")
  return reduce(_Rows(masking.masked_sum(per_token_loss, mask, axis=-1),
                      masking.masked_count(mask, axis=-1), length,
                      loss_scale_factor, num_micro_batches))


# Pairs from `aggregate` combine as safe_divide(Σ sums, Σ denominators).
safe_divide = masking.safe_divide


def aggregate_mean(per_token_loss: ArrayLike, mask: ArrayLike,
                   mode: str = "token-mean", *,
                   loss_scale_factor: float | None = None) -> jax.Array:
  """Scalar loss `sum / denominator` of `aggregate` (0 for an empty batch).

  Args:
    per_token_loss: [B, T] per-token loss.
    mask: [B, T] bool, True on tokens that count.
    mode: one of `AGGREGATION_MODES`.
    loss_scale_factor: C of seq-mean-token-sum-norm (default T).

  Returns:
    float32 scalar.

  Raises:
    ValueError: as `aggregate`.
  """
  return safe_divide(*aggregate(per_token_loss, mask, mode,
                                loss_scale_factor=loss_scale_factor))
