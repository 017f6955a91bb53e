r"""Plots a training run's curves from its metrics files.

  python -m experiments.plot_run --workdir=/tmp/chain \
      --output=docs/chain_arith_run.png [--metrics=reward_mean,entropy]

Train metrics are drawn per step with a moving average; evaluations as
points. Works while the run is still going.
"""

import os

from absl import app
from absl import flags
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from experiments.rl import metrics

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's --workdir.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG to write.")
_METRICS = flags.DEFINE_list(
    "metrics", ["reward_mean", "entropy", "response_length"],
    "Train metrics to plot; accuracy of the evaluations is added.")
_SMOOTH = flags.DEFINE_integer("smooth", 20, "Moving-average window.")
flags.mark_flags_as_required(["workdir", "output"])


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
  window = max(1, min(window, values.size))
  kernel = np.ones(window) / window
  padded = np.concatenate([np.full(window - 1, values[0]), values])
  return np.convolve(padded, kernel, mode="valid")


def plot(workdir: str, output: str, names, window: int) -> None:
  train = metrics.read_jsonl(os.path.join(workdir, "train_metrics.jsonl"))
  path = os.path.join(workdir, "eval_metrics.jsonl")
  evals = metrics.read_jsonl(path) if os.path.exists(path) else []
  fig, axes = plt.subplots(1, len(names) + 1,
                           figsize=(4.2 * (len(names) + 1), 3.2))
  steps = np.asarray([r["step"] for r in train])
  for ax, name in zip(axes, names):
    values = np.asarray([np.nan if r.get(name) is None else r[name]
                         for r in train], np.float64)
    ax.plot(steps, values, alpha=0.25, color="C0")
    ax.plot(steps, _moving_average(values, window), color="C0")
    ax.set_title(name)
    ax.set_xlabel("RL step")
    ax.grid(alpha=0.3)
  ax = axes[-1]
  ax.plot([r["step"] for r in evals], [r["accuracy"] for r in evals], "o-",
          color="C1")
  ax.set_title("eval accuracy")
  ax.set_xlabel("RL step")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(output, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  plot(_WORKDIR.value, _OUTPUT.value, _METRICS.value, _SMOOTH.value)


if __name__ == "__main__":
  app.run(main)
