r"""Plots a training run's curves from its metrics files.

  python -m experiments.plot_run --workdir=/tmp/chain \
      --output=docs/chain_arith_run.png \
      [--metrics=rollout/reward_mean,rollout/entropy,eval/accuracy]

Metrics are named by their full keys: `eval/...` keys come from the
evaluations (drawn as points), all others from the train records (drawn
per step with a moving average). Works while the run is still going.
"""

import os

from absl import app
from absl import flags
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from experiments.rl import metrics

__all__ = ["define_flags", "main", "plot"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--workdir, --output, --metrics and --smooth."""
  flags.DEFINE_string("workdir", None, "The run's --workdir.",
                      flag_values=flag_values)
  flags.DEFINE_string("output", None, "PNG to write.", flag_values=flag_values)
  flags.DEFINE_list("metrics", ["rollout/reward_mean", "rollout/entropy",
                                "rollout/response_length", "eval/accuracy"],
                    "Metric keys to plot (eval/... from the evaluations).",
                    flag_values=flag_values)
  flags.DEFINE_integer("smooth", 20, "Moving-average window.",
                       flag_values=flag_values)
  flags.mark_flags_as_required(["workdir", "output"], flag_values=flag_values)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
  window = max(1, min(window, values.size))
  kernel = np.ones(window) / window
  padded = np.concatenate([np.full(window - 1, values[0]), values])
  return np.convolve(padded, kernel, mode="valid")


def plot(workdir: str, output: str, names, window: int) -> None:
  """One panel per metric key of `names` against the RL step."""
  train = metrics.read_jsonl(os.path.join(workdir, "train_metrics.jsonl"))
  path = os.path.join(workdir, "eval_metrics.jsonl")
  evals = metrics.read_jsonl(path) if os.path.exists(path) else []
  fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2),
                           squeeze=False)
  for ax, name in zip(axes[0], names):
    records = evals if name.startswith("eval/") else train
    steps = np.asarray([r["step"] for r in records])
    values = np.asarray([np.nan if r.get(name) is None else r[name]
                         for r in records], np.float64)
    if records is evals:
      ax.plot(steps, values, "o-", color="C1")
    elif values.size:
      ax.plot(steps, values, alpha=0.25, color="C0")
      ax.plot(steps, _moving_average(values, window), color="C0")
    ax.set_title(name)
    ax.set_xlabel("RL step")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(output, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  f = flags.FLAGS
  plot(f.workdir, f.output, f.metrics, f.smooth)


if __name__ == "__main__":
  define_flags()
  app.run(main)
