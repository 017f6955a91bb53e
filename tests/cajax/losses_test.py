"""Tests for cajax.losses against float64 NumPy loop references."""

import functools
import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import losses

TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_TOL = dict(rtol=1e-4, atol=1e-5)
MODES = losses.AGGREGATION_MODES


# --------------------------------------------------------------------------
# Float64 NumPy references (explicit loops; nothing shared with cajax).


def _clip(x, lo, hi):
  return min(max(x, lo), hi)


def _sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


def _valid(m):
  return [(b, t) for b in range(m.shape[0]) for t in range(m.shape[1])
          if m[b, t]]


def ref_vanilla(lp, old, adv, m, lp_sg, clip_low=0.2, clip_high=0.2,
                clip_ratio_c=3.0):
  out = np.zeros(m.shape)
  for b, t in _valid(m):
    r = math.exp(_clip(lp[b, t] - old[b, t], -20, 20))
    a = adv[b, t]
    loss = max(-a * r, -a * _clip(r, 1 - clip_low, 1 + clip_high))
    if clip_ratio_c is not None and a < 0:
      loss = min(loss, -a * clip_ratio_c)
    out[b, t] = loss
  return out


def _row_mean_log_ratio(x, old, m, b):
  n = sum(m[b])
  return sum(x[b, t] - old[b, t] for t in range(m.shape[1])
             if m[b, t]) / max(n, 1)


def ref_gspo(lp, old, adv, m, lp_sg, clip_low=0.2, clip_high=0.2):
  out = np.zeros(m.shape)
  for b, t in _valid(m):
    s = math.exp(min(_row_mean_log_ratio(lp, old, m, b), 10.0))
    a = adv[b, t]
    out[b, t] = max(-a * s, -a * _clip(s, 1 - clip_low, 1 + clip_high))
  return out


def ref_gspo_token(lp, old, adv, m, lp_sg, clip_low=0.2, clip_high=0.2):
  out = np.zeros(m.shape)
  for b, t in _valid(m):
    log_s = lp[b, t] - lp_sg[b, t] + _row_mean_log_ratio(lp_sg, old, m, b)
    s = math.exp(min(log_s, 10.0))
    a = adv[b, t]
    out[b, t] = max(-a * s, -a * _clip(s, 1 - clip_low, 1 + clip_high))
  return out


def ref_cispo(lp, old, adv, m, lp_sg, clip_low=0.2, clip_high=0.2,
              ratio_cap=None):
  out = np.zeros(m.shape)
  for b, t in _valid(m):
    r = math.exp(_clip(lp_sg[b, t] - old[b, t], -20, 20))
    w = (_clip(r, 1 - clip_low, 1 + clip_high) if ratio_cap is None
         else min(r, ratio_cap))
    out[b, t] = -w * adv[b, t] * lp[b, t]
  return out


def ref_sapo(lp, old, adv, m, lp_sg, tau_pos=1.0, tau_neg=1.05):
  out = np.zeros(m.shape)
  for b, t in _valid(m):
    r = math.exp(_clip(lp[b, t] - old[b, t], -20, 20))
    a = adv[b, t]
    tau = tau_pos if a > 0 else tau_neg
    out[b, t] = -_sigmoid(tau * (r - 1)) * 4 / tau * a
  return out


def ref_gpg(lp, old, adv, m, lp_sg):
  out = np.zeros(m.shape)
  for b, t in _valid(m):
    out[b, t] = -adv[b, t] * lp[b, t]
  return out


def ref_geo_mean_rows(lp, old, adv, m, clip_low=0.2, clip_high=0.2):
  """Per-row GMPO loss −Ā_b·R_b (0 for empty rows)."""
  rows = np.zeros(m.shape[0])
  for b in range(m.shape[0]):
    ts = [t for t in range(m.shape[1]) if m[b, t]]
    if not ts:
      continue
    total = 0.0
    for t in ts:
      x = _clip(lp[b, t] - old[b, t], -20, 20)
      sgn = float(np.sign(adv[b, t]))
      total += sgn * min(sgn * x, sgn * _clip(x, -clip_low, clip_high))
    mean_adv = sum(adv[b, t] for t in ts) / len(ts)
    rows[b] = -mean_adv * math.exp(total / len(ts))
  return rows


def ref_geo_mean(lp, old, adv, m, lp_sg, **kw):
  rows = ref_geo_mean_rows(lp, old, adv, m, **kw)
  out = np.zeros(m.shape)
  for b, t in _valid(m):
    out[b, t] = rows[b]
  return out


def _covariances(lp_sg, adv, m):
  valid = _valid(m)
  n = len(valid)
  adv_mean = sum(adv[v] for v in valid) / n
  lp_mean = sum(lp_sg[v] for v in valid) / n
  return {v: (adv[v] - adv_mean) * (lp_sg[v] - lp_mean) for v in valid}


