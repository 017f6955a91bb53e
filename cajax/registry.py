"""Estimators selectable by name: `estimate`, `estimator_names`, `register`.

Each estimator is a plain function with explicit arguments in its own module;
the registry only adapts `Rollouts` fields to those arguments. Modules
register their adapters at import time with `@register("name", ...)`.

`estimate` is not jitted itself so that it composes inside a caller's
`jax.jit`; a typical use is

    step = jax.jit(functools.partial(cajax.estimate, "grpo", eps=1e-6))
    out = step(rollouts)
"""

import difflib
import inspect
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cajax import _checks
from cajax import types

Adapter = Callable[..., types.EstimatorOutput]

# Makes the method-specific keyword inputs of an estimator for a given batch:
# `example_inputs(rollouts, rng: np.random.Generator) -> dict`.
ExampleInputs = Callable[..., dict]

# The `Rollouts` fields an estimator reads, fixed or as a function of its
# hyperparameters (e.g. UCAS reads `entropy` instead of `self_certainty`
# with certainty="negative_entropy").
Required = Sequence[str] | Callable[[dict], Sequence[str]]

_ADAPTERS: dict[str, Adapter] = {}
_REQUIRED: dict[str, Required] = {}
_EXAMPLES: dict[str, ExampleInputs] = {}
_KEYWORDS: dict[str, tuple[str, ...]] = {}
_FUNCTIONS: dict[str, Callable | None] = {}


def _keyword_names(callable_, skip_first: bool) -> list[str]:
  """Names a caller may pass by keyword: named parameters (not *args/**kw)."""
  names = []
  params = list(inspect.signature(callable_).parameters.values())
  for param in params[1:] if skip_first else params:
    if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
      names.append(param.name)
  return names


def _function_keywords(function) -> list[str]:
  """The hyperparameters of a plain estimator function: its parameters that
  have a default or are keyword-only (the adapter fills the others)."""
  names = []
  for param in inspect.signature(function).parameters.values():
    if param.kind == param.KEYWORD_ONLY or (
        param.kind == param.POSITIONAL_OR_KEYWORD
        and param.default is not param.empty):
      names.append(param.name)
  return names


def register(name: str, required: Required = ("token_rewards",),
             example_inputs: ExampleInputs | None = None,
             function: Callable | None = None):
  """Decorator registering `adapter(rollouts, **hyperparameters)` as `name`.

  Args:
    name: the public estimator name.
    required: `Rollouts` fields that must not be None for this estimator, or
      a function `hyperparameters -> fields` when they depend on options.
    example_inputs: for estimators with inputs outside `Rollouts` (critique
      flags, sibling ids, ...), a function `(rollouts, rng) -> kwargs` making
      valid example values of them for a batch; benchmarks and the generic
      registry tests call every estimator with these.
    function: the plain function the adapter forwards `**hyperparameters`
      to. Its parameters with a default (or keyword-only) are accepted
      keywords of `estimate`, besides the adapter's own named parameters;
      the adapter must not also fill one of them itself.
  """
  def decorator(adapter: Adapter) -> Adapter:
    if name in _ADAPTERS:
      raise ValueError(f"estimator {name!r} is already registered.")
    keywords = _keyword_names(adapter, skip_first=True)
    if function is not None:
      keywords += _function_keywords(function)
    _ADAPTERS[name] = adapter
    _REQUIRED[name] = required if callable(required) else tuple(required)
    _KEYWORDS[name] = tuple(sorted(set(keywords)))
    _FUNCTIONS[name] = function
    if example_inputs is not None:
      _EXAMPLES[name] = example_inputs
    return adapter
  return decorator


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


def example_inputs(name: str, rollouts: types.Rollouts, rng=None) -> dict:
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
  _check_name(name)
  make = _EXAMPLES.get(name)
  return {} if make is None else make(rollouts, _numpy_rng(rng))


def estimator_names() -> tuple[str, ...]:
  """Every registered estimator name, sorted."""
  return tuple(sorted(_ADAPTERS))


def required_fields(name: str, **hyperparameters) -> tuple[str, ...]:
  """The `Rollouts` fields the estimator `name` reads (besides `mask`).

  Args:
    name: one of `estimator_names()`.
    **hyperparameters: options that change which fields are read (e.g.
      `certainty="negative_entropy"` for "ucas"); defaults otherwise.
  """
  _check_name(name)
  required = _REQUIRED[name]
  return tuple(required(hyperparameters)) if callable(required) else required


def accepted_keywords(name: str) -> tuple[str, ...]:
  """Every keyword `estimate(name, ...)` accepts, sorted."""
  _check_name(name)
  return _KEYWORDS[name]


def plain_function(name: str) -> Callable | None:
  """The plain function the estimator `name` forwards its keywords to."""
  _check_name(name)
  return _FUNCTIONS[name]


def _check_name(name: str) -> None:
  if not isinstance(name, str) or name not in _ADAPTERS:
    raise ValueError(f"unknown estimator {name!r}; registered: "
                     f"{', '.join(estimator_names())}.")


def _check_keywords(name: str, hyperparameters: dict) -> None:
  accepted = _KEYWORDS[name]
  unknown = sorted(set(hyperparameters) - set(accepted))
  if not unknown:
    return
  hints = []
  for key in unknown:
    # A shared prefix ("epsilon" for "eps") beats spelling similarity.
    close = [a for a in accepted if key.startswith(a) or a.startswith(key)]
    close = close or difflib.get_close_matches(key, accepted, n=1)
    if close:
      hints.append(f"{key!r} (did you mean {close[0]!r}?)")
    else:
      hints.append(repr(key))
  raise ValueError(
      f"estimator {name!r} got unexpected keyword"
      f"{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; it accepts: "
      f"{', '.join(accepted) if accepted else 'no keywords'}.")


def estimate(name: str, rollouts: types.Rollouts,
             **hyperparameters) -> types.EstimatorOutput:
  """Runs the estimator `name` on `rollouts`.

  Args:
    name: one of `estimator_names()`.
    rollouts: the padded batch.
    **hyperparameters: the estimator's keyword arguments (see its plain
      function's docstring and `accepted_keywords(name)`), plus
      method-specific inputs that have no `Rollouts` field (critique flags,
      sibling ids, pivot turns, ...).

  Returns:
    `EstimatorOutput` with f32[B, T] advantages and returns.

  Raises:
    ValueError: unknown name, an unknown keyword (the message lists the
      accepted ones), a required field missing, or bad shapes or values.
  """
  _check_name(name)
  if not isinstance(rollouts, types.Rollouts):
    raise ValueError(f"rollouts must be a cajax.Rollouts, got "
                     f"{type(rollouts).__name__}.")
  _check_keywords(name, hyperparameters)
  _checks.check_batch(rollouts.mask, "rollouts.mask")
  missing = [field for field in required_fields(name, **hyperparameters)
             if getattr(rollouts, field) is None]
  if missing:
    raise ValueError(f"estimator {name!r} needs rollouts."
                     f"{', rollouts.'.join(missing)}, which "
                     f"{'is' if len(missing) == 1 else 'are'} None.")
  return _ADAPTERS[name](rollouts, **hyperparameters)
