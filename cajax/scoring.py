"""Row scores and the one rule for unscorable rows.

A row whose score is not finite (NaN, +inf or −inf: a reward model failed, a
verifier timed out, a value overflowed) is *unscorable*: every estimator
gives it advantage 0 (and returns 0), leaves it out of every group and batch
statistic as if the row were absent, and no NaN or inf reaches other rows.
Each estimator marks a row unscorable when any of its score inputs is
non-finite there: the row score or outcome, a step reward at a valid step,
a per-token reward, value or log-prob at a valid token, a baseline score.
This module is the only place that turns non-finite values into that flag.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks

__all__ = [
    "finite_rows", "keep_rows", "row_scores", "row_sums", "sequence_scores",
    "split_unscorable",
]


def split_unscorable(scores: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Splits float scores into (scores with 0 where not finite, scorable).

  Args:
    scores: f32 array of any shape; NaN or ±inf marks an unscorable entry.

  Returns:
    (f32 scores with 0 on unscorable entries, bool scorable), both shaped
    like `scores`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from cajax import scoring
    >>> values, scorable = scoring.split_unscorable(jnp.array([1.0, jnp.nan]))
    >>> values.tolist(), scorable.tolist()
    ([1.0, 0.0], [True, False])
  """
  scorable = jnp.isfinite(scores)
  return jnp.where(scorable, scores, 0.0), scorable


def finite_rows(values: ArrayLike, valid: ArrayLike | None = None) -> jax.Array:
  """bool[B]: the rows of `values` whose (valid) entries are all finite.

  Args:
    values: f32[B, ...], e.g. per-token rewards or values, step rewards.
    valid: optional bool like `values`; entries where it is False (masked
      tokens, invalid steps) are ignored, whatever they hold.

  Returns:
    bool[B], False on rows holding a non-finite valid entry.
  """
  finite = jnp.isfinite(values)
  if valid is not None:
    finite = finite | ~valid
  return jnp.all(finite.reshape(finite.shape[0], -1), axis=1)


def keep_rows(values: ArrayLike, rows: ArrayLike) -> jax.Array:
  """`values` ([B, ...]) with 0 on the rows where `rows` is False and at
  every non-finite entry, so that nothing non-finite reaches arithmetic."""
  rows = jnp.reshape(rows, rows.shape + (1,) * (jnp.ndim(values) - 1))
  return jnp.where(rows & jnp.isfinite(values), values, 0.0)


def row_sums(token_rewards: ArrayLike, mask: ArrayLike) -> jax.Array:
  """Σ_t r[b, t] over all T positions: f32[B], non-finite on unscorable rows.

  The per-row outcome that estimators taking `outcome_rewards: f[B]` (`capo`,
  `tp_grpo`, `pure`'s verifiable rewards) read from `Rollouts`.
  """
  _checks.check_batch(mask)
  rewards = _checks.as_float_like(token_rewards, mask, "token_rewards")
  return jnp.sum(rewards, axis=1)


def sequence_scores(token_rewards: ArrayLike,
                    mask: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Row scores Σ_t r[b, t] over all T positions (verl) and scorability.

  Args:
    token_rewards: f[B, T]; padding is expected to hold 0 (verl sums every
      position). NaN or ±inf anywhere in a row (or a sum that overflows)
      marks the row unscorable.
    mask: bool[B, T] (shape check only).

  Returns:
    (scores f32[B] with 0 on unscorable rows, scorable bool[B]).

  Examples:
    Outcome rewards sit at each row's last valid token:

    >>> import jax.numpy as jnp
    >>> import cajax
    >>> token_rewards = jnp.array([[0.0, 0.0, 1.0], [0.0, jnp.nan, 0.0]])
    >>> mask = jnp.array([[True, True, True], [True, True, False]])
    >>> scores, scorable = cajax.sequence_scores(token_rewards, mask)
    >>> scores.tolist(), scorable.tolist()
    ([1.0, 0.0], [True, False])
  """
  return split_unscorable(row_sums(token_rewards, mask))


def row_scores(outcome_rewards: ArrayLike, batch: int,
               name: str = "outcome_rewards") -> tuple[jax.Array, jax.Array]:
  """Checks per-row `f[B]` outcome scores; splits off the unscorable rows.

  Args:
    outcome_rewards: f[B] one score per row, NaN or ±inf = unscorable.
    batch: B, the number of rows of the batch.
    name: the caller's argument name, for error messages.

  Returns:
    (scores f32[B] with 0 on unscorable rows, scorable bool[B]).

  Raises:
    ValueError: `outcome_rewards` is not a numeric `[batch]` array.
  """
  _checks.check_shape(outcome_rewards, (batch,), name,
                      like=f"a batch of {batch} rows")
  return split_unscorable(_checks.as_float(outcome_rewards, name))
