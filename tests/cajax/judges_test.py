"""Tests for cajax.judges against float64 NumPy loop references."""

import functools
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import judges

TOL = dict(rtol=1e-5, atol=1e-5)
BF16_TOL = dict(rtol=1e-2, atol=1e-2)

# Jitted once and reused: eager dispatch of many tiny ops is the slow part.
_expected = jax.jit(judges.expected_rating)
_bidir = jax.jit(judges.bidirectional_preference)
_uncertainty = jax.jit(judges.uncertainty_weights,
                       static_argnames=("kappa", "form", "ddof", "normalize"))
_sign = jax.jit(judges.sign_agreement_mask,
                static_argnames=("margin", "min_signals"))
_rank = jax.jit(judges.rank_agreement_mask,
                static_argnames=("tolerance", "min_signals"))


def ref_distribution(logprobs, valid=None):
  out = np.zeros(logprobs.shape)
  for idx in np.ndindex(logprobs.shape[:-1]):
    row = logprobs[idx].astype(np.float64)
    ok = [math.isfinite(v) and (valid is None or valid[idx][k])
          for k, v in enumerate(row)]
    if not any(ok):
      continue
    peak = max(v for v, o in zip(row, ok) if o)
    exps = [math.exp(v - peak) if o else 0.0 for v, o in zip(row, ok)]
    total = sum(exps)
    out[idx] = [e / total for e in exps]
  return out


# -------------------------------------------------------- expected rating ---


@pytest.mark.parametrize("use_jit", [False, True])
def test_expected_rating(use_jit):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 5)).astype(np.float32) * 2.0
  # Unnormalised log-probs (mass outside the rating vocabulary) renormalise.
  logprobs = logits - 3.0
  logprobs[0, 1, 2] = -np.inf
  valid = np.ones(logprobs.shape, bool)
  valid[1, 0, :] = False            # no usable rating token
  valid[2, 3, 4] = False
  values = np.array([0.0, 25.0, 50.0, 75.0, 100.0], np.float32)
  fn = functools.partial(judges.expected_rating, rating_values=values,
                         valid=valid, method="renormalized")
  if use_jit:
    fn = jax.jit(fn)
  got = fn(logprobs)
  probs = ref_distribution(logprobs, valid)
  np.testing.assert_allclose(got, probs @ values.astype(np.float64),
                             rtol=1e-5, atol=1e-3)
  assert float(got[1, 0]) == 0.0
  np.testing.assert_allclose(judges.rating_distribution(logprobs, valid),
                             probs, **TOL)


def ref_softmax_weighted(probs, values, temperature=0.2, eps=1e-8):
  """The official TrustJudge score, a float64 loop over rating tokens."""
  usable = [(v, p) for v, p in zip(values, probs) if 0.0 < p < 1.0]
  if not usable:
    return 0.0
  logits = [math.log((p + eps) / (1.0 - p + eps)) / temperature
            for _, p in usable]
  peak = max(logits)
  weights = [math.exp(z - peak) for z in logits]
  return sum(v * w for (v, _), w in zip(usable, weights)) / sum(weights)


def test_expected_rating_official_methods_golden():
  # The numbers from the official code: softmax-weighted 3.962,
  # G-Eval 3.130; the renormalised expectation (cajax's old form) 3.478.
  lp = np.log(np.array([0.02, 0.08, 0.30, 0.45, 0.05], np.float32))
  assert float(_expected(lp)) == pytest.approx(3.962, abs=5e-4)
  assert float(judges.expected_rating(lp, method="geval")) == pytest.approx(
      3.130, abs=5e-4)
  assert float(judges.expected_rating(
      lp, method="renormalized")) == pytest.approx(3.478, abs=5e-4)


