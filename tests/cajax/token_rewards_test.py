"""Tests for cajax.token_rewards against float64 NumPy loop references."""

import functools
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import token_rewards as tr

TOL = dict(rtol=1e-5, atol=1e-5)
BF16_TOL = dict(rtol=1e-2, atol=1e-2)

# Rows: no padding, right padding, interior padding, all masked.
MASK = np.array([[1, 1, 1, 1, 1],
                 [1, 1, 1, 0, 0],
                 [1, 0, 1, 1, 0],
                 [0, 0, 0, 0, 0]], bool)
STEP_IDS = np.array([[0, 0, 1, 1, 2],
                     [0, 1, 1, -1, -1],
                     [-1, 0, 0, 1, -1],
                     [0, 0, 0, 0, 0]], np.int32)


def _logprobs(seed, shape=MASK.shape, garbage=True):
  rng = np.random.default_rng(seed)
  lp = -rng.exponential(1.0, shape).astype(np.float32)
  if garbage and shape == MASK.shape:
    lp = np.where(MASK, lp, np.nan).astype(np.float32)
  return lp


# ----------------------------------------------------------- references ---


def ref_implicit(lp, ref, mask, beta):
  out = np.zeros(mask.shape)
  for b in range(mask.shape[0]):
    for t in range(mask.shape[1]):
      if mask[b, t]:
        out[b, t] = beta * (float(lp[b, t]) - float(ref[b, t]))
  return out


def ref_step_sum(tok, step_ids, mask, num_steps):
  out = np.zeros((mask.shape[0], num_steps))
  for b in range(mask.shape[0]):
    for t in range(mask.shape[1]):
      s = step_ids[b, t]
      if mask[b, t] and 0 <= s < num_steps:
        out[b, s] += tok[b, t]
  return out


def ref_sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


def ref_log_sigmoid(x):
  return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def ref_t_reg(rho_w, m_w, s_w, rho_l, m_l, s_l, alpha, form, normalize, c):
  out = []
  for b in range(m_w.shape[0]):
    vw = [t for t in range(m_w.shape[1]) if m_w[b, t]]
    vl = [t for t in range(m_l.shape[1]) if m_l[b, t]]
    margin = (sum(float(rho_w[b, t]) for t in vw)
              - sum(float(rho_l[b, t]) for t in vl))
    dpo = -ref_log_sigmoid(margin)
    if form == "weighted_dpo":
      ww = {t: float(s_w[b, t]) for t in vw}
      wl = {t: 1.0 - float(s_l[b, t]) for t in vl}
      for w in (ww, wl):
        if normalize and w:
          mean = sum(w.values()) / len(w)
          for t in w:
            w[t] = w[t] / mean if mean > 0 else 1.0
      wm = (sum(ww[t] * float(rho_w[b, t]) for t in vw)
            - sum(wl[t] * float(rho_l[b, t]) for t in vl))
      reg = -ref_log_sigmoid(wm)
    else:
      def mse(rho, s, ts):
        if not ts:
          return 0.0
        return sum((float(rho[b, t]) - c * (2 * float(s[b, t]) - 1)) ** 2
                   for t in ts) / len(ts)
      reg = 0.5 * (mse(rho_w, s_w, vw) + mse(rho_l, s_l, vl))
    out.append((dpo + alpha * reg, dpo, reg))
  return np.array(out)


def ref_intervention(step_ids, k, mask, train_prefix):
  batch, length = step_ids.shape
  loss = np.zeros((batch, length), bool)
  ctx = np.zeros((batch, length), bool)
  for b in range(batch):
    if k[b] < 0:
      continue
    cut = length
    for t in range(length):
      if step_ids[b, t] > k[b]:
        cut = t
        break
    for t in range(length):
      ctx[b, t] = t < cut
      s = step_ids[b, t]
      in_loss = s == k[b] or (train_prefix and 0 <= s < k[b])
      loss[b, t] = bool(in_loss and mask[b, t])
  return loss, ctx


# ------------------------------------------------------- implicit rewards ---


