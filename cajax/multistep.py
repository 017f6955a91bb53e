"""rlax-parity multistep return targets on batch-major `[B, T]` arrays.

Drop-in batch-major versions of rlax's `lambda_returns`,
`discounted_returns`, `n_step_bootstrapped_returns` and
`truncated_generalized_advantage_estimation`, with rlax's argument names and
order. They follow rlax's index convention: at row position t, `r_t`,
`discount_t` and `v_t` are the reward, discount and value of the *next* step
(Sutton & Barto's rₜ₊₁, γₜ₊₁, vₜ₊₁). Termination is a zero `discount_t`;
there is no mask (use `cajax.gae` and `cajax.reinforce_plus_plus` for masked
LLM batches). V-trace lives in `cajax.vtrace`.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import sequences

__all__ = [
    "discounted_returns", "lambda_returns", "n_step_bootstrapped_returns",
    "truncated_generalized_advantage_estimation",
]


def _stop_gradient_if(x, flag: bool) -> jax.Array:
  return jax.lax.stop_gradient(x) if flag else x


def lambda_returns(r_t: ArrayLike, discount_t: ArrayLike, v_t: ArrayLike,
                   lambda_: ArrayLike = 1.0,
                   stop_target_gradients: bool = False) -> jax.Array:
  """λ-returns of a batch of trajectories (rlax `lambda_returns`, [B, T]).

    Gₜ = rₜ₊₁ + γₜ₊₁ [(1 − λₜ₊₁) vₜ₊₁ + λₜ₊₁ Gₜ₊₁],   bootstrapped from the
    last value: G_{T−1} = r_T + γ_T v_T.

  Row position t holds rₜ₊₁, γₜ₊₁, vₜ₊₁ (rlax convention).

  See "Reinforcement Learning: An Introduction" (Sutton and Barto, 2018),
  §12.1.

  Args:
    r_t: f[B, T] rewards at times [1, T].
    discount_t: f[B, T] (or scalar) discounts at times [1, T].
    v_t: f[B, T] state values at times [1, T].
    lambda_: scalar or f[B, T] mixing parameter.
    stop_target_gradients: stop gradients through the targets.

  Returns:
    f32[B, T] λ-returns G at times [0, T−1].

  Raises:
    ValueError: wrong ranks or shapes.
  """
  r_t, discount_t = _checks.check_trajectory(r_t, discount_t)
  _checks.check_same_shape(v_t, r_t, "v_t", "r_t")
  v_t = _checks.as_float(v_t, "v_t")
  lambda_ = _checks.scalar_or_like(lambda_, r_t, "lambda_", "r_t")
  trace = jnp.broadcast_to(discount_t * lambda_, r_t.shape)
  inputs = r_t + discount_t * (1.0 - lambda_) * v_t
  # The bootstrap G_T = v_T enters the last step through the trace.
  inputs = inputs.at[:, -1].add(trace[:, -1] * v_t[:, -1])
  everything = jnp.ones(r_t.shape, bool)
  returns = sequences.reverse_discounted_cumsum(inputs, everything, trace)
  return _stop_gradient_if(returns, stop_target_gradients)


def discounted_returns(r_t: ArrayLike, discount_t: ArrayLike, v_t: ArrayLike,
                       stop_target_gradients: bool = False) -> jax.Array:
  """Discounted returns Gₜ = rₜ₊₁ + γₜ₊₁ Gₜ₊₁ (rlax `discounted_returns`).

  The return is bootstrapped from the value at the last position.

  See "Reinforcement Learning: An Introduction" (Sutton and Barto, 2018),
  §3.3.

  Args:
    r_t: f[B, T] rewards at times [1, T].
    discount_t: f[B, T] (or scalar) discounts at times [1, T].
    v_t: bootstrap values: a scalar, f[B] (one per row) or f[B, T] (only the
      last column is used, as in rlax).
    stop_target_gradients: stop gradients through the targets.

  Returns:
    f32[B, T] discounted returns.

  Raises:
    ValueError: wrong ranks or shapes.
  """
  _checks.check_rank(r_t, 2, "r_t")
  _checks.check_rank(v_t, (0, 1, 2), "v_t")
  batch, length = jnp.shape(r_t)
  if jnp.ndim(v_t) == 1:
    _checks.check_shape(v_t, (batch,), "v_t", like=f"r_t {(batch, length)}")
    v_t = jnp.asarray(v_t)[:, None]
  elif jnp.ndim(v_t) == 2:
    _checks.check_same_shape(v_t, r_t, "v_t", "r_t")
  v_t = jnp.broadcast_to(_checks.as_float(v_t, "v_t"), (batch, length))
  return lambda_returns(r_t, discount_t, v_t, 1.0,
                        stop_target_gradients=stop_target_gradients)


def n_step_bootstrapped_returns(
    r_t: ArrayLike, discount_t: ArrayLike, v_t: ArrayLike, n: int,
    lambda_t: ArrayLike = 1.0,
    stop_target_gradients: bool = False) -> jax.Array:
  """Strided n-step bootstrapped returns (rlax `n_step_bootstrapped_returns`).

  The recursion Gₜ = rₜ₊₁ + γₜ₊₁ [(1 − λₜ₊₁) vₜ₊₁ + λₜ₊₁ Gₜ₊₁] is unrolled
  n times starting from G = v_{t+n} (the last value past the end), so with
  λ = 1

    Gₜ = rₜ₊₁ + γₜ₊₁ (rₜ₊₂ + … + γₜ₊ₙ₋₁ (rₜ₊ₙ + γₜ₊ₙ vₜ₊ₙ)).

  Past the end of a row, rewards are 0 and discounts and λ are 1, as in rlax.
  Costs n vectorised passes over [B, T] (n is static).

  See "Reinforcement Learning: An Introduction" (Sutton and Barto, 2018),
  §7.1 (n-step bootstrapping).

  Args:
    r_t: f[B, T]; position t holds the reward rₜ₊₁.
    discount_t: f[B, T] (or scalar); position t holds γₜ₊₁.
    v_t: f[B, T]; position t holds the bootstrap value vₜ₊₁.
    n: static number of steps, ≥ 1.
    lambda_t: scalar or f[B, T] mixing parameter.
    stop_target_gradients: stop gradients through the targets.

  Returns:
    f32[B, T] n-step returns.

  Raises:
    ValueError: wrong ranks, shapes or `n`.
  """
  n = _checks.check_positive_int(n, "n")
  r_t, discount_t = _checks.check_trajectory(r_t, discount_t)
  _checks.check_same_shape(v_t, r_t, "v_t", "r_t")
  v_t = _checks.as_float(v_t, "v_t")
  shape = r_t.shape
  length = shape[1]
  lambda_t = jnp.broadcast_to(
      _checks.scalar_or_like(lambda_t, r_t, "lambda_t", "r_t"), shape)
  discount_t = jnp.broadcast_to(discount_t, shape)

  def extend(x, fill):
    return jnp.pad(x, ((0, 0), (0, n - 1)), constant_values=fill)

  last_value = v_t[:, -1:]
  values = jnp.concatenate(
      [v_t, jnp.broadcast_to(last_value, (shape[0], n - 1))], axis=1)
  rewards, discounts, lambdas = (extend(r_t, 0.0), extend(discount_t, 1.0),
                                 extend(lambda_t, 1.0))
  targets = values[:, n - 1:n - 1 + length]
  for i in reversed(range(n)):
    window = slice(i, i + length)
    targets = rewards[:, window] + discounts[:, window] * (
        (1.0 - lambdas[:, window]) * values[:, window]
        + lambdas[:, window] * targets)
  return _stop_gradient_if(targets, stop_target_gradients)


def truncated_generalized_advantage_estimation(
    r_t: ArrayLike, discount_t: ArrayLike, lambda_: ArrayLike,
    values: ArrayLike, stop_target_gradients: bool = False) -> jax.Array:
  """Truncated GAE (rlax `truncated_generalized_advantage_estimation`).

    δₜ = rₜ₊₁ + γₜ₊₁ v(sₜ₊₁) − v(sₜ),   Âₜ = δₜ + γₜ₊₁ λₜ₊₁ Âₜ₊₁,   Â_T = 0.

  `values` has T + 1 columns (times [0, T]); termination is γ = 0, there is no
  mask (use `gae` for masked LLM batches).

  See "High-Dimensional Continuous Control Using Generalized Advantage
  Estimation" (Schulman et al., arXiv:1506.02438).

  Args:
    r_t: f[B, T] rewards at times [1, T].
    discount_t: f[B, T] (or scalar) discounts at times [1, T].
    lambda_: scalar or f[B, T] mixing parameter.
    values: f[B, T + 1] values at times [0, T].
    stop_target_gradients: stop gradients through the advantages.

  Returns:
    f32[B, T] advantages at times [0, T − 1].

  Raises:
    ValueError: wrong ranks or shapes.
  """
  r_t, discount_t = _checks.check_trajectory(r_t, discount_t)
  batch, length = r_t.shape
  _checks.check_shape(values, (batch, length + 1), "values",
                      like=f"r_t {(batch, length)} plus one column")
  values = _checks.as_float(values, "values")
  lambda_ = _checks.scalar_or_like(lambda_, r_t, "lambda_", "r_t")
  delta = r_t + discount_t * values[:, 1:] - values[:, :-1]
  everything = jnp.ones(r_t.shape, bool)
  advantages = sequences.reverse_discounted_cumsum(
      delta, everything, jnp.broadcast_to(discount_t * lambda_, r_t.shape))
  return _stop_gradient_if(advantages, stop_target_gradients)
