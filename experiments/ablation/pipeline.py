"""Ablations end to end: registration, warm starts, arms x seeds, evidence."""

import os

from experiments.ablation import cost
from experiments.ablation import credit
from experiments.ablation import heatmap
from experiments.ablation import preregistration
from experiments.ablation import report
from experiments.ablation import runner
from experiments.ablation import spec
from experiments.ablation import verdicts
from experiments.configs import ablations

__all__ = [
    "NAMES", "evidence", "plans", "pooled", "run",
]

NAMES = ablations.ABLATIONS.names()


def plans(names, size: str, seeds: int | None, workdir: str,
          overrides: dict | None = None) -> dict:
  """{name: (warm-start runs, arm runs)} (see `runner.plan`)."""
  return {name: runner.plan(name, size, seeds, workdir, overrides)
          for name in names}


def pooled(planned: dict) -> list:
  """Every distinct warm start, then every arm run, in the runner's order."""
  warm = {r.workdir: r for w, _ in planned.values() for r in w}
  return list(warm.values()) + [r for _, runs in planned.values()
                                for r in runs]


def _seeds(runs) -> int:
  return len({r.config_arg.split(",")[1] for r in runs})


def _registered(name: str, size: str, runs, overrides) -> tuple:
  ablation = spec.load(name).get_ablation()
  return ablation, preregistration.plan(ablation, size, _seeds(runs),
                                        overrides)


def run(names, *, size: str, seeds: int | None, workdir: str, parallel: int,
        command: str, show_progress: bool = True,
        overrides: dict | None = None) -> dict[str, list[dict]]:
  """Runs (or resumes) the ablations `names`; {name: its judged claims}.

  `overrides` ({dotted key: value}, e.g. {"model_path": DIR}) go to every
  run and into the registration.

  Every ablation's plan is registered (or checked against its stored
  registration) before anything trains. Warm starts and arms share one
  pool of `parallel` processes: warm starts first, and each arm as soon as
  its warm start is done, so no core idles while any run could start.
  Before an ablation's first arm starts, its arms' credit on the shared
  batch (`credit.py`, with that arm's warm start) must differ pairwise.

  Raises:
    preregistration.PreregistrationError: a plan changed after its runs
      started.
    ValueError: two arms of an ablation give identical credit.
  """
  planned = plans(names, size, seeds, workdir, overrides)
  for name, (_, runs) in planned.items():
    ablation, registered = _registered(name, size, runs, overrides)
    preregistration.register(spec.output_dir(workdir, ablation, size),
                             registered, [r.workdir for r in runs],
                             runner.xla_flags())
  checked = {}  # {ablation: (warm start, its arms' credit)}

  def check_arms(run):
    if run.num_steps and run.ablation not in checked:
      init = _warm_start([run])
      checked[run.ablation] = (init, credit.check_distinct(
          spec.load(run.ablation).get_ablation(), size, init, overrides))

  runner.execute(pooled(planned), parallel, show_progress,
                 before_start=check_arms)
  return {name: evidence(name, *planned[name], size=size, workdir=workdir,
                         command=command, overrides=overrides,
                         credit=checked.get(name))
          for name in names}


def _warm_start(runs) -> str | None:
  """The warm start folder of the first run that has one (seed 0's)."""
  return next((r.after.warm_start_dir for r in runs if r.after), None)


def evidence(name: str, warm: list, runs: list, *, size: str, workdir: str,
             command: str, overrides: dict | None = None,
             credit: tuple | None = None) -> list[dict]:
  """Writes results.json, plots and report.md of finished runs; returns
  the judged claims (`credit`: (warm start, the arms' credit) from the
  check before training, reused by the heat map when its warm start is
  the map's).

  Raises:
    preregistration.PreregistrationError: the ablation's plan is not the
      one its runs were registered under.
  """
  ablation, registered = _registered(name, size, runs, overrides)
  outdir = spec.output_dir(workdir, ablation, size)
  stored = preregistration.check(outdir, registered)
  results = report.collect(runs)
  judged = verdicts.judge(
      ablation, results, lambda seed: spec.warm_seed(ablation, size, seed))
  images = report.plot(ablation, results, judged, outdir)
  seeds = _seeds(runs)
  init = _warm_start(runs)
  heatmap.advantage_map(ablation, size, init,
                        os.path.join(outdir, f"{name}_advantages.png"),
                        credit=credit[1] if credit and credit[0] == init
                        else None, overrides=overrides)
  used = {id(r.after): r.after for r in runs if r.after}
  report.write(ablation, results, judged, outdir, size=size, seeds=seeds,
               command=command, registration=stored,
               environment=preregistration.environment(runner.xla_flags()),
               measured=cost.measure(list(used.values()), runs),
               images=images)
  return judged
