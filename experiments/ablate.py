r"""Reproduces the seed papers' ablations with the training loop.

  python -m experiments.ablate                       # PURE, default size
  python -m experiments.ablate --ablation=all --workdir=runs/abl
  python -m experiments.ablate --ablation=ucas --size=smoke
  python -m experiments.ablate --ablation=all --predict   # cost model only
  python -m experiments.ablate --ablation=tool --config.model_path=DIR

`--config.<key>=<value>` overrides go to every run of the ablation (its
arms and warm starts) and into its pre-registration: with
`--config.model_path=DIR` every arm trains that Qwen2 or Llama checkpoint,
its tasks written through the checkpoint's tokenizer and chat template,
without a warm start (`--config.warm_start.pretrained=true` adds one).

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
from ml_collections import config_flags

from experiments import compilation_cache
from experiments.ablation import cost
from experiments.ablation import pipeline
from experiments.ablation import spec

__all__ = ["define_flags", "main"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The ablation, seeds, size, workdir, parallel processes and --predict."""
  flags.DEFINE_enum("ablation", "pure", pipeline.NAMES + ("all",),
                    "Which ablation to run.", flag_values=flag_values)
  flags.DEFINE_integer("seeds", None, "Seeds per arm; default: the size's "
                       "(part of the pre-registration).",
                       flag_values=flag_values)
  flags.DEFINE_string("size", "default",
                      "Size preset of the ablation configs (default, smoke).",
                      flag_values=flag_values)
  flags.DEFINE_string("workdir", "runs/ablations",
                      "Where runs, plots and reports go.",
                      flag_values=flag_values)
  flags.DEFINE_integer("parallel", os.cpu_count() or 1,
                       "Training processes at once (each single-threaded).",
                       flag_values=flag_values)
  flags.DEFINE_bool("predict", False, "Print the cost model's core-minutes "
                    "and wall time and exit without running.",
                    flag_values=flag_values)
  # The loop config the overrides are parsed against (every ablation's
  # base); only the --config.<key> overrides are used.
  config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "configs", "chain_arith.py"),
      "Overrides for every run: --config.model_path=DIR, "
      "--config.<key>=<value>.", lock_config=False,
      accept_new_attributes=True, flag_values=flag_values)


def _predict(names, *, size: str, seeds: int | None, workdir: str,
             parallel: int, overrides: dict) -> None:
  planned = pipeline.plans(names, size, seeds, workdir, overrides)
  for name, (warm, runs) in planned.items():
    print(f"{name}: {len(runs)} runs, {len(warm)} warm starts, "
          f"{sum(r.seconds for r in warm + runs) / 60:.1f} core-minutes")
  wall = cost.wall_seconds(pipeline.pooled(planned), parallel)
  print(f"all together: {wall / 60:.1f} minutes on {parallel} cores")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f["verbosity"].present:  # orbax logs every restore.
    logging.set_verbosity(logging.ERROR)
  names = pipeline.NAMES if f.ablation == "all" else (f.ablation,)
  overrides = dict(config_flags.get_override_values(f["config"]))
  if f.predict:
    _predict(names, size=f.size, seeds=f.seeds, workdir=f.workdir,
             parallel=f.parallel, overrides=overrides)
    return
  compilation_cache.enable()
  command = "python -m experiments.ablate " + " ".join(sys.argv[1:])
  judged_by_name = pipeline.run(
      names, size=f.size, seeds=f.seeds, workdir=f.workdir,
      parallel=f.parallel, command=command.strip(), overrides=overrides)
  for name, judged in judged_by_name.items():
    outdir = spec.output_dir(f.workdir, spec.load(name).get_ablation(),
                             f.size)
    print(f"\n{name}: {os.path.join(outdir, 'report.md')}")
    for claim in judged:
      print(f"  {claim['name']}: {claim['verdict']} (d = "
            f"{claim['mean']:.3g}, 95% [{claim['low']:.3g}, "
            f"{claim['high']:.3g}], p adj. {claim['p_adjusted']:.2g}, "
            f"MDE {claim['mde']:.3g})")


if __name__ == "__main__":
  define_flags()
  app.run(main)
