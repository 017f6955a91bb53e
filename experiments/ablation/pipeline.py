"""Ablations end to end: warm starts, arms x seeds, evidence, reports."""

import os
import platform

import jax

from experiments.ablation import heatmap
from experiments.ablation import report
from experiments.ablation import runner
from experiments.ablation import spec
from experiments.configs import ablations

__all__ = ["NAMES", "evidence", "machine", "run"]

NAMES = ablations.ABLATIONS.names()


def machine() -> str:
  """The processor model (or architecture), cores and jax backend."""
  return (f"{_processor()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.devices()[0].platform})")


def _processor() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def run(names, *, size: str, seeds: int, workdir: str, parallel: int,
        command: str, show_progress: bool = True) -> dict[str, list[dict]]:
  """Runs (or resumes) the ablations `names`; {name: its judged claims}.

  Warm starts and arms share one pool of `parallel` processes: warm starts
  first, and each arm as soon as its warm start is done, so no core idles
  while any run could start.
  """
  plans = {name: runner.plan(name, size, seeds, workdir) for name in names}
  warm = {r.workdir: r for w, _ in plans.values() for r in w}
  runner.execute(list(warm.values())
                 + [r for _, runs in plans.values() for r in runs],
                 parallel, show_progress)
  return {name: evidence(name, *plans[name], size=size, seeds=seeds,
                         workdir=workdir, command=command)
          for name in names}


def evidence(name: str, warm: list, runs: list, *, size: str, seeds: int,
             workdir: str, command: str) -> list[dict]:
  """Writes results.json, plots and report.md of finished runs; returns
  the judged claims."""
  ablation = spec.load(name).get_ablation()
  outdir = os.path.join(workdir, name, size)
  results = report.collect(runs)
  judged = [report.judge(dict(c), results) for c in ablation.claims]
  report.plot(results, list(ablation.plot_metrics),
              os.path.join(outdir, f"{name}_curves.png"),
              f"{name}: mean and 95% interval over {seeds} seeds")
  init = warm[0].warm_start_dir if warm else None
  heatmap.advantage_map(ablation, size, init,
                        os.path.join(outdir, f"{name}_advantages.png"))
  report.write(ablation, results, judged, outdir, size=size, seeds=seeds,
               command=command, machine=machine())
  return judged
