"""Estimators selectable by name: `estimate`, `estimator_names`, `register`.

Each estimator is a plain function with explicit arguments in its own module;
the registry only adapts `Rollouts` fields to those arguments. Modules
register their adapters at import time with `@register("name", ...)`.

`estimate` is not jitted itself so that it composes inside a caller's
`jax.jit`; a typical use is

    step = jax.jit(functools.partial(cajax.estimate, "grpo", eps=1e-6))
    out = step(rollouts)
"""

from typing import Callable, Sequence

from cajax import _checks
from cajax import types

Adapter = Callable[..., types.EstimatorOutput]

# Makes the method-specific keyword inputs of an estimator for a given batch:
# `example_inputs(rollouts, rng: np.random.Generator) -> dict`.
ExampleInputs = Callable[..., dict]

_ADAPTERS: dict[str, Adapter] = {}
_REQUIRED: dict[str, tuple[str, ...]] = {}
_EXAMPLES: dict[str, ExampleInputs] = {}


def register(name: str, required: Sequence[str] = ("token_rewards",),
             example_inputs: ExampleInputs | None = None):
  """Decorator registering `adapter(rollouts, **hyperparameters)` as `name`.

  Args:
    name: the public estimator name.
    required: `Rollouts` fields that must not be None for this estimator.
    example_inputs: for estimators with inputs outside `Rollouts` (critique
      flags, sibling ids, ...), a function `(rollouts, rng) -> kwargs` making
      valid example values of them for a batch; benchmarks and the generic
      registry tests call every estimator with these.
  """
  def decorator(adapter: Adapter) -> Adapter:
    if name in _ADAPTERS:
      raise ValueError(f"estimator {name!r} is already registered.")
    _ADAPTERS[name] = adapter
    _REQUIRED[name] = tuple(required)
    if example_inputs is not None:
      _EXAMPLES[name] = example_inputs
    return adapter
  return decorator


def example_inputs(name: str, rollouts: types.Rollouts, rng) -> dict:
  """Example method-specific keyword inputs of `name` for `rollouts`."""
  _check_name(name)
  make = _EXAMPLES.get(name)
  return {} if make is None else make(rollouts, rng)


def estimator_names() -> tuple[str, ...]:
  """Every registered estimator name, sorted."""
  return tuple(sorted(_ADAPTERS))


def required_fields(name: str) -> tuple[str, ...]:
  """The `Rollouts` fields the estimator `name` reads (besides `mask`)."""
  _check_name(name)
  return _REQUIRED[name]


def _check_name(name: str) -> None:
  if name not in _ADAPTERS:
    raise ValueError(f"unknown estimator {name!r}; registered: "
                     f"{', '.join(estimator_names())}.")


def estimate(name: str, rollouts: types.Rollouts,
             **hyperparameters) -> types.EstimatorOutput:
  """Runs the estimator `name` on `rollouts`.

  Args:
    name: one of `estimator_names()`.
    rollouts: the padded batch.
    **hyperparameters: the estimator's keyword arguments (see its plain
      function's docstring), plus method-specific inputs that have no
      `Rollouts` field (critique flags, sibling ids, pivot turns, ...).

  Returns:
    `EstimatorOutput` with f32[B, T] advantages and returns.

  Raises:
    ValueError: unknown name, a required field missing, or bad shapes.
  """
  _check_name(name)
  if not isinstance(rollouts, types.Rollouts):
    raise ValueError(f"rollouts must be a cajax.Rollouts, got "
                     f"{type(rollouts).__name__}.")
  _checks.check_batch(rollouts.mask, "rollouts.mask")
  missing = [field for field in _REQUIRED[name]
             if getattr(rollouts, field) is None]
  if missing:
    raise ValueError(f"estimator {name!r} needs rollouts."
                     f"{', rollouts.'.join(missing)}, which "
                     f"{'is' if len(missing) == 1 else 'are'} None.")
  return _ADAPTERS[name](rollouts, **hyperparameters)

