"""KL penalties between the policy and a reference policy, per token."""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import registry

__all__ = ["KL_KINDS", "KL_PENALTIES", "kl_penalty"]

_sg = jax.lax.stop_gradient


def _k1(diff):
  return diff


def _abs(diff):
  return jnp.abs(diff)


def _k2(diff):
  return 0.5 * jnp.square(diff)


def _k3(diff):
  d = jnp.clip(-diff, -20.0, 20.0)
  return jnp.clip(jnp.exp(d) - d - 1.0, -10.0, 10.0)


_ESTIMATES = {"k1": _k1, "abs": _abs, "k2": _k2, "k3": _k3}
_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}

# Kind -> (estimate of x − y, straight-through); see `kl_penalty`.
KL_PENALTIES = registry.Registry(
    "KL kind",
    {**{k: (f, False) for k, f in _ESTIMATES.items()},
     **{k + "+": (f, True) for k, f in _ESTIMATES.items()}},
    how_to_add="Aliases: " + ", ".join(f"{a} = {k}" for a, k in
                                       _ALIASES.items())
    + " (each also with '+').")
KL_KINDS = KL_PENALTIES.names()


def _canonical(kind):
  """`kind` with an alias replaced by its name ("low_var_kl+" -> "k3+")."""
  if not isinstance(kind, str):
    return kind
  straight_through = kind.endswith("+")
  base = kind[:-1] if straight_through else kind
  return _ALIASES.get(base, base) + ("+" if straight_through else "")


def kl_penalty(kind: str, logprobs: ArrayLike, ref_logprobs: ArrayLike,
               mask: ArrayLike | None = None) -> jax.Array:
  """Per-token KL estimate between the policy and a reference policy.

  With x = logprobs, y = ref_logprobs:
    k1 ("kl"):          x − y
    abs:                |x − y|
    k2 ("mse"):         ½(x − y)²
    k3 ("low_var_kl"):  clip(e^d − d − 1, −10, 10),  d = clip(y − x, −20, 20)
    k*+:                k2 − sg(k2) + sg(k*)   (value of k*, gradient of k2)
  The clamps are verl's (`kl_penalty_forward`); k1/k2 are unclamped as in
  verl (OpenRLHF clamps them to ±10). The straight-through forms give the
  gradient x − y of the true reverse KL in expectation, which k1 and k3 do
  not. Gradients flow to both arguments.
  See "Approximating KL Divergence" (J. Schulman, 2020,
  http://joschu.net/blog/kl-approx.html); verl `kl_penalty`.

  Args:
    kind: one of `KL_KINDS` or an alias ("kl", "mse", "low_var_kl", with an
      optional "+").
    logprobs: policy log-probabilities, any shape.
    ref_logprobs: reference log-probabilities, same shape.
    mask: optional bool mask of the same shape; masked entries are 0 (and
      their inputs ignored, even NaN).

  Returns:
    float32 array shaped like `logprobs`.

  Raises:
    ValueError: on an unknown kind or shape mismatch.
  """
  estimate, straight_through = KL_PENALTIES.lookup(_canonical(kind), "kind")
  _checks.check_same_shape(ref_logprobs, logprobs, "ref_logprobs",
                           "logprobs")
  x = _checks.as_float(logprobs, "logprobs")
  y = _checks.as_float(ref_logprobs, "ref_logprobs")
  if mask is not None:
    _checks.check_same_shape(mask, logprobs, "mask", "logprobs")
    mask = _checks.as_mask(mask)
    x, y = jnp.where(mask, x, 0.0), jnp.where(mask, y, 0.0)
  diff = x - y
  value = estimate(diff)
  if straight_through:
    k2 = _k2(diff)
    value = k2 - _sg(k2) + _sg(value)
  return value if mask is None else jnp.where(mask, value, 0.0)
