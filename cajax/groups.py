"""Per-group statistics of row scores, for groups given by `group_ids`.

Groups are identified by `group_ids: int32[B]` in `[0, num_groups)` with a
static `num_groups`. Groups may be non-contiguous and of unequal size; every
reduction is a segment op, never a `reshape(-1, G)`. Rows with
`valid=False` (for example unscorable rows whose score is NaN) are left out of
every statistic.

Out-of-range ids: concrete ids outside [0, num_groups) raise a ValueError.
Traced ids (inside `jax.jit`) cannot raise: an entry with such an id is left
out of every statistic here (the segment ops drop it) and gets 0 from
`group_normalize`, and every estimator treats its row as unscorable
(`in_range`). Under `jax.experimental.checkify` the range is checked
(`cajax.checkify_estimate`).
"""

from typing import NamedTuple

import jax
from jax.experimental import checkify
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from cajax import _checks
from cajax import masking

__all__ = [
    "GroupMoments", "NORMALIZE_MODES", "SINGLETONS", "batch_moments",
    "check_batch_groups", "check_group_ids", "check_id_range",
    "flat_segment_ids", "group_max", "group_moments", "group_normalize",
    "group_sum", "in_range",
]


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
  check_id_range(group_ids, num_groups)
  if valid is None:
    valid = jnp.ones(values.shape, bool)
  else:
    _checks.check_shape(valid, values.shape, "valid",
                        like=f"values {tuple(values.shape)}")
    valid = _checks.as_mask(valid, "valid")
  return values, group_ids, num_groups, valid


def in_range(group_ids: ArrayLike, num_groups: int) -> jax.Array:
  """bool like `group_ids`: the ids in [0, num_groups).

  A row whose id is outside is unscorable under jit (concrete ids raise
  instead, `check_id_range`): estimators AND this into their scorable rows,
  so the row gets advantage 0 and is left out of every group and batch
  statistic, as a row with a non-finite score is.

  Examples:
    >>> import jax.numpy as jnp
    >>> from cajax import groups
    >>> groups.in_range(jnp.array([0, 2, -1, 1]), 2).tolist()
    [True, False, False, True]
  """
  return (group_ids >= 0) & (group_ids < num_groups)


def check_id_range(group_ids: ArrayLike, num_groups: int,
                   name: str = "group_ids",
                   count_name: str = "num_groups") -> None:
  """Checks ids lie in [0, num_groups): concrete ids now, traced ids under
  `checkify`.

  Traced ids cannot raise inside `jax.jit`; the estimators treat a row with
  an out-of-range id as unscorable (`in_range`). The range is also checked
  with `checkify.debug_check`, a no-op unless the caller's function runs
  under `jax.experimental.checkify.checkify` (`cajax.checkify_estimate`).

  Raises:
    ValueError: naming the offending concrete ids.
  """
  if _checks.is_traced(group_ids):
    ids = jnp.reshape(group_ids, (-1,))
    bad = ~in_range(ids, num_groups)
    first = jnp.argmax(bad)
    checkify.debug_check(
        ~jnp.any(bad), f"{name} must lie in [0, {count_name}={num_groups}), "
        f"got {{id}} at index {{index}}; set {count_name} to the number of "
        f"groups (out of jit this raises a ValueError).", id=ids[first],
        index=first)
    return
  ids = np.asarray(group_ids)
  bad = ids[(ids < 0) | (ids >= num_groups)]
  if bad.size:
    raise ValueError(
        f"{name} must lie in [0, {count_name}={num_groups}), got "
        f"{sorted(set(bad.reshape(-1).tolist()))[:8]}; set {count_name} to "
        f"the number of groups.")


def check_group_ids(group_ids: ArrayLike, batch: int, num_groups: int, *,
                    name: str = "group_ids", count_name: str = "num_groups",
                    like: str | None = None) -> jax.Array:
  """Checks `int[B]` row group ids for a batch of B rows; returns int32.

  Concrete ids are also checked to lie in [0, num_groups); traced ones
  only under checkify (see `check_id_range`; the caller makes rows with
  out-of-range ids unscorable with `in_range`).

  Args:
    group_ids: int[B] group of each row.
    batch: B.
    num_groups: static number of groups.
    name: the caller's name for `group_ids` (e.g. "sibling_ids").
    count_name: the caller's name for `num_groups` (e.g. "num_branches").
    like: what fixes the batch size, for error messages (default "the B
      rows of mask": every caller takes B from its mask).

  Raises:
    ValueError: `group_ids` is not an integer `[batch]` array, holds
      concrete ids outside [0, num_groups), or `num_groups` is not a static
      positive int.
  """
  _checks.check_shape(group_ids, (batch,), name,
                      like=like or f"the {batch} rows of mask")
  num_groups = _checks.check_positive_int(num_groups, count_name)
  ids = _checks.as_int(group_ids, name)
  check_id_range(group_ids, num_groups, name, count_name)
  return ids


