"""Tests of cajax/shaping.py (UCAS, CAPO) against float64 NumPy references.

The references follow the UCAS authors' repository and the CAPO paper (with
the [GAP] choices documented in cajax.shaping) using explicit
Python loops; they share no code with cajax.
"""

import functools
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cajax
from cajax import shaping
from cajax import testing

ATOL = RTOL = 1e-5
# One shape for every batch, so that eager ops compile once.
B, T, S, N, G = 6, 10, 4, 4, 3


def make_batch(seed, length=T):
  """Groups {0,1,2}, {3,4} and the singleton {5}; interior skips, outcome
  rewards at the last valid token; row 4 is emptied (no valid token)."""
  r = testing.make_rollouts(batch=B, length=length, group_size=3,
                                       num_steps=S, seed=seed, as_numpy=True)
  rng = np.random.default_rng(seed + 1)
  d = {k: np.array(getattr(r, k)) for k in (
      "mask", "token_rewards", "step_ids", "step_mask", "self_certainty",
      "token_logits", "entropy")}
  d["mask"][4] = False
  d["token_rewards"][4] = 0.0
  d["outcome"] = d["token_rewards"].sum(1)
  d["group_ids"] = np.array([0, 0, 0, 1, 1, 2], np.int32)
  d["flags"] = rng.random((B, N, S)) < 0.4
  d["critique_valid"] = rng.random((B, N)) < 0.8
  return d


# --------------------------------------------------------------------------
# float64 references
# --------------------------------------------------------------------------


def ref_std(xs):
  if len(xs) < 2:
    return 0.0
  mu = sum(xs) / len(xs)
  return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1))


def ref_zscore(value, members, eps, scale=True):
  """verl GRPO: a singleton uses μ=0, σ=1; equal members give 0."""
  if len(members) == 1:
    return value / (1.0 + eps) if scale else value
  sd = ref_std(members)
  if sd == 0:
    return 0.0
  centred = value - sum(members) / len(members)
  return centred / (sd + eps) if scale else centred


def ref_groups(group_ids, ok):
  return {b: [j for j in range(len(group_ids))
              if group_ids[j] == group_ids[b] and ok[j]]
          for b in range(len(group_ids))}


def ref_ucas(d, beta_pos=0.25, beta_neg=0.35, coef=0.05, eps=1e-6,
             scale=True, reduce="sum", penalize=True):
  mask = np.asarray(d["mask"], bool)
  batch, length = mask.shape
  scores = [sum(float(x) for x in row) for row in d["token_rewards"]]
  ok = [not math.isnan(x) for x in scores]
  members = ref_groups(d["group_ids"], ok)
  certainty = []
  for b in range(batch):
    vals = [float(d["self_certainty"][b, t]) for t in range(length)
            if mask[b, t]]
    total = sum(vals)
    certainty.append(total if reduce == "sum" else
                     (total / len(vals) if vals else 0.0))
  # The batch-global logit range leaves unscorable rows out (as if absent).
  logits = [float(d["token_logits"][b, t]) for b in range(batch)
            for t in range(length) if mask[b, t] and ok[b]]
  lo, hi = (min(logits), max(logits)) if logits else (0.0, 0.0)
  adv = {b: ref_zscore(scores[b], [scores[j] for j in members[b]], eps,
                       scale) for b in range(batch) if ok[b]}
  out = np.zeros((batch, length))
  for b in range(batch):
    if not ok[b]:
      continue
    # The repo gives the certainty the same singleton rule (μ=0, σ=1).
    c_hat = ref_zscore(certainty[b], [certainty[j] for j in members[b]],
                       eps, scale)
    log_m = -beta_pos * c_hat if adv[b] > 0 else beta_neg * c_hat
    shaped = adv[b] * math.exp(min(max(log_m, -50.0), 50.0))
    if not penalize and all(adv[j] == 0 for j in members[b]):
      continue
    for t in range(length):
      if not mask[b, t]:
        continue
      # torch.isclose(max, min): |max − min| ≤ 1e-8 + 1e-5·|min|.
      close = abs(hi - lo) <= 1e-8 + 1e-5 * abs(lo)
      ell = 0.5 if close else (d["token_logits"][b, t] - lo) / (hi - lo + eps)
      raw = shaped - coef * ell
      out[b, t] = max(raw, 0.0) if shaped > 0 else raw
  return out