@pytest.mark.parametrize("temperature", [0.2, 1.0, 3.0])
def test_expected_rating_softmax_weighted_and_geval(temperature):
  rng = np.random.default_rng(1)
  probs = rng.dirichlet(np.ones(6), size=(4, 3)) * 0.9  # 10% off-scale mass
  probs[0, 0] = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # p = 1 and 0: no usable token
  values = np.array([0.0, 20.0, 40.0, 60.0, 80.0, 100.0])
  with np.errstate(divide="ignore"):
    lp = np.log(probs).astype(np.float32)
  got = judges.expected_rating(lp, values, method="softmax_weighted",
                               temperature=temperature)
  want = [[ref_softmax_weighted(np.exp(lp[i, j].astype(np.float64)), values,
                                temperature)
           for j in range(3)] for i in range(4)]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
  assert float(got[0, 0]) == 0.0
  geval = judges.expected_rating(lp, values, method="geval")
  np.testing.assert_allclose(geval, np.exp(lp.astype(np.float64)) @ values,
                             rtol=1e-5, atol=1e-3)
  # A masked token counts as absent in every method.
  valid = np.ones(lp.shape, bool)
  valid[1, 2, 3] = False
  dropped = lp.copy()
  dropped[1, 2, 3] = -np.inf
  for method in judges.RATING_METHODS:
    np.testing.assert_allclose(
        judges.expected_rating(lp, values, valid, method=method),
        judges.expected_rating(dropped, values, method=method), **TOL)


def test_expected_rating_renormalized_scale_bf16_and_single_rating():
  probs = np.array([[0.1, 0.2, 0.7], [0.0, 1.0, 0.0]])
  with np.errstate(divide="ignore"):
    lp = np.log(probs).astype(np.float32)
  renormalized = jax.jit(functools.partial(judges.expected_rating,
                                           method="renormalized"))
  np.testing.assert_allclose(renormalized(lp), [2.6, 2.0], **TOL)
  got = renormalized(jnp.asarray(lp, jnp.bfloat16))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, [2.6, 2.0], **BF16_TOL)
  np.testing.assert_allclose(renormalized(np.array([[-7.0]])),
                             [1.0], **TOL)
  # The official scores skip p = 1 (and p = 0) tokens: no usable token → 0.
  np.testing.assert_allclose(_expected(lp)[1], 0.0)
  assert _expected(jnp.asarray(lp, jnp.bfloat16)).dtype == jnp.float32
  with pytest.raises(ValueError, match="rating_values"):
    judges.expected_rating(lp, rating_values=np.ones(4))
  for bad in (dict(method="mean"), dict(temperature=0.0),
              dict(temperature="0.2"), dict(temperature=float("nan"))):
    with pytest.raises(ValueError, match=next(iter(bad))):
      judges.expected_rating(lp, **bad)


def test_distribution_sensitive_score_separates_equal_modes():
  # Same greedy rating (4) but different spread: the expectations differ.
  a = np.log(np.array([0.01, 0.01, 0.08, 0.5, 0.4]))
  b = np.log(np.array([0.2, 0.01, 0.09, 0.5, 0.2]))
  ea, eb = _expected(np.stack([a, b]).astype(np.float32))
  assert float(ea) > float(eb)


# ------------------------------------------------------ pairwise judgement ---


def ref_bidirectional(lp_ab, lp_ba, aggregation="raw", tolerance=0.0):
  """The official likelihood aggregation (raw sums, |top − second|/2 rule)."""
  if aggregation == "raw":
    p_ab = np.exp(lp_ab.astype(np.float64))
    p_ba = np.exp(lp_ba.astype(np.float64))
  else:
    p_ab, p_ba = ref_distribution(lp_ab), ref_distribution(lp_ba)
  probs, decisions, scores = [], [], []
  for i in range(lp_ab.shape[0]):
    c = lp_ab.shape[1]
    m = [p_ab[i, k] + p_ba[i, c - 1 - k] for k in range(c)]
    first, second = sorted(m, reverse=True)[:2]
    choice = m.index(first)
    if first == second or abs(first - second) / 2 < tolerance:
      d = 0
    else:
      d = {0: 1, c - 1: -1}.get(choice, 0)
    probs.append([v / 2 for v in m])
    decisions.append(d)
    scores.append((m[0] - m[-1]) / 2)
  return np.array(probs), np.array(decisions), np.array(scores)


