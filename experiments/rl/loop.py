"""The resumable step loop shared by the warm start and RL.

It restores the latest checkpoint of its directory (or starts fresh), runs
`step_fn` until `num_steps`, writes one metrics record per step, saves a
checkpoint every `checkpoint_every` steps (with the states of its
companions: objects trained beside the main state, such as iStar's
implicit PRM, whose `state` attribute is saved and restored at the same
step), and on SIGINT/SIGTERM (or at
`stop_at_step`, a testing aid that behaves like a kill) saves one before
returning. Randomness is derived from (seed, step), so a resumed run draws
exactly what an uninterrupted one would.
"""

import contextlib
import os
import signal
from typing import Any, Callable, Mapping

import jax

from experiments.rl import checkpoints
from experiments.rl import metrics as metrics_lib
from experiments.rl import train_step

__all__ = ["StopRequested", "run"]


class StopRequested:
  """Set by SIGINT/SIGTERM; the loop saves and returns at the next step.

  A second SIGINT raises KeyboardInterrupt at once.
  """

  def __init__(self):
    self.requested = False

  def _handle(self, signum, frame):
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = True

  @contextlib.contextmanager
  def installed(self):
    previous = {}
    try:
      for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, self._handle)
    except ValueError:  # Not the main thread: leave signals alone.
      pass
    try:
      yield self
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)


def run(directory: str, state: train_step.TrainState, *, num_steps: int,
        step_fn: Callable, meta: dict, checkpoint_every: int, keep: int,
        stop_at_step: int = -1, description: str, prefix: str,
        show_progress: bool = True,
        on_resume: Callable[[int], None] | None = None,
        summary_keys=(),
        companions: Mapping[str, Any] | None = None
        ) -> tuple[train_step.TrainState, dict]:
  """Runs steps [restored step, num_steps) of `step_fn(step, state)`.

  Args:
    directory: the run's folder (checkpoints under `checkpoints/`, metrics
      beside them).
    state: the freshly initialised state (restore target).
    num_steps: total steps.
    step_fn: `(step, state) -> (state, metrics dict)`.
    meta: JSON metadata saved with every checkpoint (the config, ...).
    checkpoint_every, keep: checkpoint cadence and retention.
    stop_at_step: stop (with a checkpoint) after this step; -1: never.
    description, prefix: progress-bar label and metrics file prefix.
    show_progress: draw the progress bar.
    on_resume: called with the restored step (e.g. to log it).
    summary_keys: metrics shown on the progress bar.
    companions: {name: object with a `state` pytree attribute} that
      `step_fn` updates; each state is checkpointed as item `name` and
      restored into the object.

  Returns:
    (final state, last metrics record).

  Raises:
    checkpoints.CheckpointError: the directory holds a checkpoint that
      cannot be restored into `state` (never overwritten).
  """
  companions = dict(companions or {})
  ckpt = checkpoints.Checkpointer(os.path.join(directory, "checkpoints"),
                                  keep=keep, extra_items=tuple(companions))
  start = 0
  if ckpt.latest_step() is not None:
    restored = ckpt.restore(
        state.params, state.opt_state,
        extra_targets={k: c.state for k, c in companions.items()})
    start = int(restored.meta["step"])
    state = train_step.TrainState(restored.params, restored.opt_state,
                                  jax.numpy.asarray(start, jax.numpy.int32))
    for name, companion in companions.items():
      companion.state = restored.extra[name]
    if on_resume is not None:
      on_resume(start)
  writer = metrics_lib.MetricWriter(
      directory, total_steps=num_steps, initial_step=start,
      description=description, prefix=prefix, show_progress=show_progress)
  record, stopper = {}, StopRequested()
  try:
    with stopper.installed():
      for step in range(start, num_steps):
        state, record = step_fn(step, state)
        done = step + 1
        writer.write(done, record)
        writer.advance(done, {k: record.get(k) for k in summary_keys})
        halt = stopper.requested or done == stop_at_step
        if done % checkpoint_every == 0 or done == num_steps or halt:
          ckpt.save(done, state.params, state.opt_state,
                    {**meta, "step": done}, force=True,
                    extra={k: c.state for k, c in companions.items()})
        if halt:
          break
  finally:
    writer.close()
    ckpt.close()
  return state, record
