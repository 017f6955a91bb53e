"""One number per run: a metric's curve reduced as a claim pre-registers.

A metric is named by its full key: keys starting with "eval/" are read from
the run's evaluation records, all others from its training-step records
(`rollout/accuracy`, `task/filler_steps`, ...). Each record is paired with
its `samples_seen`. Reductions:

* "train_tail": the mean over the last `tail` share of training steps
  (on-policy, free: thousands of samples at 25% of a run).
* "last_eval": the last evaluation's value.
* "eval_auc": the area under the evaluation curve over samples seen
  (trapezoids), divided by the range of samples seen: the curve's average
  height, which also rewards learning sooner.
* "samples_to_target": the samples seen when the trailing mean over
  `window` records first reaches `target`; the budget + 1 when it never does
  (censored).

`start` gives the value a within-arm claim compares against: the mean over
the first `tail` share of training steps, or the first evaluation.

Descriptive readings (reported per arm, never tested; `spec.Reading`):
`onset` (the training step at which a metric's trailing mean first moves
past its start by a margin: when hacking sets in) and `at_level` (a
metric's trailing mean at the first step where another one's reaches a
level: e.g. entropy at matched accuracy).

`ROBUSTNESS` lists the reductions each claim is also judged under. A train
key's evaluation counterpart is `eval/<name>` for `rollout/<name>` and
`eval/task/<name>` for `task/<name>`.
"""

import math

import numpy as np

__all__ = [
    "REDUCTIONS", "ROBUSTNESS", "at_level", "check", "counterpart",
    "highest_level", "onset", "reduce", "series", "source", "start",
]

REDUCTIONS = ("train_tail", "last_eval", "eval_auc", "samples_to_target")
ROBUSTNESS = ("last_eval", "train_tail", "eval_auc")
_EVAL = "eval/"
_NEEDS = {"train_tail": "train", "last_eval": "eval", "eval_auc": "eval"}


def source(key: str) -> str:
  """"eval" or "train": which records hold `key`."""
  return "eval" if key.startswith(_EVAL) else "train"


def check(metric: str, reduce: str) -> None:
  """Raises ValueError unless `reduce` is known and can read `metric`."""
  if reduce not in REDUCTIONS:
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}.")
  if not metric or "/" not in metric:
    raise ValueError(f"metric must be a full key such as 'rollout/accuracy'"
                     f" or 'eval/accuracy', got {metric!r}.")
  needed = _NEEDS.get(reduce)
  if needed and source(metric) != needed:
    raise ValueError(f"reduce={reduce!r} reads {needed} records, but metric "
                     f"{metric!r} is a {source(metric)} key.")


def counterpart(metric: str, reduce: str) -> str | None:
  """`metric`, or its counterpart in the records `reduce` reads (None when
  there is none: entropy and update statistics are never evaluated)."""
  needed = _NEEDS.get(reduce, source(metric))
  if source(metric) == needed:
    return metric
  if needed == "eval":
    for prefix, mapped in (("rollout/", _EVAL), ("task/", _EVAL + "task/")):
      if metric.startswith(prefix):
        return mapped + metric[len(prefix):]
    return None
  name = metric[len(_EVAL):]
  return name if name.startswith("task/") else "rollout/" + name


def series(run: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
  """(samples seen, values) of `key` in a run {"train": [...], "eval": [...]}
  (records without a finite value are skipped)."""
  points = [(r["samples_seen"], r[key]) for r in run.get(source(key), ())
            if r.get(key) is not None and math.isfinite(r[key])]
  if not points:
    return np.zeros(0), np.zeros(0)
  x, y = zip(*points)
  return np.asarray(x, np.float64), np.asarray(y, np.float64)


def reduce(run: dict, key: str, how: str, *, tail: float = 0.25,
           target: float | None = None, window: int = 1) -> float:
  """The run's `key` reduced by `how` (see the module docstring); NaN when
  the run has no value of `key`."""
  x, y = series(run, key)
  if not y.size:
    return math.nan
  if how == "train_tail":
    return float(y[-max(1, math.ceil(tail * y.size)):].mean())
  if how == "last_eval":
    return float(y[-1])
  if how == "eval_auc":
    if y.size == 1 or x[-1] == x[0]:
      return float(y.mean())
    area = np.sum((y[1:] + y[:-1]) / 2 * np.diff(x))
    return float(area / (x[-1] - x[0]))
  if how == "samples_to_target":
    if target is None:
      raise ValueError("samples_to_target needs a target.")
    if y.size < window:
      return float(x[-1] + 1)
    smooth = np.convolve(y, np.ones(window) / window, "valid")
    hits = np.flatnonzero(smooth >= target)
    return float(x[window - 1 + hits[0]] if hits.size else x[-1] + 1)
  raise ValueError(f"reduce must be one of {REDUCTIONS}, got {how!r}.")


def start(run: dict, key: str, *, tail: float = 0.25) -> float:
  """The run's `key` at its start (see the module docstring); NaN when the
  run has no value of `key`."""
  _, y = series(run, key)
  if not y.size:
    return math.nan
  if source(key) == "eval":
    return float(y[0])
  return float(y[:max(1, math.ceil(tail * y.size))].mean())


def _trailing(run: dict, key: str, window: int):
  """(steps, trailing means over `window` training records) of `key`."""
  points = [(r["step"], r[key]) for r in run.get("train", ())
            if r.get(key) is not None and math.isfinite(r[key])]
  if len(points) < window:
    return np.zeros(0), np.zeros(0)
  steps, values = (np.asarray(v, np.float64) for v in zip(*points))
  return (steps[window - 1:],
          np.convolve(values, np.ones(window) / window, "valid"))


def onset(run: dict, key: str, *, margin: float, window: int,
          rising: bool = True) -> float:
  """The first training step at which `key`'s trailing mean over `window`
  records exceeds (`rising`) or falls below its start, the mean of the
  first `window` records, by more than `margin`; NaN when it never does."""
  steps, smooth = _trailing(run, key, window)
  if not smooth.size:
    return math.nan
  moved = smooth - smooth[0] if rising else smooth[0] - smooth
  hits = np.flatnonzero(moved > margin)
  return float(steps[hits[0]]) if hits.size else math.nan


def highest_level(run: dict, key: str, *, window: int) -> float:
  """The highest trailing mean of `key` the run reaches (NaN: none)."""
  _, smooth = _trailing(run, key, window)
  return float(smooth.max()) if smooth.size else math.nan


def at_level(run: dict, key: str, level_key: str, level: float, *,
             window: int) -> float:
  """`key`'s trailing mean at the first training step where the trailing
  mean of `level_key` reaches `level` (NaN when it never does)."""
  steps, smooth = _trailing(run, level_key, window)
  hits = np.flatnonzero(smooth >= level)
  if not hits.size:
    return math.nan
  at, values = _trailing(run, key, window)
  match = np.flatnonzero(at == steps[hits[0]])
  return float(values[match[0]]) if match.size else math.nan