@pytest.mark.parametrize("num_outcomes", [2, 3])
@pytest.mark.parametrize("aggregation,tolerance", [("raw", 0.0),
                                                   ("raw", 0.05),
                                                   ("renormalized", 0.0)])
def test_bidirectional_preference(num_outcomes, aggregation, tolerance):
  rng = np.random.default_rng(num_outcomes)
  # Log-probs of the outcome tokens: some mass sits on other tokens.
  lp_ab = np.log(rng.dirichlet(np.ones(num_outcomes + 1),
                               size=16)[:, :num_outcomes]).astype(np.float32)
  lp_ba = np.log(rng.dirichlet(np.ones(num_outcomes + 1),
                               size=16)[:, :num_outcomes]).astype(np.float32)
  got = judges.bidirectional_preference(lp_ab, lp_ba, aggregation=aggregation,
                                        tie_tolerance=tolerance)
  probs, decisions, scores = ref_bidirectional(lp_ab, lp_ba, aggregation,
                                               tolerance)
  np.testing.assert_allclose(got.probs, probs, **TOL)
  np.testing.assert_array_equal(got.decision, decisions)
  np.testing.assert_allclose(got.score, scores, **TOL)
  if aggregation == "renormalized":
    np.testing.assert_allclose(np.sum(got.probs, -1), 1.0, **TOL)


def test_bidirectional_preference_official_golden():
  # The case from the official code: B wins on the raw sums
  # (A .48, tie .02, B .75); renormalising each order first says A.
  lp_ab = np.log(np.array([[0.20, 0.01, 0.05]], np.float32))
  lp_ba = np.log(np.array([[0.70, 0.01, 0.28]], np.float32))
  out = _bidir(lp_ab, lp_ba)
  assert int(out.decision[0]) == -1
  np.testing.assert_allclose(out.probs, [[0.24, 0.01, 0.375]], **TOL)
  old = judges.bidirectional_preference(lp_ab, lp_ba,
                                        aggregation="renormalized")
  assert int(old.decision[0]) == 1
  # A tolerance wider than half the gap (.135) calls a tie.
  assert int(judges.bidirectional_preference(
      lp_ab, lp_ba, tie_tolerance=0.14).decision[0]) == 0
  assert int(judges.bidirectional_preference(
      lp_ab, lp_ba, tie_tolerance=0.13).decision[0]) == -1
  # The tie outcome can win the argmax too.
  lp_tie = np.log(np.array([[0.1, 0.8, 0.1]], np.float32))
  assert int(_bidir(lp_tie, lp_tie).decision[0]) == 0
  for bad in (dict(aggregation="mean"), dict(tie_tolerance=-0.1),
              dict(tie_tolerance="0")):
    with pytest.raises(ValueError, match=next(iter(bad))):
      judges.bidirectional_preference(lp_ab, lp_ba, **bad)


