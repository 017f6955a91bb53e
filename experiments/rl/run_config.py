"""A run's config, typed: `get_config()` ConfigDicts validated once into
frozen dataclasses.

The config files stay `get_config()` ConfigDicts (experiments/configs/*.py),
so the command line overrides any key, in the dotted form included
(`--config.rl.estimator_kwargs.certainty=negative_entropy`). `validate`
turns one into a `Run` before anything is built or compiled, and everything
after uses that: a key the schema below does not have, a renamed key, a
missing key or a value of the wrong type fails naming the key; each
section's `__post_init__` checks its values (domains, names against the
registries); the estimator is resolved and the policy loss bound once
(`RL.resolved`, `RL.loss`).

Free-form sections are mappings checked by their owner: `task` (by the
task), `model.overrides` (by the model config), `rl.estimator_kwargs` (by
`cajax.resolve` and a trace of the estimator) and `rl.policy_loss_kwargs`
(by `cajax.losses.make_policy_loss`).
"""

import dataclasses
import types
import typing
from typing import Any, Mapping

import cajax
import ml_collections

from experiments.models import config as model_config
from experiments.rl import config_checks
from experiments.rl import rollouts as rollouts_lib

__all__ = [
    "IMPLICIT_PRM_ESTIMATORS", "ImplicitPRM", "Mesh", "Model", "Optimizer",
    "RENAMED", "RL", "Run", "Sampling", "WarmStart", "as_dict", "validate",
]

# Estimators whose step rewards come from an implicit PRM that the trainer
# trains beside the policy (`experiments/rl/implicit_prm.py`).
IMPLICIT_PRM_ESTIMATORS = ("istar",)

# Keys that were renamed (old -> new) or removed (old -> why); either fails
# with a message that says so.
RENAMED = {
    "rl.prompts_per_step": "rl.num_groups",
    "rl.samples_per_prompt": "rl.group_size",
    "rl.num_minibatches": "rl.num_mini_batches",
    "rl.num_microbatches": "rl.num_micro_batches",
    "rl.token_rewards": "rl.reward_source",
    "rl.tis_cap": "rl.tis_ratio_cap",
}
_REMOVED = {"log_every": "every RL step writes one metrics record"}


def _at_least(value, low, key: str) -> None:
  if not value >= low:
    raise ValueError(f"`{key}` must be >= {low}, got {value!r}.")


def _in_unit_interval(value, key: str) -> None:
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"`{key}` must be in [0, 1], got {value!r}.")


@dataclasses.dataclass(frozen=True)
class Model:
  """`model.*`: a named size of experiments/models/config.py."""
  name: str
  overrides: Mapping[str, Any]

  def __post_init__(self):
    model_config.SIZES.check(self.name, "model.name")


@dataclasses.dataclass(frozen=True)
class Sampling:
  """`sampling.*`: the sampler (`max_new_tokens` is the response budget)."""
  max_new_tokens: int
  temperature: float
  top_k: int
  top_p: float

  def __post_init__(self):
    _at_least(self.max_new_tokens, 1, "sampling.max_new_tokens")
    _at_least(self.temperature, 0.0, "sampling.temperature")
    _at_least(self.top_k, 0, "sampling.top_k")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"`sampling.top_p` must be in (0, 1], got "
                       f"{self.top_p!r}.")


@dataclasses.dataclass(frozen=True)
class WarmStart:
  """`warm_start.*`: supervised steps on demonstrations with mistakes
  (`pretrained`: also before RL from a `model_path` checkpoint)."""
  steps: int
  batch_size: int
  learning_rate: float
  wrong_rate: float
  filler_rate: float
  pretrained: bool

  def __post_init__(self):
    _at_least(self.steps, 0, "warm_start.steps")
    _at_least(self.batch_size, 1, "warm_start.batch_size")
    _in_unit_interval(self.wrong_rate, "warm_start.wrong_rate")
    _in_unit_interval(self.filler_rate, "warm_start.filler_rate")


@dataclasses.dataclass(frozen=True)
class ImplicitPRM:
  """`rl.implicit_prm.*`: iStar's implicit PRM, a second decoder trained by
  trajectory DPO beside the policy (built only for an estimator of
  `IMPLICIT_PRM_ESTIMATORS`). `beta` is THE β of the step rewards and of
  the DPO loss; `learning_rate` and `grad_clip` set its own AdamW (the
  other optimizer settings are `optimizer.*`'s)."""
  beta: float
  learning_rate: float
  grad_clip: float

  def __post_init__(self):
    for key in ("beta", "learning_rate", "grad_clip"):
      _at_least(getattr(self, key), 0.0, f"rl.implicit_prm.{key}")


