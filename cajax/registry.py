"""Names to things: the `Registry` type, and estimators selectable by name.

`Registry` is the one name table of the project (estimators, policy losses,
aggregation modes, KL kinds, tasks, model sizes, ablations): filled
explicitly, with an error that suggests the closest name.

Each estimator is a plain function with explicit arguments in its own module;
its registry entry only adapts `Rollouts` fields to those arguments. The
table at the end of this module fills `ESTIMATORS`. Resolve an estimator
once, with its settings, and reuse the result:

    resolved = cajax.registry.resolve("ucas", certainty="negative_entropy")
    resolved.fields        # ('token_rewards', 'entropy', 'token_logits', ...)
    step = jax.jit(resolved.function)
    out = step(rollouts)

`estimate(name, rollouts, **settings)` does both in one call; it is not
jitted itself, so it composes inside a caller's `jax.jit`.
"""

import dataclasses
import difflib
import functools
import inspect
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from cajax import _checks
from cajax import agentic
from cajax import outcome
from cajax import process
from cajax import returns
from cajax import shaping
from cajax import token_baseline
from cajax import types

__all__ = [
    "Adapter", "ESTIMATORS", "Estimator", "ExampleInputs", "Fields",
    "Registry", "Resolved", "accepted_keywords",
    "did_you_mean", "estimate", "estimator_names", "example_inputs",
    "plain_function", "register", "required_fields", "resolve",
]

_Entry = TypeVar("_Entry")


def did_you_mean(name: Any, choices: Sequence[str]) -> str:
  """' (did you mean 'x'?)' for the closest of `choices`, or ''."""
  if not isinstance(name, str):
    return ""
  # A shared prefix ("epsilon" for "eps") beats spelling similarity.
  close = [c for c in choices if name.startswith(c) or c.startswith(name)]
  close = close or difflib.get_close_matches(name, choices, n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[_Entry]):
  """Names of one kind (estimator, policy loss, task, ...) and their entries.

  Filled explicitly with `add`; looking up a missing name raises ValueError
  with the closest registered name and the full list.

  Example:
    >>> sizes = Registry("model size")
    >>> _ = sizes.add("tiny", 1)
    >>> sizes["tiny"]
    1
    >>> sizes["tinny"]
    Traceback (most recent call last):
    ...
    ValueError: unknown model size 'tinny' (did you mean 'tiny'?);
    registered: tiny.
  """

  def __init__(self, kind: str, entries: Mapping[str, _Entry] | None = None,
               *, how_to_add: str = ""):
    """Args: kind names the things in errors; entries fill it; how_to_add
    is appended to the unknown-name error (e.g. how to register one)."""
    self.kind = kind
    self.how_to_add = how_to_add
    self._entries: dict[str, _Entry] = {}
    for name, entry in (entries or {}).items():
      self.add(name, entry)

  def add(self, name: str, entry: _Entry) -> _Entry:
    """Registers `entry` as `name`; a name is registered once."""
    if not isinstance(name, str) or not name:
      raise ValueError(f"a {self.kind} name must be a non-empty string, got "
                       f"{name!r}.")
    if name in self._entries:
      raise ValueError(f"{self.kind} {name!r} is already registered.")
    self._entries[name] = entry
    return entry

  def check(self, name: Any, argument: str | None = None) -> str:
    """Returns `name` if registered; otherwise raises ValueError naming the
    `argument` (a config key, say) that held it."""
    if isinstance(name, str) and name in self._entries:
      return name
    where = f"{argument}: " if argument else ""
    hint = f" {self.how_to_add}" if self.how_to_add else ""
    raise ValueError(f"{where}unknown {self.kind} {name!r}"
                     f"{did_you_mean(name, self.names())}; registered: "
                     f"{', '.join(self.names())}.{hint}")

  def lookup(self, name: Any, argument: str | None = None) -> _Entry:
    """The entry of `name`; the error names `argument` (see `check`)."""
    return self._entries[self.check(name, argument)]

  def __getitem__(self, name: str) -> _Entry:
    return self.lookup(name)

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)

  def names(self) -> tuple[str, ...]:
    """Every registered name, in registration order."""
    return tuple(self._entries)

  def __repr__(self) -> str:
    return f"Registry({self.kind!r}, {list(self._entries)})"


# ---------------------------------------------------------------------------
# Estimators.