def ref_clip_cov(lp, old, adv, m, lp_sg, clip_low=0.2, clip_high=0.2,
                 clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0,
                 selection="topk"):
  assert selection == "topk"
  cov = _covariances(lp_sg, adv, m)
  candidates = []
  for (b, t), c in cov.items():
    r_sg = math.exp(lp_sg[b, t] - old[b, t])
    a = adv[b, t]
    clipped = -a * _clip(r_sg, 1 - clip_low, 1 + clip_high) > -a * r_sg
    if not clipped and clip_cov_lb < c < clip_cov_ub:
      candidates.append((-c, b * m.shape[1] + t, (b, t)))
  k = max(int(clip_cov_ratio * len(cov)), 1)
  chosen = {v for _, _, v in sorted(candidates)[:k]}
  out = np.zeros(m.shape)
  for b, t in cov:
    if (b, t) in chosen:
      continue
    r = math.exp(lp[b, t] - old[b, t])
    a = adv[b, t]
    out[b, t] = max(-a * r, -a * _clip(r, 1 - clip_low, 1 + clip_high))
  return out


def ref_kl_cov(lp, old, adv, m, lp_sg, kl_cov_ratio=2e-4, ppo_kl_coef=0.1):
  cov = _covariances(lp_sg, adv, m)
  k = max(1, int(len(cov) * kl_cov_ratio))
  order = sorted(cov, key=lambda v: (-cov[v], v[0] * m.shape[1] + v[1]))
  chosen = set(order[:k])
  out = np.zeros(m.shape)
  for b, t in cov:
    x = lp[b, t] - old[b, t]
    out[b, t] = -adv[b, t] * math.exp(x)
    if (b, t) in chosen:
      out[b, t] += ppo_kl_coef * abs(x)
  return out


def ref_dro(lp, old, adv, m, lp_sg, beta=1.0):
  out = np.zeros(m.shape)
  for b, t in _valid(m):
    out[b, t] = -(lp[b, t] * adv[b, t]
                  - 0.5 * beta * (lp[b, t] - old[b, t]) ** 2)
  return out


def ref_opmd(lp, old, adv, m, lp_sg, tau=1.0):
  out = np.zeros(m.shape)
  for b in range(m.shape[0]):
    seq = sum(lp[b, t] - old[b, t] for t in range(m.shape[1]) if m[b, t])
    for t in range(m.shape[1]):
      if m[b, t]:
        out[b, t] = -(adv[b, t] - 0.5 * tau * seq) * (lp[b, t] - old[b, t])
  return out


def ref_aggregate(loss, m, mode, scale=None):
  """Scalar loss of verl's `agg_loss` (local batch, dp = 1)."""
  B, T = m.shape
  row_sum = [sum(loss[b, t] for t in range(T) if m[b, t]) for b in range(B)]
  row_n = [sum(1 for t in range(T) if m[b, t]) for b in range(B)]
  num_seq = sum(1 for n in row_n if n > 0)
  if mode == "token-mean":
    return sum(row_sum) / sum(row_n) if sum(row_n) else 0.0
  if mode == "token-sum":
    return sum(row_sum)
  if mode == "seq-mean-token-mean":
    total = sum(s / n for s, n in zip(row_sum, row_n) if n > 0)
    return total / num_seq if num_seq else 0.0
  total = sum(row_sum) / num_seq if num_seq else 0.0
  if mode == "seq-mean-token-sum-norm":
    total /= T if scale is None else scale
  return total


def ref_kl(kind, x, y):
  out = np.zeros(len(x))
  for i, (xi, yi) in enumerate(zip(x, y)):
    if kind in ("k1", "k1+"):
      out[i] = xi - yi
    elif kind in ("abs", "abs+"):
      out[i] = abs(xi - yi)
    elif kind in ("k2", "k2+"):
      out[i] = 0.5 * (xi - yi) ** 2
    else:
      d = _clip(yi - xi, -20, 20)
      out[i] = _clip(math.exp(d) - d - 1, -10, 10)
  return out


def ref_value_terms(v, v_old, ret, m, clip):
  out = np.zeros(m.shape)
  for b, t in _valid(m):
    loss = (v[b, t] - ret[b, t]) ** 2
    if clip is not None:
      vc = _clip(v[b, t], v_old[b, t] - clip, v_old[b, t] + clip)
      loss = max(loss, (vc - ret[b, t]) ** 2)
    out[b, t] = 0.5 * loss
  return out


def fd_grad(f, x, eps=1e-6):
  """Central finite-difference gradient of scalar f at float64 x."""
  grad = np.zeros_like(x)
  for idx in np.ndindex(*x.shape):
    up, down = x.copy(), x.copy()
    up[idx] += eps
    down[idx] -= eps
    grad[idx] = (f(up) - f(down)) / (2 * eps)
  return grad


# --------------------------------------------------------------------------
# Fixtures.


