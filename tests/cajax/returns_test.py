"""Tests for cajax.returns against float64 NumPy loop transcriptions.

The references below transcribe verl's `core_algos.py` loops (GAE,
REINFORCE++, ReMax) and the verl PRIME recipe one trajectory at a time with
explicit Python loops. They share no code with the implementation.
"""

import collections
import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import masking
from cajax import registry
from cajax import returns
from cajax import testing
from cajax import types
from recurrence_cases import B
from recurrence_cases import MASK_CASES
from recurrence_cases import MASKS
from recurrence_cases import PAD
from recurrence_cases import PB
from recurrence_cases import PT
from recurrence_cases import T
from recurrence_cases import TOL
from recurrence_cases import maybe_jit
from recurrence_cases import masked_batches


# ---------------------------------------------------------------------------
# float64 references.


def ref_whiten(x, m, ddof=1, eps_max=False):
  """verl masked_whiten (ddof=1, var + 1e-8) / OpenRLHF (ddof=0, max)."""
  x = np.asarray(x, np.float64)
  w = np.asarray(m, np.float64)
  n = w.sum()
  mean = (x * w).sum() / (n + 1e-8)
  var = ((x - mean) ** 2 * w).sum() / (n + 1e-8)
  if ddof and n > ddof:
    var *= n / (n - ddof)
  scale = np.sqrt(max(var, 1e-8)) if eps_max else np.sqrt(var + 1e-8)
  return (x - mean) / scale


def ref_gae(r, v, m, gamma, lam):
  """verl compute_gae_advantage_return, row by row (raw advantages)."""
  batch, length = r.shape
  adv = np.zeros((batch, length))
  for b in range(batch):
    nextvalue, lastgaelam = 0.0, 0.0
    for t in reversed(range(length)):
      delta = r[b, t] + gamma * nextvalue - v[b, t]
      newgaelam = delta + gamma * lam * lastgaelam
      if m[b, t]:
        nextvalue = v[b, t]
        lastgaelam = newgaelam
      adv[b, t] = lastgaelam
  return adv, adv + v


def ref_token_returns(r, m, gamma, skip):
  """verl REINFORCE++ returns: current (skip) and older (reset) loops."""
  batch, length = r.shape
  out = np.zeros((batch, length))
  for b in range(batch):
    running = 0.0
    for t in reversed(range(length)):
      if skip:
        value = r[b, t] + gamma * running
        out[b, t] = value * m[b, t]
        running = value if m[b, t] else running
      else:
        running = r[b, t] + gamma * running
        out[b, t] = running
        running = running * m[b, t]
  return out


def ref_prime(r, rm, m, gid, c_out=5.0, c_proc=5.0):
  """verl PRIME recipe compute_rloo_advantage_return, groups by id."""
  batch, length = r.shape
  members = collections.defaultdict(list)
  for b, g in enumerate(gid):
    members[g].append(b)

  def rloo(x, sm):
    x = np.where(sm, x, 0.0)
    out = x.copy()
    for rows in members.values():
      n = len(rows)
      if n == 1:
        continue   # cajax's documented singleton policy: raw rewards.
      means = [x[j][sm[j]].mean() if sm[j].any() else 0.0 for j in rows]
      base = sum(means) / (n - 1)
      for j in rows:
        out[j][sm[j]] = x[j][sm[j]] * n / (n - 1) - base
    return out

  score = r.sum(1)
  last_mask = np.zeros_like(m)
  acc = np.zeros((batch, length))
  for b in range(batch):
    valid = np.flatnonzero(m[b])
    if len(valid):
      last_mask[b, valid[-1]] = True
      acc[b, valid[-1]] = score[b]
  total = c_out * rloo(acc, last_mask)
  if rm is not None:
    total = total + c_proc * rloo(rm, m)
  ret = np.flip(np.cumsum(np.flip(total * m, 1), 1), 1)
  return ref_whiten(ret, m), ret


# ---------------------------------------------------------------------------
# Fixtures and helpers.

GROUP_IDS = np.array([0, 1, 0, 1, 2, 0], np.int32)   # non-contiguous; 2 is
NUM_GROUPS = 3                                         # a singleton.


