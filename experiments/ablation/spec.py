"""What an ablation is: arms, sizes, pre-registered claims and readings,
run configs.

Each `experiments/configs/ablations/<name>.py` defines `get_ablation()` (an
`Ablation`, read by the runner and the report) and `get_config(arg)`, where
`arg` is "<arm>,<seed>,<size>", so every run is an ordinary
`python -m experiments.train --config=<file>:<arm>,<seed>,<size>` call.

The claims, their metrics, reductions, directions and smallest effects of
interest, and the ablation's α, correction, test and power are its
pre-registration: the runner hashes them (with the arms and the size's
steps and seeds) before any training starts, and the report refuses to give
verdicts once they differ from what the runs started under
(`preregistration.py`). Change them after seeing results only by raising
`version` (new runs in a new folder) and say why in docs/ablations.md's
changelog.
"""

import dataclasses
import hashlib
import json
import os

import ml_collections

from experiments import configs
from experiments.ablation import cost
from experiments.ablation import reductions

__all__ = [
    "Ablation", "CORRECTIONS", "Claim", "FULL_WARM_START", "GRPO", "KINDS",
    "READINGS", "Reading", "SMOKE", "Size", "TESTS", "WARM_START_STEPS",
    "apply", "build_config", "check_size", "load", "output_dir",
    "override_flags", "sizes", "summary", "warm_seed", "warm_start_key",
]

_BETTER = ("higher", "lower")
KINDS = ("superiority", "non_inferiority")
READINGS = ("final", "onset", "at_level")
CORRECTIONS = ("holm", "none")
TESTS = ("t", "sign_flip")


def _check_choice(owner: str, field: str, value, valid) -> None:
  if value not in valid:
    raise ValueError(f"{owner}: {field} must be one of {valid}, got "
                     f"{value!r}.")


@dataclasses.dataclass(frozen=True)
class Claim:
  """One pre-registered claim: `arm` beats `baseline` on `metric`.

  Attributes:
    name: short name (unique in the ablation).
    paper: the paper's result, in words.
    arm, baseline: the arm the paper favours and the one it beats.
    metric: the primary metric's full key ("rollout/accuracy",
      "task/filler_steps", "eval/accuracy", ...): `eval/...` keys are read
      from the evaluations, all others from the train records (see
      `reductions`).
    reduce: how a run's curve becomes one number (`reductions.REDUCTIONS`).
    better: "higher" or "lower": the paper's direction on the reduced value.
    smallest_effect: the smallest effect of interest, in the reduced
      value's units (> 0); for a non-inferiority claim, its margin.
    kind: "superiority" (d > 0) or "non_inferiority" (d > −margin: "at
      least as good as").
    primary: primary claims form the ablation's multiplicity family (Holm);
      secondary ones are exploratory, reported without correction.
    target: the level of "samples_to_target".
    tail: the share of training steps "train_tail" averages.
    window: records in the trailing mean of "samples_to_target".
    versus_start: a change within one arm (`baseline` = `arm`): each seed's
      reduced metric against the same run's start
      (`reductions.start`), e.g. "filler rises under the sum form".
  """
  name: str
  paper: str
  arm: str
  baseline: str
  metric: str = "rollout/accuracy"
  reduce: str = "train_tail"
  better: str = "higher"
  smallest_effect: float = 0.05
  kind: str = "superiority"
  primary: bool = True
  target: float | None = None
  tail: float = 0.25
  window: int = 1
  versus_start: bool = False

  def __post_init__(self):
    reductions.check(self.metric, self.reduce)
    _check_choice(f"claim {self.name!r}", "better", self.better, _BETTER)
    _check_choice(f"claim {self.name!r}", "kind", self.kind, KINDS)
    if not self.smallest_effect > 0:
      raise ValueError(f"claim {self.name!r}: smallest_effect must be > 0, "
                       f"got {self.smallest_effect!r}.")
    if (self.reduce == "samples_to_target") != (self.target is not None):
      raise ValueError(f"claim {self.name!r}: target is needed by, and only "
                       f"by, reduce='samples_to_target'.")
    if self.versus_start and self.reduce == "samples_to_target":
      raise ValueError(f"claim {self.name!r}: a versus_start claim needs a "
                       f"level reduction, not samples_to_target.")
    if not 0 < self.tail <= 1 or self.window < 1:
      raise ValueError(f"claim {self.name!r}: need 0 < tail <= 1 and window "
                       f">= 1, got {self.tail!r}, {self.window!r}.")

  def reduce_kwargs(self) -> dict:
    return {"tail": self.tail, "target": self.target, "window": self.window}