def test_bidirectional_preference_cancels_position_bias_and_ties():
  # A judge that always favours the first slot by the same amount: the two
  # orders cancel and the aggregate is an exact tie.
  lp = np.log(np.array([[0.6, 0.1, 0.3]], np.float32))
  out = _bidir(lp, lp)
  assert int(out.decision[0]) == 0 and abs(float(out.score[0])) < 1e-7
  # A consistent winner across both orders.
  out = _bidir(
      np.log(np.array([[0.7, 0.2, 0.1]])), np.log(np.array([[0.2, 0.2, 0.6]])))
  assert int(out.decision[0]) == 1
  # Equal maxima between A ≻ B and B ≻ A resolve to a tie.
  out = _bidir(np.log(np.array([[0.5, 0.5]])),
                                        np.log(np.array([[0.5, 0.5]])))
  assert int(out.decision[0]) == 0
  # An unusable outcome token is the same as a −inf log-prob.
  lp_ab = np.log(np.array([[0.5, 0.3, 0.2]], np.float32))
  lp_ba = np.log(np.array([[0.1, 0.6, 0.3]], np.float32))
  masked = _bidir(lp_ab, lp_ba, None, np.array([[True, False, True]]))
  dropped = _bidir(lp_ab, np.array([[lp_ba[0, 0], -np.inf, lp_ba[0, 2]]]))
  np.testing.assert_allclose(masked.probs, dropped.probs, **TOL)
  with pytest.raises(ValueError, match="valid_ab"):
    judges.bidirectional_preference(lp_ab, lp_ba, valid_ab=np.ones((1, 2)))
  with pytest.raises(ValueError, match="2 or 3"):
    judges.bidirectional_preference(np.zeros((2, 4)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match="logprobs_ba"):
    judges.bidirectional_preference(np.zeros((2, 3)), np.zeros((3, 3)))


@hypothesis.given(seed=st.integers(0, 2**16))
def test_bidirectional_preference_antisymmetric(seed):
  rng = np.random.default_rng(seed)
  lp_ab = rng.normal(size=(4, 3)).astype(np.float32)
  lp_ba = rng.normal(size=(4, 3)).astype(np.float32)
  forward = _bidir(lp_ab, lp_ba)
  backward = _bidir(lp_ba, lp_ab)
  np.testing.assert_array_equal(forward.decision, -backward.decision)
  np.testing.assert_allclose(forward.score, -backward.score, **TOL)


def test_perplexity_preference():
  d_ab = np.array([1, 1, 0, -1, 1], np.int32)
  d_ba = np.array([1, -1, 1, -1, 1], np.int32)
  lp_ab = np.array([[-1.0, -1.0, 0.0], [-0.1, -0.1, 0.0], [-2.0, 9.0, 9.0],
                    [-0.5, -0.5, -0.5], [0.0, 0.0, 0.0]], np.float32)
  m_ab = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]],
                  bool)
  lp_ba = np.array([[-0.5, -0.5], [-0.5, 0.0], [-1.0, -1.0], [-0.5, -0.5],
                    [0.0, 0.0]], np.float32)
  m_ba = np.array([[1, 1], [1, 0], [1, 1], [1, 1], [0, 0]], bool)
  got = jax.jit(judges.perplexity_preference)(d_ab, d_ba, lp_ab, m_ab, lp_ba,
                                              m_ba)

  def reference(tolerance, on_equal):
    want = []
    for i in range(5):
      ppl = []
      for lp, m in ((lp_ab, m_ab), (lp_ba, m_ba)):
        vals = [float(lp[i, t]) for t in range(lp.shape[1]) if m[i, t]]
        ppl.append(math.exp(-sum(vals) / len(vals)) if vals else 1.0)
      if ppl[0] < ppl[1] and abs(ppl[0] - ppl[1]) > tolerance:
        want.append(int(d_ab[i]))
      elif ppl[0] > ppl[1] and abs(ppl[0] - ppl[1]) > tolerance:
        want.append(-int(d_ba[i]))
      else:
        want.append(int(d_ab[i]) if on_equal == "keep_ab" else 0)
    return want

  np.testing.assert_array_equal(got, reference(0.0, "tie"))
  # Rows 3 and 4 have equal perplexities: the official code calls a tie.
  np.testing.assert_array_equal(got, [-1, 1, -1, 0, 0])
  kept = judges.perplexity_preference(d_ab, d_ba, lp_ab, m_ab, lp_ba, m_ba,
                                      on_equal="keep_ab")
  np.testing.assert_array_equal(kept, reference(0.0, "keep_ab"))
  np.testing.assert_array_equal(kept, [-1, 1, -1, -1, 1])
  for tolerance in (0.1, 0.5, 2.0):
    np.testing.assert_array_equal(
        judges.perplexity_preference(d_ab, d_ba, lp_ab, m_ab, lp_ba, m_ba,
                                     tie_tolerance=tolerance),
        reference(tolerance, "tie"), err_msg=str(tolerance))
  with pytest.raises(ValueError, match="on_equal"):
    judges.perplexity_preference(d_ab, d_ba, lp_ab, m_ab, lp_ba, m_ba,
                                 on_equal="ab")