def data(seed=0, batch=B, length=T):
  """Rewards, values, old log-probs and Σπ² of a random batch."""
  rng = np.random.default_rng(seed)
  shape = (batch, length)
  return dict(r=rng.normal(size=shape), v=rng.normal(size=shape),
              lp=-np.abs(rng.normal(size=shape)),
              spp=rng.uniform(0.05, 1.0, size=shape))


def f32(x):
  return np.asarray(x, np.float32)


def assert_tokens(out, ref, mask, tol=None):
  testing.assert_masked_allclose(out, ref, mask, **(tol or TOL))


# ---------------------------------------------------------------------------
# Worked numbers (docs/golden_numbers.md).


def test_gae_goldens():
  out = returns.gae(np.array([[0.0, 0.0, 1.0]]), np.array([[.5, .6, .7]]),
                    np.ones((1, 3), bool), gamma=0.99, lambda_=0.95)
  np.testing.assert_allclose(out.info["raw_advantages"][0],
                             [0.446829, 0.37515, 0.3], atol=1e-5)
  np.testing.assert_allclose(out.returns[0], [0.946829, 0.97515, 1.0],
                             atol=1e-5)
  np.testing.assert_allclose(out.advantages[0], [0.992026, 0.01576,
                                                 -1.007786], atol=1e-5)


def test_gae_observation_tokens_golden():
  mask = np.array([[1, 0, 0, 1, 1]], bool)
  out = returns.gae(np.array([[0, 0, 0, 0, 1.0]]),
                    np.array([[.1, 5, 5, .3, .4]]), mask, gamma=0.9,
                    lambda_=1.0, whiten=False)
  # verl holds the carried 0.6 at the observation tokens; cajax holds 0.
  np.testing.assert_allclose(out.advantages[0], [0.71, 0, 0, 0.6, 0.6],
                             atol=1e-6)
  assert out.advantages.dtype == jnp.float32


def test_reinforce_plus_plus_returns_goldens():
  r, mask = np.array([[0.0, 0.0, 1.0]]), np.array([[1, 0, 1]], bool)
  current = returns.reinforce_plus_plus(r, mask, gamma=0.5).returns
  older = returns.reinforce_plus_plus(r, mask, gamma=0.5,
                                      skip_masked=False).returns
  np.testing.assert_allclose(current[0], [0.5, 0, 1])
  # Older verl: [0, 0.5, 1]; the 0.5 sits on the masked token (0 here).
  np.testing.assert_allclose(older[0], [0, 0, 1])


def test_reinforce_plus_plus_pipeline_goldens():
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  scores = np.zeros((2, 4))
  scores[0, 2] = 1.0
  kl = np.array([[.1, .2, 0, .5], [.3, .1, .4, 0]])
  rewards = returns.kl_in_reward(scores, kl, mask, kl_coef=0.1)
  out = returns.reinforce_plus_plus(rewards, mask)
  np.testing.assert_allclose(out.returns, [[.97, .98, 1, 0],
                                           [-.04, -.01, 0, 0]], atol=1e-6)
  np.testing.assert_allclose(out.advantages,
                             [[.70589, .723989, .760189, 0],
                              [-1.122183, -1.067884, 0, 0]], atol=1e-5)
  openrlhf = masking.masked_whiten(out.returns, mask, ddof=0,
                                   eps_mode="max")
  np.testing.assert_allclose(np.asarray(openrlhf)[mask],
                             [.789209, .809445, .849917, -1.254639,
                              -1.193931], atol=1e-5)


# ---------------------------------------------------------------------------
# Estimators vs references, over masks, jit and non-jit.


@pytest.mark.parametrize("mask_name,jit", MASK_CASES)
def test_gae_matches_verl(mask_name, jit):
  mask, x = MASKS[mask_name], data(1)
  fn = maybe_jit(returns.gae, jit, gamma=0.9, lambda_=0.8)
  out = fn(f32(x["r"]), f32(x["v"]), mask)
  raw, ret = ref_gae(f32(x["r"]), f32(x["v"]), mask, 0.9, 0.8)
  assert_tokens(out.info["raw_advantages"], raw, mask)
  assert_tokens(out.returns, ret, mask)
  assert_tokens(out.advantages, ref_whiten(raw, mask), mask,
                dict(rtol=1e-4, atol=1e-4))