@dataclasses.dataclass(frozen=True)
class RL:
  """`rl.*`: the RL step (see docs/training.md for each key).

  `resolved` (the estimator resolved with its settings) and `loss` (the
  policy loss bound with its settings) are derived once, here.
  """
  num_steps: int
  num_groups: int
  group_size: int
  estimator: str
  estimator_kwargs: Mapping[str, Any]
  reward_source: str
  verifiable_fraction: float
  retry_samples: int
  mask_retry_prefix: bool
  policy_loss: str
  policy_loss_kwargs: Mapping[str, Any]
  aggregation: str
  kl_coef: float
  kl_kind: str
  entropy_coef: float
  value_coef: float
  value_clip: float | None
  tis_ratio_cap: float
  ppo_epochs: int
  num_mini_batches: int
  num_micro_batches: int
  implicit_prm: ImplicitPRM
  resolved: cajax.registry.Resolved = dataclasses.field(
      init=False, repr=False, compare=False)
  loss: cajax.losses.PolicyLoss = dataclasses.field(init=False, repr=False,
                                                    compare=False)

  def __post_init__(self):
    _at_least(self.num_steps, 0, "rl.num_steps")
    for key in ("num_groups", "group_size", "ppo_epochs", "num_mini_batches",
                "num_micro_batches"):
      _at_least(getattr(self, key), 1, f"rl.{key}")
    for key in ("kl_coef", "entropy_coef", "value_coef", "tis_ratio_cap"):
      _at_least(getattr(self, key), 0.0, f"rl.{key}")
    if self.value_clip is not None and not self.value_clip > 0:
      raise ValueError(f"`rl.value_clip` must be > 0 or None, got "
                       f"{self.value_clip!r}.")
    _in_unit_interval(self.verifiable_fraction, "rl.verifiable_fraction")
    if not 0 <= self.retry_samples < self.group_size:
      raise ValueError(f"`rl.retry_samples` must be in [0, rl.group_size="
                       f"{self.group_size}), got {self.retry_samples}.")
    pieces = self.num_mini_batches * self.num_micro_batches
    if self.batch_size % pieces:
      raise ValueError(
          f"rl.num_groups x rl.group_size = {self.batch_size} rows must "
          f"split into rl.num_mini_batches x rl.num_micro_batches = "
          f"{pieces} equal pieces.")
    rollouts_lib.REWARD_SOURCES.check(self.reward_source, "rl.reward_source")
    cajax.losses.AGGREGATORS.check(self.aggregation, "rl.aggregation")
    cajax.losses.KL_PENALTIES.check(self.kl_kind, "rl.kl_kind")
    cajax.registry.ESTIMATORS.check(self.estimator, "rl.estimator")
    cajax.losses.POLICY_LOSSES.check(self.policy_loss, "rl.policy_loss")
    resolved = _with_key("rl.estimator_kwargs", cajax.resolve,
                         self.estimator, **self._estimator_settings())
    if "values" in resolved.fields and self.value_coef <= 0:
      raise ValueError(f"rl.estimator={self.estimator!r} needs a critic: set "
                       f"rl.value_coef > 0 (got {self.value_coef}).")
    loss = _with_key("rl.policy_loss_kwargs", cajax.losses.make_policy_loss,
                     self.policy_loss, **self.policy_loss_kwargs)
    object.__setattr__(self, "resolved", resolved)
    object.__setattr__(self, "loss", loss)
    config_checks.check_estimator_runs(self)

  def _estimator_settings(self) -> dict:
    """`estimator_kwargs`, with an implicit PRM's β bound from
    `implicit_prm.beta` (its only source)."""
    settings = dict(self.estimator_kwargs)
    if not self.uses_implicit_prm:
      return settings
    if "beta" in settings:
      raise ValueError(
          f"rl.estimator_kwargs.beta: {self.estimator}'s β is "
          f"`rl.implicit_prm.beta`, shared by its step rewards and its "
          f"PRM's DPO loss; set that instead.")
    return {**settings, "beta": self.implicit_prm.beta}

  @property
  def uses_implicit_prm(self) -> bool:
    """The estimator's step rewards come from a trained implicit PRM."""
    return self.estimator in IMPLICIT_PRM_ESTIMATORS

  @property
  def batch_size(self) -> int:
    """Rows of one RL batch: num_groups x group_size."""
    return self.num_groups * self.group_size

  @property
  def needs_reference(self) -> bool:
    """A frozen reference policy: for the KL term or the estimator."""
    return self.kl_coef > 0 or "ref_logprobs" in self.resolved.fields


