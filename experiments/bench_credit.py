"""Controlled-bifurcation credit benchmark: how well does each estimator
localise credit on the one decision that matters?

For every registered estimator this runs `experiments.credit_task` batches
(one decision among distractors determines success with known
probabilities) and reports:

* localisation: the share of Σ|A| that lands on the decisive tokens
  (1 is perfect, 1/(#steps) is what spreading credit evenly gives),
* Spearman ρ between A and the true counterfactual advantage A* over all
  valid tokens,
* sign accuracy: the share of rows whose mean advantage on the decision has
  the sign of A* (an exact 0 counts as wrong: no credit is no learning),
* distractor variance: Var(A) over distractor tokens divided by the mean A²
  on decisive tokens (scale-free; 0 means distractors get a constant),

averaged over token/step/turn decisions at early/middle/late positions, and
the sign accuracy and ρ across group sizes.

    python -m experiments.bench_credit --output_dir=results/credit
"""

import functools
import os
import time

from absl import app
from absl import flags
import jax
import numpy as np

import cajax
from experiments import credit_task

_GROUP_SIZES = flags.DEFINE_list("group_sizes", ["4", "8", "16"],
                                 "Group sizes to compare.")
_BATCH = flags.DEFINE_integer("batch", 256, "Rows per batch (a multiple of "
                              "every group size).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 8, "Steps per response.")
_STEP_LENGTH = flags.DEFINE_integer("step_length", 6, "Tokens per step.")
_SEEDS = flags.DEFINE_integer("seeds", 2, "Batches averaged per setting.")
_REWARD_NOISE = flags.DEFINE_float("reward_noise", 0.0,
                                   "Probability of flipping the outcome.")
_SIGNAL_QUALITY = flags.DEFINE_float(
    "signal_quality", 0.8, "Quality q of step rewards, critic and critiques.")
_HACK_RATE = flags.DEFINE_float(
    "hack_rate", 0.0, "Probability that the PRM over-rewards a distractor "
    "step (by --hack_bonus) regardless of the outcome.")
_HACK_BONUS = flags.DEFINE_float("hack_bonus", 2.0,
                                 "Step reward added to a hacked step.")
_ESTIMATORS = flags.DEFINE_list("estimators", [],
                                "Estimators to run (default: all).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "results/credit",
    "Where credit.md and credit.png are written ('' to skip).")

def evaluate(name: str, configs: list[credit_task.TaskConfig]) -> dict:
  """Mean metrics of `name` over the given batch configurations."""
  rows = []
  for config in configs:
    batch = credit_task.make_batch(config)
    kwargs = credit_task.method_inputs(name, batch, config.seed)
    arrays = {k: v for k, v in kwargs.items()
              if isinstance(v, (np.ndarray, jax.Array))}
    static = {k: v for k, v in kwargs.items() if k not in arrays}
    fn = _jitted(name, tuple(sorted(static.items())))
    advantages = fn(batch.rollouts, arrays).advantages
    rows.append(credit_task.credit_metrics(np.asarray(advantages), batch))
  return {key: float(np.nanmean([row[key] for row in rows]))
          for key in rows[0]}


@functools.lru_cache(maxsize=None)
def _jitted(name: str, static: tuple):
  return jax.jit(lambda rollouts, arrays: cajax.estimate(
      name, rollouts, **arrays, **dict(static)))


def settings(group_size: int, sweep: bool) -> list[credit_task.TaskConfig]:
  """Task configurations: every granularity × position, or step/middle."""
  base = dict(num_prompts=_BATCH.value // group_size, group_size=group_size,
              num_steps=_NUM_STEPS.value, step_length=_STEP_LENGTH.value,
              reward_noise=_REWARD_NOISE.value,
              signal_quality=_SIGNAL_QUALITY.value,
              hack_rate=_HACK_RATE.value, hack_bonus=_HACK_BONUS.value)
  pairs = ([(g, p) for g in credit_task.GRANULARITIES
            for p in credit_task.POSITIONS] if sweep
           else [("step", "middle")])
  return [credit_task.TaskConfig(granularity=g, position=p, seed=seed, **base)
          for g, p in pairs for seed in range(_SEEDS.value)]


def markdown(summary: dict, by_group: dict, group_sizes: list[int],
             reference_group: int) -> str:
  """The two result tables as markdown."""
  lines = [f"Averaged over token/step/turn decisions at early/middle/late "
           f"positions, group size {reference_group}, {_BATCH.value} rows, "
           f"{_NUM_STEPS.value} steps, signal quality "
           f"{_SIGNAL_QUALITY.value}, reward noise {_REWARD_NOISE.value}, PRM "
           f"hack rate {_HACK_RATE.value}.",
           "",
           "| estimator | localisation | Spearman ρ | sign acc. | "
           "distractor var |",
           "|---|---:|---:|---:|---:|"]
  order = sorted(summary, key=lambda n: -summary[n]["spearman"])
  for name in order:
    m = summary[name]
    lines.append(f"| {name} | {m['localisation']:.3f} | {m['spearman']:.3f}"
                 f" | {m['sign_accuracy']:.3f} | {m['distractor_var']:.3f} |")
  header = " | ".join(f"G={g} sign / ρ" for g in group_sizes)
  lines += ["", "Step decision in the middle, by group size:", "",
            f"| estimator | {header} |",
            "|---|" + "---:|" * len(group_sizes)]
  for name in order:
    cells = " | ".join(
        f"{by_group[name][g]['sign_accuracy']:.2f} / "
        f"{by_group[name][g]['spearman']:.2f}" for g in group_sizes)
    lines.append(f"| {name} | {cells} |")
  return "\n".join(lines) + "\n"


def plot(summary: dict, by_group: dict, group_sizes: list[int], path: str):
  """Bar chart of localisation and ρ, and ρ against group size."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = sorted(summary, key=lambda n: -summary[n]["spearman"])
  fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.28 * len(names) + 2))
  y = np.arange(len(names))
  left.barh(y - 0.2, [summary[n]["localisation"] for n in names], 0.4,
            label="localisation")
  left.barh(y + 0.2, [summary[n]["spearman"] for n in names], 0.4,
            label="Spearman ρ")
  left.set_yticks(y, names)
  left.invert_yaxis()
  left.legend()
  left.set_title("Credit on the decisive tokens")
  colours = plt.get_cmap("tab20").colors
  for index, name in enumerate(names):
    right.plot(group_sizes, [by_group[name][g]["spearman"]
                             for g in group_sizes],
               color=colours[index % len(colours)],
               linestyle=("-", "--", ":")[index // len(colours) % 3],
               marker="o", label=name)
  right.set_xscale("log", base=2)
  right.set_xlabel("group size")
  right.set_ylabel("Spearman ρ with A*")
  right.legend(fontsize=6, ncol=2, loc="upper center",
               bbox_to_anchor=(0.5, 0.52))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  start = time.perf_counter()
  names = cajax.estimator_names()
  if _ESTIMATORS.value:
    names = tuple(n for n in names if n in _ESTIMATORS.value)
  group_sizes = [int(g) for g in _GROUP_SIZES.value]
  reference_group = group_sizes[len(group_sizes) // 2]
  summary, by_group = {}, {}
  for name in names:
    summary[name] = evaluate(name, settings(reference_group, sweep=True))
    by_group[name] = {g: evaluate(name, settings(g, sweep=False))
                      for g in group_sizes}
  table = markdown(summary, by_group, group_sizes, reference_group)
  print(table)
  if _OUTPUT_DIR.value:
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    with open(os.path.join(_OUTPUT_DIR.value, "credit.md"), "w") as f:
      f.write(table)
    plot(summary, by_group, group_sizes,
         os.path.join(_OUTPUT_DIR.value, "credit.png"))
  print(f"{len(names)} estimators in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  app.run(main)