def test_gae_per_token_gamma_and_defaults():
  mask, x = MASKS["interior"], data(2)
  out = returns.gae(f32(x["r"]), f32(x["v"]), mask, whiten=False)
  raw, _ = ref_gae(x["r"], x["v"], mask, 1.0, 1.0)
  assert_tokens(out.advantages, raw, mask)
  gamma = np.full((B, T), 0.7, np.float32)
  out = returns.gae(f32(x["r"]), f32(x["v"]), mask, gamma=gamma,
                    lambda_=0.5, whiten=False)
  assert_tokens(out.advantages, ref_gae(x["r"], x["v"], mask, 0.7, 0.5)[0],
                mask)


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.3), (0.99, 0.5),
                                       (jnp.float32(0.9), 0.97)])
def test_gae_static_and_traced_coefficients(gamma, lam):
  # λ ≥ 0.5 as a Python number telescopes into one recurrence; λ < 0.5
  # gathers the next valid value; a traced γ runs the scan.
  mask, x = MASKS["interior"], data(4)
  out = returns.gae(f32(x["r"]), f32(x["v"]), mask, gamma=gamma, lambda_=lam,
                    whiten=False)
  raw, ret = ref_gae(x["r"], x["v"], mask, float(gamma), lam)
  assert_tokens(out.advantages, raw, mask)
  assert_tokens(out.returns, ret, mask)


@pytest.mark.parametrize("mask_name,jit", MASK_CASES)
def test_reinforce_plus_plus_matches_verl(mask_name, jit):
  mask, x = MASKS[mask_name], data(3)
  for skip in (True, False):
    fn = maybe_jit(returns.reinforce_plus_plus, jit, gamma=0.8,
                   skip_masked=skip)
    out = fn(f32(x["r"]), mask)
    ret = ref_token_returns(x["r"], mask, 0.8, skip)
    assert_tokens(out.returns, ret, mask)
    assert_tokens(out.advantages, ref_whiten(ret * mask, mask), mask,
                  dict(rtol=1e-4, atol=1e-4))


@pytest.mark.parametrize("mask_name,jit", MASK_CASES)
def test_remax_matches_verl(mask_name, jit):
  mask, x = MASKS[mask_name], data(4)
  baseline = np.linspace(-1, 1, B)
  out = maybe_jit(returns.remax, jit)(f32(x["r"]), f32(baseline), mask)
  ret = np.flip(np.cumsum(np.flip(x["r"] * mask, 1), 1), 1)
  assert_tokens(out.returns, ret, mask)
  assert_tokens(out.advantages, ret - baseline[:, None], mask)


@pytest.mark.parametrize("mask_name,jit", MASK_CASES)
def test_prime_matches_recipe(mask_name, jit):
  mask, x = MASKS[mask_name], data(7)
  rewards = np.where(mask, x["r"], 0.0)
  rm = np.where(mask, x["v"] * 0.1, 0.0)
  fn = maybe_jit(returns.prime, jit, num_groups=NUM_GROUPS)
  out = fn(f32(rewards), f32(rm), mask, GROUP_IDS)
  adv, ret = ref_prime(f32(rewards), f32(rm), mask, GROUP_IDS)
  assert_tokens(out.returns, ret, mask, dict(rtol=1e-4, atol=1e-4))
  assert_tokens(out.advantages, adv, mask, dict(rtol=1e-4, atol=1e-4))
  out = returns.prime(f32(rewards), None, mask, GROUP_IDS, NUM_GROUPS,
                      outcome_coef=1.0, whiten=False)
  _, ret = ref_prime(f32(rewards), None, mask, GROUP_IDS, c_out=1.0)
  assert_tokens(out.advantages, ret, mask)


