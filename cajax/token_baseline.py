"""Optimal Token Baseline (verl): a per-position, variance-weighted baseline.

The baseline of a token is a weighted mean of the group's returns at the same
position (or, for multi-turn rows, the same rank among valid tokens), with
weights that estimate each token's gradient variance.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import groups
from cajax import masking
from cajax import scoring
from cajax import sequences
from cajax import types

__all__ = ["optimal_token_baseline"]


def _group_token_mean(numerator, denominator, mask, group_ids,
                      num_groups: int, index, eps: float) -> jax.Array:
  """Per (group, index) ratio Σ numerator / (Σ denominator + eps), gathered.

  Sums run over the valid tokens of each group that share the same `index`
  (a token position when `index` is None, or a rank among valid tokens);
  the ratio is read back at every valid token.
  """
  length = mask.shape[1]
  if index is None:  # index = token position: segments are (group, column)
    # Whole rows are the scatter updates: B of them, not B·T entries.
    def row_total(x):
      return jax.ops.segment_sum(jnp.where(mask, x, 0.0), group_ids,
                                 num_segments=num_groups)

    ratio = masking.safe_divide(row_total(numerator),
                                row_total(denominator) + eps)
    return ratio[group_ids]
  segments = num_groups * length
  ids = groups.flat_segment_ids(index, mask, length, group_ids[:, None],
                                   num_groups)
  flat_ids = ids.reshape(-1)

  def total(x):
    return jax.ops.segment_sum(jnp.where(mask, x, 0.0).reshape(-1),
                               flat_ids, num_segments=segments + 1)

  ratio = masking.safe_divide(total(numerator), total(denominator) + eps)
  return ratio[ids]


def optimal_token_baseline(token_rewards: ArrayLike, old_logprobs: ArrayLike,
                           sum_pi_squared: ArrayLike, mask: ArrayLike,
                           group_ids: ArrayLike, num_groups: int, *,
                           rollout_is_weights: ArrayLike | None = None,
                           handle_zero_tail: bool = True,
                           multi_turn: bool = False,
                           eps: float = 1e-8) -> types.EstimatorOutput:
  """Optimal Token Baseline: a per-position, variance-weighted group baseline.

  With Gₜ the reward-to-go, wₜ = 1 − 2·π(yₜ) + Σ_v π(v)² (times ρ̄ₜ² when
  rollout importance weights are given) and Wₜ = Σ_{s ≤ t, valid} w_s:

    Bₜ = Σ_{j∈g} G_{j,t}·W_{j,t} / (Σ_{j∈g} W_{j,t} + eps),   Aₜ = Gₜ − Bₜ,

  the sums running over the group's rows valid at position t. A singleton
  group gets B = 0. With `handle_zero_tail` (verl default), when a group's
  longest row is unique its baseline is 0 from position L₂ on, L₂ being the
  second-largest valid-token count in the group.

  `multi_turn=True` is verl's TIR variant: positions are ranks among each
  row's valid tokens (left-compacted turns), and rows without valid tokens are
  left out of their group.

  A row with a non-finite reward, log-prob, Σπ² or IS weight at a valid
  token is unscorable: its advantages and returns are 0 and it is left out
  of its group as if absent (verl's NaN reaches the whole group).

  See verl `compute_optimal_token_baseline_advantage` and
  `compute_multi_turn_optimal_token_baseline_advantage` (verl-project/verl,
  `verl/trainer/ppo/core_algos.py`).

  Args:
    token_rewards: f[B, T] per-token rewards.
    old_logprobs: f[B, T] log π_old(yₜ) of the sampled tokens.
    sum_pi_squared: f[B, T] Σ_v π_old(v)² per token.
    mask: bool[B, T] valid tokens.
    group_ids: int[B] prompt group of each row, in [0, num_groups).
    num_groups: static number of groups.
    rollout_is_weights: optional f[B, T] truncated rollout IS weights ρ̄ₜ.
    handle_zero_tail: zero the baseline on the unique longest row's tail.
    multi_turn: index positions by rank among valid tokens (verl TIR OTB).
    eps: ≥ 0, added to the baseline's denominator (a zero denominator gives
      a zero baseline).

  Returns:
    EstimatorOutput(advantages, returns = G, info={"baselines": B}), all
    f32[B, T] and 0 at masked tokens.

  Raises:
    ValueError: wrong ranks, shapes or `num_groups`.

  Examples:
    Two responses to one prompt with their old-policy log-probs and Σπ² per
    token:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 0., 1.], [0., 0., 0.]])
    >>> old_logprobs = jnp.full((2, 3), -1.0)
    >>> sum_pi_squared = jnp.full((2, 3), 0.5)
    >>> mask = jnp.array([[1, 1, 1], [1, 1, 0]], bool)
    >>> out = cajax.optimal_token_baseline(
    ...     token_rewards, old_logprobs, sum_pi_squared, mask,
    ...     jnp.array([0, 0]), num_groups=1)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.5  0.5  1. ]
     [-0.5 -0.5  0. ]]
  """
  batch, length = _checks.check_batch(mask)
  rewards = _checks.as_float_like(token_rewards, mask, "token_rewards")
  old_logprobs = _checks.as_float_like(old_logprobs, mask, "old_logprobs")
  sum_pi_squared = _checks.as_float_like(sum_pi_squared, mask,
                                        "sum_pi_squared")
  group_ids = groups.check_group_ids(group_ids, batch, num_groups)
  handle_zero_tail = _checks.check_bool(handle_zero_tail, "handle_zero_tail")
  multi_turn = _checks.check_bool(multi_turn, "multi_turn")
  eps = _checks.check_number(eps, "eps", low=0.0)
  mask = _checks.as_mask(mask)
  inputs = [rewards, old_logprobs, sum_pi_squared]
  if rollout_is_weights is not None:
    inputs.append(_checks.as_float_like(rollout_is_weights, mask,
                                        "rollout_is_weights"))
  rows = groups.in_range(group_ids, num_groups)
  for x in inputs:
    rows = rows & scoring.finite_rows(x, mask)
  mask = mask & rows[:, None]
  rewards, old_logprobs, sum_pi_squared, *rho = (
      jnp.where(mask, x, 0.0) for x in inputs)

  returns = sequences.reverse_discounted_cumsum(rewards, mask)
  weight = 1.0 - 2.0 * jnp.exp(old_logprobs) + sum_pi_squared
  if rho:
    weight = weight * rho[0] * rho[0]
  # Wₜ at valid t (jnp.cumsum is an associative scan on XLA CPU, several
  # times slower than the chunked-matmul prefix sum).
  cumulative = sequences.masked_cumsum(weight, mask)

  lengths = masking.sequence_lengths(mask).astype(jnp.float32)
  if multi_turn:
    index = sequences.prefix_count(mask) - 1
    member = lengths > 0
  else:
    index = None  # the token position
    member = rows
  baseline = _group_token_mean(returns * cumulative, cumulative, mask,
                               group_ids, num_groups, index, eps)

  size = groups.group_sum(member.astype(jnp.float32), group_ids, num_groups)
  keep = (size[group_ids] > 1)[:, None] & mask
  if handle_zero_tail:
    longest = groups.group_max(lengths, group_ids, num_groups, valid=member)
    at_longest = member & (lengths == longest[group_ids])
    ties = groups.group_sum(at_longest.astype(jnp.float32), group_ids,
                            num_groups)
    second = groups.group_max(lengths, group_ids, num_groups,
                              valid=member & ~at_longest)
    unique = at_longest & (ties[group_ids] == 1) & (size[group_ids] > 1)
    position = (jnp.arange(length, dtype=jnp.int32)[None, :] if index is None
                else index)
    tail = unique[:, None] & (position >= second[group_ids][:, None])
    keep = keep & ~tail
  baseline = jnp.where(keep, baseline, 0.0)
  return types.EstimatorOutput(advantages=jnp.where(mask, returns - baseline,
                                                    0.0),
                               returns=returns, info={"baselines": baseline})


def _optimal_token_baseline_adapter(rollouts: types.Rollouts,
                                    **kwargs) -> types.EstimatorOutput:
  return optimal_token_baseline(
      rollouts.token_rewards, rollouts.old_logprobs, rollouts.sum_pi_squared,
      rollouts.mask, rollouts.group_ids, rollouts.num_groups, **kwargs)