@pytest.mark.parametrize("use_jit", [False, True])
def test_implicit_token_and_sequence_reward(use_jit):
  lp, ref = _logprobs(0), _logprobs(1)
  token_fn = functools.partial(tr.implicit_token_reward, beta=0.05)
  seq_fn = functools.partial(tr.implicit_sequence_reward, beta=0.05)
  if use_jit:
    token_fn, seq_fn = jax.jit(token_fn), jax.jit(seq_fn)
  expected = ref_implicit(lp, ref, MASK, 0.05)
  got = token_fn(lp, ref, MASK)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, **TOL)
  assert np.all(np.asarray(got)[~MASK] == 0.0)
  np.testing.assert_allclose(seq_fn(lp, ref, MASK), expected.sum(axis=1),
                             **TOL)


def test_sequence_reward_is_dpo_implicit_reward():
  # Σ_t β log π/π_ref = β (log π(y|x) − log π_ref(y|x)) for each row.
  lp, ref = _logprobs(2, garbage=False), _logprobs(3, garbage=False)
  seq = tr.implicit_sequence_reward(lp, ref, MASK, beta=0.1)
  for b in range(MASK.shape[0]):
    logp_seq = sum(float(lp[b, t]) for t in range(5) if MASK[b, t])
    logq_seq = sum(float(ref[b, t]) for t in range(5) if MASK[b, t])
    assert abs(float(seq[b]) - 0.1 * (logp_seq - logq_seq)) < 1e-5


def test_implicit_step_reward():
  lp, ref = _logprobs(4), _logprobs(5)
  fn = jax.jit(tr.implicit_step_reward, static_argnames=("num_steps",
                                                         "beta"))
  got = fn(lp, ref, MASK, STEP_IDS, num_steps=3, beta=0.1)
  expected = ref_step_sum(ref_implicit(lp, ref, MASK, 0.1), STEP_IDS, MASK, 3)
  np.testing.assert_allclose(got, expected, **TOL)


def test_implicit_reward_bf16_and_t1():
  lp, ref = _logprobs(6, garbage=False), _logprobs(7, garbage=False)
  got = tr.implicit_token_reward(jnp.asarray(lp, jnp.bfloat16),
                                 jnp.asarray(ref, jnp.bfloat16), MASK)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref_implicit(lp, ref, MASK, 0.1),
                             **BF16_TOL)
  one = tr.implicit_sequence_reward(np.array([[-1.0]]), np.array([[-3.0]]),
                                    np.array([[True]]), beta=0.5)
  np.testing.assert_allclose(one, [1.0], **TOL)


def test_implicit_reward_shape_errors():
  with pytest.raises(ValueError, match="ref_logprobs"):
    tr.implicit_token_reward(np.zeros((2, 3)), np.zeros((2, 4)),
                             np.ones((2, 3), bool))
  with pytest.raises(ValueError, match="mask"):
    tr.implicit_token_reward(np.zeros(3), np.zeros(3), np.ones(3, bool))


@hypothesis.given(seed=st.integers(0, 2**16), pad=st.integers(1, 3))
def test_sequence_reward_padding_invariance(seed, pad):
  rng = np.random.default_rng(seed)
  lp = rng.normal(size=(3, 4)).astype(np.float32)
  ref = rng.normal(size=(3, 4)).astype(np.float32)
  mask = rng.random((3, 4)) < 0.7
  junk = rng.normal(size=(3, pad)).astype(np.float32) * 1e3
  padded = tr.implicit_sequence_reward(
      np.concatenate([lp, junk], 1), np.concatenate([ref, -junk], 1),
      np.concatenate([mask, np.zeros((3, pad), bool)], 1))
  np.testing.assert_allclose(padded, tr.implicit_sequence_reward(
      lp, ref, mask), **TOL)


# ------------------------------------------------------------------ T-REG ---


@pytest.mark.parametrize("center", [False, True])
def test_contrastive_token_reward(center):
  better, worse = _logprobs(8), _logprobs(9)
  fn = jax.jit(functools.partial(tr.contrastive_token_reward,
                                 temperature=2.0, center=center))
  got = fn(better, worse, MASK)
  for b in range(4):
    for t in range(5):
      want = (ref_sigmoid((float(better[b, t]) - float(worse[b, t])) / 2.0)
              - (0.5 if center else 0.0)) if MASK[b, t] else 0.0
      assert abs(float(got[b, t]) - want) < 1e-6
  grad = jax.grad(lambda x: jnp.sum(tr.contrastive_token_reward(
      x, worse, MASK)))(jnp.nan_to_num(jnp.asarray(better)))
  assert np.all(np.asarray(grad) == 0.0)
  with pytest.raises(ValueError, match="temperature"):
    tr.contrastive_token_reward(better, worse, MASK, temperature=0.0)


