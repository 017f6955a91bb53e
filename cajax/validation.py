"""Host-side value checks that cannot run inside `jax.jit`.

`validate(rollouts)` looks at the values (not just the shapes) of a concrete
batch and raises one `ValueError` listing every problem it finds. Call it
once per batch outside the jitted step, e.g. in a data pipeline or a test.
"""

import numpy as np

from cajax import types

# Fields whose NaN entries carry meaning (an unscorable row) rather than
# signalling a bug.
_NAN_ALLOWED = ("token_rewards",)


def validate(rollouts: types.Rollouts) -> types.Rollouts:
  """Checks values of a concrete `Rollouts`; returns it unchanged.

  Checks: `mask` and `step_mask` are bool (or 0/1 numbers); `group_ids` are
  integers in [0, num_groups) and every group referenced; `step_ids` are
  integers ≥ −1 and < S when `step_rewards` is given; no NaN or inf in any
  float field (NaN is allowed in `token_rewards`, where it marks an
  unscorable row, but inf is not); shapes agree with `mask`.

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
  for name in ("token_rewards", "values", "old_logprobs", "ref_logprobs",
               "logprobs", "entropy", "self_certainty", "token_logits",
               "sum_pi_squared", "step_ids"):
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
  if rollouts.step_mask is not None:
    check_mask("step_mask", np.asarray(rollouts.step_mask))
    if rollouts.step_rewards is not None and np.shape(
        rollouts.step_mask) != np.shape(rollouts.step_rewards):
      problems.append(
          f"rollouts.step_mask has shape {np.shape(rollouts.step_mask)} but "
          f"step_rewards has {np.shape(rollouts.step_rewards)}.")
  for name in ("token_rewards", "values", "old_logprobs", "ref_logprobs",
               "logprobs", "entropy", "self_certainty", "token_logits",
               "sum_pi_squared", "step_rewards", "reward_components",
               "baseline_scores"):
    value = getattr(rollouts, name)
    if value is None:
      continue
    value = np.asarray(value, dtype=np.float64)
    if np.isinf(value).any():
      problems.append(f"rollouts.{name} contains inf.")
    if name not in _NAN_ALLOWED and np.isnan(value).any():
      problems.append(f"rollouts.{name} contains NaN.")
  if problems:
    raise ValueError("invalid rollouts:\n  " + "\n  ".join(problems))
  return rollouts
