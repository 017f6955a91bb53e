"""What an ablation costs: a small model to plan sizes, and the measured split.

Model (`Timing`, one per ablation size, in its config file): a run costs
`overhead` (process start, compilation, checkpoints) + RL steps x `rl_step`
+ evaluations x `evaluation`; a warm start costs `overhead` + its steps x
`warm_start_step`, all in seconds of one idle core. `wall_seconds` replays
the runner's schedule (warm starts first, each run once its warm start is
done, `parallel` at a time) to predict the wall time of a set of runs.

Measured (`measure`): from finished runs' records, the core-seconds spent
in each part: warm start, sampling (`time/sample` and `time/score`, which
holds retries and greedy baselines), estimate, update, evaluation
(`eval/seconds`) and the rest of each process's wall time (start-up,
compilation, checkpoints). `calibrate` turns them into the `Timing` to write
back into the config file, so sizes follow measured step times.
"""

import dataclasses
import heapq
import json
import math
import os

from experiments.rl import metrics as metrics_lib

__all__ = [
    "PARTS", "Timing", "calibrate", "measure", "num_evaluations", "run_seconds",
    "summary", "wall_seconds",
]

PARTS = ("warm_start", "sampling", "estimate", "update", "evaluation",
         "overhead")
_TRAIN_PARTS = {"time/sample": "sampling", "time/score": "sampling",
                "time/estimate": "estimate", "time/update": "update"}


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds on one idle core (see the module docstring).

  Attributes:
    rl_step: one RL step (sample, score, estimate, update).
    evaluation: one evaluation of the size's `eval_problems`.
    warm_start_step: one supervised warm-start step.
    overhead: a process's start-up, compilation and checkpoints.
    machine: where these were measured, for the docs.
  """
  rl_step: float
  evaluation: float
  warm_start_step: float
  overhead: float = 10.0
  machine: str = ""


def num_evaluations(num_steps: int, eval_every: int) -> int:
  """Evaluations of an RL run: step 0, every `eval_every`, and the end."""
  if num_steps <= 0:
    return 0
  return 1 + num_steps // eval_every + (num_steps % eval_every != 0)


def run_seconds(config, timing: Timing) -> float:
  """Predicted seconds of one run of `config` (a warm start when its
  `rl.num_steps` is 0)."""
  steps = config.rl.num_steps
  if steps == 0:
    return timing.overhead + config.warm_start.steps * timing.warm_start_step
  return (timing.overhead + steps * timing.rl_step
          + num_evaluations(steps, config.eval_every) * timing.evaluation)


def wall_seconds(runs, parallel: int) -> float:
  """Predicted wall time of `runs` (each with `seconds` and `after`, the
  warm start it waits for) on `parallel` cores, scheduled as the runner
  does: in order, each once its warm start is done."""
  pending = list(runs)
  planned = {id(r) for r in pending}
  free = [0.0] * parallel  # when each core is next free
  done = {}
  while pending:
    now = heapq.heappop(free)
    ready = [r for r in pending
             if r.after is None or id(r.after) not in planned
             or done.get(id(r.after), math.inf) <= now]
    if not ready:  # wait for the earliest warm start still running
      now = min(done[id(r.after)] for r in pending
                if id(r.after) in done)
      heapq.heappush(free, now)
      continue
    run = ready[0]
    pending.remove(run)
    done[id(run)] = now + run.seconds
    heapq.heappush(free, done[id(run)])
  return max(done.values(), default=0.0)


def _records(path: str) -> list[dict]:
  return metrics_lib.read_jsonl(path) if os.path.exists(path) else []


def _wall(run) -> float:
  """The last attempt's wall time from `done.json` (0 when unrecorded)."""
  if not os.path.exists(run.done_path):
    return 0.0
  with open(run.done_path, encoding="utf-8") as f:
    done = json.load(f)
  return max(float(done.get("end", 0.0)) - float(done.get("start", 0.0)),
             0.0) if "start" in done else 0.0


def measure(warm_runs, runs) -> dict:
  """Measured core-seconds per part (PARTS) of finished runs, with the
  counts `calibrate` needs and the dominant part."""
  parts = dict.fromkeys(PARTS, 0.0)
  counts = {"rl_steps": 0, "evaluations": 0, "warm_start_steps": 0,
            "warm_starts": 0, "processes": 0}
  for run in warm_runs:
    parts["warm_start"] += _wall(run)
    counts["warm_starts"] += bool(_wall(run))
    counts["warm_start_steps"] += len(_records(os.path.join(
        run.warm_start_dir, "warm_start_metrics.jsonl")))
  for run in runs:
    train = _records(os.path.join(run.workdir, "train_metrics.jsonl"))
    evals = _records(os.path.join(run.workdir, "eval_metrics.jsonl"))
    measured = 0.0
    for record in train:
      for key, part in _TRAIN_PARTS.items():
        parts[part] += record.get(key) or 0.0
        measured += record.get(key) or 0.0
    seconds = sum(r.get("eval/seconds") or 0.0 for r in evals)
    parts["evaluation"] += seconds
    wall = _wall(run)
    if wall:
      parts["overhead"] += max(wall - measured - seconds, 0.0)
      counts["processes"] += 1
    counts["rl_steps"] += len(train)
    counts["evaluations"] += len(evals)
  total = sum(parts.values())
  return {"core_seconds": parts, "total_core_seconds": total,
          "dominant": max(parts, key=parts.get) if total else None,
          "counts": counts}


def calibrate(measured: dict, machine: str = "") -> Timing:
  """The `Timing` that `measured` (from `measure`) implies."""
  parts, counts = measured["core_seconds"], measured["counts"]

  def per(total, count):
    return round(total / count, 4) if count else 0.0

  overhead = per(parts["overhead"], counts["processes"])
  return Timing(
      rl_step=per(parts["sampling"] + parts["estimate"] + parts["update"],
                  counts["rl_steps"]),
      evaluation=per(parts["evaluation"], counts["evaluations"]),
      warm_start_step=per(
          max(parts["warm_start"] - overhead * counts["warm_starts"], 0.0),
          counts["warm_start_steps"]),
      overhead=overhead, machine=machine)


def summary(measured: dict) -> str:
  """One line: total core-minutes and each part's share."""
  total = measured["total_core_seconds"]
  if not total:
    return "no timed runs"
  shares = ", ".join(f"{part.replace('_', ' ')} {100 * s / total:.0f}%"
                     for part, s in measured["core_seconds"].items() if s)
  return (f"{total / 60:.1f} core-minutes: {shares}; "
          f"{measured['dominant'].replace('_', ' ')} dominates")