Adapter = Callable[..., types.EstimatorOutput]
# Method-specific keyword inputs of an estimator for a given batch:
# `example_inputs(rollouts, rng: np.random.Generator) -> dict`.
ExampleInputs = Callable[..., dict]
# The `Rollouts` fields an estimator reads, fixed or as a function of its
# settings (UCAS reads `entropy` instead of `self_certainty` with
# certainty="negative_entropy").
Fields = Sequence[str] | Callable[[dict], Sequence[str]]


def _keyword_names(callable_, skip_first: bool) -> list[str]:
  """Names a caller may pass by keyword: named parameters (not *args/**kw)."""
  params = list(inspect.signature(callable_).parameters.values())
  return [p.name for p in (params[1:] if skip_first else params)
          if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _function_keywords(function) -> list[str]:
  """The settings of a plain estimator function: its parameters that have a
  default or are keyword-only (the adapter fills the others)."""
  return [p.name for p in inspect.signature(function).parameters.values()
          if p.kind == p.KEYWORD_ONLY or (
              p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)]


@dataclasses.dataclass(frozen=True)
class Estimator:
  """A registry entry: how `Rollouts` become the plain function's inputs.

  Attributes:
    adapter: `(rollouts, **keywords) -> EstimatorOutput`.
    fields: the `Rollouts` fields that must not be None, or a function
      `settings -> fields` when they depend on settings.
    function: the plain function the adapter forwards its other keywords
      to (None when the adapter takes every keyword itself). Its parameters
      with a default (or keyword-only) are accepted keywords of `estimate`,
      besides the adapter's own named parameters; the adapter must not also
      fill one of them itself.
    example_inputs: for estimators with inputs outside `Rollouts` (critique
      flags, sibling ids, ...), `(rollouts, rng) -> kwargs` making valid
      example values of them; the benchmarks and the generic registry tests
      call every estimator with these.
  """
  adapter: Adapter
  fields: Fields = ("token_rewards",)
  function: Callable | None = None
  example_inputs: ExampleInputs | None = None

  @functools.cached_property
  def keywords(self) -> tuple[str, ...]:
    """Every keyword `estimate` accepts for this estimator, sorted."""
    names = _keyword_names(self.adapter, skip_first=True)
    if self.function is not None:
      names += _function_keywords(self.function)
    return tuple(sorted(set(names)))

  @functools.cached_property
  def defaults(self) -> dict:
    """{keyword: default} of every keyword with a non-None default."""
    out = {}
    for callable_ in (self.function, self.adapter):
      if callable_ is None:
        continue
      for p in inspect.signature(callable_).parameters.values():
        if (p.name in self.keywords and p.default is not p.empty
            and p.default is not None):
          out.setdefault(p.name, p.default)
    return out

  def fields_for(self, settings: Mapping) -> tuple[str, ...]:
    fields = self.fields(dict(settings)) if callable(self.fields) else (
        self.fields)
    return tuple(fields)


ESTIMATORS: Registry[Estimator] = Registry("estimator")


def register(name: str, fields: Fields = ("token_rewards",),
             example_inputs: ExampleInputs | None = None,
             function: Callable | None = None):
  """Decorator registering `adapter(rollouts, **keywords)` as `name`.

  For estimators of one's own; the built-in ones are in the table at the
  end of this module. The arguments are `Estimator`'s attributes.
  """
  def decorator(adapter: Adapter) -> Adapter:
    ESTIMATORS.add(name, Estimator(adapter, fields, function,
                                   example_inputs))
    return adapter
  return decorator


@dataclasses.dataclass(frozen=True)
class Resolved:
  """An estimator resolved once with its settings (see `resolve`).

  Attributes:
    name: the estimator's registered name.
    function: `(rollouts, **extra) -> EstimatorOutput` with the settings
      bound; jit-able (`jax.jit(resolved.function)`). `extra` holds inputs
      that have no `Rollouts` field (critique flags, pivot turns, ...).
    fields: the `Rollouts` fields it reads given those settings (besides
      `mask`); each must be set on the rollouts it is called with.
    settings: the settings given, over the estimator's own defaults.
  """
  name: str
  function: Callable[..., types.EstimatorOutput]
  fields: tuple[str, ...]
  settings: dict


def _check_keywords(name: str, keywords: Mapping) -> None:
  accepted = ESTIMATORS[name].keywords
  unknown = sorted(set(keywords) - set(accepted))
  if not unknown:
    return
  hints = [f"{key!r}{did_you_mean(key, accepted)}" for key in unknown]
  raise ValueError(
      f"estimator {name!r} got unexpected keyword"
      f"{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; it accepts: "
      f"{', '.join(accepted) if accepted else 'no keywords'}.")


def _run(name: str, fields: tuple[str, ...], settings: dict,
         rollouts: types.Rollouts, **extra) -> types.EstimatorOutput:
  if not isinstance(rollouts, types.Rollouts):
    raise ValueError(f"rollouts must be a cajax.Rollouts, got "
                     f"{type(rollouts).__name__}.")
  _check_keywords(name, extra)
  twice = sorted(set(extra) & set(settings))
  if twice:
    raise ValueError(f"estimator {name!r}: {twice} were bound by resolve; "
                     f"do not pass them again.")
  _checks.check_batch(rollouts.mask, "rollouts.mask")
  missing = [field for field in fields if getattr(rollouts, field) is None]
  if missing:
    raise ValueError(f"estimator {name!r} needs rollouts."
                     f"{', rollouts.'.join(missing)}, which "
                     f"{'is' if len(missing) == 1 else 'are'} None.")
  return ESTIMATORS[name].adapter(rollouts, **settings, **extra)


def resolve(name: str, **settings) -> Resolved:
  """Resolves the estimator `name` once, with its settings.

  Checks the name and the keyword names (values are checked by the
  estimator when it is traced), works out the `Rollouts` fields the
  estimator reads with these settings, and binds them.

  Args:
    name: one of `estimator_names()`.
    **settings: keyword arguments of the estimator (see its plain function
      and `accepted_keywords(name)`).

  Returns:
    `Resolved(name, function, fields, settings)`.

  Raises:
    ValueError: an unknown name or keyword (with the closest accepted one).
  """
  entry = ESTIMATORS[name]
  _check_keywords(name, settings)
  fields = entry.fields_for(settings)
  function = functools.partial(_run, name, fields, dict(settings))
  return Resolved(name, function, fields, {**entry.defaults, **settings})


def estimate(name: str, rollouts: types.Rollouts,
             **keywords) -> types.EstimatorOutput:
  """Runs the estimator `name` on `rollouts`: `resolve(name, **keywords)`
  applied to `rollouts`.

  Args:
    name: one of `estimator_names()`.
    rollouts: the padded batch.
    **keywords: the estimator's settings (see its plain function's
      docstring and `accepted_keywords(name)`), plus method-specific inputs
      that have no `Rollouts` field (critique flags, sibling ids, pivot
      turns, ...).

  Returns:
    `EstimatorOutput` with f32[B, T] advantages and returns.

  Raises:
    ValueError: unknown name, an unknown keyword (the message lists the
      accepted ones), a required field missing, or bad shapes or values.
  """
  return resolve(name, **keywords).function(rollouts)


def _numpy_rng(rng) -> np.random.Generator:
  """A NumPy Generator from a Generator, an int seed or a JAX PRNG key."""
  if isinstance(rng, np.random.Generator):
    return rng
  if rng is None or (isinstance(rng, (int, np.integer))
                     and not isinstance(rng, bool)):
    return np.random.default_rng(rng)
  if isinstance(rng, jax.Array) and not _checks.is_traced(rng):
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
      rng = jax.random.key_data(rng)
    if jnp.issubdtype(rng.dtype, jnp.unsignedinteger):
      return np.random.default_rng(np.asarray(rng).reshape(-1).tolist())
  raise ValueError(f"rng must be a numpy.random.Generator, an int seed or a "
                   f"concrete JAX PRNG key, got {rng!r}.")


def example_inputs(name: str, rollouts: types.Rollouts,
                   rng: np.random.Generator | int | jax.Array | None = None
                   ) -> dict:
  """Example method-specific keyword inputs of `name` for `rollouts`.

  Args:
    name: one of `estimator_names()`.
    rollouts: the batch the inputs are for.
    rng: a `numpy.random.Generator`, an int seed, a JAX PRNG key
      (`jax.random.key(0)` or `jax.random.PRNGKey(0)`) or None (fresh
      entropy).

  Returns:
    dict of keyword inputs for `estimate(name, rollouts, **inputs)` ({} for
    estimators that read only `Rollouts` fields).
  """
  make = ESTIMATORS[name].example_inputs
  return {} if make is None else make(rollouts, _numpy_rng(rng))


def estimator_names() -> tuple[str, ...]:
  """Every registered estimator name, sorted."""
  return tuple(sorted(ESTIMATORS))


def required_fields(name: str, **settings) -> tuple[str, ...]:
  """The `Rollouts` fields the estimator `name` reads (besides `mask`):
  `resolve(name, **settings).fields`."""
  return resolve(name, **settings).fields


def accepted_keywords(name: str) -> tuple[str, ...]:
  """Every keyword `estimate(name, ...)` accepts, sorted."""
  return ESTIMATORS[name].keywords


def plain_function(name: str) -> Callable | None:
  """The plain function the estimator `name` forwards its keywords to."""
  return ESTIMATORS[name].function


# ---------------------------------------------------------------------------
# The built-in estimators, filled here and nowhere else.

_GROUPED = ("token_rewards", "group_ids")
_STEPS = ("step_rewards", "step_mask", "step_ids", "group_ids")


def _prm_fields(settings: dict) -> tuple[str, ...]:
  """pure / sum_form_prm: kl_in_reward=True also reads both log-probs."""
  if settings.get("kl_in_reward") is True:
    return _STEPS + ("old_logprobs", "ref_logprobs")
  return _STEPS


def _ucas_fields(settings: dict) -> tuple[str, ...]:
  """ucas: certainty="negative_entropy" reads entropy, not self-certainty."""
  source = ("entropy" if settings.get("certainty") == "negative_entropy"
            else "self_certainty")
  return ("token_rewards", source, "token_logits", "group_ids")


def _grouped(function) -> Estimator:
  """An outcome estimator of (token_rewards, mask, group_ids, num_groups)."""
  def adapter(rollouts: types.Rollouts, **settings):
    return function(rollouts.token_rewards, rollouts.mask,
                    rollouts.group_ids, rollouts.num_groups, **settings)
  adapter.__doc__ = f"`{function.__name__}` on `Rollouts` fields."
  return Estimator(adapter, _GROUPED, function)


# pylint: disable=protected-access
_BUILT_IN = {
    **{f.__name__: _grouped(f) for f in (
        outcome.grpo, outcome.drgrpo, outcome.grpo_passk, outcome.rloo,
        outcome.opo, outcome.gpg, outcome.reinforce_plus_plus_baseline)},
    "gdpo": Estimator(outcome._gdpo_adapter,
                      ("reward_components", "group_ids"), outcome.gdpo),
    "gae": Estimator(returns._gae_adapter, ("token_rewards", "values"),
                     returns.gae),
    "reinforce_plus_plus": Estimator(returns._reinforce_plus_plus_adapter,
                                     ("token_rewards",),
                                     returns.reinforce_plus_plus),
    "remax": Estimator(returns._remax_adapter,
                       ("token_rewards", "baseline_scores")),
    "prime": Estimator(returns._prime_adapter, _GROUPED, returns.prime,
                       returns._prime_example_inputs),
    "optimal_token_baseline": Estimator(
        token_baseline._optimal_token_baseline_adapter,
        ("token_rewards", "group_ids", "old_logprobs", "sum_pi_squared"),
        token_baseline.optimal_token_baseline),
    "pure": Estimator(process._pure_adapter, _prm_fields, process.pure),
    "sum_form_prm": Estimator(process._sum_form_prm_adapter, _prm_fields,
                              process.sum_form_prm),
    "process_grpo": Estimator(process._process_grpo_adapter, _STEPS,
                              process.process_grpo),
    "tp_grpo": Estimator(process._tp_grpo_adapter,
                         ("token_rewards",) + _STEPS, process.tp_grpo),
    "ucas": Estimator(shaping._ucas_adapter, _ucas_fields, shaping.ucas),
    "capo": Estimator(shaping._capo_adapter,
                      ("token_rewards", "step_ids", "step_mask", "group_ids"),
                      shaping.capo, shaping._capo_example_inputs),
    "istar": Estimator(agentic._istar_adapter,
                       ("token_rewards", "logprobs", "old_logprobs",
                        "step_ids", "group_ids"), agentic.istar),
    "matchtir": Estimator(agentic._matchtir_adapter, _GROUPED,
                          agentic.matchtir),
    "r3l": Estimator(agentic._r3l_adapter, _GROUPED, agentic.r3l,
                     agentic._r3l_example_inputs),
    "slate": Estimator(agentic._slate_adapter, ("token_rewards",),
                       agentic.slate, agentic._slate_example_inputs),
}
# pylint: enable=protected-access
for _name, _entry in _BUILT_IN.items():
  ESTIMATORS.add(_name, _entry)