def make_batch(seed, B=4, T=6, spread=0.3, row_constant=False):
  """Float32-representable float64 arrays; NaN at masked inputs.

  Row 0 has no padding, row 1 right padding, row 2 interior padding, row 3
  (if present) is all masked.
  """
  rng = np.random.default_rng(seed)
  m = np.ones((B, T), bool)
  if B > 1 and T > 2:
    m[1, T - 2:] = False
  if B > 2 and T > 3:
    m[2, 1:3] = False
  if B > 3:
    m[3] = False
  lp = -np.abs(rng.normal(size=(B, T))) - 0.05
  old = lp + spread * rng.normal(size=(B, T))
  adv = rng.normal(size=(B, 1 if row_constant else T))
  adv = np.broadcast_to(adv, (B, T)).copy()
  lp, old, adv = (a.astype(np.float32).astype(np.float64)
                  for a in (lp, old, adv))
  for a in (lp, old, adv):
    a[~m] = np.nan
  return lp, old, adv, m


CASES = {
    "vanilla": (ref_vanilla, dict(clip_low=0.2, clip_high=0.28,
                                  clip_ratio_c=3.0)),
    "gspo": (ref_gspo, dict(clip_low=0.05, clip_high=0.08)),
    "gspo_token": (ref_gspo_token, dict(clip_low=0.05, clip_high=0.08)),
    "cispo": (ref_cispo, dict(clip_low=0.2, clip_high=0.28)),
    "sapo": (ref_sapo, dict(tau_pos=1.0, tau_neg=1.05)),
    "gpg": (ref_gpg, {}),
    "geo_mean": (ref_geo_mean, dict(clip_low=0.1, clip_high=0.15)),
    "clip_cov": (ref_clip_cov, dict(clip_cov_ratio=0.3, clip_cov_lb=0.02,
                                    clip_cov_ub=5.0, selection="topk")),
    "kl_cov": (ref_kl_cov, dict(kl_cov_ratio=0.3, ppo_kl_coef=0.5)),
    "dro": (ref_dro, dict(beta=0.7)),
    "opmd": (ref_opmd, dict(tau=0.6)),
}

_JITTED = {}


def jitted_loss(name):
  if name not in _JITTED:
    kw = CASES[name][1]
    _JITTED[name] = jax.jit(functools.partial(losses.policy_loss, name,
                                              **kw))
  return _JITTED[name]


def test_cases_cover_every_name():
  assert set(CASES) == set(losses.policy_loss_names())
  assert set(losses.PEER_AGGREGATION) == set(losses.policy_loss_names())