@dataclasses.dataclass(frozen=True)
class Reading:
  """A number the report gives for every arm beside the claims: described
  (mean over seeds, and how many seeds have one), never tested.

  Attributes:
    name: the report's name for it.
    metric: the full key it reads.
    kind: "final": `metric` reduced by `reduce` (and `tail`) as a claim
      would; "onset": the training step at which `metric`'s trailing mean
      over `window` steps first moves past its start (the mean of its first
      `window` steps) by more than `margin`, upwards with `rising`, else
      downwards (none when it never does); "at_level": `metric`'s trailing
      mean at the first training step where `level_metric`'s reaches
      `level` (None: the highest level that every run of the ablation
      reaches, one level for all arms).
  """
  name: str
  metric: str
  kind: str = "final"
  reduce: str = "train_tail"
  tail: float = 0.25
  margin: float = 0.0
  rising: bool = True
  window: int = 5
  level_metric: str = "rollout/accuracy"
  level: float | None = None

  def __post_init__(self):
    _check_choice(f"reading {self.name!r}", "kind", self.kind, READINGS)
    if self.kind == "final":
      reductions.check(self.metric, self.reduce)
    elif "train" != reductions.source(self.metric) or (
        "train" != reductions.source(self.level_metric)):
      raise ValueError(f"reading {self.name!r}: {self.kind} reads training "
                       f"records; {self.metric!r} and {self.level_metric!r}"
                       f" must be training keys.")
    if self.window < 1 or self.margin < 0 or not 0 < self.tail <= 1:
      raise ValueError(f"reading {self.name!r}: need window >= 1, margin "
                       f">= 0 and 0 < tail <= 1, got {self.window!r}, "
                       f"{self.margin!r}, {self.tail!r}.")


@dataclasses.dataclass(frozen=True)
class Size:
  """A size preset: config overrides, seeds and the cost model's timing.

  Attributes:
    overrides: flat dotted config overrides ({"rl.num_steps": 80, ...}).
    seeds: seeds per arm (the `--seeds` default).
    warm_starts: distinct warm starts (initial policies) per task; seed s
      starts from warm start s mod warm_starts.
    timing: measured seconds per step and evaluation (`cost.Timing`).
  """
  overrides: dict
  seeds: int
  warm_starts: int
  timing: cost.Timing

  def __post_init__(self):
    if self.seeds < 1 or not 1 <= self.warm_starts:
      raise ValueError(f"need seeds >= 1 and warm_starts >= 1, got "
                       f"{self.seeds}, {self.warm_starts}.")


