"""Trace-time argument checks shared by every public cajax function.

All checks look only at static information (ranks, shapes, dtypes), so they
run once when a function is traced and cost nothing inside `jax.jit`. Each
error names the offending argument and shows the shapes involved.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _shape(x) -> tuple[int, ...]:
  return tuple(np.shape(x))


def check_rank(x, ranks: int | Sequence[int], name: str) -> None:
  """Raises ValueError unless `x` has one of the allowed ranks."""
  allowed = (ranks,) if isinstance(ranks, int) else tuple(ranks)
  if np.ndim(x) not in allowed:
    want = " or ".join(str(r) for r in allowed)
    raise ValueError(
        f"{name} must have rank {want}, got shape {_shape(x)}.")


def check_shape(x, shape: Sequence[int | None], name: str,
                like: str | None = None) -> None:
  """Raises ValueError unless `x` has `shape` (None entries match anything)."""
  actual = _shape(x)
  ok = len(actual) == len(shape) and all(
      want is None or want == got for want, got in zip(shape, actual))
  if not ok:
    expected = "(" + ", ".join("?" if s is None else str(s) for s in shape)
    expected += ",)" if len(shape) == 1 else ")"
    detail = f" (to match {like})" if like else ""
    raise ValueError(
        f"{name} must have shape {expected}{detail}, got {actual}.")


def check_same_shape(x, reference, name: str, reference_name: str) -> None:
  """Raises ValueError unless `x` has the same shape as `reference`."""
  check_shape(x, _shape(reference), name, like=f"{reference_name} "
              f"{_shape(reference)}")


def as_float(x, name: str) -> jax.Array:
  """Returns `x` as float32, accepting bool, integer and float inputs.

  Integer inputs are converted, never truncated: an integer reward of 1 stays
  1.0 and a float reward of 0.7 stays 0.7.
  """
  dtype = jnp.result_type(x)
  if jnp.issubdtype(dtype, jnp.complexfloating):
    raise ValueError(f"{name} must be real, got dtype {dtype}.")
  if not (jnp.issubdtype(dtype, jnp.floating)
          or jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_):
    raise ValueError(f"{name} must be numeric, got dtype {dtype}.")
  return jnp.asarray(x).astype(jnp.float32)


def as_mask(mask, name: str = "mask") -> jax.Array:
  """Returns `mask` as bool; numeric masks are True where non-zero."""
  dtype = jnp.result_type(mask)
  if jnp.issubdtype(dtype, jnp.complexfloating):
    raise ValueError(f"{name} must be bool or real, got dtype {dtype}.")
  return jnp.asarray(mask) != 0 if dtype != jnp.bool_ else jnp.asarray(mask)


def as_int(x, name: str) -> jax.Array:
  """Returns integer ids as int32; float ids are rejected."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"{name} must be an integer array, got dtype {dtype} "
                     f"with shape {_shape(x)}.")
  return jnp.asarray(x).astype(jnp.int32)


def check_batch(mask, name: str = "mask") -> tuple[int, int]:
  """Checks a `[B, T]` mask and returns `(B, T)`."""
  check_rank(mask, 2, name)
  batch, length = _shape(mask)
  return batch, length


def check_positive_int(value, name: str) -> int:
  """Checks a static positive integer (e.g. `num_groups`)."""
  if isinstance(value, jax.core.Tracer) or not isinstance(
      value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a static positive int, got {value!r}.")
  return int(value)


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
  """Checks that a static string option is one of `choices`."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
  return value


def is_static_number(value) -> bool:
  """True for a Python or NumPy real scalar (not bool): a static setting."""
  return isinstance(value, (int, float, np.integer, np.floating)) and (
      not isinstance(value, (bool, np.bool_)))


def scalar_or_like(x, like, name: str, like_name: str) -> jax.Array:
  """A scalar or an array shaped like `like` (e.g. γ or γₜ), as float32."""
  if np.ndim(x):
    check_same_shape(x, like, name, like_name)
  return as_float(x, name)