# --------------------------------------------------------------------------
# Policy losses: values, jit, gradients.


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("row_constant", [False, True])
def test_policy_loss_matches_reference(name, row_constant):
  ref, kw = CASES[name]
  lp, old, adv, m = make_batch(1, row_constant=row_constant)
  expected = ref(lp, old, adv, m, lp, **kw)
  eager = losses.policy_loss(name, lp, old, adv, m, **kw)
  jitted = jitted_loss(name)(lp, old, adv, m)
  assert eager.dtype == jnp.float32 and eager.shape == m.shape
  np.testing.assert_allclose(eager, expected, **TOL)
  np.testing.assert_allclose(jitted, eager, **TOL)
  assert np.all(np.asarray(eager)[~m] == 0.0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_policy_loss_gradient_matches_reference(name):
  ref, kw = CASES[name]
  lp, old, adv, m = make_batch(2, spread=0.8)
  weights = np.random.default_rng(3).uniform(0.5, 1.5, size=m.shape)
  clean = np.where(m, lp, -1.0)

  def objective(z):
    return np.sum(weights * ref(z, old, adv, m, clean, **kw))

  expected = fd_grad(objective, clean)
  grad = jax.grad(lambda z: jnp.sum(
      weights * losses.policy_loss(name, z, old, adv, m, **kw)))(lp)
  np.testing.assert_allclose(grad, expected, **GRAD_TOL)
  assert np.all(np.asarray(grad)[~m] == 0.0)


def test_plain_functions_equal_dispatch():
  lp, old, adv, m = make_batch(4)
  for name, (_, kw) in CASES.items():
    fn = getattr(losses, f"{name}_policy_loss")
    np.testing.assert_array_equal(
        fn(lp, old, adv, m, **kw),
        losses.policy_loss(name, lp, old, adv, m, **kw))
    assert fn.__doc__ and "See " in fn.__doc__


def test_row_advantages_broadcast():
  lp, old, adv, m = make_batch(5, row_constant=True)
  rows = np.nan_to_num(adv[:, 0])
  for name, (_, kw) in CASES.items():
    np.testing.assert_allclose(
        losses.policy_loss(name, lp, old, rows, m, **kw),
        losses.policy_loss(name, lp, old, adv, m, **kw), **TOL)


def test_vanilla_without_dual_clip_and_cispo_cap():
  lp, old, adv, m = make_batch(6, spread=1.5)
  clean = np.where(m, lp, 0.0)
  np.testing.assert_allclose(
      losses.vanilla_policy_loss(lp, old, adv, m, clip_ratio_c=None),
      ref_vanilla(lp, old, adv, m, clean, clip_ratio_c=None), **TOL)
  np.testing.assert_allclose(
      losses.cispo_policy_loss(lp, old, adv, m, ratio_cap=1.5),
      ref_cispo(lp, old, adv, m, clean, ratio_cap=1.5), **TOL)
  # With a large spread the dual clip is active somewhere.
  assert not np.allclose(
      losses.vanilla_policy_loss(lp, old, adv, m),
      losses.vanilla_policy_loss(lp, old, adv, m, clip_ratio_c=None))


def test_on_policy_gradient_is_reinforce():
  """On-policy, the ratio losses and CISPO (weight 1) have gradient −A."""
  lp, _, adv, m = make_batch(7)
  for name in ("vanilla", "gspo_token", "sapo", "cispo"):
    grad = jax.grad(lambda z, n=name: jnp.sum(
        losses.policy_loss(n, z, lp, adv, m)))(lp)
    np.testing.assert_allclose(grad, np.where(m, -adv, 0.0), **TOL)


def test_gspo_equals_gspo_token_for_row_constant_advantages():
  lp, old, adv, m = make_batch(8, row_constant=True)
  kw = CASES["gspo"][1]

  def scalar(name, z):
    loss = losses.policy_loss(name, z, old, adv, m, **kw)
    return losses.aggregate_mean(loss, m, "seq-mean-token-mean")

  for fn in (lambda n, z: scalar(n, z), jax.grad(scalar, argnums=1)):
    np.testing.assert_allclose(fn("gspo", lp), fn("gspo_token", lp), **TOL)


def test_gspo_token_gradient_uses_own_token():
  """Token advantages weight each token's own gradient in gspo_token."""
  lp, old, adv, m = make_batch(9, spread=0.01)
  grad = jax.grad(lambda z: jnp.sum(
      losses.gspo_token_policy_loss(z, old, adv, m)))(lp)
  for b, t in _valid(m):
    s = math.exp(_row_mean_log_ratio(lp, old, m, b))
    np.testing.assert_allclose(grad[b, t], -adv[b, t] * s, rtol=1e-5)


def test_geo_mean_reproduces_verl_batch_mean():
  lp, old, adv, m = make_batch(10, B=3, row_constant=True)
  kw = CASES["geo_mean"][1]
  clean = np.where(m, lp, -1.0)

  def verl(z):
    return float(np.mean(ref_geo_mean_rows(z, old, adv, m, **kw)))

  def cajax_scalar(z):
    loss = losses.geo_mean_policy_loss(z, old, adv, m, **kw)
    return losses.aggregate_mean(loss, m,
                                 losses.PEER_AGGREGATION["geo_mean"])

  np.testing.assert_allclose(cajax_scalar(lp), verl(clean), **TOL)
  np.testing.assert_allclose(jax.grad(cajax_scalar)(lp),
                             fd_grad(verl, clean), **GRAD_TOL)


def test_opmd_is_kimi_regression():
  """Row-constant advantages: mean_b ((A − τℓ)² − A²)/(2τ) and its gradient."""
  tau = 0.6
  lp, old, adv, m = make_batch(11, row_constant=True)
  loss = losses.opmd_policy_loss(lp, old, adv, m, tau=tau)
  expected, grads, rows = 0.0, np.zeros(m.shape), 0
  for b in range(m.shape[0]):
    ts = [t for t in range(m.shape[1]) if m[b, t]]
    if not ts:
      continue
    rows += 1
    seq = sum(lp[b, t] - old[b, t] for t in ts)
    a = adv[b, ts[0]]
    expected += ((a - tau * seq) ** 2 - a ** 2) / (2 * tau)
    for t in ts:  # Kimi: ascent direction A·∇ℓ − (τ/2)·∇ℓ²
      grads[b, t] = -(a - tau * seq)
  mode = losses.PEER_AGGREGATION["opmd"]
  np.testing.assert_allclose(losses.aggregate_mean(loss, m, mode),
                             expected / rows, **TOL)
  grad = jax.grad(lambda z: losses.aggregate_mean(
      losses.opmd_policy_loss(z, old, adv, m, tau=tau), m, mode))(lp)
  np.testing.assert_allclose(grad, grads / rows, **TOL)


def test_clip_cov_random_selection():
  lp, old, adv, m = make_batch(12, B=6, T=8)
  kw = dict(clip_cov_ratio=0.2, clip_cov_lb=0.0, clip_cov_ub=50.0)
  top = losses.clip_cov_policy_loss(lp, old, adv, m, selection="topk", **kw)
  base = losses.vanilla_policy_loss(lp, old, adv, m, clip_ratio_c=None)
  fn = jax.jit(functools.partial(losses.clip_cov_policy_loss,
                                 return_metrics=True, **kw))
  picks = []
  for seed in range(4):
    loss, metrics = fn(lp, old, adv, m, rng=jax.random.PRNGKey(seed))
    detached = (np.asarray(loss) == 0) & (np.asarray(base) != 0) & m
    k = max(int(0.2 * m.sum()), 1)
    assert detached.sum() == k
    np.testing.assert_allclose(metrics["clipfrac"], k / m.sum(), **TOL)
    # Tokens kept are exactly the PPO-clip loss.
    np.testing.assert_allclose(np.where(detached, 0, base), loss, **TOL)
    picks.append(tuple(np.flatnonzero(detached)))
  again, _ = fn(lp, old, adv, m, rng=jax.random.PRNGKey(0))
  assert tuple(np.flatnonzero((np.asarray(again) == 0)
                              & (np.asarray(base) != 0) & m)) == picks[0]
  assert len(set(picks)) > 1
  assert ((np.asarray(top) == 0) & (np.asarray(base) != 0)).sum() == k


def test_metrics():
  lp, old, adv, m = make_batch(13, spread=1.0)
  valid = m.sum()
  for name, (_, kw) in CASES.items():
    _, metrics = losses.policy_loss(name, lp, old, adv, m,
                                    return_metrics=True, **kw)
    assert set(metrics) == {"ppo_kl", "clipfrac", "clipfrac_lower"}
    ppo_kl = sum(-(lp[v] - old[v]) for v in _valid(m)) / valid
    np.testing.assert_allclose(metrics["ppo_kl"], ppo_kl, **TOL)
  _, metrics = losses.vanilla_policy_loss(lp, old, adv, m,
                                          return_metrics=True)
  clipped = lower = 0
  for b, t in _valid(m):
    r = math.exp(lp[b, t] - old[b, t])
    a = adv[b, t]
    l1, l2 = -a * r, -a * _clip(r, 0.8, 1.2)
    clipped += l2 > l1
    lower += a < 0 and max(l1, l2) > -3 * a
  np.testing.assert_allclose(metrics["clipfrac"], clipped / valid, **TOL)
  np.testing.assert_allclose(metrics["clipfrac_lower"], lower / valid, **TOL)


# --------------------------------------------------------------------------
# Policy-loss edge cases and errors.


@pytest.mark.parametrize("shape", [(3, 1), (1, 1)])
def test_single_token(shape):
  rng = np.random.default_rng(14)
  lp = -np.abs(rng.normal(size=shape)).astype(np.float32).astype(float)
  old = (lp + 0.2 * rng.normal(size=shape)).astype(np.float32).astype(float)
  adv = rng.normal(size=shape).astype(np.float32).astype(float)
  m = np.ones(shape, bool)
  if shape[0] > 1:
    m[1] = False
  for name, (ref, kw) in CASES.items():
    np.testing.assert_allclose(losses.policy_loss(name, lp, old, adv, m, **kw),
                               ref(lp, old, adv, m, lp, **kw), **TOL)


def test_bf16_inputs():
  lp, old, adv, m = make_batch(15)
  cast = [jnp.asarray(np.nan_to_num(a), jnp.bfloat16) for a in (lp, old, adv)]
  back = [np.asarray(a, np.float64) for a in cast]
  for name, (ref, kw) in CASES.items():
    loss = losses.policy_loss(name, *cast, m, **kw)
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, ref(*back, m, back[0], **kw),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("gap", [60.0, 1e4])
def test_extreme_log_ratios_stay_finite(gap):
  lp, old, adv, m = make_batch(16)
  signs = np.where(np.arange(m.size).reshape(m.shape) % 2 == 0, 1.0, -1.0)
  old = lp + gap * signs
  for name, (_, kw) in CASES.items():
    loss, grad = jax.value_and_grad(lambda z, n=name: jnp.sum(
        losses.policy_loss(n, z, old, adv, m, **kw)))(lp)
    assert np.isfinite(loss), name
    assert np.all(np.isfinite(grad)), name
    full, metrics = losses.policy_loss(name, lp, old, adv, m,
                                       return_metrics=True, **kw)
    assert np.all(np.isfinite(full))
    assert all(np.isfinite(v) for v in metrics.values())


def test_all_masked_batch_is_zero():
  lp, old, adv, m = make_batch(17)
  none = np.zeros_like(m)
  for name, (_, kw) in CASES.items():
    loss = losses.policy_loss(name, lp, old, adv, none, **kw)
    np.testing.assert_array_equal(loss, 0.0)
    assert losses.aggregate_mean(loss, none) == 0.0


def test_policy_loss_errors():
  lp, old, adv, m = make_batch(18)
  with pytest.raises(ValueError, match="name"):
    losses.policy_loss("ppo2", lp, old, adv, m)
  with pytest.raises(ValueError, match="does not take"):
    losses.policy_loss("gpg", lp, old, adv, m, clip_low=0.2)
  with pytest.raises(ValueError, match="old_logprobs"):
    losses.policy_loss("vanilla", lp, old[:, :-1], adv, m)
  with pytest.raises(ValueError, match="logprobs"):
    losses.policy_loss("vanilla", lp[:, :-1], old, adv, m)
  with pytest.raises(ValueError, match="advantages"):
    losses.policy_loss("vanilla", lp, old, adv[:2], m)
  with pytest.raises(ValueError, match="advantages"):
    losses.policy_loss("vanilla", lp, old, adv[..., None], m)
  with pytest.raises(ValueError, match="mask"):
    losses.policy_loss("vanilla", lp, old, adv, m[0])
  with pytest.raises(ValueError, match="clip_ratio_c"):
    losses.policy_loss("vanilla", lp, old, adv, m, clip_ratio_c=1.0)
  with pytest.raises(ValueError, match="clip_low"):
    losses.policy_loss("cispo", lp, old, adv, m, clip_low=1.5)
  with pytest.raises(ValueError, match="rng"):
    losses.policy_loss("clip_cov", lp, old, adv, m)
  with pytest.raises(ValueError, match="selection"):
    losses.policy_loss("clip_cov", lp, old, adv, m, selection="best")
  with pytest.raises(ValueError, match="beta"):
    losses.policy_loss("dro", lp, old, adv, m, beta=0.0)
  with pytest.raises(ValueError, match="tau"):
    losses.policy_loss("opmd", lp, old, adv, m, tau=-1.0)
  with pytest.raises(ValueError, match="old_logprobs"):
    losses.policy_loss("vanilla", lp, None, adv, m)
  # gpg does not need old log-probs.
  np.testing.assert_allclose(losses.policy_loss("gpg", lp, None, adv, m),
                             ref_gpg(lp, old, adv, m, lp), **TOL)


# --------------------------------------------------------------------------
# Aggregation.

GOLDEN_L = np.array([[1, 2, 3, 0], [4, 0, 0, 0]], np.float32)
GOLDEN_M = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
GOLDEN = {"token-mean": 2.5, "token-sum": 10.0, "seq-mean-token-sum": 5.0,
          "seq-mean-token-mean": 3.0, "seq-mean-token-sum-norm": 1.25}


@pytest.mark.parametrize("mode", MODES)
def test_aggregate_golden(mode):
  np.testing.assert_allclose(
      losses.aggregate_mean(GOLDEN_L, GOLDEN_M, mode), GOLDEN[mode], **TOL)
  np.testing.assert_allclose(ref_aggregate(GOLDEN_L, GOLDEN_M, mode),
                             GOLDEN[mode], **TOL)


@pytest.mark.parametrize("mode", MODES)
def test_aggregate_matches_reference(mode):
  rng = np.random.default_rng(20)
  _, _, _, m = make_batch(20, B=5, T=7)
  loss = rng.normal(size=m.shape).astype(np.float32)
  loss[~m] = np.nan
  fn = jax.jit(functools.partial(losses.aggregate_mean, mode=mode))
  for scale in (None, 3.0):
    expected = ref_aggregate(loss.astype(float), m, mode, scale)
    got = losses.aggregate_mean(loss, m, mode, loss_scale_factor=scale)
    np.testing.assert_allclose(got, expected, **TOL)
  np.testing.assert_allclose(fn(loss, m), ref_aggregate(loss, m, mode),
                             **TOL)
  total, denominator = losses.aggregate(loss, m, mode)
  assert total.dtype == denominator.dtype == jnp.float32
  assert total.shape == denominator.shape == ()


@pytest.mark.parametrize("mode", MODES)
def test_micro_batches_combine_exactly(mode):
  rng = np.random.default_rng(21)
  B, T = 8, 6
  m = np.arange(T)[None, :] < rng.integers(0, T + 1, size=(B, 1))
  m[5] = False  # an empty row
  m[0, 2] = False  # interior padding
  loss = rng.normal(size=(B, T)).astype(np.float32)
  full = losses.aggregate_mean(loss, m, mode, loss_scale_factor=4.0)
  totals, denominators = [], []
  for rows in np.split(np.arange(B), 4):
    total, denominator = losses.aggregate(loss[rows], m[rows], mode,
                                          loss_scale_factor=4.0,
                                          num_micro_batches=4)
    totals.append(total)
    denominators.append(denominator)
  combined = losses.safe_divide(sum(totals), sum(denominators))
  np.testing.assert_allclose(combined, full, **TOL)
  np.testing.assert_allclose(full, ref_aggregate(loss, m, mode, 4.0), **TOL)
  # The value loss and entropy pairs combine the same way.
  v = rng.normal(size=(B, T))
  vo, ret = v + 0.3 * rng.normal(size=(B, T)), rng.normal(size=(B, T))
  full_v = losses.safe_divide(*losses.value_loss(v, vo, ret, m, mode=mode,
                                                 loss_scale_factor=4.0))
  parts = [losses.value_loss(v[r], vo[r], ret[r], m[r], mode=mode,
                             loss_scale_factor=4.0, num_micro_batches=4)
           for r in np.split(np.arange(B), 4)]
  np.testing.assert_allclose(
      losses.safe_divide(sum(p[0] for p in parts), sum(p[1] for p in parts)),
      full_v, **TOL)


def test_aggregate_errors_and_empty():
  with pytest.raises(ValueError, match="mode"):
    losses.aggregate(GOLDEN_L, GOLDEN_M, "seq-mean")
  with pytest.raises(ValueError, match="per_token_loss"):
    losses.aggregate(GOLDEN_L[:, :3], GOLDEN_M)
  with pytest.raises(ValueError, match="num_micro_batches"):
    losses.aggregate(GOLDEN_L, GOLDEN_M, "token-sum", num_micro_batches=0)
  with pytest.raises(ValueError, match="loss_scale_factor"):
    losses.aggregate(GOLDEN_L, GOLDEN_M, "seq-mean-token-sum-norm",
                     loss_scale_factor=0.0)
  for mode in MODES:
    assert losses.aggregate_mean(GOLDEN_L, np.zeros_like(GOLDEN_M),
                                 mode) == 0.0
  assert losses.safe_divide(3.0, 0.0) == 0.0


@hypothesis.settings(max_examples=12)
@hypothesis.given(
    st.integers(1, 4), st.integers(1, 5), st.integers(1, 3),
    st.integers(0, 2**31 - 1), st.sampled_from(MODES))
def test_aggregate_padding_and_permutation_invariance(B, T, pad, seed, mode):
  rng = np.random.default_rng(seed)
  loss = rng.normal(size=(B, T)).astype(np.float32)
  m = rng.random((B, T)) < 0.6
  base = losses.aggregate_mean(loss, m, mode, loss_scale_factor=2.0)
  # Trailing padded columns and all-masked rows hold garbage.
  wide = np.concatenate([loss, np.full((B, pad), np.nan, np.float32)], 1)
  wide_m = np.concatenate([m, np.zeros((B, pad), bool)], 1)
  tall = np.concatenate([wide, rng.normal(size=(pad, T + pad))], 0)
  tall_m = np.concatenate([wide_m, np.zeros((pad, T + pad), bool)], 0)
  np.testing.assert_allclose(
      losses.aggregate_mean(tall, tall_m, mode, loss_scale_factor=2.0),
      base, **TOL)
  perm = rng.permutation(B)
  np.testing.assert_allclose(
      losses.aggregate_mean(loss[perm], m[perm], mode, loss_scale_factor=2.0),
      base, **TOL)


@hypothesis.settings(max_examples=12)
@hypothesis.given(st.integers(0, 2**31 - 1), st.sampled_from(sorted(CASES)))
def test_policy_loss_permutation_and_padding_invariance(seed, name):
  lp, old, adv, m = make_batch(seed % 1000, B=4, T=5)
  perm = np.random.default_rng(seed).permutation(4)
  loss = jitted_loss(name)(lp, old, adv, m)
  permuted = jitted_loss(name)(lp[perm], old[perm], adv[perm], m[perm])
  np.testing.assert_allclose(permuted, np.asarray(loss)[perm], **TOL)
  # Two trailing padded columns holding garbage change nothing.
  def pad(a, v):
    return np.concatenate([a, np.full((4, 2), v, a.dtype)], 1)
  padded = jitted_loss(name)(pad(lp, 7.0), pad(old, -9.0), pad(adv, 5.0),
                             pad(m, False))
  np.testing.assert_allclose(np.asarray(padded)[:, :5], loss, **TOL)
  np.testing.assert_array_equal(np.asarray(padded)[:, 5:], 0.0)


# --------------------------------------------------------------------------
# KL penalties.

KL_X = np.array([-1.0, -2.0, -0.5])
KL_Y = np.array([-1.2, -1.0, -3.0])
KL_GOLDEN = {"k1": [0.2, -1, 2.5], "abs": [0.2, 1, 2.5],
             "k2": [0.02, 0.5, 3.125], "k3": [0.018731, 0.718282, 1.582085]}


@pytest.mark.parametrize("kind", losses.KL_KINDS)
def test_kl_golden_and_reference(kind):
  got = losses.kl_penalty(kind, KL_X, KL_Y)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, KL_GOLDEN[kind.rstrip("+")], atol=1e-5)
  rng = np.random.default_rng(30)
  x = rng.normal(size=50) * 3
  y = rng.normal(size=50) * 3
  x[:3] = [-40.0, 40.0, 0.0]
  y[:3] = [0.0, 0.0, 25.0]  # exercises both k3 clamps
  x, y = x.astype(np.float32), y.astype(np.float32)
  np.testing.assert_allclose(losses.kl_penalty(kind, x, y),
                             ref_kl(kind, x.astype(float), y.astype(float)),
                             **TOL)


