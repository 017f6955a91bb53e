"""Descriptive readings of an ablation's runs: per arm, beside the claims.

A `spec.Reading` names a number the report gives for every arm (when
hacking sets in, the final accuracy, pass@G, entropy at matched accuracy,
...), computed for every seed and summarised as the mean over the seeds
that have one. Readings are pre-registered with the claims but never
tested: they describe the mechanism, the claims decide.
"""

import math

import numpy as np

from experiments.ablation import reductions

__all__ = [
    "compute", "table",
]


def _value(reading, run: dict, level: float) -> float:
  if reading.kind == "final":
    return reductions.reduce(run, reading.metric, reading.reduce,
                             tail=reading.tail)
  if reading.kind == "onset":
    return reductions.onset(run, reading.metric, margin=reading.margin,
                            window=reading.window, rising=reading.rising)
  return reductions.at_level(run, reading.metric, reading.level_metric,
                             level, window=reading.window)


def _common_level(reading, results: dict) -> float:
  """The highest trailing level of `level_metric` every run reaches."""
  levels = [reductions.highest_level(run, reading.level_metric,
                                     window=reading.window)
            for runs in results.values() for run in runs.values()]
  levels = [x for x in levels if math.isfinite(x)]
  return min(levels) if levels else math.nan


def compute(ablation, results: dict) -> list[dict]:
  """Every reading of `ablation` on `results` ({arm: {seed: run}}): a dict
  per reading with its fields, the level used ("at_level") and
  {"values": {arm: {seed: value}}} (NaN: none, e.g. no onset)."""
  out = []
  for reading in ablation.readings:
    level = (reading.level if reading.level is not None
             else _common_level(reading, results))
    values = {arm: {seed: _value(reading, run, level)
                    for seed, run in sorted(results.get(arm, {}).items())}
              for arm in ablation.arms}
    out.append({"name": reading.name, "metric": reading.metric,
                "kind": reading.kind, "level": level, "values": values})
  return out


def _describe(reading) -> str:
  if reading.kind == "final":
    return f"`{reading.metric}` ({reading.reduce})"
  if reading.kind == "onset":
    way = "rises" if reading.rising else "falls"
    return (f"first step where the {reading.window}-step mean of "
            f"`{reading.metric}` {way} by more than {reading.margin:g} from "
            f"its start")
  return (f"{reading.window}-step mean of `{reading.metric}` when that of "
          f"`{reading.level_metric}` first reaches {{level}}")


def _cell(values: dict) -> str:
  finite = [v for v in values.values() if math.isfinite(v)]
  if not finite:
    return f"none (0/{len(values)})"
  return f"{np.mean(finite):.3g} ({len(finite)}/{len(values)})"


def table(ablation, computed: list[dict]) -> list[str]:
  """Markdown: what each reading is, then one row per arm (mean over the
  seeds that have a value, and how many of them do)."""
  if not computed:
    return []
  lines = ["## Readings (described, not tested)", ""]
  for reading, c in zip(ablation.readings, computed):
    text = _describe(reading).replace("{level}", f"{c['level']:.3g}")
    lines.append(f"- **{reading.name}**: {text}.")
  lines += ["", "| arm | " + " | ".join(c["name"] for c in computed) + " |",
            "|---|" + "---|" * len(computed)]
  for arm in ablation.arms:
    lines.append(f"| {arm} | " + " | ".join(
        _cell(c["values"][arm]) for c in computed) + " |")
  return lines + [""]