# ----------------------------------------------------------------- Ctrl-U ---


def ref_uncertainty(rewards, valid, kappa, form, ddof, normalize):
  weights, means, stds = [], [], []
  for b in range(rewards.shape[0]):
    xs = [float(rewards[b, k]) for k in range(rewards.shape[1])
          if valid[b, k]]
    if not xs:
      weights.append(0.0), means.append(0.0), stds.append(0.0)
      continue
    mu = sum(xs) / len(xs)
    dof = len(xs) - ddof
    var = sum((x - mu) ** 2 for x in xs) / dof if dof > 0 else 0.0
    sd = math.sqrt(var)
    w = math.exp(-kappa * sd) if form == "exp" else 1.0 / (1 + kappa * var)
    weights.append(w), means.append(mu), stds.append(sd)
  weights = np.array(weights)
  has = np.array([valid[b].any() for b in range(rewards.shape[0])])
  if normalize and has.any():
    weights = weights / weights[has].mean()
  return weights, np.array(means), np.array(stds)


@pytest.mark.parametrize("form,ddof,normalize", [("exp", 0, True),
                                                 ("inverse", 1, True),
                                                 ("exp", 0, False)])
def test_uncertainty_weights(form, ddof, normalize):
  rng = np.random.default_rng(1)
  rewards = rng.normal(size=(6, 4)).astype(np.float32)
  valid = rng.random((6, 4)) < 0.75
  valid[0] = True        # every evaluation valid
  valid[1] = False       # no evaluation: weight 0
  valid[2] = [True, False, False, False]   # one evaluation: u = 0
  rewards[3] = 2.5       # agreeing evaluations
  got = _uncertainty(rewards, valid, kappa=1.5, form=form, ddof=ddof,
                     normalize=normalize)
  want = ref_uncertainty(rewards, valid, 1.5, form, ddof, normalize)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, **TOL)
  assert float(got.weights[1]) == 0.0
  if normalize:
    assert abs(float(np.mean(np.asarray(got.weights)[valid.any(1)])) - 1) < 1e-5


def test_uncertainty_weights_order_and_edge_cases():
  rewards = np.array([[1.0, 1.0], [1.0, 2.0], [0.0, 3.0]], np.float32)
  out = _uncertainty(rewards)
  w = np.asarray(out.weights)
  assert w[0] > w[1] > w[2]                         # more spread, less weight
  np.testing.assert_allclose(out.std, [0.0, 0.5, 1.5], **TOL)
  flat = _uncertainty(rewards, kappa=0.0)
  np.testing.assert_allclose(flat.weights, 1.0, **TOL)
  none = _uncertainty(rewards, valid=np.zeros((3, 2), bool))
  assert np.all(np.asarray(none.weights) == 0.0)
  bf16 = _uncertainty(jnp.asarray(rewards, jnp.bfloat16))
  np.testing.assert_allclose(bf16.weights, w, **BF16_TOL)
  grad = jax.grad(lambda r: jnp.sum(_uncertainty(r).weights))(
      jnp.asarray(rewards))
  assert np.all(np.asarray(grad) == 0.0)            # weights are constants
  with pytest.raises(ValueError, match="form"):
    judges.uncertainty_weights(rewards, form="log")
  with pytest.raises(ValueError, match="kappa"):
    judges.uncertainty_weights(rewards, kappa=-1.0)


# ------------------------------------------------------------------- SCIR ---


def ref_sign_mask(signals, valid, thresholds, margin, min_signals):
  out = []
  for b in range(signals.shape[0]):
    votes = []
    for k in range(signals.shape[1]):
      if not valid[b, k]:
        continue
      c = float(signals[b, k]) - float(thresholds[k])
      votes.append(1 if c > margin else (-1 if c < -margin else 0))
    out.append(len(votes) >= min_signals and len(set(votes)) == 1
               and votes[0] != 0)
  return np.array(out)