def test_kl_aliases_and_jit():
  for alias, kind in (("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3"),
                      ("low_var_kl+", "k3+")):
    np.testing.assert_array_equal(losses.kl_penalty(alias, KL_X, KL_Y),
                                  losses.kl_penalty(kind, KL_X, KL_Y))
  fn = jax.jit(losses.kl_penalty, static_argnums=0)
  np.testing.assert_allclose(fn("k3", KL_X, KL_Y), KL_GOLDEN["k3"],
                             atol=1e-5)


@pytest.mark.parametrize("kind", losses.KL_KINDS)
def test_kl_gradients(kind):
  rng = np.random.default_rng(31)
  x = rng.normal(size=8).astype(np.float32)
  y = rng.normal(size=8).astype(np.float32)
  gx, gy = jax.grad(lambda a, b: jnp.sum(losses.kl_penalty(kind, a, b)),
                    argnums=(0, 1))(x, y)
  if kind.endswith("+"):  # straight-through: gradient of k2
    expected = x.astype(float) - y
  else:
    expected = fd_grad(lambda z: np.sum(ref_kl(kind, z, y.astype(float))),
                       x.astype(float))
  np.testing.assert_allclose(gx, expected, **GRAD_TOL)
  np.testing.assert_allclose(gy, -expected, **GRAD_TOL)