def check_batch_groups(
    mask: ArrayLike, group_ids: ArrayLike, num_groups: int, *,
    name: str = "group_ids",
    count_name: str = "num_groups") -> tuple[jax.Array, jax.Array, int]:
  """Checks a `[B, T]` mask with its `int[B]` group ids and group count.

  Args:
    mask: bool[B, T] valid tokens.
    group_ids: int[B] group of each row.
    num_groups: static number of groups.
    name: the caller's name for `group_ids`.
    count_name: the caller's name for `num_groups`.

  Returns:
    (mask as bool, group_ids as int32, num_groups as int).

  Raises:
    ValueError: bad rank, shape, dtype or `num_groups`.
  """
  batch, _ = _checks.check_batch(mask)
  group_ids = check_group_ids(group_ids, batch, num_groups, name=name,
                              count_name=count_name,
                              like=f"mask {tuple(jnp.shape(mask))}")
  return _checks.as_mask(mask), group_ids, int(num_groups)


def group_sum(values: ArrayLike, group_ids: ArrayLike, num_groups: int,
              valid: ArrayLike | None = None) -> jax.Array:
  """Σ of valid `values[B]` within each group, `f32[num_groups]`."""
  values, group_ids, num_groups, valid = _check_groups(
      values, group_ids, num_groups, valid)
  return jax.ops.segment_sum(jnp.where(valid, values, 0.0), group_ids,
                             num_segments=num_groups)


