r"""Reproduces the seed papers' ablations with the training loop.

  python -m experiments.ablate                       # PURE, default size
  python -m experiments.ablate --ablation=all --workdir=runs/abl
  python -m experiments.ablate --ablation=ucas --size=smoke
  python -m experiments.ablate --ablation=all --predict   # cost model only

Writes, per ablation, under WORKDIR/<name>/<size>/: preregistration.json
(before any run starts), results.json, PNG plots (one panel per claim, and
a per-token advantage map) and report.md with a verdict per claim.
Re-running with the same --workdir resumes; a changed pre-registration is
refused.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from experiments.ablation import cost
from experiments.ablation import pipeline
from experiments.ablation import spec

_ABLATION = flags.DEFINE_enum(
    "ablation", "pure", pipeline.NAMES + ("all",), "Which ablation to run.")
_SEEDS = flags.DEFINE_integer(
    "seeds", None, "Seeds per arm; default: the size's (part of the "
    "pre-registration).")
_SIZE = flags.DEFINE_string("size", "default",
                            "Size preset of the ablation configs (default, "
                            "smoke).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/ablations",
                               "Where runs, plots and reports go.")
_PARALLEL = flags.DEFINE_integer(
    "parallel", os.cpu_count() or 1, "Training processes at once (each "
    "single-threaded).")
_PREDICT = flags.DEFINE_bool(
    "predict", False, "Print the cost model's core-minutes and wall time "
    "and exit without running.")


def _predict(names) -> None:
  planned = pipeline.plans(names, _SIZE.value, _SEEDS.value, _WORKDIR.value)
  for name, (warm, runs) in planned.items():
    print(f"{name}: {len(runs)} runs, {len(warm)} warm starts, "
          f"{sum(r.seconds for r in warm + runs) / 60:.1f} core-minutes")
  wall = cost.wall_seconds(pipeline.pooled(planned), _PARALLEL.value)
  print(f"all together: {wall / 60:.1f} minutes on {_PARALLEL.value} cores")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # orbax logs every restore.
    logging.set_verbosity(logging.ERROR)
  names = pipeline.NAMES if _ABLATION.value == "all" else (_ABLATION.value,)
  if _PREDICT.value:
    _predict(names)
    return
  jax.config.update("jax_compilation_cache_dir", os.environ.get(
      "JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/cajax/jax")))
  command = "python -m experiments.ablate " + " ".join(sys.argv[1:])
  judged_by_name = pipeline.run(
      names, size=_SIZE.value, seeds=_SEEDS.value, workdir=_WORKDIR.value,
      parallel=_PARALLEL.value, command=command.strip())
  for name, judged in judged_by_name.items():
    outdir = spec.output_dir(_WORKDIR.value, spec.load(name).get_ablation(),
                             _SIZE.value)
    print(f"\n{name}: {os.path.join(outdir, 'report.md')}")
    for claim in judged:
      print(f"  {claim['name']}: {claim['verdict']} (d = "
            f"{claim['mean']:.3g}, 95% [{claim['low']:.3g}, "
            f"{claim['high']:.3g}], p adj. {claim['p_adjusted']:.2g}, "
            f"MDE {claim['mde']:.3g})")


if __name__ == "__main__":
  app.run(main)