def ref_vote(flags, valid, mode, threshold):
  batch, num_critiques, num_steps = flags.shape
  wrong = np.zeros((batch, num_steps), bool)
  for b in range(batch):
    voters = [n for n in range(num_critiques) if valid[b, n]]
    for s in range(num_steps):
      votes = sum(1 for n in voters if flags[b, n, s])
      if mode == "union":
        wrong[b, s] = votes > 0
      elif mode == "intersect":
        wrong[b, s] = bool(voters) and votes == len(voters)
      else:
        wrong[b, s] = bool(voters) and votes / len(voters) > threshold
  return wrong


def ref_capo(d, outcome, vote="majority", threshold=0.5, w_whole=1.0,
             w_process=0.5, normalization="token", penalize_correct=True,
             eps=1e-6, critique_valid=None):
  mask = np.asarray(d["mask"], bool)
  batch, length = mask.shape
  valid = (np.ones((batch, N), bool) if critique_valid is None
           else critique_valid)
  wrong = ref_vote(d["flags"], valid, vote, threshold) & d["step_mask"]
  ok = [not math.isnan(x) for x in outcome]
  rewards = np.zeros((batch, length))
  penalty = np.zeros((batch, length))
  for b in range(batch):
    if not penalize_correct and ok[b] and outcome[b] > 0.5:
      wrong[b] = False
    for t in range(length):
      s = d["step_ids"][b, t]
      if mask[b, t] and ok[b]:
        penalty[b, t] = w_process if 0 <= s < S and wrong[b, s] else 0.0
        rewards[b, t] = w_whole * outcome[b] - penalty[b, t]
  adv = np.zeros((batch, length))
  members = ref_groups(d["group_ids"], ok)
  for b in range(batch):
    if not ok[b]:
      continue
    pool = [rewards[j, t] for j in members[b] for t in range(length)
            if mask[j, t]]
    out_adv = ref_zscore(outcome[b], [outcome[j] for j in members[b]], eps)
    for t in range(length):
      if mask[b, t]:
        adv[b, t] = (ref_zscore(rewards[b, t], pool, eps)
                     if normalization == "token"
                     else w_whole * out_adv - penalty[b, t])
  return adv, rewards, wrong


def close(actual, expected, tol=ATOL):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected,
                             rtol=tol, atol=tol)


def ucas_args(d):
  return (d["token_rewards"], d["self_certainty"], d["token_logits"],
          d["mask"], d["group_ids"], G)


def capo_args(d, outcome):
  return (outcome, d["flags"], d["mask"], d["step_ids"], d["step_mask"],
          d["group_ids"], G)


# --------------------------------------------------------------------------
# UCAS
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {}, {"certainty_reduce": "mean"}, {"penalize_zero_adv_groups": False},
    {"normalize_by_std": False, "beta_pos": 0.5, "token_coef": 0.1}])
def test_ucas_matches_reference(kwargs):
  d = make_batch(1)
  d["token_rewards"][3:5] = 0.0
  d["token_rewards"][3, 0] = 1.0
  d["token_rewards"][4, 0] = 1.0  # rows 3, 4: an all-correct group
  d["token_rewards"][1, 0] = np.nan  # an unscorable row
  out = shaping.ucas(*ucas_args(d), **kwargs)
  names = {"certainty_reduce": "reduce", "penalize_zero_adv_groups":
           "penalize", "token_coef": "coef", "normalize_by_std": "scale"}
  expected = ref_ucas(d, **{names.get(k, k): v for k, v in kwargs.items()})
  close(out.advantages, expected)
  assert np.all(np.asarray(out.advantages)[1] == 0)


def test_ucas_golden():
  # Group {0, 1}: scores (1, 0), certainty sums (3, 1), logits in [0, 2].
  # A = ±0.5/(σ + eps) with σ = √0.5, Ĉ = ±the same; row 0 (A > 0) gets
  # m = exp(−0.25·Ĉ₀), row 1 gets m = exp(0.35·Ĉ₁).
  d = make_batch(2)
  d["mask"][:] = False
  d["mask"][:2, :2] = True
  d["token_rewards"][:] = 0.0
  d["token_rewards"][0, 0] = 1.0
  d["self_certainty"][:2, :2] = [[1.0, 2.0], [0.5, 0.5]]
  d["token_logits"][:2, :2] = [[0.0, 2.0], [1.0, 1.0]]
  d["group_ids"][:] = [0, 0, 1, 1, 2, 2]
  out = shaping.ucas(*ucas_args(d))
  z = 0.5 / (math.sqrt(0.5) + 1e-6)
  a0 = z * math.exp(-0.25 * z)
  a1 = -z * math.exp(0.35 * -z)
  expected = np.zeros((B, T))
  expected[:2, :2] = [[a0, a0 - 0.05 * 2 / (2 + 1e-6)],
                      [a1 - 0.05 * 1 / (2 + 1e-6)] * 2]
  close(out.advantages, expected)
  close(out.info["multiplier"][:2], [math.exp(-0.25 * z),
                                     math.exp(-0.35 * z)])


