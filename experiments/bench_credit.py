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

__all__ = ["define_flags", "evaluate", "main", "markdown", "plot", "settings"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The task settings, group sizes, estimators and output folder."""
  flags.DEFINE_list("group_sizes", ["4", "8", "16"], "Group sizes to compare.",
                    flag_values=flag_values)
  flags.DEFINE_integer("batch", 256, "Rows per batch (a multiple of every "
                       "group size).", flag_values=flag_values)
  flags.DEFINE_integer("num_steps", 8, "Steps per response.",
                       flag_values=flag_values)
  flags.DEFINE_integer("step_length", 6, "Tokens per step.",
                       flag_values=flag_values)
  flags.DEFINE_integer("seeds", 2, "Batches averaged per setting.",
                       flag_values=flag_values)
  flags.DEFINE_float("reward_noise", 0.0,
                     "Probability of flipping the outcome.",
                     flag_values=flag_values)
  flags.DEFINE_float("signal_quality", 0.8,
                     "Quality q of step rewards, critic and critiques.",
                     flag_values=flag_values)
  flags.DEFINE_float("hack_rate", 0.0, "Probability that the PRM "
                     "over-rewards a distractor step (by --hack_bonus) "
                     "regardless of the outcome.", flag_values=flag_values)
  flags.DEFINE_float("hack_bonus", 2.0, "Step reward added to a hacked step.",
                     flag_values=flag_values)
  flags.DEFINE_list("estimators", [], "Estimators to run (default: all).",
                    flag_values=flag_values)
  flags.DEFINE_string("output_dir", "results/credit", "Where credit.md and "
                      "credit.png are written ('' to skip).",
                      flag_values=flag_values)


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


def settings(task: dict, batch: int, group_size: int, sweep: bool,
             seeds: int) -> list[credit_task.TaskConfig]:
  """Task configurations of `batch` rows in groups of `group_size`: every
  granularity × position (`sweep`), or step/middle, each with `seeds`
  seeds; `task` holds the other `TaskConfig` fields."""
  pairs = ([(g, p) for g in credit_task.GRANULARITIES
            for p in credit_task.POSITIONS] if sweep
           else [("step", "middle")])
  return [credit_task.TaskConfig(granularity=g, position=p, seed=seed,
                                 num_groups=batch // group_size,
                                 group_size=group_size, **task)
          for g, p in pairs for seed in range(seeds)]


def markdown(summary: dict, by_group: dict, group_sizes: list[int],
             reference_group: int, task: dict, batch: int) -> str:
  """The two result tables as markdown."""
  lines = [f"Averaged over token/step/turn decisions at early/middle/late "
           f"positions, group size {reference_group}, {batch} rows, "
           f"{task['num_steps']} steps, signal quality "
           f"{task['signal_quality']}, reward noise {task['reward_noise']}, "
           f"PRM hack rate {task['hack_rate']}.",
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
  f = flags.FLAGS
  start = time.perf_counter()
  names = cajax.estimator_names()
  if f.estimators:
    names = tuple(n for n in names if n in f.estimators)
  group_sizes = [int(g) for g in f.group_sizes]
  reference_group = group_sizes[len(group_sizes) // 2]
  task = dict(num_steps=f.num_steps, step_length=f.step_length,
              reward_noise=f.reward_noise, signal_quality=f.signal_quality,
              hack_rate=f.hack_rate, hack_bonus=f.hack_bonus)
  summary, by_group = {}, {}
  for name in names:
    summary[name] = evaluate(name, settings(task, f.batch, reference_group,
                                            True, f.seeds))
    by_group[name] = {g: evaluate(name, settings(task, f.batch, g, False,
                                                 f.seeds))
                      for g in group_sizes}
  table = markdown(summary, by_group, group_sizes, reference_group, task,
                   f.batch)
  print(table)
  if f.output_dir:
    os.makedirs(f.output_dir, exist_ok=True)
    with open(os.path.join(f.output_dir, "credit.md"), "w") as out:
      out.write(table)
    plot(summary, by_group, group_sizes,
         os.path.join(f.output_dir, "credit.png"))
  print(f"{len(names)} estimators in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  define_flags()
  app.run(main)
