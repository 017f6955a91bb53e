"""Where each arm puts credit: per-token advantages of one fixed response.

The shared batch of `credit.py` (the task's demonstrations, with the warm
start's wrong and filler steps, scored and estimated by each arm as its
trainer would, retries included); one response is drawn as a row per arm,
with its tokens on the x axis. A response with a wrong or filler step that
no arm retried is preferred, since that is where the methods disagree.
"""

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from experiments.ablation import credit as credit_lib
from experiments.ablation import spec
from experiments.rl import experiment

__all__ = ["advantage_map"]


def _pick_row(scored, retried) -> int:
  """The first row no arm retried with a non-correct step label, else the
  first row no arm retried."""
  labels = scored.arrays["step_labels"]
  mask = scored.arrays["step_mask"]
  rows = [r for r in range(labels.shape[0]) if r not in retried]
  for row in rows:
    if np.any(mask[row] & (labels[row] != 1)):
      return row
  return rows[0]


def advantage_map(ablation, size: str, init_checkpoint: str | None,
                  path: str, credit: dict | None = None,
                  overrides: dict | None = None):
  """Draws the map to `path`; returns {arm: credit of the row}.

  `credit`: the arms' credit on the shared batch (`credit.arm_credit`, with
  `init_checkpoint`) when already computed; `overrides`: the runs'
  command-line overrides (`spec.build_config`)."""
  arms = list(ablation.arms)
  if credit is None:
    credit = credit_lib.arm_credit(ablation, size, init_checkpoint,
                                   overrides=overrides)
  first = credit[arms[0]]
  row = _pick_row(first.scored, {r for c in credit.values()
                                 for r in c.retried})
  out = {arm: credit[arm].credit[row] for arm in arms}
  # The run's own task (with a checkpoint's tokenizer when model_path is
  # set), built as the runs build it.
  tokenizer = experiment.Experiment(spec.build_config(
      ablation, f"{arms[0]},0,{size}", overrides)).task.tokenizer
  length = int(first.valid[row].sum())
  # Escaped (newlines, control bytes of a real tokenizer's pieces).
  text = [repr(tokenizer.decode([int(t)]))[1:-1] or "·"
          for t in first.tokens[row, :length]]
  grid = np.stack([out[a][:length] for a in arms])
  scale = np.max(np.abs(grid)) or 1.0
  fig, ax = plt.subplots(figsize=(max(6, 0.32 * length), 0.5 * len(arms) + 1.6))
  image = ax.imshow(grid, cmap="RdBu", vmin=-scale, vmax=scale,
                    aspect="auto")
  ax.set_yticks(range(len(arms)), arms)
  ax.set_xticks(range(length), text, fontsize=8)
  ax.set_title(f"per-token advantage × loss mask, one response (outcome "
               f"{first.scored.outcome[row]:g})", fontsize=9)
  fig.colorbar(image, ax=ax, fraction=0.02)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return out

