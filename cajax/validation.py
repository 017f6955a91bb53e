"""Host-side value checks that cannot run inside `jax.jit`.

`validate(rollouts)` looks at the values (not just the shapes) of a concrete
batch and raises one `ValueError` listing every problem it finds. Call it
once per batch outside the jitted step, e.g. in a data pipeline or a test.
"""

import numpy as np

from cajax import types

__all__ = ["validate"]


def validate(rollouts: types.Rollouts) -> types.Rollouts:
  """Checks values of a concrete `Rollouts`; returns it unchanged.

  Checks: `mask` and `step_mask` are bool (or 0/1 numbers); `group_ids` are
  integers in [0, num_groups) and every group referenced; `step_ids` are
  integers ≥ −1 and < S when `step_rewards` is given, never decrease along
  a row and each step is one contiguous run of the row's valid tokens (the
  estimators count a step's tokens and find its first step in time from
  that); every field has the batch size and shape it needs (`[B, T]` like
  `mask`, `[B, S]` step arrays, `[B, K]` reward components, `[B]` baseline
  scores); no NaN or inf in any float field. NaN is allowed in the score
  fields (`token_rewards`, `step_rewards`, `reward_components`,
  `baseline_scores`), where it marks an unscorable row (a missing component
  for `gdpo`); inf is reported everywhere (the estimators would treat it
  like NaN, but an infinite score is almost always a bug).

  Raises:
    ValueError: listing every problem found.
  """
  problems = []
  mask = np.asarray(rollouts.mask)
  if mask.ndim != 2:
    raise ValueError(f"rollouts.mask must have rank 2, got shape "
                     f"{mask.shape}.")
  batch, length = mask.shape

  def check_mask(name, value):
    if value.dtype != np.bool_:
      if not np.all((value == 0) | (value == 1)):
        problems.append(f"rollouts.{name} has dtype {value.dtype} with "
                        f"values other than 0/1; pass a bool mask.")

  check_mask("mask", mask)
  for name in types.TOKEN_FLOAT_FIELDS + ("step_ids",):
    value = getattr(rollouts, name)
    if value is not None and np.shape(value) != (batch, length):
      problems.append(f"rollouts.{name} has shape {np.shape(value)}, "
                      f"expected {(batch, length)} like rollouts.mask.")
  if rollouts.group_ids is not None:
    ids = np.asarray(rollouts.group_ids)
    if ids.shape != (batch,):
      problems.append(f"rollouts.group_ids has shape {ids.shape}, expected "
                      f"({batch},).")
    elif not np.issubdtype(ids.dtype, np.integer):
      problems.append(f"rollouts.group_ids has dtype {ids.dtype}; use int32.")
    else:
      bad = ids[(ids < 0) | (ids >= rollouts.num_groups)]
      if bad.size:
        problems.append(
            f"rollouts.group_ids has values {sorted(set(bad.tolist()))[:8]} "
            f"outside [0, num_groups={rollouts.num_groups}).")
      unused = sorted(set(range(rollouts.num_groups)) - set(ids.tolist()))
      if unused:
        problems.append(
            f"groups {unused[:8]} of num_groups={rollouts.num_groups} have "
            f"no row; num_groups is probably too large.")
  if rollouts.step_ids is not None:
    step_ids = np.asarray(rollouts.step_ids)
    if not np.issubdtype(step_ids.dtype, np.integer):
      problems.append(f"rollouts.step_ids has dtype {step_ids.dtype}; use "
                      f"int32.")
    elif step_ids.size and step_ids.min() < -1:
      problems.append("rollouts.step_ids has values below -1.")
    elif rollouts.step_rewards is not None and step_ids.size and (
        step_ids.max() >= np.shape(rollouts.step_rewards)[-1]):
      problems.append(
          f"rollouts.step_ids reaches {step_ids.max()} but step_rewards has "
          f"only {np.shape(rollouts.step_rewards)[-1]} steps.")
    elif step_ids.shape == mask.shape:
      problems.extend(_step_order_problems(step_ids, mask != 0))
  for name, expected in (("step_rewards", f"({batch}, S)"),
                         ("step_mask", f"({batch}, S)"),
                         ("reward_components", f"({batch}, K)"),
                         ("baseline_scores", f"({batch},)")):
    value = getattr(rollouts, name)
    shape = None if value is None else np.shape(value)
    if shape is not None and (len(shape) != expected.count(",") + (
        name != "baseline_scores") or shape[0] != batch):
      problems.append(f"rollouts.{name} has shape {shape}, expected "
                      f"{expected} (a batch of {batch} rows like "
                      f"rollouts.mask).")
  if rollouts.step_mask is not None:
    check_mask("step_mask", np.asarray(rollouts.step_mask))
    if rollouts.step_rewards is not None and np.shape(
        rollouts.step_mask) != np.shape(rollouts.step_rewards):
      problems.append(
          f"rollouts.step_mask has shape {np.shape(rollouts.step_mask)} but "
          f"step_rewards has {np.shape(rollouts.step_rewards)}.")
  for name in types.FLOAT_FIELDS:
    value = getattr(rollouts, name)
    if value is None:
      continue
    value = np.asarray(value, dtype=np.float64)
    if np.isinf(value).any():
      problems.append(f"rollouts.{name} contains inf.")
    if name not in types.SCORE_FIELDS and np.isnan(value).any():
      problems.append(f"rollouts.{name} contains NaN.")
  if problems:
    raise ValueError("invalid rollouts:\n  " + "\n  ".join(problems))
  return rollouts


def _step_order_problems(step_ids, mask) -> list[str]:
  """Rows whose steps decrease, or split into several runs, along the row.

  Only valid tokens inside a step (mask True, id ≥ 0) count: masked tokens
  and tokens outside any step may sit between the tokens of one step.
  """
  problems = []
  decreasing, split = [], []
  for row in range(step_ids.shape[0]):
    ids = step_ids[row][mask[row] & (step_ids[row] >= 0)]
    if ids.size < 2:
      continue
    if np.any(np.diff(ids) < 0):
      decreasing.append(row)
    starts = np.concatenate([[True], ids[1:] != ids[:-1]])
    if np.count_nonzero(starts) != np.unique(ids).size:
      split.append(row)
  if decreasing:
    problems.append(
        f"rollouts.step_ids decrease along rows {decreasing[:8]}; step ids "
        f"must not decrease in time (istar's first-step baseline takes the "
        f"lowest id).")
  if split:
    problems.append(
        f"rollouts.step_ids split a step into several runs of valid tokens "
        f"in rows {split[:8]}; each step must be one contiguous run (its "
        f"token count and end are read from that).")
  return problems
