"""Value checks of a batch: on the host, and inside `jax.jit` by checkify.

`validate(rollouts)` looks at the values (not just the shapes) of a concrete
batch and raises one `ValueError` listing every problem it finds. Call it
once per batch outside the jitted step, e.g. in a data pipeline or a test.
Told the estimator (`validate(rollouts, estimator="pure", **settings)`), it
also checks that the batch fits that estimator with those settings
(`estimator_problems`, which a training loop can call on its first step).

Inside `jax.jit` a value cannot raise: rows with out-of-range group ids are
unscorable, and the checks that would raise out of jit run only under
`jax.experimental.checkify` (`checkify_estimate`).
"""

from typing import Callable

import jax
from jax.experimental import checkify
import numpy as np

from cajax import _checks
from cajax import registry
from cajax import types

__all__ = [
    "MIN_KEPT_FRACTION", "checkify_estimate", "estimator_problems",
    "validate",
]

# pure / sum_form_prm with mask_step_end=True: below this fraction of valid
# tokens keeping a return, the step layout defeats the setting.
MIN_KEPT_FRACTION = 0.25
_STEP_END_ESTIMATORS = ("pure", "sum_form_prm")


def _check_host(rollouts, caller: str) -> None:
  """Refuses traced batches (a clear message instead of a tracer error)."""
  if not isinstance(rollouts, types.Rollouts):
    raise ValueError(f"{caller} takes a cajax.Rollouts, got "
                     f"{type(rollouts).__name__}.")
  if any(_checks.is_traced(leaf)
         for leaf in jax.tree_util.tree_leaves(rollouts)):
    raise ValueError(
        f"{caller} is a host-side check; call it outside jit (it reads the "
        f"values of a concrete batch). Inside a jitted step, wrap the step "
        f"in jax.experimental.checkify.checkify, or use "
        f"cajax.checkify_estimate.")


def validate(rollouts: types.Rollouts, estimator: str | None = None,
             **settings) -> types.Rollouts:
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

  With `estimator`, also every problem `estimator_problems(estimator,
  rollouts, **settings)` reports: unknown settings, missing fields, and
  step layouts under which the settings zero almost every advantage.

  Args:
    rollouts: a concrete batch (not traced: this is a host-side check).
    estimator: optional registered estimator name the batch is for.
    **settings: that estimator's keyword arguments (as for
      `cajax.estimate`).

  Raises:
    ValueError: listing every problem found; also when called on traced
      values (inside `jax.jit`).
  """
  _check_host(rollouts, "validate")
  if estimator is None and settings:
    raise ValueError(f"validate got estimator settings "
                     f"{sorted(settings)} without estimator=; name the "
                     f"estimator they are for.")
  problems = _rollouts_problems(rollouts)
  if estimator is not None:
    problems += estimator_problems(estimator, rollouts, **settings)
  if problems:
    raise ValueError("invalid rollouts:\n  " + "\n  ".join(problems))
  return rollouts


def _rollouts_problems(rollouts: types.Rollouts) -> list[str]:
  """The problems `validate` reports for the batch alone."""
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
  return problems


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
        f"must not decrease in time (the estimators read the steps' order "
        f"in time from their ids).")
  if split:
    problems.append(
        f"rollouts.step_ids split a step into several runs of valid tokens "
        f"in rows {split[:8]}; each step must be one contiguous run (its "
        f"token count and end are read from that).")
  return problems


def _setting(name: str, settings: dict, key: str):
  """`settings[key]`, else the default of the estimator's plain function."""
  return {**registry.ESTIMATORS[name].defaults, **settings}[key]


def estimator_problems(name: str, rollouts: types.Rollouts,
                       **settings) -> list[str]:
  """What keeps the estimator `name` from working on this concrete batch.

  Reports, as messages naming what to change: settings the estimator does
  not accept; `Rollouts` fields it reads that are None; for estimators
  that read steps, a batch in which no valid token belongs to a valid step
  (their step credit is 0 everywhere; `pure` and `sum_form_prm` without a
  verifiable reward give all-zero advantages); for `pure` and
  `sum_form_prm` with `mask_step_end=True` (their default), steps so short
  that fewer than `MIN_KEPT_FRACTION` of the valid tokens keep a non-zero
  return (on one-token steps none does: end each step with a separator
  token, or set `mask_step_end=False`).

  A training loop can call it on its first batch and warn or raise; the
  same messages make `validate(rollouts, estimator=name, **settings)` raise.

  Args:
    name: a registered estimator name.
    rollouts: a concrete batch.
    **settings: the estimator's keyword arguments.

  Returns:
    A list of messages, empty when the batch fits.

  Raises:
    ValueError: an unknown estimator name, or traced rollouts.

  Examples:
    >>> import numpy as np
    >>> import cajax
    >>> from cajax import validation
    >>> rollouts = cajax.Rollouts(
    ...     mask=np.ones((2, 3), bool), group_ids=np.array([0, 0]),
    ...     step_ids=np.array([[0, 1, 2], [0, 1, 2]]),
    ...     step_rewards=np.ones((2, 3), np.float32),
    ...     step_mask=np.ones((2, 3), bool), num_groups=1)
    >>> [m[:40] for m in validation.estimator_problems("pure", rollouts)]
    ["estimator 'pure' with mask_step_end=True"]
  """
  _check_host(rollouts, "estimator_problems")
  registry.ESTIMATORS.check(name, "estimator")
  problems = []
  try:
    registry.resolve(name, **settings)
  except ValueError as e:
    problems.append(str(e))
    accepted = registry.accepted_keywords(name)
    settings = {k: v for k, v in settings.items() if k in accepted}
  fields = registry.required_fields(name, **settings)
  missing = [f for f in fields if getattr(rollouts, f) is None]
  if missing:
    problems.append(f"estimator {name!r} reads rollouts."
                    f"{', rollouts.'.join(missing)}, which "
                    f"{'is' if len(missing) == 1 else 'are'} None.")
  elif "step_ids" in fields and np.shape(rollouts.step_ids) == np.shape(
      rollouts.mask):
    problems += _step_layout_problems(name, rollouts, settings, fields)
  return problems


