"""Trace-time argument checks shared by every public cajax function.

All checks look only at static information (ranks, shapes, dtypes and the
values of static hyperparameters), so they run once when a function is
traced and cost nothing inside `jax.jit`. Each error names the offending
argument and shows the shapes, or the domain and the value, involved.
"""

import math
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


def as_float_like(x, like, name: str, like_name: str = "mask") -> jax.Array:
  """Checks `x` has the shape of `like` and returns it as float32."""
  check_same_shape(x, like, name, like_name)
  return as_float(x, name)


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


def is_traced(x) -> bool:
  """True for a JAX tracer (a value that is only known inside jit/vmap)."""
  return isinstance(x, jax.core.Tracer)


def _describe(value) -> str:
  if is_traced(value):
    return (f"a traced {jnp.result_type(value)}{list(np.shape(value))} "
            f"(pass it as a static Python value: functools.partial or "
            f"static_argnames)")
  return repr(value)


def check_positive_int(value, name: str) -> int:
  """Checks a static positive integer (e.g. `num_groups`)."""
  return check_int(value, name, low=1)


def check_int(value, name: str, low: int | None = 0) -> int:
  """Checks a static integer ≥ `low` (no bound when `low` is None).

  Raises:
    ValueError: naming `name`, the domain and the value, for a bool, a
      float, a string, a traced array or a value below `low`.
  """
  domain = "a static int" + ("" if low is None else f" >= {low}")
  if is_traced(value) or isinstance(value, (bool, np.bool_)) or (
      not isinstance(value, (int, np.integer))) or (
          low is not None and value < low):
    raise ValueError(f"{name} must be {domain}, got {_describe(value)}.")
  return int(value)


def check_bool(value, name: str) -> bool:
  """Checks a static bool switch (True or False; not 0/1, not a string)."""
  if is_traced(value) or not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be a static bool (True or False), got "
                     f"{_describe(value)}.")
  return bool(value)


def _domain_text(low, high, low_open, high_open) -> str:
  if low is not None and high is not None:
    return (f"in {'(' if low_open else '['}{low:g}, {high:g}"
            f"{')' if high_open else ']'}")
  if low is not None:
    return f"{'>' if low_open else '>='} {low:g}"
  if high is not None:
    return f"{'<' if high_open else '<='} {high:g}"
  return "finite"


def _out_of_domain(x: float, low, high, low_open, high_open) -> bool:
  return ((low is not None and (x <= low if low_open else x < low))
          or (high is not None and (x >= high if high_open else x > high)))


def check_number(value, name: str, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 high_open: bool = False, allow_inf: bool = False) -> float:
  """Checks a static real hyperparameter against its domain; returns float.

  Accepts Python and NumPy real scalars (and concrete 0-d arrays); rejects
  bools, strings, traced arrays, NaN, ±inf (unless `allow_inf`) and values
  outside [low, high] (open ends with `low_open` / `high_open`).

  Raises:
    ValueError: naming `name`, the domain and the value.
  """
  domain = _domain_text(low, high, low_open, high_open)
  kind = "a static " + ("real" if allow_inf else "finite") + " number"
  if is_traced(value) or isinstance(value, (bool, np.bool_, str, bytes)):
    raise ValueError(f"{name} must be {kind} {domain}, got "
                     f"{_describe(value)}.")
  if not is_static_number(value):
    if np.ndim(value) != 0 or not np.issubdtype(
        np.result_type(value), np.number) or np.iscomplexobj(value):
      raise ValueError(f"{name} must be {kind} {domain}, got "
                       f"{_describe(value)}.")
  x = float(value)
  if math.isnan(x) or (math.isinf(x) and not allow_inf) or _out_of_domain(
      x, low, high, low_open, high_open):
    raise ValueError(f"{name} must be {kind} {domain}, got {value!r}.")
  return x


def check_coefficient(value, like, name: str, like_name: str, *,
                      low: float | None = 0.0, high: float | None = 1.0):
  """A coefficient (γ, λ) given as a static number or an array like `like`.

  A static number is checked against [low, high] and returned as a Python
  float (static: it selects fast paths). A concrete array is checked
  elementwise; a traced array cannot be checked and is only shape-checked.

  Returns:
    A float, or a float32 array shaped like `like`.

  Raises:
    ValueError: naming `name`, the domain and the offending value.
  """
  if is_static_number(value) or isinstance(value, (bool, np.bool_, str)):
    return check_number(value, name, low=low, high=high)
  array = scalar_or_like(value, like, name, like_name)
  if not is_traced(value):
    concrete = np.asarray(array)
    bad = ~np.isfinite(concrete) | (
        (concrete < low) if low is not None else False) | (
            (concrete > high) if high is not None else False)
    if np.any(bad):
      domain = _domain_text(low, high, False, False)
      raise ValueError(f"{name} must be finite and {domain}, got "
                       f"{concrete[bad].reshape(-1)[:4].tolist()} among its "
                       f"values.")
  return array


def check_finite(x, name: str) -> None:
  """Raises ValueError if a concrete array holds NaN or ±inf (a traced one
  cannot be checked and passes)."""
  if is_traced(x):
    return
  concrete = np.asarray(x, dtype=np.float64)
  if not np.all(np.isfinite(concrete)):
    bad = concrete[~np.isfinite(concrete)].reshape(-1)[:4].tolist()
    raise ValueError(f"{name} must be finite, got {bad} among its values.")


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
  """Checks that a static string option is one of `choices`."""
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"{name} must be one of {tuple(choices)}, got "
                     f"{_describe(value)}.")
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


def check_trajectory(r_t, discount_t) -> tuple[jax.Array, jax.Array]:
  """Checks rlax-style `r_t: f[B, T]` and a scalar or `[B, T]` `discount_t`.

  Returns:
    (r_t, discount_t) as float32.
  """
  check_rank(r_t, 2, "r_t")
  r_t = as_float(r_t, "r_t")
  return r_t, scalar_or_like(discount_t, r_t, "discount_t", "r_t")
