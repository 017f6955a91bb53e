"""Evidence of an ablation: results.json, small-multiple plots, report.md.

One panel per claim shows only that claim's two arms, each arm in its own
colour throughout (one for a change
within an arm): a thin line per seed under the mean over seeds and its 95%
t-interval, the reduced stretches shaded ("train_tail", and the start a
within-arm claim compares against) or the target drawn. Training-step
curves are smoothed by a trailing mean over 5% of the steps (one step's
batch is only 64 samples); evaluation curves are drawn as recorded. The
report's verdict table links each row to its claim's section and panel.
"""

import json
import math
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from scipy import stats

from experiments.ablation import cost
from experiments.ablation import readings as readings_lib
from experiments.ablation import reductions
from experiments.ablation import spec
from experiments.rl import metrics as metrics_lib

__all__ = [
    "collect", "plot", "verifiable_shares", "write",
]

_SMOOTH_SHARE = 0.05


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


def _mean_interval(values: np.ndarray):
  n = values.shape[0]
  mean = values.mean(0)
  if n < 2:
    return mean, mean, mean
  half = stats.t.ppf(0.975, n - 1) * values.std(0, ddof=1) / math.sqrt(n)
  return mean, mean - half, mean + half


def _curves(results: dict, arm: str, key: str):
  """(x, [seeds, points]) of `key` over an arm's seeds, cut to the
  shortest run; train curves smoothed."""
  curves = [reductions.series(run, key)
            for _, run in sorted(results.get(arm, {}).items())]
  curves = [c for c in curves if c[1].size]
  if not curves:
    return None, None
  length = min(c[1].size for c in curves)
  x = curves[0][0][:length]
  y = np.stack([c[1][:length] for c in curves])
  width = max(1, int(_SMOOTH_SHARE * length))
  if reductions.source(key) == "train" and width > 1:
    kernel = np.ones(width) / width
    y = np.stack([np.convolve(np.pad(row, (width - 1, 0), mode="edge"),
                              kernel, "valid") for row in y])
  return x, y


def _panel(ax, results: dict, colors: dict, key: str, arms, title: str,
           claim=None):
  for index, arm in enumerate(arms):
    x, y = _curves(results, arm, key)
    if x is None:
      continue
    color = colors[arm]
    for row in y:
      ax.plot(x, row, color=color, lw=0.5, alpha=0.35)
    mean, low, high = _mean_interval(y)
    ax.plot(x, mean, color=color, lw=2, label=f"{arm} ({y.shape[0]} seeds)")
    ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)
    if claim is not None and claim.reduce == "train_tail" and index == 0:
      span = max(1, math.ceil(claim.tail * x.size))
      ax.axvspan(x[-span], x[-1], color="0.85", zorder=0)
      if claim.versus_start:
        ax.axvspan(x[0], x[span - 1], color="0.92", zorder=0)
  if claim is not None and claim.target is not None:
    ax.axhline(claim.target, color="0.4", ls="--", lw=1)
  ax.set_title(title, fontsize=9)
  ax.set_xlabel("samples seen", fontsize=8)
  ax.set_ylabel(key, fontsize=8)
  ax.tick_params(labelsize=7)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[1]:
    ax.legend(fontsize=7)


def _claim_title(number: int, judged: dict) -> str:
  return f"{number}. {judged['name']}: {judged['verdict']}"


def plot(ablation, results: dict, judged: list[dict], outdir: str) -> list:
  """One PNG per claim and one grid of every panel (claims, then the
  ablation's diagnostic metrics over every arm); returns the file names."""
  panels = [(c.metric, (c.arm,) if c.versus_start else (c.arm, c.baseline),
             _claim_title(i + 1, j), c)
            for i, (c, j) in enumerate(zip(ablation.claims, judged))]
  colors = {arm: f"C{i % 10}" for i, arm in enumerate(ablation.arms)}
  names = []
  for index, panel in enumerate(panels):
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    _panel(ax, results, colors, *panel)
    names.append(f"{ablation.name}_claim{index + 1}.png")
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, names[-1]), dpi=110)
    plt.close(fig)
  panels += [(key, tuple(ablation.arms), key, None)
             for key in ablation.plot_metrics]
  cols = min(3, len(panels))
  rows = math.ceil(len(panels) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.1 * rows),
                           squeeze=False)
  for ax, panel in zip(axes.flat, panels):
    _panel(ax, results, colors, *panel)
  for ax in axes.flat[len(panels):]:
    ax.axis("off")
  fig.tight_layout()
  names.append(f"{ablation.name}_curves.png")
  fig.savefig(os.path.join(outdir, names[-1]), dpi=100)
  plt.close(fig)
  return names


def _fmt(x) -> str:
  return "n/a" if x is None or not np.isfinite(x) else f"{x:.3g}"


def _mean(values: dict) -> float:
  finite = [v for v in values.values() if np.isfinite(v)]
  return float(np.mean(finite)) if finite else math.nan


_RULE = (
    "Verdict rule (pre-registered; docs/ablations.md): per seed, d = "
    "metric(arm) − metric(baseline), signed so that d > 0 is the paper's "
    "direction (non-inferiority claims test d + margin). **reproduced** / "
    "**not reproduced**: the adjusted p-value is below α, in / against the "
    "paper's direction; otherwise **underpowered** when the minimum "
    "detectable effect (MDE, 80% power) exceeds the smallest effect of "
    "interest, else **inconclusive**; fewer than 3 seeds or no spread are "
    "inconclusive. Secondary claims (marked *) are exploratory: unadjusted.")


