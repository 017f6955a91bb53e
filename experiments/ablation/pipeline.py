"""One ablation end to end: warm start, arms x seeds, evidence, report."""

import os
import platform

import jax

from experiments.ablation import heatmap
from experiments.ablation import report
from experiments.ablation import runner
from experiments.ablation import spec

NAMES = ("pure", "tp_grpo", "ucas", "tool", "r3l")


def machine() -> str:
  return (f"{platform.machine()} {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.devices()[0].platform})")


def run(name: str, *, size: str, seeds: int, workdir: str, parallel: int,
        command: str, show_progress: bool = True) -> list[dict]:
  """Runs (or resumes) ablation `name`; returns its judged claims."""
  ablation = spec.load(name).get_ablation()
  config_file, warm, runs = runner.plan(name, size, seeds, workdir)
  runner.execute(warm, config_file, parallel, show_progress)
  runner.execute(runs, config_file, parallel, show_progress)
  outdir = os.path.join(workdir, name, size)
  results = report.collect(runs)
  judged = [report.judge(dict(c), results) for c in ablation.claims]
  report.plot(results, list(ablation.plot_metrics),
              os.path.join(outdir, f"{name}_curves.png"),
              f"{name}: mean and 95% interval over {seeds} seeds")
  init = (os.path.join(warm[0].workdir, "warm_start") if warm else None)
  heatmap.advantage_map(ablation, size, init,
                        os.path.join(outdir, f"{name}_advantages.png"))
  report.write(ablation, results, judged, outdir, size=size, seeds=seeds,
               command=command, machine=machine())
  return judged