def group_moments(values: ArrayLike, group_ids: ArrayLike, num_groups: int,
                  valid: ArrayLike | None = None,
                  ddof: int = 1) -> GroupMoments:
  """Count, mean and two-pass standard deviation of each group.

  μ_g = Σ_{b∈g} s_b / n_g,  σ_g = sqrt(Σ_{b∈g} (s_b − μ_g)² / (n_g − ddof)).

  Both passes run on scores shifted by the group's max, and the second pass
  is centred, so equal scores give a std of exactly 0 (the one-pass
  sqrt(E[s²] − E[s]²) leaves ~1e-4 of residue there in float32, which a
  following 1/(σ + ε) turns into a huge advantage). Deviations are divided
  by the group's largest one before squaring, so scores of any finite scale
  (1e-30 to 1e30) give exact statistics, neither overflowing nor
  underflowing.

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
  moments, _ = _moments(values, group_ids, num_groups, valid, ddof)
  return moments


def _moments(values, group_ids, num_groups, valid, ddof,
             by_position: bool = False):
  """`GroupMoments` and the per-group spread of checked inputs.

  `values` and `valid` are `[N]`, or `[N, R]` with `group_ids[N]`: each row
  is reduced first, so the segment ops run over N rows, not N·R entries
  (XLA CPU scatters are serial per update). With `by_position` the R
  columns keep separate statistics (fields `[num_groups, R]`), summed over
  the rows of each group by whole-row scatters. The spread is
  Σ((s − μ_g)/a_g)² in units of the group's largest deviation a_g: exactly
  0 iff the group's valid values are all equal (see
  `masking.reduced_moments`, which also keeps 1e30- and 1e-30-scaled values
  from overflowing or underflowing).
  """
  rowwise = values.ndim == 2 and not by_position

  def total(x):
    return jax.ops.segment_sum(jnp.sum(x, axis=1) if rowwise else x,
                               group_ids, num_segments=num_groups)

  def peak(x):
    return jax.ops.segment_max(jnp.max(x, axis=1) if rowwise else x,
                               group_ids, num_segments=num_groups)

  def per_entry(g):
    g = g[group_ids]
    return g[:, None] if rowwise else g

  moments = masking.reduced_moments(values, valid, total, peak, per_entry,
                                    ddof)
  return GroupMoments(count=moments.count, mean=moments.mean,
                      std=moments.std), moments.spread


def batch_moments(values: ArrayLike, valid: ArrayLike | None = None,
                  ddof: int = 1) -> GroupMoments:
  """`group_moments` with every row in one group; fields are scalars."""
  group_ids = jnp.zeros(jnp.shape(values), jnp.int32)
  moments = group_moments(values, group_ids, 1, valid=valid, ddof=ddof)
  return GroupMoments(*(field[0] for field in moments))


def group_max(values: ArrayLike, group_ids: ArrayLike, num_groups: int,
              valid: ArrayLike | None = None) -> jax.Array:
  """Max of valid values per group; -inf for a group with no valid row."""
  values, group_ids, num_groups, valid = _check_groups(
      values, group_ids, num_groups, valid)
  return jax.ops.segment_max(jnp.where(valid, values, -jnp.inf), group_ids,
                             num_segments=num_groups)


NORMALIZE_MODES = ("std", "mean", "rloo")
SINGLETONS = ("raw", "keep", "zero")


def group_normalize(values: ArrayLike, group_ids: ArrayLike, num_groups: int,
                    valid: ArrayLike | None = None, *, mode: str = "std",
                    eps: float = 1e-6, ddof: int = 1, singleton: str = "raw",
                    population: ArrayLike | None = None,
                    by_position: bool = False) -> jax.Array:
  """Normalises every entry by the statistics of its group (GRPO family).

    mode="std":   Â_i = (x_i − μ_g)/(σ_g + ε)              (GRPO)
    mode="mean":  Â_i = x_i − μ_g                          (Dr.GRPO)
    mode="rloo":  Â_i = (x_i − μ_g)·n_g/(n_g − 1)
                      = x_i − mean_{j∈g, j≠i} x_j           (RLOO)

  μ_g, σ_g (two-pass, `ddof`) and n_g are taken over the *population*
  entries of group g (default: the valid ones). The result is evaluated at
  every valid entry; invalid entries (e.g. unscorable rows) get exactly 0,
  and so do entries whose (traced) id is outside [0, num_groups), which
  take part in no statistic.

  Edge cases:
    * a group with n_g ≤ 1 is a singleton: `singleton="raw"` uses verl's
      μ_g := 0, σ_g := 1 (so Â = x/(1+ε) in "std", x otherwise),
      `"keep"` passes x through unchanged in every mode, `"zero"` gives 0;
    * a group with n_g ≥ 2 whose population values are all equal gives
      exactly 0 at its population entries (never the rounding residue of
      Σx/n divided by ε).

  `values` may have trailing axes beyond those of `group_ids`: an entry
  `values[b, ...]` belongs to group `group_ids[b]` (e.g. every step of row
  b). Give `group_ids` the full shape of `values` for finer segments, or
  set `by_position` to key the statistics by (group, trailing index): entry
  `values[b, k]` is then normalised among the entries `values[b', k]` of
  the rows b' of its group (per-turn or per-step-index baselines), which is
  `group_ids[b]·K + k` as full-shape ids, computed without B·K segments.

  See "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
  Language Models" (Shao et al., arXiv:2402.03300) and "Back to Basics:
  Revisiting REINFORCE Style Optimization for Learning from Human Feedback
  in LLMs" (Ahmadian et al., arXiv:2402.14740).

  Args:
    values: f[B, ...] values (bf16/f16/f32/int, computed in f32).
    group_ids: int[B, ...] in [0, num_groups), a leading-axes prefix of the
      shape of `values`.
    num_groups: static number of groups.
    valid: optional bool like `values`, entries that receive a result.
    mode: one of `NORMALIZE_MODES`.
    eps: added to σ_g in mode "std".
    ddof: delta degrees of freedom of σ_g (1: torch/verl, 0: biased).
    singleton: one of `SINGLETONS`.
    population: optional bool like `values`, the entries behind the
      statistics (default `valid`); e.g. a first-row baseline.
    by_position: separate statistics for each trailing index (see above);
      needs `group_ids` of fewer dimensions than `values`.

  Returns:
    f32 array shaped like `values`.

  Raises:
    ValueError: bad shapes or dtypes, a non-static `num_groups`, a negative
      or non-int `ddof`, or an unknown option.
  """
  _checks.check_choice(mode, NORMALIZE_MODES, "mode")
  _checks.check_choice(singleton, SINGLETONS, "singleton")
  ddof = _checks.check_int(ddof, "ddof", low=0)
  eps = _checks.check_number(eps, "eps", low=0.0)
  shape = tuple(jnp.shape(values))
  ids_shape = tuple(jnp.shape(group_ids))
  if not ids_shape or ids_shape != shape[:len(ids_shape)]:
    raise ValueError(f"group_ids must have a leading prefix of the shape of "
                     f"values {shape}, got {ids_shape}.")
  if by_position and len(ids_shape) == len(shape):
    raise ValueError(f"by_position needs trailing axes: group_ids shape "
                     f"{ids_shape} is the shape of values.")
  ids = _checks.as_int(group_ids, "group_ids").reshape(-1)
  # [N, R]: N = entries of group_ids, R = trailing entries sharing a group.
  rows = (ids.shape[0], -1)
  masks = []
  for name, m in (("valid", valid), ("population", population)):
    if m is not None:
      _checks.check_shape(m, shape, name, like=f"values {shape}")
      m = _checks.as_mask(m, name).reshape(rows)
    masks.append(m)
  flat_valid, flat_population = masks
  if flat_valid is None:
    flat_valid = jnp.ones(shape, bool).reshape(rows)
  if flat_population is None:
    flat_population = flat_valid
  num_groups = _checks.check_positive_int(num_groups, "num_groups")
  check_id_range(group_ids, num_groups)
  # Entries of out-of-range (traced) ids are in no group: no result, and
  # the segment ops below already leave them out of the statistics.
  known = in_range(ids, num_groups)[:, None]
  flat_valid, flat_population = flat_valid & known, flat_population & known
  x = _checks.as_float(values, "values").reshape(rows)
  x = jnp.where(flat_valid | flat_population, x, 0.0)
  moments, sq = _moments(x, ids, num_groups, flat_population, ddof,
                         by_position)
  if not by_position:
    ids = ids[:, None]
  count = moments.count[ids]
  single = count <= 1
  centred = x - moments.mean[ids]
  if mode == "std":
    out = centred / (moments.std[ids] + eps)
    raw = x / (1.0 + eps)
  elif mode == "rloo":
    out = centred * (count / jnp.where(single, 1.0, count - 1.0))
    raw = x
  else:
    out = centred
    raw = x
  out = jnp.where(flat_population & (sq[ids] == 0), 0.0, out)
  if singleton == "raw":
    out = jnp.where(single, raw, out)
  elif singleton == "keep":
    out = jnp.where(single, x, out)
  else:
    out = jnp.where(single, 0.0, out)
  return jnp.where(flat_valid, out, 0.0).reshape(shape)


def flat_segment_ids(slots: ArrayLike, keep: ArrayLike, num_slots: int,
                     rows: ArrayLike | None = None,
                     num_rows: int | None = None) -> jax.Array:
  """Flat ids `rows·num_slots + slots` of (row, slot) pairs, for scatters.

  Entries where `keep` is False get `num_rows·num_slots`, one past the last
  segment: scatters with `mode="drop"` ignore them and segment sums can give
  them a segment of their own. Flat 1-D ids scatter several times faster on
  XLA:CPU than [row, slot] index pairs (docs/performance.md).

  Args:
    slots: int[B, T] slot of each entry (a step, a turn, a position).
    keep: bool[B, T] entries that take part.
    num_slots: static number of slots per row.
    rows: int[B, 1] or int[B, T] row of each entry (default: its row index,
      so the segments are (row, slot) pairs); a group id makes them (group,
      slot) pairs.
    num_rows: static number of rows (default: B).

  Returns:
    int32[B, T] flat ids in [0, num_rows·num_slots].

  Examples:
    >>> import jax.numpy as jnp
    >>> from cajax import groups
    >>> slots = jnp.array([[0, 1, 1], [0, 0, -1]])
    >>> groups.flat_segment_ids(slots, slots >= 0, num_slots=2).tolist()
    [[0, 1, 1], [2, 2, 4]]
  """
  batch = keep.shape[0]
  if rows is None:
    rows, num_rows = jnp.arange(batch, dtype=jnp.int32)[:, None], batch
  return jnp.where(keep, rows * num_slots + slots,
                   num_rows * num_slots).astype(jnp.int32)
