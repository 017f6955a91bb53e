"""Tests of cajax/off_policy.py (V-trace) against float64 loops of rlax.

The reference follows rlax's vtrace and vtrace_td_error_and_advantage one
trajectory at a time, with masked steps carrying the accumulator; it shares
no code with cajax.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import off_policy
from cajax import testing
from recurrence_cases import B
from recurrence_cases import MASK_CASES
from recurrence_cases import MASKS
from recurrence_cases import T
from recurrence_cases import TOL
from recurrence_cases import maybe_jit


def data(seed=0, batch=B, length=T):
  """Rewards, values, importance ratios, λ and discounts, random."""
  rng = np.random.default_rng(seed)
  size = (batch, length)
  rewards, values = rng.normal(size=size), rng.normal(size=size)
  ratios = np.exp(0.5 * rng.normal(size=size))
  return {"r": rewards, "v": values, "rho": ratios,
          "lam": rng.uniform(0.0, 1.0, size=size),
          "d": rng.uniform(0.5, 1.0, size=size)}


def f32(x):
  return np.asarray(x, np.float32)


def assert_tokens(out, ref, mask, tol=None):
  testing.assert_masked_allclose(out, ref, mask, **(tol or TOL))


def ref_vtrace(v_tm1, v_t, r, d, rho, lam, mask, rho_bar=1.0, pg_bar=1.0):
  """rlax vtrace (+ td_error_and_advantage); masked steps carry."""
  batch, length = r.shape
  errors = np.zeros_like(r)
  q = np.zeros_like(r)
  for b in range(batch):
    acc = 0.0
    for t in reversed(range(length)):
      if mask[b, t]:
        td = min(rho_bar, rho[b, t]) * (r[b, t] + d[b, t] * v_t[b, t]
                                        - v_tm1[b, t])
        acc = td + d[b, t] * min(1.0, rho[b, t]) * lam[b, t] * acc
        errors[b, t] = acc
    for t in range(length):
      if not mask[b, t]:
        continue
      later = [s for s in range(t + 1, length) if mask[b, s]]
      if later:
        s = later[0]
        boot = (lam[b, t] * (errors[b, s] + v_tm1[b, s])
                + (1 - lam[b, t]) * v_tm1[b, s])
      else:
        boot = v_t[b, t]
      q[b, t] = r[b, t] + d[b, t] * boot
  pg = np.minimum(pg_bar, rho) * (q - v_tm1) * mask
  return errors, pg, q


@pytest.mark.parametrize("mask_name,jit", MASK_CASES + [(None, True)])
def test_vtrace(mask_name, jit):
  x = data(11)
  mask = np.ones((B, T), bool) if mask_name is None else MASKS[mask_name]
  v_tm1, v_t = x["v"], np.roll(x["v"], -1, axis=1) + 0.1
  fn = maybe_jit(off_policy.vtrace_td_error_and_advantage, jit,
                 clip_rho_threshold=1.2, clip_pg_rho_threshold=0.9)
  out = fn(f32(v_tm1), f32(v_t), f32(x["r"]), f32(x["d"]), f32(x["rho"]),
           f32(x["lam"]), sample_mask=None if mask_name is None else mask)
  errors, pg, q = ref_vtrace(v_tm1, v_t, x["r"], x["d"], x["rho"], x["lam"],
                             mask, rho_bar=1.2, pg_bar=0.9)
  assert_tokens(out.errors, errors, mask)
  assert_tokens(out.q_estimate, q, mask)
  assert_tokens(out.pg_advantage, pg, mask)
  plain = off_policy.vtrace(f32(v_tm1), f32(v_t), f32(x["r"]), f32(x["d"]),
                         f32(x["rho"]), 0.9, sample_mask=mask)
  errors, _, _ = ref_vtrace(v_tm1, v_t, x["r"], x["d"], x["rho"],
                            np.full((B, T), 0.9), mask)
  assert_tokens(plain, errors, mask)


def test_vtrace_two_episodes_equal_separate():
  # rlax vtrace_test idea: a discount of 0 splits one trace into two.
  x = data(12, batch=1, length=8)
  d = f32(x["d"])
  d[0, 3] = 0.0
  args = [f32(x["v"]), f32(x["v"] + 0.3), f32(x["r"]), d, f32(x["rho"])]
  whole = off_policy.vtrace(*args)
  first = off_policy.vtrace(*(a[:, :4] for a in args))
  np.testing.assert_allclose(whole[:, :4], first, **TOL)


def test_stop_target_gradients():
  x = data(13, batch=2, length=4)
  r, d, v = f32(x["r"]), f32(x["d"]), f32(x["v"])
  grad = jax.jit(jax.grad(lambda vv: jnp.sum(off_policy.vtrace(
      vv, vv, r, d, f32(x["rho"]), stop_target_gradients=True))))
  # sg(e + v) − v has gradient −1 with respect to v_tm1.
  np.testing.assert_allclose(grad(v), -np.ones_like(v))


def test_bad_inputs_raise():
  r = np.zeros((2, 3), np.float32)
  with pytest.raises(ValueError, match="sample_mask"):
    off_policy.vtrace(r, r, r, 0.9, r + 1, sample_mask=np.ones((2, 2), bool))
