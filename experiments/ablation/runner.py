"""Runs an ablation's arms x seeds as separate training processes.

Each run is `python -m experiments.train --config=<ablation file>:<arm>,
<seed>,<size>` with single-threaded XLA, so N parallel processes use N
cores. Seed s starts from warm start s mod W (W = the size's
`warm_starts`): runs that share a task, model, warm-start setting and warm
seed share one warm start (trained once, cached under
`workdir/warm_starts/<hash>`), so the arms of a seed start from the same
policy and the seeds spread over W policies. A run resumes from its own
checkpoints when the runner is started again, and a finished run (marked
by `done.json`, which also records the last attempt's start and end) is
not started again. One progress line per run is shown while it trains.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time

import tqdm

from experiments.ablation import cost
from experiments.ablation import spec
from experiments.rl import warm_start

__all__ = [
    "Run", "execute", "plan", "xla_flags",
]

# One XLA thread per process: arms run side by side on separate cores.
_SINGLE_THREAD = ("--xla_cpu_multi_thread_eigen=false "
                  "intra_op_parallelism_threads=1")


def xla_flags() -> str:
  """The XLA flags every run gets."""
  return (os.environ.get("XLA_FLAGS", "") + " " + _SINGLE_THREAD).strip()


@dataclasses.dataclass
class Run:
  """One training process: an arm and seed, or a shared warm start."""
  name: str
  config_file: str  # the ablation's config module
  config_arg: str
  workdir: str
  num_steps: int
  extra_flags: tuple = ()
  after: "Run | None" = None  # the warm start this run starts from
  seconds: float = 0.0  # the cost model's prediction
  ablation: str = ""  # the ablation an arm run belongs to

  @property
  def warm_start_dir(self) -> str:
    """Where a warm-start run leaves its checkpoints (`init_checkpoint`)."""
    return os.path.join(self.workdir, "warm_start")

  @property
  def done_path(self) -> str:
    return os.path.join(self.workdir, "done.json")

  def done(self) -> bool:
    return os.path.exists(self.done_path)

  def progress(self) -> int:
    path = (os.path.join(self.workdir, "train_metrics.jsonl")
            if self.num_steps else
            os.path.join(self.warm_start_dir, "warm_start_metrics.jsonl"))
    if not os.path.exists(path):
      return 0
    with open(path, encoding="utf-8") as f:
      return sum(1 for line in f if line.strip())


def plan(name: str, size: str, seeds: int | None, workdir: str,
         overrides: dict | None = None):
  """(warm-start runs, arm runs) of an ablation, arm runs by seed then arm.

  `seeds` None takes the size's. `overrides` ({dotted key: value}, e.g.
  {"model_path": DIR}) go to every run. Warm-start runs of different
  ablations with the same key are equal (the same workdir), so a caller
  may pool several ablations' plans.
  """
  module = spec.load(name)
  ablation = module.get_ablation()
  chosen = spec.check_size(ablation, size)
  config_file = module.__file__
  outdir = spec.output_dir(workdir, ablation, size)
  warm, runs = {}, []
  flags = spec.override_flags(overrides)
  for seed in range(chosen.seeds if seeds is None else seeds):
    warm_seed = spec.warm_seed(ablation, size, seed)
    for arm in ablation.arms:
      config = spec.build_config(ablation, f"{arm},{seed},{size}", overrides)
      key = spec.warm_start_key(config, warm_seed)
      if key not in warm and warm_start.steps(config) > 0:
        warm_config = spec.build_config(
            ablation, f"{arm},{warm_seed},{size}", overrides)
        warm_config.rl.num_steps = 0
        warm[key] = Run(f"warm start {key[:6]}", config_file,
                        f"{arm},{warm_seed},{size}",
                        os.path.join(workdir, "warm_starts", key), 0,
                        flags + ("--config.rl.num_steps=0",),
                        seconds=cost.run_seconds(warm_config, chosen.timing))
      runs.append(Run(f"{name}/{arm} s{seed}", config_file,
                      f"{arm},{seed},{size}",
                      os.path.join(outdir, arm, f"seed{seed}"),
                      config.rl.num_steps, flags, after=warm.get(key),
                      seconds=cost.run_seconds(config, chosen.timing),
                      ablation=name))
  return list(warm.values()), runs


def _start(run: Run, log) -> subprocess.Popen:
  env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_FLAGS=xla_flags())
  init = ((f"--config.init_checkpoint={run.after.warm_start_dir}",)
          if run.after else ())
  cmd = [sys.executable, "-m", "experiments.train",
         f"--config={run.config_file}:{run.config_arg}",
         f"--workdir={run.workdir}", *run.extra_flags, *init]
  return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                          cwd=os.path.dirname(os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__)))))


def _next_ready(pending: list[Run]) -> Run | None:
  """Removes and returns the first pending run whose warm start is done."""
  for i, run in enumerate(pending):
    if run.after is None or run.after.done():
      return pending.pop(i)
  return None


def execute(runs: list[Run], parallel: int,
            show_progress: bool = True, poll_seconds: float = 1.0,
            before_start=None) -> None:
  """Runs `runs` (skipping finished ones), `parallel` at a time, each once
  its warm start (`after`, which must be among `runs` or done) is done.
  `before_start(run)`, if given, is called just before each run starts
  (its warm start is done then); what it raises stops every run.

  Raises:
    RuntimeError: a run failed (its log file is named).
  """
  pending = [r for r in runs if not r.done()]
  active: dict[str, tuple] = {}
  bars: dict[str, tqdm.tqdm] = {}
  try:
    while pending or active:
      while len(active) < parallel:
        run = _next_ready(pending)
        if run is None:
          break
        if before_start is not None:
          before_start(run)
        os.makedirs(run.workdir, exist_ok=True)
        log = open(os.path.join(os.path.dirname(run.workdir.rstrip("/")),
                                f"{os.path.basename(run.workdir)}.log"), "a",
                   encoding="utf-8")
        active[run.name] = (run, _start(run, log), log, time.time())
        total = run.num_steps or None
        bars[run.name] = tqdm.tqdm(total=total, desc=run.name,
                                   disable=not show_progress, leave=False,
                                   dynamic_ncols=True)
      time.sleep(poll_seconds)
      for name, (run, proc, log, start) in list(active.items()):
        bar = bars[name]
        bar.update(run.progress() - bar.n)
        code = proc.poll()
        if code is None:
          continue
        log.close()
        bar.close()
        del active[name], bars[name]
        if code != 0:
          raise RuntimeError(f"run {name!r} failed with exit code {code}; "
                             f"see {log.name}.")
        with open(run.done_path, "w", encoding="utf-8") as f:
          json.dump({"steps": run.num_steps, "start": start,
                     "end": time.time()}, f)
  finally:
    for _, proc, log, _ in active.values():
      proc.terminate()
      proc.wait()
      log.close()
