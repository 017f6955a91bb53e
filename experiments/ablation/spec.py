"""What an ablation is: arms, sizes, claims, and the train config of a run.

Each `experiments/configs/ablations/<name>.py` defines `get_ablation()` (an
`Ablation`, read by the runner and the report) and `get_config(arg)`, where
`arg` is "<arm>,<seed>,<size>", so every run is an ordinary
`python -m experiments.train --config=<file>:<arm>,<seed>,<size>` call.

An `Ablation` holds:
  name, description: for the report.
  base: the name of the loop config the arms override (one of
    `experiments.configs.CONFIGS`; "chain_arith" unless set).
  common: flat overrides for every arm ({"task.prm": "hackable", ...}).
  arms: {arm name: flat overrides} in plotting order.
  sizes: {size name: flat overrides}; "default" and "smoke" at least.
  claims: list of claims, each a dict with
    name, paper (the direction the paper reports, in words), metric (a
    full metric key: `eval/...` keys are read from the evaluations, all
    others from the train records, e.g. `rollout/entropy`), reduce ("final": mean of the last `last_k` evaluations,
    "samples_to_target": samples seen at the first evaluation with
    metric >= target, the budget + 1 if never), better ("higher"/"lower"),
    arm (the arm the paper favours) and baseline (the arm it beats).
  plot_metrics: metric keys (as in claims) plotted against samples seen.
Flat override keys are dotted config paths; dict values replace the whole
sub-config (e.g. "rl.estimator_kwargs").
"""

import dataclasses
import hashlib
import json

import ml_collections

from experiments import configs

__all__ = [
    "Ablation", "GRPO", "SMOKE", "apply", "build_config", "claim", "load",
    "sizes", "summary", "warm_start_key",
]


@dataclasses.dataclass(frozen=True)
class Ablation:
  """One ablation (see the module docstring for the fields)."""
  name: str
  description: str
  arms: dict
  sizes: dict
  claims: list
  plot_metrics: list
  base: str = "chain_arith"
  common: dict = dataclasses.field(default_factory=dict)


# The size every ablation uses in tests: seconds per run.
SMOKE = {"task.min_ops": 1, "task.max_ops": 2, "model.name": "tiny",
         "sampling.max_new_tokens": 24, "task.max_response_len": 24,
         "warm_start.steps": 4, "warm_start.batch_size": 8,
         "rl.num_steps": 2, "rl.num_groups": 2,
         "rl.group_size": 4, "eval_every": 1, "eval_problems": 4,
         "checkpoint_every": 1}


# The outcome-only baseline arm most ablations compare against.
GRPO = {"rl.estimator": "grpo"}


def summary(doc: str) -> str:
  """The report's description: a config module docstring's second paragraph."""
  return doc.split("\n\n")[1].replace("\n", " ")


def sizes(num_steps: int, eval_every: int, **default) -> dict:
  """{"default": RL steps at 8 prompts x 8 samples, 128 eval problems, a
  1000-step warm start, and `default` overrides; "smoke": SMOKE}.

  Sized so that `python -m experiments.ablate --ablation=all --seeds=3`
  fits in about an hour on 2 CPU cores: a default RL step of the toy model
  takes 0.33-0.5 s there (1.5-2 s on the tool task, whose calculator calls
  are host round trips), and each run adds about 25 s of start-up,
  compilation and evaluation. The warm start's loss stops falling at about
  1000 steps (of the loop config's 1500).
  """
  return {"default": {"rl.num_steps": num_steps, "rl.num_groups": 8,
                      "eval_every": eval_every, "eval_problems": 128,
                      "warm_start.steps": 1000, **default},
          "smoke": SMOKE}


def claim(name: str, paper: str, arm: str, baseline: str, *,
          metric: str = "eval/accuracy", reduce: str = "final",
          better: str = "higher", last_k: int = 2, **extra) -> dict:
  """One claim (fields in the module docstring); accuracy at the end by
  default."""
  return dict(name=name, paper=paper, arm=arm, baseline=baseline,
              metric=metric, reduce=reduce, better=better, last_k=last_k,
              **extra)


def load(name: str):
  """The ablation config module registered as `name`."""
  # Imported here: the ablation modules import this one.
  from experiments.configs import ablations  # pylint: disable=g-import-not-at-top
  return ablations.ABLATIONS[name]


def apply(config: ml_collections.ConfigDict, overrides: dict) -> None:
  """Sets each dotted key of `overrides` on `config` (keys must exist)."""
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = config
    for part in path:
      node = node[part]
    if leaf not in node:
      raise ValueError(f"override {key!r}: the config has no key {leaf!r}.")
    if isinstance(value, dict):
      value = ml_collections.ConfigDict(value)
    node[leaf] = value


def build_config(ablation: Ablation, arg: str) -> ml_collections.ConfigDict:
  """The train config of one run: "<arm>,<seed>,<size>"."""
  try:
    arm, seed, size = arg.split(",")
    seed = int(seed)
  except ValueError as e:
    raise ValueError(f"ablation run must be '<arm>,<seed>,<size>', got "
                     f"{arg!r}.") from e
  if arm not in ablation.arms:
    raise ValueError(f"arm {arm!r} is not one of {list(ablation.arms)}.")
  if size not in ablation.sizes:
    raise ValueError(f"size {size!r} is not one of {list(ablation.sizes)}.")
  config = configs.CONFIGS.lookup(ablation.base, "Ablation.base").get_config()
  apply(config, dict(ablation.common))
  apply(config, dict(ablation.sizes[size]))
  apply(config, dict(ablation.arms[arm]))
  config.seed = seed
  config.show_progress = False
  return config


# Task settings that only change how responses are scored, never the
# demonstrations: the process reward model and its matching.
_SCORING_ONLY = ("prm", "assignment", "unmatched_penalty")


def warm_start_key(config: ml_collections.ConfigDict) -> str:
  """Runs whose warm start would be identical share one (this hash).

  Arms that differ only in scoring settings share it, so their paired
  comparison starts from the same policy.
  """
  task = {k: v for k, v in config.task.to_dict().items()
          if not k.startswith(_SCORING_ONLY)}
  shared = {"task": task, "model": config.model.to_dict(),
            "warm_start": config.warm_start.to_dict(),
            "budget": config.sampling.max_new_tokens,
            "model_path": config.model_path}
  text = json.dumps(shared, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]
