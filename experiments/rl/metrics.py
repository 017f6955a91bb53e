"""Observability for training runs: JSONL, TensorBoard and a progress bar.

Every record is one JSON object per line in `workdir/<prefix>_metrics.jsonl`
(easy to load with pandas or `json`), the same scalars as TensorBoard event
files under `workdir/tensorboard/<prefix>`, and a tqdm progress bar with an
ETA on the console. Only process 0 writes, so multi-host runs log once.

Metric keys are namespaced by where they are measured, so no value
overwrites another: `rollout/` (the sampled batch, before the update),
`task/` (the task's own metrics on it), `update/` (the jitted update),
`time/` (seconds per phase), `eval/` and `eval/task/` (evaluations) and
`warm_start/`; `samples_seen` (the x axis of the ablation plots) is bare.
"""

import json
import math
import os
import time
from typing import Mapping

import jax
import numpy as np
import tensorboardX
import tqdm

__all__ = ["MetricWriter", "read_jsonl"]


def _plain(value):
  """A JSON-safe Python scalar (non-finite floats become None)."""
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    value = np.asarray(value).item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class MetricWriter:
  """Writes step records to JSONL and TensorBoard, and drives the progress bar.

  Resuming appends to the same files: records from `drop_from` on (default:
  after `initial_step`) that an interrupted run had already written are
  dropped first, so the JSONL holds each step once.
  """

  def __init__(self, workdir: str, *, total_steps: int, initial_step: int,
               description: str, prefix: str = "train",
               show_progress: bool = True, drop_from: int | None = None):
    self._active = jax.process_index() == 0
    self._prefix = prefix
    self.path = os.path.join(workdir, f"{prefix}_metrics.jsonl")
    self._bar = None
    self._tb = None
    if not self._active:
      return
    os.makedirs(workdir, exist_ok=True)
    _drop_from(self.path, initial_step + 1 if drop_from is None
               else drop_from)
    self._tb = tensorboardX.SummaryWriter(
        os.path.join(workdir, "tensorboard", prefix))
    self._bar = tqdm.tqdm(total=total_steps, initial=initial_step,
                          desc=description, dynamic_ncols=True,
                          disable=not show_progress, smoothing=0.1)

  def write(self, step: int, scalars: Mapping[str, object]) -> None:
    """Appends one record for `step` (the step just completed)."""
    if not self._active:
      return
    record = {"step": int(step), "time": round(time.time(), 3)}
    record.update({k: _plain(v) for k, v in scalars.items()})
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in record.items():
      # Keys are namespaced already (rollout/, update/, eval/, ...).
      if key not in ("step", "time") and isinstance(value, (int, float)):
        self._tb.add_scalar(key, value, step)

  def advance(self, step: int, summary: Mapping[str, float]) -> None:
    """Moves the progress bar to `step` with a short postfix."""
    if self._bar is None:
      return
    self._bar.update(step - self._bar.n)
    self._bar.set_postfix({k: f"{v:.3g}" for k, v in summary.items()
                           if v is not None}, refresh=False)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()
    if self._bar is not None:
      self._bar.close()


def _drop_from(path: str, step: int) -> None:
  """Drops records with step >= `step` (written after the last checkpoint)."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = [line for line in lines if line.strip()
          and json.loads(line).get("step", 0) < step]
  if len(kept) != len(lines):
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(kept)


def read_jsonl(path: str) -> list[dict]:
  """All records of a metrics file, in order."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