def _pair_inputs(seed):
  rng = np.random.default_rng(seed)
  rho_w = rng.normal(size=(4, 5)).astype(np.float32) * 0.3
  rho_l = rng.normal(size=(4, 3)).astype(np.float32) * 0.3
  m_l = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]], bool)
  s_w = rng.random((4, 5)).astype(np.float32)
  s_l = rng.random((4, 3)).astype(np.float32)
  return rho_w, MASK, s_w, rho_l, m_l, s_l


@pytest.mark.parametrize("form,normalize", [("weighted_dpo", True),
                                            ("weighted_dpo", False),
                                            ("mse", True)])
def test_t_reg_loss(form, normalize):
  args = _pair_inputs(10)
  fn = jax.jit(functools.partial(tr.t_reg_loss, alpha=0.7, reg_form=form,
                                 normalize_weights=normalize,
                                 target_scale=0.2))
  got = fn(*args)
  expected = ref_t_reg(*args, 0.7, form, normalize, 0.2)
  np.testing.assert_allclose(np.stack([got.loss, got.dpo, got.reg], 1),
                             expected, **TOL)
  # The all-masked pair has margin 0: DPO loss log 2.
  assert abs(float(got.dpo[3]) - math.log(2.0)) < 1e-6


def test_t_reg_constant_self_rewards_reduce_to_dpo():
  rho_w, m_w, _, rho_l, m_l, _ = _pair_inputs(11)
  out = tr.t_reg_loss(rho_w, m_w, np.full((4, 5), 0.3), rho_l, m_l,
                      np.full((4, 3), 0.6), alpha=1.0)
  np.testing.assert_allclose(out.reg, out.dpo, **TOL)
  np.testing.assert_allclose(out.loss, 2.0 * out.dpo, **TOL)


@pytest.mark.parametrize("form", ["weighted_dpo", "mse"])
def test_t_reg_gradient_with_nan_padding(form):
  rho_w, m_w, s_w, rho_l, m_l, s_l = _pair_inputs(12)
  rho_w = np.where(m_w, rho_w, np.nan).astype(np.float32)
  s_l = np.where(m_l, s_l, np.nan).astype(np.float32)
  grad = jax.jit(jax.grad(lambda r: jnp.sum(tr.t_reg_loss(
      r, m_w, s_w, rho_l, m_l, s_l, reg_form=form).loss)))(rho_w)
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~m_w] == 0)
  assert np.any(np.asarray(grad)[m_w] != 0)


def test_t_reg_errors():
  rho_w, m_w, s_w, rho_l, m_l, s_l = _pair_inputs(12)
  with pytest.raises(ValueError, match="reg_form"):
    tr.t_reg_loss(rho_w, m_w, s_w, rho_l, m_l, s_l, reg_form="kl")
  with pytest.raises(ValueError, match="same number of rows"):
    tr.t_reg_loss(rho_w, m_w, s_w, rho_l[:2], m_l[:2], s_l[:2])


# ---------------------------------------- transforming/combining rewards ---


def test_log_sigmoid_transform_and_and_combine():
  r = np.array([[3.0, -2.0], [0.5, 40.0], [-80.0, 0.0]], np.float32)
  ref = np.array([[1.0, 0.0], [0.5, 1.0], [0.0, 2.0]], np.float32)
  got = jax.jit(tr.log_sigmoid_transform)(r, ref)
  expected = np.vectorize(ref_log_sigmoid)(r.astype(np.float64) - ref)
  np.testing.assert_allclose(got, expected, **TOL)
  assert np.all(np.isfinite(got)) and np.all(np.asarray(got) < 0)
  # Far below the reference the transform is ≈ the margin (gradient alive).
  assert abs(float(got[2, 0]) + 80.0) < 1e-4
  np.testing.assert_allclose(tr.and_combine(r, ref), expected.sum(-1), **TOL)
  w = np.array([2.0, 0.5], np.float32)
  np.testing.assert_allclose(tr.and_combine(r, ref, weights=w),
                             (expected * w).sum(-1), **TOL)
  np.testing.assert_allclose(tr.log_sigmoid_transform(r, 1.0),
                             np.vectorize(ref_log_sigmoid)(r - 1.0), **TOL)
  with pytest.raises(ValueError, match="reference_rewards"):
    tr.log_sigmoid_transform(r, ref[:, :1])
  with pytest.raises(ValueError, match="weights"):
    tr.and_combine(r, ref, weights=np.ones(3))