def test_prime_outcome_is_rloo_and_singleton_policy():
  mask = np.ones((3, 2), bool)
  r = np.array([[0, 1.0], [0, 0.0], [0, 3.0]], np.float32)
  out = returns.prime(r, None, mask, np.array([0, 0, 1]), 2,
                      outcome_coef=1.0, whiten=False)
  # Pair: s − mean of the other member; singleton keeps its raw score.
  np.testing.assert_allclose(out.returns, [[1, 1], [-1, -1], [3, 3]])
  out = returns.prime(r, None, mask, np.array([0, 0, 1]), 2,
                      outcome_coef=1.0, whiten=False, singleton="zero")
  np.testing.assert_allclose(out.returns[2], [0, 0])


# ---------------------------------------------------------------------------
# rlax parity.


# ---------------------------------------------------------------------------
# Edge cases.


def test_t_equals_one_and_bf16():
  x = data(14, batch=3, length=1)
  mask = np.array([[True], [False], [True]])
  out = maybe_jit(returns.gae, True)(f32(x["r"]), f32(x["v"]), mask)
  raw, _ = ref_gae(f32(x["r"]), f32(x["v"]), mask, 1.0, 1.0)
  assert_tokens(out.advantages, ref_whiten(raw, mask), mask,
                dict(rtol=1e-4, atol=1e-4))

  x, mask = data(15), MASKS["interior"]
  r16 = jnp.asarray(x["r"], jnp.bfloat16)
  v16 = jnp.asarray(x["v"], jnp.bfloat16)
  r64, v64 = np.asarray(r16, np.float64), np.asarray(v16, np.float64)
  out = maybe_jit(returns.gae, True, gamma=0.9, lambda_=0.9, whiten=False)(
      r16, v16, mask)
  assert out.advantages.dtype == jnp.float32
  assert_tokens(out.advantages, ref_gae(r64, v64, mask, 0.9, 0.9)[0], mask,
                dict(rtol=1e-2, atol=1e-2))
  out = maybe_jit(returns.reinforce_plus_plus, True)(r16, mask)
  assert_tokens(out.returns, ref_token_returns(r64, mask, 1.0, True), mask,
                dict(rtol=1e-2, atol=1e-2))


def test_single_valid_token_and_all_masked_batch():
  mask = np.zeros((2, 3), bool)
  mask[1, 1] = True
  r = np.ones((2, 3), np.float32)
  gae = maybe_jit(returns.gae, True)
  ids = np.array([0, 0])
  for out in (gae(r, r, mask),
              maybe_jit(returns.reinforce_plus_plus, True)(r, mask),
              maybe_jit(returns.prime, True, num_groups=1)(r, r, mask, ids)):
    assert np.all(np.isfinite(out.advantages))
    assert np.all(np.asarray(out.advantages) == 0.0)   # whitened lone token
  empty = np.zeros((2, 3), bool)
  assert np.all(np.asarray(gae(r, r, empty).advantages) == 0.0)


def test_masked_inputs_may_hold_nan():
  mask, x = MASKS["interior"], data(16)
  r = np.where(mask, x["r"], np.nan).astype(np.float32)
  v = np.where(mask, x["v"], np.nan).astype(np.float32)
  out = maybe_jit(returns.gae, True, gamma=0.9, lambda_=0.8)(r, v, mask)
  raw, _ = ref_gae(np.nan_to_num(r), np.nan_to_num(v), mask, 0.9, 0.8)
  assert_tokens(out.info["raw_advantages"], raw, mask)


def test_bad_inputs_raise():
  mask = np.ones((2, 3), bool)
  r = np.zeros((2, 3), np.float32)
  with pytest.raises(ValueError, match="values"):
    returns.gae(r, np.zeros((2, 4)), mask)
  with pytest.raises(ValueError, match="gamma"):
    returns.gae(r, r, mask, gamma=np.ones(3))
  with pytest.raises(ValueError, match="group_ids"):
    returns.prime(r, None, mask, np.zeros(3, np.int32), 1)
  with pytest.raises(ValueError, match="singleton"):
    returns.prime(r, None, mask, np.zeros(2, np.int32), 1, singleton="x")