def _table(ablation, judged: list[dict]) -> list[str]:
  lines = ["| # | claim | arm vs baseline | primary metric | arm | baseline |"
           " d (95% interval) | smallest effect | MDE | p adj. "
           f"({ablation.test}, {ablation.correction}) | sign-flip p | robust"
           " | verdict |", "|" + "---|" * 13]
  for number, c in enumerate(judged, 1):
    star = "" if c["primary"] else "*"
    robust = {True: "yes", None: "n/a"}.get(c["robust"], "no: " + ", ".join(
        f"{how} {o}" for how, o in c["robustness"].items()
        if o not in ("n/a", c["robustness_own"])))
    lines.append(
        f"| [{number}{star}](#claim-{number}) | {c['name']} | {c['arm']} vs "
        f"{'its start' if c['versus_start'] else c['baseline']} | "
        f"{c['metric']} ({c['reduce']}, {c['better']}) | "
        f"{_fmt(_mean(c['values']['arm']))} | "
        f"{_fmt(_mean(c['values']['baseline']))} | {_fmt(c['mean'])} "
        f"[{_fmt(c['low'])}, {_fmt(c['high'])}] | "
        f"{_fmt(c['smallest_effect'])}"
        f"{' (margin)' if c['kind'] == 'non_inferiority' else ''} | "
        f"{_fmt(c['mde'])} | {_fmt(c['p_adjusted'])} | "
        f"{_fmt(c['p_sign_flip'])} | {robust} | **{c['verdict']}** |")
  return lines


def _section(number: int, c: dict, image: str) -> list[str]:
  seeds = sorted(c["differences"], key=int)
  robustness = ", ".join(f"{how}: {o}" for how, o in c["robustness"].items())
  by_warm = ", ".join(f"warm start {w}: {_fmt(d)}"
                      for w, d in c["by_warm_start"].items())
  return [
      f'### <a id="claim-{number}"></a>{number}. {c["name"]}', "",
      f"Paper: {c['paper']}. Verdict: **{c['verdict']}** ({c['reason']}; "
      f"α = {_fmt(c['alpha_for_power'])} for the MDE).", "",
      f"Other reductions: {robustness or 'none'}.  ",
      f"Mean d per initial policy: {by_warm or 'n/a'}.  ",
      "Per seed (arm, baseline, d): " + "; ".join(
          f"s{s}: {_fmt(c['values']['arm'].get(s))}, "
          f"{_fmt(c['values']['baseline'].get(s))}, "
          f"{_fmt(c['differences'][s])}" for s in seeds) + ".", "",
      f"![claim {number}]({image})", ""]


def verifiable_shares(ablation, size: str) -> list[str]:
  """One line per arm whose estimator sees the outcome of only some
  groups: the exact share per step, rounding included."""
  lines = []
  for arm in ablation.arms:
    rl = spec.build_config(ablation, f"{arm},0,{size}").rl
    if rl.verifiable_fraction < 1:
      shown = math.ceil(rl.verifiable_fraction * rl.num_groups)
      lines.append(
          f"`{arm}`: rl.verifiable_fraction = {rl.verifiable_fraction:g}, "
          f"so ⌈{rl.verifiable_fraction:g} × {rl.num_groups}⌉ = {shown} of "
          f"{rl.num_groups} groups per step ({shown / rl.num_groups:.1%}) "
          f"carry the verifiable reward.")
  return lines


def write(ablation, results: dict, judged: list[dict], outdir: str, *,
          size: str, seeds: int, command: str, registration: dict,
          environment: dict, measured: dict, images: list[str]) -> None:
  """results.json and report.md under `outdir`."""
  computed = readings_lib.compute(ablation, results)
  shares = verifiable_shares(ablation, size)
  with open(os.path.join(outdir, "results.json"), "w", encoding="utf-8") as f:
    json.dump({"ablation": ablation.name, "version": ablation.version,
               "size": size, "seeds": seeds, "command": command,
               "preregistration": registration, "environment": environment,
               "cost": measured, "claims": judged, "readings": computed,
               "verifiable_shares": shares, "arms": results}, f,
              indent=1, default=float)
  env = environment
  lines = [
      f"# Ablation `{ablation.name}` ({size} size, {seeds} seed"
      f"{'s' * (seeds != 1)}, version {ablation.version})", "",
      ablation.description, "", f"Command: `{command}`  ",
      f"Machine: {env['cpu']}, {env['cores']} cores; jax {env['jax']}, "
      f"jaxlib {env['jaxlib']} ({env['backend']}); XLA flags "
      f"`{env['xla_flags'] or 'none'}`  ",
      f"Pre-registered: plan hash `{registration['hash'][:12]}`, "
      f"{registration['registered_at']}, commit `{registration['commit']}` "
      f"(α = {ablation.alpha:g}, {ablation.correction} correction, "
      f"{ablation.test} test, power {ablation.power:g})  ",
      f"Cost: {cost.summary(measured)}", "",
      *(["Verifiable reward: " + " ".join(shares), ""] if shares else []),
      _RULE, "", *_table(ablation, judged), "",
      *readings_lib.table(ablation, computed)]
  for number, (c, image) in enumerate(zip(judged, images), 1):
    lines += _section(number, c, image)
  lines += ["## All panels", "", f"![curves]({images[-1]})", "",
            f"![advantages]({ablation.name}_advantages.png)", ""]
  with open(os.path.join(outdir, "report.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