def test_bf16_kl_aggregate_and_value():
  x16, y16 = (jnp.asarray(a, jnp.bfloat16) for a in (KL_X, KL_Y))
  got = losses.kl_penalty("k3", x16, y16)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, KL_GOLDEN["k3"], rtol=1e-2, atol=1e-2)
  loss16 = jnp.asarray(GOLDEN_L, jnp.bfloat16)
  for mode in MODES:
    total, denominator = losses.aggregate(loss16, GOLDEN_M, mode)
    assert total.dtype == jnp.float32
    np.testing.assert_allclose(total / denominator, GOLDEN[mode], **TOL)
  z = jnp.zeros(GOLDEN_M.shape, jnp.bfloat16)
  total, _ = losses.value_loss(z + 1, z, loss16, GOLDEN_M)
  assert total.dtype == jnp.float32 and np.isfinite(total)


def test_kl_mask_and_errors():
  m = np.array([True, False, True])
  x = KL_X.copy()
  x[1] = np.nan
  got = losses.kl_penalty("k3+", x, KL_Y, mask=m)
  np.testing.assert_allclose(got, [0.018731, 0.0, 1.582085], atol=1e-5)
  grad = jax.grad(lambda a: jnp.sum(losses.kl_penalty("k3", a, KL_Y,
                                                      mask=m)))(x)
  assert np.all(np.isfinite(grad)) and grad[1] == 0.0
  with pytest.raises(ValueError, match="kind"):
    losses.kl_penalty("k4", KL_X, KL_Y)
  with pytest.raises(ValueError, match="ref_logprobs"):
    losses.kl_penalty("k1", KL_X, KL_Y[:2])
  with pytest.raises(ValueError, match="mask"):
    losses.kl_penalty("k1", KL_X, KL_Y, mask=m[:2])