def test_ucas_singleton_certainty_and_isclose_logits():
  # A correct row alone in its group: the repo's singleton rule (μ=0, σ=1)
  # applies to both z-scores, so A = 1/(1+ε), Ĉ = ΣSC/(1+ε) and the
  # multiplier is exp(−β₊·Ĉ), not 1.
  d = make_batch(5)
  d["mask"][:] = False
  d["mask"][5, :3] = True
  d["token_rewards"][:] = 0.0
  d["token_rewards"][5, 2] = 1.0
  d["self_certainty"][5, :3] = [1.0, 2.0, 3.0]
  # Logits that differ by less than torch.isclose's tolerance: ℓ̂ = 0.5.
  d["token_logits"][5, :3] = [100.0, 100.0005, 100.0]
  out = shaping.ucas(*ucas_args(d))
  eps = 1e-6
  c_hat = 6.0 / (1 + eps)
  m = math.exp(-0.25 * c_hat)
  close(out.info["certainty_z"][5], c_hat)
  close(out.info["multiplier"][5], m)
  want = 1 / (1 + eps) * m - 0.05 * 0.5
  close(out.advantages[5, :3], [want] * 3)
  # A spread just above the tolerance is min-max normalised.
  d["token_logits"][5, :3] = [100.0, 100.01, 100.0]
  out = shaping.ucas(*ucas_args(d))
  ell = 0.01 / (0.01 + eps)
  close(out.advantages[5, :3], [1 / (1 + eps) * m,
                                1 / (1 + eps) * m - 0.05 * ell,
                                1 / (1 + eps) * m])


def test_ucas_zero_variance_groups_and_clamp():
  d = make_batch(3)
  d["token_rewards"][:] = 0.0  # every group all-wrong: A = 0 everywhere
  d["token_logits"][:] = 1.5  # constant logits: ℓ̂ = 0.5
  out = np.asarray(shaping.ucas(*ucas_args(d)).advantages)
  close(out, np.where(d["mask"], -0.05 * 0.5, 0.0))
  off = shaping.ucas(*ucas_args(d), penalize_zero_adv_groups=False)
  assert not np.any(np.asarray(off.advantages))
  # Positive rows never flip negative, whatever the logit penalty.
  d = make_batch(4)
  out = shaping.ucas(*ucas_args(d), token_coef=10.0)
  adv = np.asarray(out.advantages)
  positive = np.asarray(out.info["outcome_advantages"]) > 0
  assert positive.any() and np.all(adv[positive] >= 0)


# --------------------------------------------------------------------------
# CAPO
# --------------------------------------------------------------------------


def test_capo_vote_figure_golden():
  # The CAPO figure: 4 critiques flag steps [1,3], [1,2,3], [1,3], [2,3].
  flags = np.zeros((B, N, S), bool)
  for n, steps in enumerate([[1, 3], [1, 2, 3], [1, 3], [2, 3]]):
    for s in steps:
      flags[0, n, s - 1] = True
  expected = {"union": [1, 1, 1, 0], "intersect": [0, 0, 1, 0],
              "majority": [1, 0, 1, 0]}
  for mode, want in expected.items():
    wrong = np.asarray(shaping.capo_vote(flags, mode=mode))
    np.testing.assert_array_equal(wrong[0], np.array(want, bool))
    assert not wrong[1:].any()
  # Dropping the second critique (unparsable) makes step 2 a 1-of-3 vote.
  valid = np.ones((B, N), bool)
  valid[0, 1] = False
  wrong = np.asarray(shaping.capo_vote(flags, valid, mode="majority",
                                       threshold=0.3))
  np.testing.assert_array_equal(wrong[0], [True, True, True, False])
  valid[0] = False  # no valid critique: nothing is wrong
  for mode in expected:
    assert not np.asarray(shaping.capo_vote(flags, valid, mode=mode)).any()


