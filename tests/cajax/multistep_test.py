"""Tests of cajax/multistep.py against float64 loop transcriptions of rlax.

The references follow rlax's multistep definitions one trajectory at a time
with explicit Python loops; they share no code with cajax.
"""

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import multistep
from recurrence_cases import B
from recurrence_cases import T
from recurrence_cases import TOL
from recurrence_cases import maybe_jit


def data(seed=0, batch=B, length=T):
  """rlax-style r_t, v_t, λ and discount_t of a random batch."""
  rng = np.random.default_rng(seed)
  r, v = rng.normal(size=(2, batch, length))
  lam = rng.uniform(0.0, 1.0, size=(batch, length))
  return dict(r=r, v=v, lam=lam, d=rng.uniform(0.5, 1.0, size=lam.shape))


def f32(x):
  return np.asarray(x, np.float32)


def ref_lambda_returns(r, d, v, lam):
  out = np.zeros_like(r)
  for b in range(len(r)):
    g = v[b, -1]
    for t in reversed(range(r.shape[1])):
      g = r[b, t] + d[b, t] * ((1 - lam[b, t]) * v[b, t] + lam[b, t] * g)
      out[b, t] = g
  return out


def ref_n_step(r, d, v, n, lam):
  batch, length = r.shape
  out = np.zeros_like(r)
  for b in range(batch):
    for t in range(length):
      end = min(t + n - 1, length - 1)
      g = v[b, end]
      for i in range(end, t - 1, -1):
        g = r[b, i] + d[b, i] * ((1 - lam[b, i]) * v[b, i] + lam[b, i] * g)
      out[b, t] = g
  return out


def ref_truncated_gae(r, d, lam, values):
  out = np.zeros_like(r)
  for b in range(len(r)):
    a = 0.0
    for t in reversed(range(r.shape[1])):
      delta = r[b, t] + d[b, t] * values[b, t + 1] - values[b, t]
      a = delta + d[b, t] * lam[b, t] * a
      out[b, t] = a
  return out


@pytest.mark.parametrize("jit", [False, True])
def test_lambda_and_discounted_returns(jit):
  x = data(8)
  fn = maybe_jit(multistep.lambda_returns, jit)
  out = fn(f32(x["r"]), f32(x["d"]), f32(x["v"]), f32(x["lam"]))
  np.testing.assert_allclose(
      out, ref_lambda_returns(x["r"], x["d"], x["v"], x["lam"]), **TOL)
  out = multistep.lambda_returns(f32(x["r"]), f32(x["d"]), f32(x["v"]), 0.7)
  np.testing.assert_allclose(
      out, ref_lambda_returns(x["r"], x["d"], x["v"], np.full((B, T), .7)),
      **TOL)
  boot = np.linspace(-1, 1, B)
  expected = ref_lambda_returns(x["r"], x["d"], np.repeat(boot[:, None], T, 1),
                                np.ones((B, T)))
  for v in (f32(boot), f32(np.repeat(boot[:, None], T, 1))):
    np.testing.assert_allclose(
        multistep.discounted_returns(f32(x["r"]), f32(x["d"]), v), expected,
        **TOL)
  scalar = multistep.discounted_returns(f32(x["r"]), 0.9, 2.0)
  np.testing.assert_allclose(
      scalar, ref_lambda_returns(x["r"], np.full((B, T), .9),
                                 np.full((B, T), 2.0), np.ones((B, T))),
      **TOL)


@pytest.mark.parametrize("n", [1, 3, 5, 7])
def test_n_step_bootstrapped_returns(n):
  x = data(9)
  out = multistep.n_step_bootstrapped_returns(f32(x["r"]), f32(x["d"]),
                                            f32(x["v"]), n,
                                            lambda_t=f32(x["lam"]))
  np.testing.assert_allclose(
      out, ref_n_step(x["r"], x["d"], x["v"], n, x["lam"]), **TOL)


def test_n_step_hand_computed():
  # Gₜ = rₜ₊₁ + γ(rₜ₊₂ + γ vₜ₊₂); the last step bootstraps from its own v.
  r = np.array([[1.0] * 5, [2.0] * 5], np.float32)
  d = np.array([[0.5] * 5, [0.9] * 5], np.float32)
  v = np.array([[3.0] * 5, [4.0] * 5], np.float32)
  out = multistep.n_step_bootstrapped_returns(r, d, v, 2)
  np.testing.assert_allclose(out[0], [2.25] * 4 + [2.5], atol=1e-6)
  np.testing.assert_allclose(out[1], [7.04] * 4 + [5.6], atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_truncated_gae(jit):
  x = data(10)
  values = np.concatenate([x["v"], x["r"][:, :1]], axis=1)
  fn = maybe_jit(multistep.truncated_generalized_advantage_estimation, jit)
  out = fn(f32(x["r"]), f32(x["d"]), f32(x["lam"]), f32(values))
  np.testing.assert_allclose(
      out, ref_truncated_gae(x["r"], x["d"], x["lam"], values), **TOL)


def test_stop_target_gradients():
  x = data(13, batch=2, length=4)
  r, d, v = f32(x["r"]), f32(x["d"]), f32(x["v"])
  grad = jax.jit(jax.grad(lambda vv, flag: jnp.sum(multistep.lambda_returns(
      r, d, vv, 0.5, stop_target_gradients=flag)), argnums=0),
                 static_argnums=1)
  assert np.all(grad(v, True) == 0) and np.any(grad(v, False))


def test_single_step_rows():
  x = data(14, batch=3, length=1)
  np.testing.assert_allclose(
      maybe_jit(multistep.n_step_bootstrapped_returns, n=3)(
          f32(x["r"]), 0.9, f32(x["v"])),
      x["r"] + 0.9 * x["v"], **TOL)


def test_bad_inputs_raise():
  r = np.zeros((2, 3), np.float32)
  with pytest.raises(ValueError, match="values"):
    multistep.truncated_generalized_advantage_estimation(r, 0.9, 0.9, r)
  with pytest.raises(ValueError, match="n must"):
    multistep.n_step_bootstrapped_returns(r, 0.9, r, 0)


_PB, _PT = 3, 5   # fixed shapes: one compile per jitted function.
_floats = st.floats(-3, 3, allow_nan=False, width=32)


@st.composite
def _trajectories(draw):
  size = _PB * _PT
  r, v = (np.array(draw(st.lists(_floats, min_size=size, max_size=size)),
                   np.float32).reshape(_PB, _PT) for _ in range(2))
  gamma = np.float32(draw(st.floats(0.5, 1.0)))
  return r, v, gamma


@jax.jit
def _n_step_and_lambda(r, v, gamma, lam):
  return (multistep.n_step_bootstrapped_returns(r, gamma, v, _PT,
                                              lambda_t=lam),
          multistep.lambda_returns(r, gamma, v, lam))


@hypothesis.given(_trajectories(), st.floats(0.0, 1.0))
def test_n_step_with_n_equal_t_is_lambda_return(batch, lam):
  r, v, gamma = batch
  n_step, lam_ret = _n_step_and_lambda(r, v, gamma, np.float32(lam))
  np.testing.assert_allclose(n_step, lam_ret, rtol=1e-4, atol=1e-4)