# --------------------------------------------------------------------------
# Entropy and value losses.


@pytest.mark.parametrize("mode", MODES)
def test_entropy_helpers(mode):
  rng = np.random.default_rng(40)
  _, _, _, m = make_batch(40)
  ent = rng.uniform(0, 3, size=m.shape)
  bonus = losses.safe_divide(*losses.entropy_bonus(ent, m, mode))
  penalty = losses.safe_divide(*losses.entropy_loss(ent, m, mode))
  np.testing.assert_allclose(bonus, ref_aggregate(ent, m, mode), **TOL)
  np.testing.assert_allclose(penalty, -bonus, **TOL)


@pytest.mark.parametrize("clip", [0.2, None])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_value_loss(clip, mode):
  rng = np.random.default_rng(41)
  _, _, _, m = make_batch(41)
  v_old = rng.normal(size=m.shape)
  v = v_old + 0.5 * rng.normal(size=m.shape)
  ret = rng.normal(size=m.shape)
  v, v_old, ret = (a.astype(np.float32).astype(float) for a in (v, v_old, ret))
  terms = ref_value_terms(v, v_old, ret, m, clip)
  fn = jax.jit(functools.partial(losses.value_loss, clip=clip, mode=mode,
                                 return_metrics=True))
  (total, denominator), metrics = fn(v, v_old, ret, m)
  np.testing.assert_allclose(losses.safe_divide(total, denominator),
                             ref_aggregate(terms, m, mode), **TOL)
  eager = losses.value_loss(v, v_old, ret, m, clip=clip, mode=mode)
  np.testing.assert_allclose(eager[0], total, **TOL)
  grad = jax.grad(lambda z: losses.safe_divide(*losses.value_loss(
      z, v_old, ret, m, clip=clip, mode=mode)))(v)
  expected = fd_grad(lambda z: ref_aggregate(
      ref_value_terms(z, v_old, ret, m, clip), m, mode), v)
  np.testing.assert_allclose(grad, expected, **GRAD_TOL)
  if clip is not None:
    frac = sum((_clip(v[i], v_old[i] - clip, v_old[i] + clip) - ret[i]) ** 2
               > (v[i] - ret[i]) ** 2 for i in _valid(m)) / m.sum()
    assert 0 < frac
    np.testing.assert_allclose(metrics["vf_clipfrac"], frac, **TOL)


def test_value_loss_errors():
  m = np.ones((2, 3), bool)
  z = np.zeros((2, 3))
  with pytest.raises(ValueError, match="old_values"):
    losses.value_loss(z, z[:, :2], z, m)
  with pytest.raises(ValueError, match="clip"):
    losses.value_loss(z, z, z, m, clip=0.0)
  with pytest.raises(ValueError, match="mode"):
    losses.value_loss(z, z, z, m, mode="mean")