@dataclasses.dataclass(frozen=True)
class Ablation:
  """One ablation.

  Attributes:
    name, description: for the report.
    arms: {arm name: flat overrides} (each arm in some claim).
    sizes: {size name: Size}; "default" and "smoke" at least.
    claims: the pre-registered `Claim`s.
    readings: the `Reading`s the report gives per arm (fixed with the
      claims, though never tested).
    base: the name of the loop config the arms override.
    common: flat overrides for every arm ({"task.prm": "hackable", ...}).
    plot_metrics: extra diagnostic keys drawn for every arm.
    alpha: the significance level of every claim.
    correction: "holm" (over the primary claims) or "none".
    test: the p-value the verdict uses: "t" (paired t) or "sign_flip".
    power: the power at which the minimum detectable effect is computed.
    version: raise it to change the pre-registration after runs started.
  Flat override keys are dotted config paths; dict values replace the whole
  sub-config (e.g. "rl.estimator_kwargs").
  """
  name: str
  description: str
  arms: dict
  sizes: dict
  claims: tuple
  readings: tuple = ()
  base: str = "chain_arith"
  common: dict = dataclasses.field(default_factory=dict)
  plot_metrics: tuple = ()
  alpha: float = 0.05
  correction: str = "holm"
  test: str = "t"
  power: float = 0.8
  version: int = 1

  def __post_init__(self):
    names = [c.name for c in self.claims]
    if len(set(names)) != len(names):
      raise ValueError(f"{self.name}: claim names must be unique: {names}.")
    for c in self.claims:
      unknown = {c.arm, c.baseline} - set(self.arms)
      if unknown or (c.arm == c.baseline) != c.versus_start:
        raise ValueError(f"{self.name}: claim {c.name!r} compares {c.arm!r} "
                         f"with {c.baseline!r}; both must be arms of "
                         f"{list(self.arms)}, the same one exactly when "
                         f"versus_start is set.")
    if not {"default", "smoke"} <= set(self.sizes):
      raise ValueError(f"{self.name}: sizes need 'default' and 'smoke', got "
                       f"{list(self.sizes)}.")
    _check_choice(self.name, "correction", self.correction, CORRECTIONS)
    _check_choice(self.name, "test", self.test, TESTS)
    if not 0 < self.alpha < 1 or not 0 < self.power < 1:
      raise ValueError(f"{self.name}: alpha and power must be in (0, 1), "
                       f"got {self.alpha!r}, {self.power!r}.")
    if isinstance(self.version, bool) or not isinstance(
        self.version, int) or self.version < 1:
      raise ValueError(f"{self.name}: version must be an int >= 1, got "
                       f"{self.version!r}.")


# The size every ablation uses in tests: seconds per run.
SMOKE = Size({"task.min_ops": 1, "task.max_ops": 2, "model.name": "tiny",
              "sampling.max_new_tokens": 24, "task.max_response_len": 24,
              "warm_start.steps": 4, "warm_start.batch_size": 8,
              "rl.num_steps": 2, "rl.num_groups": 2, "rl.group_size": 4,
              "eval_every": 1, "eval_problems": 4, "checkpoint_every": 1},
             seeds=1, warm_starts=1,
             timing=cost.Timing(rl_step=0.2, evaluation=0.2,
                                warm_start_step=0.05))

# The outcome-only baseline arm most ablations compare against.
GRPO = {"rl.estimator": "grpo"}
# Warm-start steps of a default size. The supervised loss stops falling at
# about 1000 steps; 400 leaves a weak policy (eval accuracy about 0.17 on
# 2-4 operations) but keeps PURE, README's first command, within its
# 10-minute budget with three warm starts, and PURE's mechanism (reward
# hacking) shows from such a start. The other ablations need a policy that
# can learn the task within their steps: `FULL_WARM_START` (docs/ablations.md,
# "Sizes and the cost model" and the changelog of 2026-12-07).
WARM_START_STEPS = 400
FULL_WARM_START = {"warm_start.steps": 1000}


def summary(doc: str) -> str:
  """The report's description: a config module docstring's second paragraph."""
  return doc.split("\n\n")[1].replace("\n", " ")