@pytest.mark.parametrize("kwargs", [
    {}, {"vote": "union", "normalization": "outcome"},
    {"vote": "intersect", "penalize_correct": False, "process_weight": 1.0},
    {"threshold": 0.25, "whole_weight": 2.0}])
def test_capo_matches_reference(kwargs):
  d = make_batch(5)
  outcome = d["outcome"].astype(np.float64)
  outcome[2] = np.nan
  out = shaping.capo(*capo_args(d, outcome),
                     critique_valid=d["critique_valid"], **kwargs)
  names = {"whole_weight": "w_whole", "process_weight": "w_process"}
  adv, rewards, wrong = ref_capo(
      d, outcome, critique_valid=d["critique_valid"],
      **{names.get(k, k): v for k, v in kwargs.items()})
  close(out.advantages, adv)
  close(out.returns, rewards)
  np.testing.assert_array_equal(out.info["wrong_steps"], wrong)
  assert np.all(np.asarray(out.advantages)[2] == 0)


def test_capo_token_normalisation_golden():
  # One group: row 0 correct with one wrong step (2 of its 4 tokens), row 1
  # wrong and clean. R = (1, 1, 0.5, 0.5) and (0, 0, 0, 0).
  d = make_batch(6)
  d["mask"][:] = False
  d["mask"][:2, :4] = True
  d["step_ids"][:] = -1
  d["step_ids"][:2, :4] = [[0, 0, 1, 1], [0, 0, 0, 0]]
  d["step_mask"][:] = False
  d["step_mask"][:2, :2] = True
  d["flags"][:] = False
  d["flags"][0, :, 1] = True
  d["group_ids"][:] = [0, 0, 1, 1, 2, 2]
  out = shaping.capo(*capo_args(d, np.array([1.0, 0, 0, 0, 0, 0])))
  pool = [1, 1, 0.5, 0.5, 0, 0, 0, 0]
  mu, sd = sum(pool) / 8, ref_std(pool)
  expected = np.zeros((B, T))
  expected[:2, :4] = (np.array([[1, 1, 0.5, 0.5], [0, 0, 0, 0]]) - mu) / (
      sd + 1e-6)
  close(out.advantages, expected)


# --------------------------------------------------------------------------
# Edge cases, dtypes, jit, registry, validation
# --------------------------------------------------------------------------


def test_edge_rows_t1_and_bf16():
  d = make_batch(7, length=1)  # T = 1: rows are empty or one token
  d["mask"][:3] = True
  close(shaping.ucas(*ucas_args(d)).advantages, ref_ucas(d))
  adv, _, _ = ref_capo(d, d["outcome"].astype(np.float64))
  close(shaping.capo(*capo_args(d, d["outcome"])).advantages, adv)
  d = make_batch(8)
  full = shaping.ucas(*ucas_args(d)).advantages
  for key in ("self_certainty", "token_logits", "token_rewards"):
    d[key] = np.asarray(jnp.asarray(d[key], jnp.bfloat16).astype(jnp.float32))
  rounded = shaping.ucas(*ucas_args(d)).advantages
  low = {k: (jnp.asarray(v, jnp.bfloat16) if k in (
      "self_certainty", "token_logits", "token_rewards") else v)
         for k, v in d.items()}
  out = shaping.ucas(*ucas_args(low)).advantages
  assert out.dtype == jnp.float32
  close(out, np.asarray(rounded))
  close(out, np.asarray(full), tol=1e-2)
  capo_low = shaping.capo(*capo_args(d, jnp.asarray(d["outcome"],
                                                    jnp.bfloat16)))
  capo_full = shaping.capo(*capo_args(d, d["outcome"]))
  close(capo_low.advantages, np.asarray(capo_full.advantages))


def rollouts_of(d):
  return cajax.Rollouts(
      mask=jnp.asarray(d["mask"]),
      token_rewards=jnp.asarray(d["token_rewards"]),
      group_ids=jnp.asarray(d["group_ids"]), num_groups=G,
      self_certainty=jnp.asarray(d["self_certainty"]),
      token_logits=jnp.asarray(d["token_logits"]),
      entropy=jnp.asarray(d["entropy"]), step_ids=jnp.asarray(d["step_ids"]),
      step_mask=jnp.asarray(d["step_mask"]),
      step_rewards=jnp.zeros(d["step_mask"].shape, jnp.float32))