# ---------------------------------------------------------------------------
# Registry.


def test_registered_estimators_match_plain_functions():
  mask, x = MASKS["interior"], data(17)
  rollouts = types.Rollouts(
      mask=mask, token_rewards=f32(np.where(mask, x["r"], 0)),
      group_ids=GROUP_IDS, num_groups=NUM_GROUPS, values=f32(x["v"]),
      old_logprobs=f32(x["lp"]), logprobs=f32(x["lp"] + 0.1),
      ref_logprobs=f32(x["lp"]), sum_pi_squared=f32(x["spp"]),
      baseline_scores=f32(np.arange(B) * 0.1))
  for name in ("gae", "reinforce_plus_plus", "remax", "prime"):
    assert name in registry.estimator_names()
  pairs = [
      (registry.estimate("gae", rollouts, gamma=0.9),
       returns.gae(rollouts.token_rewards, rollouts.values, mask,
                   gamma=0.9)),
      (registry.estimate("reinforce_plus_plus", rollouts),
       returns.reinforce_plus_plus(rollouts.token_rewards, mask)),
      (registry.estimate("remax", rollouts),
       returns.remax(rollouts.token_rewards, rollouts.baseline_scores, mask)),
      # Implicit-PRM fallback: 0.05·(logprobs − ref_logprobs) = 0.005.
      (registry.estimate("prime", rollouts),
       returns.prime(rollouts.token_rewards, np.where(mask, 0.005, 0.0),
                     mask, GROUP_IDS, NUM_GROUPS)),
  ]
  for got, want in pairs:
    np.testing.assert_allclose(got.advantages, want.advantages, **TOL)
    np.testing.assert_allclose(got.returns, want.returns, **TOL)
  kwargs = registry.example_inputs("prime", rollouts,
                                   np.random.default_rng(0))
  out = jax.jit(functools.partial(registry.estimate, "prime"))(
      rollouts, **kwargs)
  assert np.all(np.isfinite(out.advantages))


# ---------------------------------------------------------------------------
# Properties.


@jax.jit
def _gae_vs_return(r, v, mask, gamma):
  adv = returns.gae(r, v, mask, gamma=gamma, lambda_=1.0, whiten=False)
  ret = returns.reinforce_plus_plus(r, mask, gamma=gamma, whiten=False)
  return adv.advantages, ret.returns


@hypothesis.given(masked_batches(), st.floats(0.5, 1.0))
def test_gae_with_lambda_one_is_return_minus_value(batch, gamma):
  mask, r, v = batch
  gamma = np.float32(gamma)
  adv, ret = _gae_vs_return(r, v, mask, gamma)
  assert_tokens(adv, np.asarray(ret, np.float64) - v, mask,
                dict(rtol=1e-4, atol=1e-4))


@jax.jit
def _all_estimators(mask, r, v, gamma):
  ids = jnp.arange(PB, dtype=jnp.int32) % 2
  outs = (
      returns.gae(r, v, mask, gamma=gamma, lambda_=0.9),
      returns.reinforce_plus_plus(r, mask, gamma=gamma),
      returns.prime(jnp.where(mask, r, 0), v * 0.1, mask, ids, 2),
  )
  return [(out.advantages, out.returns) for out in outs]


@hypothesis.given(masked_batches(), st.floats(0.5, 1.0))
def test_padding_invariance(batch, gamma):
  mask, r, v = batch
  gamma = np.float32(gamma)
  garbage = np.full((PB, PAD), 7.0, np.float32)
  wide = _all_estimators(
      np.concatenate([mask, np.zeros((PB, PAD), bool)], axis=1),
      np.concatenate([r, garbage], axis=1),
      np.concatenate([v, garbage], axis=1), gamma)
  narrow = _all_estimators(mask, r, v, gamma)
  for narrow_pair, wide_pair in zip(narrow, wide):
    for a, b in zip(narrow_pair, wide_pair):
      np.testing.assert_allclose(np.asarray(b)[:, :PT], a, rtol=1e-4,
                                 atol=1e-4)
      assert np.all(np.asarray(b)[:, PT:] == 0.0)