def sizes(num_steps: int, evaluations: int, timing: cost.Timing, *,
          seeds: int = 8, warm_starts: int = 3, smoke: dict | None = None,
          **default) -> dict:
  """{"default": RL steps of 8 prompts x 8 samples, `evaluations` evenly
  spaced evaluations of 1024 held-out problems after the one at step 0, a
  WARM_START_STEPS warm start and `default` overrides; "smoke": SMOKE, with
  `smoke` overrides on top (for an ablation whose mechanism needs more
  than SMOKE's 1-2-operation chains to act).

  `timing` holds the measured step and evaluation times the cost model
  plans the budget with (`cost.calibrate` of a finished run gives them).
  """
  every = max(num_steps // evaluations, 1)
  return {"default": Size({"rl.num_steps": num_steps, "rl.num_groups": 8,
                           "eval_every": every, "eval_problems": 1024,
                           "checkpoint_every": every,
                           "warm_start.steps": WARM_START_STEPS, **default},
                          seeds=seeds, warm_starts=warm_starts,
                          timing=timing),
          "smoke": dataclasses.replace(
              SMOKE, overrides={**SMOKE.overrides, **(smoke or {})})}


def output_dir(workdir: str, ablation: Ablation, size: str) -> str:
  """Where an ablation's runs, registration, plots and report go: version 1
  in WORKDIR/<name>/<size>, version v in WORKDIR/<name>-v<v>/<size>."""
  name = (ablation.name if ablation.version == 1
          else f"{ablation.name}-v{ablation.version}")
  return os.path.join(workdir, name, size)


def load(name: str):
  """The ablation config module registered as `name`."""
  # Imported here: the ablation modules import this one.
  from experiments.configs import ablations  # pylint: disable=g-import-not-at-top
  return ablations.ABLATIONS[name]


def apply(config: ml_collections.ConfigDict, overrides: dict,
          new_keys: bool = False) -> None:
  """Sets each dotted key of `overrides` on `config` (the keys must exist
  unless `new_keys`, as for command-line overrides, which the run's config
  check judges)."""
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = config
    for part in path:
      node = node[part]
    if leaf not in node and not new_keys:
      raise ValueError(f"override {key!r}: the config has no key {leaf!r}.")
    if isinstance(value, dict):
      value = ml_collections.ConfigDict(value)
    node[leaf] = value


def build_config(ablation: Ablation, arg: str,
                 overrides: dict | None = None) -> ml_collections.ConfigDict:
  """The train config of one run: "<arm>,<seed>,<size>", then the
  command line's `overrides` ({dotted key: value}, e.g. {"model_path":
  DIR}), which every run of the ablation gets (`override_flags`)."""
  try:
    arm, seed, size = arg.split(",")
    seed = int(seed)
  except ValueError as e:
    raise ValueError(f"ablation run must be '<arm>,<seed>,<size>', got "
                     f"{arg!r}.") from e
  if arm not in ablation.arms:
    raise ValueError(f"arm {arm!r} is not one of {list(ablation.arms)}.")
  check_size(ablation, size)
  config = configs.CONFIGS.lookup(ablation.base, "Ablation.base").get_config()
  apply(config, dict(ablation.common))
  apply(config, dict(ablation.sizes[size].overrides))
  apply(config, dict(ablation.arms[arm]))
  apply(config, dict(overrides or {}), new_keys=True)
  config.seed = seed
  config.show_progress = False
  return config


def override_flags(overrides: dict | None) -> tuple[str, ...]:
  """`--config.<key>=<value>` flags that set `overrides` in a run.

  Raises:
    ValueError: a value that is not a bool, int, float or string.
  """
  flags = []
  for key, value in (overrides or {}).items():
    if isinstance(value, bool):
      text = "true" if value else "false"
    elif isinstance(value, (int, float, str)):
      text = repr(value) if isinstance(value, float) else str(value)
    else:
      raise ValueError(f"override {key!r}: {value!r} is not a bool, int, "
                       f"float or string; set a mapping key by key.")
    flags.append(f"--config.{key}={text}")
  return tuple(flags)


def check_size(ablation: Ablation, size: str) -> Size:
  """The Size named `size`; ValueError naming the valid ones otherwise."""
  if size not in ablation.sizes:
    raise ValueError(f"size {size!r} is not one of {list(ablation.sizes)}.")
  return ablation.sizes[size]


def warm_seed(ablation: Ablation, size: str, seed: int) -> int:
  """The warm start (initial policy) seed `seed` starts from."""
  return seed % check_size(ablation, size).warm_starts


# Task settings that only change how responses are scored, never the
# demonstrations: the process reward model and its matching.
_SCORING_ONLY = ("prm", "assignment", "unmatched_penalty")


def warm_start_key(config: ml_collections.ConfigDict, seed: int) -> str:
  """Runs whose warm start would be identical share one (this hash): the
  task, model and warm-start settings and the warm start's `seed`.

  Arms that differ only in scoring settings share it, so their paired
  comparison starts from the same policy.
  """
  task = {k: v for k, v in config.task.to_dict().items()
          if not k.startswith(_SCORING_ONLY)}
  # Whether a checkpoint is warm-started decides only whether the warm
  # start exists (model_path is in the key): left out, so the keys of
  # earlier runs stay the same.
  warm = {k: v for k, v in config.warm_start.to_dict().items()
          if k != "pretrained"}
  shared = {"task": task, "model": config.model.to_dict(),
            "warm_start": warm,
            "budget": config.sampling.max_new_tokens,
            "model_path": config.model_path, "seed": seed}
  text = json.dumps(shared, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]