def test_registry_adapters_and_jit():
  d = make_batch(9)
  rollouts = rollouts_of(d)
  assert {"ucas", "capo"} <= set(cajax.estimator_names())
  ucas = jax.jit(functools.partial(cajax.estimate, "ucas"))
  close(ucas(rollouts).advantages, ref_ucas(d))
  alt = dict(d, self_certainty=-d["entropy"])
  close(cajax.estimate("ucas", rollouts,
                       certainty="negative_entropy").advantages,
        ref_ucas(alt))
  capo = jax.jit(lambda r, f: cajax.estimate("capo", r, critique_flags=f))
  adv, _, _ = ref_capo(d, d["outcome"].astype(np.float64))
  close(capo(rollouts, d["flags"]).advantages, adv)
  example = cajax.example_inputs("capo", rollouts, np.random.default_rng(0))
  assert example["critique_flags"].shape == (B, 4, S)
  out = cajax.estimate("capo", rollouts, **example)
  assert out.advantages.shape == (B, T)


def test_bad_inputs_raise():
  d = make_batch(10)
  with pytest.raises(ValueError, match="certainty_reduce"):
    shaping.ucas(*ucas_args(d), certainty_reduce="max")
  with pytest.raises(ValueError, match="token_logits"):
    shaping.ucas(d["token_rewards"], d["self_certainty"],
                 d["token_logits"][:, :3], *ucas_args(d)[3:])
  with pytest.raises(ValueError, match="group_ids"):
    shaping.ucas(*ucas_args(d)[:4], d["group_ids"][:2], G)
  with pytest.raises(ValueError, match="critique_flags"):
    shaping.capo(d["outcome"], d["flags"][:, :, :2],
                 *capo_args(d, d["outcome"])[2:])
  with pytest.raises(ValueError, match="critique_valid"):
    shaping.capo_vote(d["flags"], d["critique_valid"][:, :2])
  with pytest.raises(ValueError, match="mode"):
    shaping.capo_vote(d["flags"], mode="average")
  with pytest.raises(ValueError, match="normalization"):
    shaping.capo(*capo_args(d, d["outcome"]), normalization="batch")
  with pytest.raises(ValueError, match="self_certainty"):
    cajax.estimate("ucas", rollouts_of(d).replace(self_certainty=None))


# --------------------------------------------------------------------------
# Property: trailing padding changes nothing
# --------------------------------------------------------------------------

FIELDS = ("token_rewards", "self_certainty", "token_logits", "mask",
          "step_ids", "step_mask", "flags", "outcome")


@functools.lru_cache(maxsize=None)
def jitted():
  def run(token_rewards, self_certainty, token_logits, mask, step_ids,
          step_mask, flags, outcome):
    d = dict(token_rewards=token_rewards, self_certainty=self_certainty,
             token_logits=token_logits, mask=mask, step_ids=step_ids,
             step_mask=step_mask, flags=flags,
             group_ids=jnp.array([0, 0, 0, 1, 1, 2], jnp.int32))
    return (shaping.ucas(*ucas_args(d)).advantages,
            shaping.capo(*capo_args(d, outcome)).advantages)
  return jax.jit(run)


@hypothesis.given(seed=st.integers(0, 2**31 - 1))
def test_trailing_padding_invariance(seed):
  d = make_batch(seed)
  p = dict(d)
  for key in ("token_rewards", "self_certainty", "token_logits", "mask",
              "step_ids"):
    junk = {"mask": False, "token_rewards": 0.0, "step_ids": 0}.get(key, 9.0)
    p[key] = np.pad(d[key], ((0, 0), (0, 3)), constant_values=junk)
  p["step_mask"] = np.pad(d["step_mask"], ((0, 0), (0, 2)))
  p["flags"] = np.pad(d["flags"], ((0, 0), (0, 0), (0, 2)),
                      constant_values=True)
  for base, pad in zip(jitted()(*(d[k] for k in FIELDS)),
                       jitted()(*(p[k] for k in FIELDS))):
    np.testing.assert_allclose(np.asarray(pad)[:, :T], base, rtol=1e-6,
                               atol=1e-6)
    assert not np.any(np.asarray(pad)[:, T:])
