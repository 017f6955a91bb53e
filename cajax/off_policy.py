"""rlax-parity V-trace (off-policy corrections) on batch-major `[B, T]` arrays.

Batch-major versions of rlax's `vtrace` and `vtrace_td_error_and_advantage`
with rlax's argument names and order, plus an optional `sample_mask`:
False steps are skipped (the accumulator carries across them, as the masked
tokens of `cajax.gae`) and their outputs are 0. Index convention as in
`cajax.multistep`: `v_tm1` and `rho_tm1` belong to the step an action was
taken from, `r_t`, `discount_t` and `v_t` to the step after it.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import masking
from cajax import sequences

__all__ = ["VTraceOutput", "vtrace", "vtrace_td_error_and_advantage"]


class VTraceOutput(NamedTuple):
  """V-trace outputs, each f32[B, T] (0 at masked steps).

  Attributes:
    errors: V-trace errors v_s − v_tm1.
    pg_advantage: clipped-ρ policy-gradient advantages.
    q_estimate: the Q targets behind `pg_advantage`.
  """
  errors: jax.Array
  pg_advantage: jax.Array
  q_estimate: jax.Array


def _vtrace_inputs(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_,
                   sample_mask):
  r_t, discount_t = _checks.check_trajectory(r_t, discount_t)
  arrays = {"v_tm1": v_tm1, "v_t": v_t, "rho_tm1": rho_tm1}
  for name, x in arrays.items():
    arrays[name] = _checks.as_float_like(x, r_t, name, "r_t")
  lambda_ = jnp.broadcast_to(
      _checks.scalar_or_like(lambda_, r_t, "lambda_", "r_t"), r_t.shape)
  if sample_mask is None:
    sample_mask = jnp.ones(r_t.shape, bool)
  else:
    _checks.check_same_shape(sample_mask, r_t, "sample_mask", "r_t")
    sample_mask = _checks.as_mask(sample_mask, "sample_mask")
  return (arrays["v_tm1"], arrays["v_t"], r_t,
          jnp.broadcast_to(discount_t, r_t.shape), arrays["rho_tm1"],
          lambda_, sample_mask)


def vtrace(v_tm1: ArrayLike, v_t: ArrayLike, r_t: ArrayLike,
           discount_t: ArrayLike, rho_tm1: ArrayLike, lambda_: ArrayLike = 1.0,
           clip_rho_threshold: float = 1.0, stop_target_gradients: bool = True,
           sample_mask: ArrayLike | None = None) -> jax.Array:
  """V-trace errors from importance ratios (rlax `vtrace`, [B, T]).

    cₜ = λₜ·min(1, ρₜ),   ρ̄ₜ = min(ρ̄, ρₜ),
    δₜ = ρ̄ₜ (rₜ₊₁ + γₜ₊₁ vₜ₊₁ − vₜ),   eₜ = δₜ + γₜ₊₁ cₜ e_{t'},

  with t' the next step where `sample_mask` is True (e = 0 past the last):
  masked steps are skipped and carry the accumulator (rlax's `sample_mask`
  rule). Errors at masked steps are 0 here (rlax returns the carried value).

  See "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
  Actor-Learner Architectures" (Espeholt et al., arXiv:1802.01561).

  Args:
    v_tm1: f[B, T] values at times [0, T − 1].
    v_t: f[B, T] values at times [1, T].
    r_t: f[B, T] rewards at times [1, T].
    discount_t: f[B, T] (or scalar) discounts at times [1, T].
    rho_tm1: f[B, T] importance ratios π/μ at times [0, T − 1].
    lambda_: scalar or f[B, T] mixing parameter.
    clip_rho_threshold: ρ̄, the clip of the TD importance weights.
    stop_target_gradients: return sg(e + v_tm1) − v_tm1 (rlax default True).
    sample_mask: optional bool[B, T]; False steps are skipped.

  Returns:
    f32[B, T] V-trace errors (targets minus v_tm1).

  Raises:
    ValueError: wrong ranks or shapes.
  """
  v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, sample_mask = (
      _vtrace_inputs(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_,
                     sample_mask))
  trace = jnp.minimum(1.0, rho_tm1) * lambda_
  td = jnp.minimum(clip_rho_threshold, rho_tm1) * (
      r_t + discount_t * v_t - v_tm1)
  td = jnp.where(sample_mask, td, 0.0)
  errors = sequences.reverse_discounted_cumsum(td, sample_mask,
                                               discount_t * trace)
  if stop_target_gradients:
    errors = jax.lax.stop_gradient(errors + v_tm1) - v_tm1
  return jnp.where(sample_mask, errors, 0.0)


def vtrace_td_error_and_advantage(
    v_tm1: ArrayLike, v_t: ArrayLike, r_t: ArrayLike, discount_t: ArrayLike,
    rho_tm1: ArrayLike, lambda_: ArrayLike = 1.0,
    clip_rho_threshold: float = 1.0, clip_pg_rho_threshold: float = 1.0,
    stop_target_gradients: bool = True,
    sample_mask: ArrayLike | None = None) -> VTraceOutput:
  """V-trace errors and policy-gradient advantages (rlax, [B, T]).

    qₜ = rₜ₊₁ + γₜ₊₁ [λₜ (eₜ₊₁ + vₜ₊₁) + (1 − λₜ) vₜ₊₁]   (last step: vₜ₊₁ =
    v_t[T−1] alone),   advₜ = min(ρ̄_pg, ρₜ)·(qₜ − vₜ),

  where eₜ₊₁ + vₜ₊₁ is the V-trace target of the next step (its `v_tm1`).
  [GAP] With a `sample_mask`, "next step" means the next valid step t', and
  a valid step with no valid step after it bootstraps from its own `v_t`;
  without a mask this is exactly rlax.

  See "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
  Actor-Learner Architectures" (Espeholt et al., arXiv:1802.01561).

  Args:
    v_tm1: as in `vtrace`.
    v_t: as in `vtrace`.
    r_t: as in `vtrace`.
    discount_t: as in `vtrace`.
    rho_tm1: as in `vtrace`; also weights the advantages.
    lambda_: as in `vtrace`; also mixes the Q bootstrap.
    clip_rho_threshold: ρ̄ for the TD errors.
    clip_pg_rho_threshold: ρ̄_pg for the policy-gradient advantages.
    stop_target_gradients: as in `vtrace`.
    sample_mask: as in `vtrace`.

  Returns:
    VTraceOutput(errors, pg_advantage, q_estimate), f32[B, T] each.

  Raises:
    ValueError: wrong ranks or shapes.
  """
  errors = vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_,
                  clip_rho_threshold, stop_target_gradients, sample_mask)
  v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, sample_mask = (
      _vtrace_inputs(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_,
                     sample_mask))
  next_target, has_next = masking.next_valid(errors + v_tm1, sample_mask)
  next_value, _ = masking.next_valid(v_tm1, sample_mask)
  bootstrap = jnp.where(
      has_next, lambda_ * next_target + (1.0 - lambda_) * next_value, v_t)
  q_estimate = r_t + discount_t * bootstrap
  pg_advantage = jnp.minimum(clip_pg_rho_threshold, rho_tm1) * (
      q_estimate - v_tm1)
  return VTraceOutput(
      errors=errors,
      pg_advantage=jnp.where(sample_mask, pg_advantage, 0.0),
      q_estimate=jnp.where(sample_mask, q_estimate, 0.0))
