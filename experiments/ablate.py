r"""Reproduces the seed papers' ablations with the training loop.

  python -m experiments.ablate                       # PURE, default size
  python -m experiments.ablate --ablation=all --seeds=3 --workdir=runs/abl
  python -m experiments.ablate --ablation=ucas --size=smoke

Writes, per ablation, under WORKDIR/<name>/<size>/: results.json, PNG
plots (curves and a per-token advantage map) and report.md with a verdict
per claim. Re-running with the same --workdir resumes.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from experiments import compilation_cache
from experiments.ablation import pipeline

__all__ = ["define_flags", "main"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The ablation, seeds, size, workdir and parallel processes."""
  flags.DEFINE_enum("ablation", "pure", pipeline.NAMES + ("all",),
                    "Which ablation to run.", flag_values=flag_values)
  flags.DEFINE_integer("seeds", 3, "Seeds per arm.", flag_values=flag_values)
  flags.DEFINE_string("size", "default",
                      "Size preset of the ablation configs (default, smoke).",
                      flag_values=flag_values)
  flags.DEFINE_string("workdir", "runs/ablations",
                      "Where runs, plots and reports go.",
                      flag_values=flag_values)
  flags.DEFINE_integer("parallel", os.cpu_count() or 1,
                       "Training processes at once (each single-threaded).",
                       flag_values=flag_values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f["verbosity"].present:  # orbax logs every restore.
    logging.set_verbosity(logging.ERROR)
  compilation_cache.enable()
  names = pipeline.NAMES if f.ablation == "all" else (f.ablation,)
  command = "python -m experiments.ablate " + " ".join(sys.argv[1:])
  judged_by_name = pipeline.run(
      names, size=f.size, seeds=f.seeds, workdir=f.workdir,
      parallel=f.parallel, command=command.strip())
  for name, judged in judged_by_name.items():
    report = os.path.join(f.workdir, name, f.size, "report.md")
    print(f"\n{name}: {report}")
    for claim in judged:
      print(f"  {claim['name']}: {claim['verdict']} (d = {claim['mean']:.3g},"
            f" 95% [{claim['low']:.3g}, {claim['high']:.3g}])")


if __name__ == "__main__":
  define_flags()
  app.run(main)
