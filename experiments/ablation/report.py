"""Evidence of an ablation: results.json, plots and report.md with verdicts.

Verdict rule (fixed before any run, the same for every claim): for each
seed s, d_s = m(arm) − m(baseline) with m the claim's reduced metric, signed
so that positive means the direction the paper reports. With n seeds, the
95% interval is mean(d) ± t_{0.975, n−1} · sd(d)/√n. The claim is
"reproduced" when the interval lies above 0, "not reproduced" when it lies
below 0 (the opposite direction), and "inconclusive" otherwise, and always
with fewer than 3 seeds (two seeds can agree by chance) or a zero-width
interval (the same difference in every seed: the metric's resolution, such
as one evaluation problem, not a measured spread).
"""

import json
import math
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from scipy import stats

from experiments.rl import metrics as metrics_lib

__all__ = [
    "MIN_SEEDS", "collect", "judge", "plot", "reduce_metric", "series",
    "verdict", "write",
]

MIN_SEEDS = 3


def collect(runs) -> dict:
  """{arm: {seed: {"eval": records, "train": records}}} of finished runs."""
  out = {}
  for run in runs:
    arm, seed = run.config_arg.split(",")[:2]
    records = {}
    for source in ("eval", "train"):
      path = os.path.join(run.workdir, f"{source}_metrics.jsonl")
      records[source] = (metrics_lib.read_jsonl(path)
                         if os.path.exists(path) else [])
    out.setdefault(arm, {})[int(seed)] = records
  return out


def series(run: dict, metric: str) -> list[tuple[float, float]]:
  """(samples seen, value) of a metric by its full key: keys starting with
  `eval/` are read from the eval records, all others from the train
  records."""
  source = "eval" if metric.startswith("eval/") else "train"
  return [(r["samples_seen"], r[metric]) for r in run[source]
          if r.get(metric) is not None]


def reduce_metric(run: dict, claim: dict) -> float:
  """One number per run: the claim's metric, reduced as it says."""
  values = series(run, claim["metric"])
  if not values:
    return float("nan")
  if claim["reduce"] == "final":
    k = int(claim.get("last_k", 1))
    return float(np.mean([v for _, v in values[-k:]]))
  if claim["reduce"] == "samples_to_target":
    budget = values[-1][0]
    for seen, v in values:
      if v >= claim["target"]:
        return float(seen)
    return float(budget + 1)
  raise ValueError(f"unknown reduce {claim['reduce']!r}.")


def verdict(differences: list[float]) -> dict:
  """The rule of the module docstring on paired, direction-signed d_s."""
  d = np.asarray([x for x in differences if np.isfinite(x)], np.float64)
  n = d.size
  if n < 2:
    mean = float(d.mean()) if n else float("nan")
    return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": n,
            "verdict": "inconclusive"}
  half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
  low, high = d.mean() - half, d.mean() + half
  # Identical differences in every seed (a zero-width interval) come from
  # the metric's resolution (one problem of the evaluation set), not from
  # a measured spread: no evidence either way.
  word = ("inconclusive" if n < MIN_SEEDS or high == low else
          "reproduced" if low > 0 else
          "not reproduced" if high < 0 else "inconclusive")
  return {"mean": float(d.mean()), "low": float(low), "high": float(high),
          "n": n, "verdict": word}


def judge(claim: dict, results: dict) -> dict:
  """Per-arm values and the verdict of one claim."""
  sign = 1.0 if claim["better"] == "higher" else -1.0
  arm, base = results.get(claim["arm"], {}), results.get(claim["baseline"],
                                                         {})
  per_arm = {name: {s: reduce_metric(r, claim) for s, r in runs.items()}
             for name, runs in ((claim["arm"], arm),
                                (claim["baseline"], base))}
  seeds = sorted(set(per_arm[claim["arm"]]) & set(per_arm[claim["baseline"]]))
  diffs = [sign * (per_arm[claim["arm"]][s] - per_arm[claim["baseline"]][s])
           for s in seeds]
  return {**dict(claim), "values": per_arm, **verdict(diffs)}


def _mean_interval(values: np.ndarray):
  n = values.shape[0]
  mean = values.mean(0)
  if n < 2:
    return mean, mean, mean
  half = stats.t.ppf(0.975, n - 1) * values.std(0, ddof=1) / math.sqrt(n)
  return mean, mean - half, mean + half


def plot(results: dict, metrics: list[str], path: str, title: str) -> None:
  """Mean and 95% interval over seeds of each metric vs samples seen."""
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4),
                           squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for arm, runs in results.items():
      curves = [series(run, metric) for run in runs.values()]
      curves = [c for c in curves if c]
      if not curves:
        continue
      length = min(len(c) for c in curves)
      x = np.asarray([p[0] for p in curves[0][:length]], np.float64)
      y = np.asarray([[p[1] for p in c[:length]] for c in curves], np.float64)
      mean, low, high = _mean_interval(y)
      ax.plot(x, mean, label=arm)
      ax.fill_between(x, low, high, alpha=0.2)
    ax.set_xlabel("samples seen")
    ax.set_title(metric)
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _fmt(x: float) -> str:
  return "n/a" if not np.isfinite(x) else f"{x:.3g}"


def write(ablation, results: dict, judged: list[dict], outdir: str, *,
          size: str, seeds: int, command: str, machine: str) -> None:
  """results.json and report.md under `outdir` (plots written separately)."""
  with open(os.path.join(outdir, "results.json"), "w", encoding="utf-8") as f:
    json.dump({"ablation": ablation.name, "size": size, "seeds": seeds,
               "arms": results, "claims": judged}, f, indent=1, default=float)
  plural = "s" * (seeds != 1)
  lines = [f"# Ablation `{ablation.name}` ({size} size, {seeds} seed{plural})",
           "",
           ablation.description, "", f"Command: `{command}`  ",
           f"Machine: {machine}", "",
           "Verdict rule: per seed, d = metric(arm) − metric(baseline), "
           "signed so that > 0 is the paper's direction; 95% t-interval "
           "over seeds; reproduced if it lies above 0, not reproduced if "
           "below 0, inconclusive otherwise, with fewer than "
           f"{MIN_SEEDS} seeds or with a zero-width interval.", "",
           "| claim | paper | metric | arm | baseline | arm mean | "
           "baseline mean | d (95% interval) | verdict |",
           "|---|---|---|---|---|---|---|---|---|"]
  for c in judged:
    arm_mean = np.nanmean(list(c["values"][c["arm"]].values()) or [np.nan])
    base_mean = np.nanmean(list(c["values"][c["baseline"]].values())
                           or [np.nan])
    lines.append(
        f"| {c['name']} | {c['paper']} | {c['metric']} ({c['reduce']}) | "
        f"{c['arm']} | {c['baseline']} | {_fmt(arm_mean)} | "
        f"{_fmt(base_mean)} | {_fmt(c['mean'])} [{_fmt(c['low'])}, "
        f"{_fmt(c['high'])}] | **{c['verdict']}** |")
  lines += ["", f"![curves]({ablation.name}_curves.png)", "",
            f"![advantages]({ablation.name}_advantages.png)", ""]
  with open(os.path.join(outdir, "report.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