def test_sign_agreement_mask():
  signals = np.array([[0.5, 2.0, 0.1], [0.5, -2.0, 0.3], [-1.0, -0.2, -3.0],
                      [0.05, 1.0, 1.0], [1.0, 9.0, -9.0], [0.0, 0.0, 0.0]],
                     np.float32)
  valid = np.ones(signals.shape, bool)
  valid[4, 2] = False        # the dissenting signal is missing
  valid[5] = [True, False, False]
  thresholds = np.array([0.0, 0.0, 0.0], np.float32)
  got = _sign(signals, valid, thresholds, margin=0.08)
  want = ref_sign_mask(signals, valid, thresholds, 0.08, 2)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got, [True, False, True, False, True, False])
  per_signal = np.array([0.4, 0.0, 0.0], np.float32)
  np.testing.assert_array_equal(
      _sign(signals, valid, per_signal, min_signals=1),
      ref_sign_mask(signals, valid, per_signal, 0.0, 1))
  with pytest.raises(ValueError, match="thresholds"):
    judges.sign_agreement_mask(signals, thresholds=np.zeros(2))
  with pytest.raises(ValueError, match="min_signals"):
    judges.sign_agreement_mask(signals, min_signals=0)


def ref_ranks(values, ids, valid):
  out = np.zeros(values.shape)
  for b in range(len(values)):
    if not valid[b]:
      continue
    peers = [j for j in range(len(values))
             if j != b and ids[j] == ids[b] and valid[j]]
    if not peers:
      out[b] = 0.5
      continue
    below = sum(values[j] < values[b] for j in peers)
    equal = sum(values[j] == values[b] for j in peers)
    out[b] = (below + 0.5 * equal) / len(peers)
  return out


def test_within_group_ranks_ties_singletons_and_invalid():
  values = np.array([1.0, 2.0, 2.0, 5.0, 0.0, 7.0, 3.0], np.float32)
  ids = np.array([0, 0, 0, 1, 0, 2, 2], np.int32)
  valid = np.array([1, 1, 1, 1, 1, 1, 0], bool)
  got = jax.jit(judges.within_group_ranks)(values, ids, valid)
  np.testing.assert_allclose(got, ref_ranks(values, ids, valid), **TOL)
  np.testing.assert_allclose(got, [1 / 3, 5 / 6, 5 / 6, 0.5, 0.0, 0.5, 0.0],
                             **TOL)


def test_rank_agreement_mask():
  rng = np.random.default_rng(3)
  signals = rng.normal(size=(9, 3)).astype(np.float32)
  signals[:3, 1] = signals[:3, 0] * 2 + 1      # group 0: same order
  signals[:3, 2] = signals[:3, 0] ** 3
  ids = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2], np.int32)
  valid = rng.random((9, 3)) < 0.85
  valid[:3] = True
  got = _rank(signals, ids, valid, tolerance=0.3)
  ranks = np.stack([ref_ranks(signals[:, k], ids, valid[:, k])
                    for k in range(3)], 1)
  want = []
  for b in range(9):
    rs = [ranks[b, k] for k in range(3) if valid[b, k]]
    want.append(len(rs) >= 2 and max(rs) - min(rs) <= 0.3)
  np.testing.assert_array_equal(got, want)
  assert np.all(np.asarray(got[:3]))
  with pytest.raises(ValueError, match="tolerance"):
    judges.rank_agreement_mask(signals, ids, tolerance=2.0)


@hypothesis.given(seed=st.integers(0, 2**16))
def test_agreement_masks_permutation_equivariant(seed):
  rng = np.random.default_rng(seed)
  signals = rng.integers(-2, 3, size=(8, 3)).astype(np.float32)
  ids = rng.integers(0, 3, 8).astype(np.int32)
  valid = rng.random((8, 3)) < 0.8
  perm = rng.permutation(8)
  sign = _sign(signals, valid)
  rank = _rank(signals, ids, valid)
  np.testing.assert_array_equal(_sign(signals[perm], valid[perm]),
                                np.asarray(sign)[perm])
  np.testing.assert_array_equal(
      _rank(signals[perm], ids[perm], valid[perm]),
      np.asarray(rank)[perm])