def _with_key(key: str, function, name: str, **settings):
  """`function(name, **settings)` with its ValueError prefixed by `key`."""
  try:
    return function(name, **settings)
  except ValueError as e:
    raise ValueError(f"{key}: {e}") from None


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """`optimizer.*`: AdamW with warm-up and global-norm clipping."""
  learning_rate: float
  warmup_steps: int
  b1: float
  b2: float
  weight_decay: float
  grad_clip: float

  def __post_init__(self):
    _at_least(self.learning_rate, 0.0, "optimizer.learning_rate")
    _at_least(self.warmup_steps, 0, "optimizer.warmup_steps")
    _at_least(self.weight_decay, 0.0, "optimizer.weight_decay")
    _at_least(self.grad_clip, 0.0, "optimizer.grad_clip")


@dataclasses.dataclass(frozen=True)
class Mesh:
  """`mesh.*`: the (data, fsdp) device mesh; -1 takes the rest."""
  data: int
  fsdp: int


@dataclasses.dataclass(frozen=True)
class Run:
  """The whole config of a run (experiments/configs/chain_arith.py)."""
  seed: int
  task: Mapping[str, Any]
  model: Model
  model_path: str
  sampling: Sampling
  warm_start: WarmStart
  init_checkpoint: str
  rl: RL
  optimizer: Optimizer
  mesh: Mesh
  distributed: bool
  eval_every: int
  eval_problems: int
  eval_temperature: float
  checkpoint_every: int
  keep_checkpoints: int
  show_progress: bool
  stop_at_step: int

  def __post_init__(self):
    for key in ("eval_every", "eval_problems", "checkpoint_every",
                "keep_checkpoints"):
      _at_least(getattr(self, key), 1, key)
    _at_least(self.eval_temperature, 0.0, "eval_temperature")


# ---------------------------------------------------------------------------
# ConfigDict -> dataclasses.

_TYPE_NAMES = {int: "an int", float: "a number", bool: "a bool (True or "
               "False)", str: "a string"}


def _unknown_key(key: str, valid) -> ValueError:
  if key in RENAMED:
    return ValueError(f"`{key}` was renamed to `{RENAMED[key]}`; set that "
                      f"instead.")
  leaf = key.rsplit(".", 1)[-1]
  if leaf in _REMOVED and "." not in key:
    return ValueError(f"`{key}` was removed: {_REMOVED[leaf]}.")
  hint = cajax.registry.did_you_mean(leaf, sorted(valid))
  return ValueError(f"`{key}` is not a key of this config{hint}; add it in "
                    f"get_config() or choose one of: "
                    f"{', '.join(sorted(valid))}.")


def _plain(value):
  """Nested ConfigDicts as dicts (the free-form sections)."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  return value


def _convert(annotation, value, key: str):
  origin = typing.get_origin(annotation)
  if origin in (types.UnionType, typing.Union):
    if value is None:
      return None
    (annotation,) = [a for a in typing.get_args(annotation)
                     if a is not type(None)]
  if dataclasses.is_dataclass(annotation):
    return _build(annotation, value, key + ".")
  if annotation is Mapping or origin is Mapping or (
      isinstance(origin, type) and issubclass(origin, Mapping)):
    if not isinstance(value, (Mapping, ml_collections.ConfigDict)):
      raise ValueError(f"`{key}` must be a mapping (a dict), got {value!r}.")
    return types.MappingProxyType(_plain(value))
  ok = (isinstance(value, annotation) and not (
      annotation is int and isinstance(value, bool))) or (
          annotation is float and isinstance(value, int)
          and not isinstance(value, bool))
  if not ok:
    raise ValueError(f"`{key}` must be {_TYPE_NAMES[annotation]}, got "
                     f"{value!r}.")
  return float(value) if annotation is float else value


def _build(cls, node, prefix: str = ""):
  if not isinstance(node, (Mapping, ml_collections.ConfigDict)):
    raise ValueError(f"`{prefix.rstrip('.')}` must be a section (a "
                     f"ConfigDict), got {node!r}.")
  hints = typing.get_type_hints(cls)
  fields = [f.name for f in dataclasses.fields(cls) if f.init]
  keys = list(node.keys())
  for key in keys:
    if key not in fields:
      raise _unknown_key(prefix + key, fields)
  for name in fields:
    if name not in keys:
      raise ValueError(f"`{prefix}{name}` is missing from this config; add "
                       f"it in get_config().")
  return cls(**{name: _convert(hints[name], node[name], prefix + name)
                for name in fields})


def validate(config) -> Run:
  """The typed `Run` of a `get_config()` ConfigDict (a `Run` is returned
  as it is).

  Raises:
    ValueError: one line naming the first bad key and what is wrong.
  """
  if isinstance(config, Run):
    return config
  return _build(Run, config)


def as_dict(config) -> dict:
  """A JSON-ready dict of a `Run` (or of any of its sections)."""
  out = {}
  for field in dataclasses.fields(config):
    if not field.init:
      continue
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value):
      value = as_dict(value)
    elif isinstance(value, Mapping):
      value = _plain(dict(value))
    out[field.name] = value
  return out