def _steps_of(rollouts: types.Rollouts, settings: dict, fields):
  """bool[B, T] valid tokens inside a valid step, and ids, on the host."""
  mask = np.asarray(rollouts.mask) != 0
  ids = np.asarray(rollouts.step_ids)
  axis = rollouts.step_mask if rollouts.step_mask is not None else (
      rollouts.step_rewards)
  num_steps = settings.get("num_steps") or (
      np.shape(axis)[1] if axis is not None else mask.shape[1])
  inside = mask & (ids >= 0) & (ids < num_steps)
  if "step_mask" in fields and np.ndim(rollouts.step_mask) == 2:
    step_mask = np.asarray(rollouts.step_mask) != 0
    rows = np.arange(mask.shape[0])[:, None]
    inside &= step_mask[rows, np.clip(ids, 0, step_mask.shape[1] - 1)]
  return mask, ids, inside


def _step_layout_problems(name: str, rollouts: types.Rollouts,
                          settings: dict, fields) -> list[str]:
  """No valid step at all, or steps too short for `mask_step_end`."""
  mask, ids, inside = _steps_of(rollouts, settings, fields)
  if not inside.any():
    message = (f"estimator {name!r} reads steps, but no valid token of the "
               f"batch belongs to a valid step (step_ids in [0, S) with "
               f"step_mask True): its step credit is 0 on every token")
    if name in _STEP_END_ESTIMATORS:
      if _setting(name, settings, "verifiable_reward_coef") == 0 or (
          settings.get("verifiable_rewards") is None
          and rollouts.token_rewards is None):
        message += (", and without a verifiable reward every advantage is "
                    "0 (give rollouts.token_rewards or verifiable_rewards)")
      else:
        message += (f", so {name} is its leave-one-out verifiable reward "
                    f"alone (an outcome estimator)")
    return [message + "."]
  if name not in _STEP_END_ESTIMATORS or not _setting(
      name, settings, "mask_step_end"):
    return []
  zeroed = steps = 0
  for row in range(mask.shape[0]):
    positions = np.flatnonzero(inside[row])
    row_ids = ids[row, positions]
    # The step ends: the last token of each run of equal ids.
    ends = positions[np.append(row_ids[1:] != row_ids[:-1], True)
                     ] if positions.size else positions
    valid = np.flatnonzero(mask[row])
    zeroed += len(set(ends.tolist()) | set(valid[-1:].tolist()))
    steps += ends.size
  total = int(mask.sum())
  kept = (total - zeroed) / max(total, 1)
  if kept >= MIN_KEPT_FRACTION:
    return []
  return [
      f"estimator {name!r} with mask_step_end=True zeroes the return at "
      f"every step end and at each row's last token; with these steps "
      f"({int(inside.sum()) / max(steps, 1):.1f} valid tokens per step on "
      f"average) only {kept:.0%} of the valid tokens keep a non-zero "
      f"advantage. End each step with a separator token, or set "
      f"mask_step_end=False."]


def checkify_estimate(name: str, **settings) -> Callable:
  """`cajax.estimate(name, ·, **settings)` jitted, with its value checks.

  Inside `jax.jit` no value can raise. Out of jit, cajax raises a
  ValueError for: group ids (and `slate`'s sibling ids) outside [0,
  num_groups) (under jit such a row is unscorable instead), step ids that
  decrease along a row in the estimators that read the steps' order (under
  jit: undefined, finite advantages), and `pure` / `sum_form_prm` with
  neither step rewards nor a verifiable reward (under jit: all zeros).
  This function runs the estimator under `jax.experimental.checkify`,
  which turns those checks into a returned error.

  To check inside a larger jitted step instead, wrap that step:
  `jax.jit(checkify.checkify(step))`; every cajax function it calls runs
  the same checks (they are `checkify.debug_check`s, dropped, at no cost,
  outside checkify).

  Args:
    name: a registered estimator name.
    **settings: its static keyword arguments (bound, as in
      `functools.partial(cajax.estimate, name, **settings)`).

  Returns:
    A jitted `step(rollouts, **inputs) -> (checkify.Error, EstimatorOutput)`
    (`inputs`: method-specific arrays such as `critique_flags`);
    `error.throw()` raises `checkify.JaxRuntimeError` with the message of
    the first failed check, and does nothing when all passed.

  Raises:
    ValueError: an unknown name or setting.

  Examples:
    >>> import numpy as np
    >>> import cajax
    >>> step = cajax.checkify_estimate("grpo")
    >>> rollouts = cajax.Rollouts(
    ...     mask=np.ones((2, 1), bool), token_rewards=np.ones((2, 1)),
    ...     group_ids=np.array([0, 3]), num_groups=2)
    >>> error, out = step(rollouts)
    >>> print(error.get().split(";")[0])
    group_ids must lie in [0, num_groups=2), got 3 at index 1
  """
  resolved = registry.resolve(name, **settings)

  def run(rollouts, **inputs):
    return resolved.function(rollouts, **inputs)
  return jax.jit(checkify.checkify(run))
