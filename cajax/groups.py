"""Per-group statistics of row scores, for groups given by `group_ids`.

Groups are identified by `group_ids: int32[B]` in `[0, num_groups)` with a
static `num_groups`. Groups may be non-contiguous and of unequal size; every
reduction is a segment op, never a `reshape(-1, G)`. Rows with
`valid=False` (for example unscorable rows whose score is NaN) are left out of
every statistic.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cajax import _checks


class GroupMoments(NamedTuple):
  """Per-group statistics, each `f32[num_groups]`.

  Attributes:
    count: number of valid rows in the group.
    mean: mean of the valid scores (0 for an empty group).
    std: two-pass (centred) standard deviation with the requested ddof; 0
      when the group has no more than `ddof` valid rows.
  """
  count: jax.Array
  mean: jax.Array
  std: jax.Array


def _check_groups(values, group_ids, num_groups, valid):
  _checks.check_rank(values, 1, "values")
  _checks.check_shape(group_ids, values.shape, "group_ids",
                      like=f"values {tuple(values.shape)}")
  num_groups = _checks.check_positive_int(num_groups, "num_groups")
  values = _checks.as_float(values, "values")
  group_ids = _checks.as_int(group_ids, "group_ids")
  if valid is None:
    valid = jnp.ones(values.shape, bool)
  else:
    _checks.check_shape(valid, values.shape, "valid",
                        like=f"values {tuple(values.shape)}")
    valid = _checks.as_mask(valid, "valid")
  return values, group_ids, num_groups, valid


def group_sum(values, group_ids, num_groups: int, valid=None) -> jax.Array:
  """Σ of valid `values[B]` within each group, `f32[num_groups]`."""
  values, group_ids, num_groups, valid = _check_groups(
      values, group_ids, num_groups, valid)
  return jax.ops.segment_sum(jnp.where(valid, values, 0.0), group_ids,
                             num_segments=num_groups)


def group_moments(values, group_ids, num_groups: int, valid=None,
                  ddof: int = 1) -> GroupMoments:
  """Count, mean and two-pass standard deviation of each group.

  μ_g = Σ_{b∈g} s_b / n_g,  σ_g = sqrt(Σ_{b∈g} (s_b − μ_g)² / (n_g − ddof)).

  Both passes run on scores shifted by the group's max, and the second pass
  is centred, so equal scores give a std of exactly 0 (the one-pass
  sqrt(E[s²] − E[s]²) leaves ~1e-4 of residue there in float32, which a
  following 1/(σ + ε) turns into a huge advantage).

  Args:
    values: f32[B] row scores.
    group_ids: int32[B] in [0, num_groups).
    num_groups: static number of groups.
    valid: optional bool[B]; invalid rows are excluded.
    ddof: 1 for the unbiased std (torch default, verl), 0 for biased.

  Returns:
    `GroupMoments` of `f32[num_groups]` arrays.
  """
  values, group_ids, num_groups, valid = _check_groups(
      values, group_ids, num_groups, valid)
  count = jax.ops.segment_sum(valid.astype(jnp.float32), group_ids,
                              num_segments=num_groups)
  # Shift by a member of the group (its max) before both passes: equal scores
  # then give exactly zero deviations, so an all-equal group has std 0.0
  # exactly, not the rounding residue of Σs/n.
  pivot = jax.ops.segment_max(jnp.where(valid, values, -jnp.inf), group_ids,
                              num_segments=num_groups)
  pivot = jnp.where(count > 0, pivot, 0.0)
  shifted = jnp.where(valid, values - pivot[group_ids], 0.0)
  shifted_mean = jax.ops.segment_sum(shifted, group_ids,
                                     num_segments=num_groups) / jnp.maximum(
                                         count, 1.0)
  centred = jnp.where(valid, shifted - shifted_mean[group_ids], 0.0)
  sq = jax.ops.segment_sum(centred * centred, group_ids,
                           num_segments=num_groups)
  mean = pivot + shifted_mean
  dof = count - ddof
  var = jnp.where(dof > 0, sq / jnp.where(dof > 0, dof, 1.0), 0.0)
  return GroupMoments(count=count, mean=mean, std=jnp.sqrt(var))


def batch_moments(values, valid=None, ddof: int = 1) -> GroupMoments:
  """`group_moments` with every row in one group; fields are scalars."""
  group_ids = jnp.zeros(jnp.shape(values), jnp.int32)
  moments = group_moments(values, group_ids, 1, valid=valid, ddof=ddof)
  return GroupMoments(*(field[0] for field in moments))


def group_max(values, group_ids, num_groups: int, valid=None) -> jax.Array:
  """Max of valid values per group; -inf for a group with no valid row."""
  values, group_ids, num_groups, valid = _check_groups(
      values, group_ids, num_groups, valid)
  return jax.ops.segment_max(jnp.where(valid, values, -jnp.inf), group_ids,
                             num_segments=num_groups)