def test_and_combine_prefers_all_round_response():
  # Raw sums tie; the AND combination prefers the response good on both.
  balanced = tr.and_combine(np.array([1.0, 1.0]), np.zeros(2))
  lopsided = tr.and_combine(np.array([4.0, -2.0]), np.zeros(2))
  assert float(balanced) > float(lopsided)


@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.85, 1.0])
def test_reference_from_samples(quantile):
  rewards = np.array([3.0, 1.0, 7.0, 2.0, 9.0, 4.0, 5.0], np.float32)
  ids = np.array([0, 0, 2, 0, 2, 2, 0], np.int32)
  valid = np.array([1, 1, 1, 1, 0, 1, 1], bool)
  fn = jax.jit(tr.reference_from_samples,
               static_argnames=("num_groups", "quantile"))
  got = fn(rewards, ids, num_groups=4, quantile=quantile, valid=valid)
  for g in range(4):
    xs = sorted(float(rewards[i]) for i in range(7)
                if ids[i] == g and valid[i])
    if not xs:
      want = 0.0
    else:
      pos = quantile * (len(xs) - 1)
      lo = int(math.floor(pos))
      hi = min(lo + 1, len(xs) - 1)
      want = xs[lo] + (pos - lo) * (xs[hi] - xs[lo])
    assert abs(float(got[g]) - want) < 1e-5
  with pytest.raises(ValueError, match="quantile"):
    tr.reference_from_samples(rewards, ids, 4, quantile=1.5)


# -------------------------------------------------------------------- InT ---


@pytest.mark.parametrize("train_prefix", [False, True])
def test_intervention_sft_mask(train_prefix):
  step_ids = np.array([[-1, 0, 0, 1, 1, 2, 2, -1],
                       [0, 0, -1, 1, 1, 2, 3, 3],
                       [0, 1, 2, 2, 2, -1, -1, -1],
                       [0, 0, 1, 1, 1, 1, 1, 1],
                       [0, 1, 1, 2, -1, -1, -1, -1]], np.int32)
  mask = np.ones(step_ids.shape, bool)
  mask[1, 3] = False  # an observation token inside the intervention step
  k = np.array([1, 1, 0, -1, 5], np.int32)
  fn = jax.jit(functools.partial(tr.intervention_sft_mask,
                                 train_prefix=train_prefix))
  got = fn(step_ids, k, mask)
  want_loss, want_ctx = ref_intervention(step_ids, k, mask, train_prefix)
  np.testing.assert_array_equal(got.loss_mask, want_loss)
  np.testing.assert_array_equal(got.context_mask, want_ctx)
  # Row 0: the prefix (step 0 and the leading −1 token) is context only.
  assert not bool(got.context_mask[0, 5]) and bool(got.context_mask[0, 0])
  assert not np.any(np.asarray(got.loss_mask[3]))


def test_intervention_sft_mask_scalar_step_and_t1():
  got = tr.intervention_sft_mask(np.array([[0], [1]]), 0)
  np.testing.assert_array_equal(got.loss_mask, [[True], [False]])
  np.testing.assert_array_equal(got.context_mask, [[True], [False]])
  with pytest.raises(ValueError, match="intervention_step"):
    tr.intervention_sft_mask(np.zeros((2, 3), np.int32), np.zeros(3, np.int32))


def test_first_error_step():
  correct = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1],
                      [1, 0, 1, 0]], bool)
  step_mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 1, 1],
                        [1, 0, 0, 1]], bool)
  got = jax.jit(tr.first_error_step)(correct, step_mask)
  want = []
  for b in range(4):
    want.append(next((s for s in range(4)
                      if step_mask[b, s] and not correct[b, s]), -1))
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(tr.first_error_step(correct), [2, -1, 0, 1])
