"""Tests of cajax/outcome.py against float64 NumPy loop references.

The references below are written from the peers' formulas (verl, TRL,
OpenRLHF, Tunix; docs/peer_settings.md) with explicit Python loops over rows
and groups; they share no code with cajax.
"""

import functools
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import outcome

ATOL = RTOL = 1e-5

# --------------------------------------------------------------------------
# float64 references
# --------------------------------------------------------------------------


def ref_scores(rewards):
  """Σ over all T (verl); rows with NaN are unscorable."""
  rewards = np.asarray(rewards, np.float64)
  scores, ok = np.zeros(len(rewards)), np.zeros(len(rewards), bool)
  for b, row in enumerate(rewards):
    total = 0.0
    for value in row:
      total += float(value)
    ok[b] = not math.isnan(total)
    scores[b] = total if ok[b] else 0.0
  return scores, ok


def ref_members(ids, ok):
  members = {}
  for b, g in enumerate(ids):
    members.setdefault(int(g), [])
    if ok[b]:
      members[int(g)].append(b)
  return members


def ref_mean(xs):
  return sum(xs) / len(xs) if xs else 0.0


def ref_std(xs, ddof):
  if len(xs) - ddof <= 0:
    return 0.0
  mu = ref_mean(xs)
  return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - ddof))


def ref_tokens(row, mask):
  out = np.zeros(mask.shape)
  for b in range(mask.shape[0]):
    for t in range(mask.shape[1]):
      if mask[b, t]:
        out[b, t] = row[b]
  return out


def ref_whiten(x, mask):
  """verl masked_whiten: unbiased var, (x − μ)·rsqrt(var + 1e-8).

  verl's masked mean divides by Σm + 1e-8; that 1e-8 is below float32
  resolution of any count, so the reference divides by Σm (the f64 value
  would otherwise differ from every f32 implementation, verl's included,
  when the variance is ~0 and the 1e-4 inverse std amplifies it).
  """
  vals = [x[b, t] for b in range(x.shape[0]) for t in range(x.shape[1])
          if mask[b, t]]
  n = len(vals)
  mu = sum(vals) / max(n, 1)
  var = sum((v - mu) ** 2 for v in vals) / max(n, 1)
  if n > 1:
    var *= n / (n - 1)
  out = np.zeros(x.shape)
  for b in range(x.shape[0]):
    for t in range(x.shape[1]):
      if mask[b, t]:
        out[b, t] = (x[b, t] - mu) / math.sqrt(var + 1e-8)
  return out


def ref_group_norm(s, ok, ids, center="group", scale="group", eps=1e-6,
                   ddof=1, singleton="raw"):
  members = ref_members(ids, ok)
  everyone = [s[b] for b in range(len(s)) if ok[b]]
  row = np.zeros(len(s))
  for b in range(len(s)):
    if not ok[b]:
      continue
    grp = [s[j] for j in members[int(ids[b])]]
    if len(grp) == 1:
      if singleton == "zero":
        continue
      mu_g, sd_g = 0.0, 1.0
    else:
      mu_g, sd_g = ref_mean(grp), ref_std(grp, ddof)
    mu = {"group": mu_g, "batch": ref_mean(everyone), "none": 0.0}[center]
    x = s[b] - mu
    if scale == "group":
      x /= sd_g + eps
    elif scale == "batch":
      x /= ref_std(everyone, ddof) + eps
    row[b] = x
  return row


def ref_grpo(r, m, ids, **kw):
  s, ok = ref_scores(r)
  return ref_tokens(ref_group_norm(s, ok, ids, **kw), m)


def ref_drgrpo(r, m, ids, center="group", singleton="raw"):
  return ref_grpo(r, m, ids, center=center, scale="none",
                  singleton=singleton)


def ref_passk(r, m, ids, normalize_by_std=True, eps=1e-6, ddof=1,
              singleton="zero"):
  s, ok = ref_scores(r)
  row = np.zeros(len(s))
  for rows in ref_members(ids, ok).values():
    if not rows:
      continue
    if len(rows) == 1:
      if singleton == "raw":
        row[rows[0]] = s[rows[0]] / (1.0 + eps) if normalize_by_std else (
            s[rows[0]])
      continue
    order = sorted(rows, key=lambda j: (-s[j], j))
    gap = s[order[0]] - s[order[1]]
    if normalize_by_std:
      gap /= ref_std([s[j] for j in rows], ddof) + eps
    row[order[0]] = gap
  return ref_tokens(row, m)


def ref_row_loop(r, m, ids, singleton, value):
  """Row advantages value(b, rows, s) of scorable rows, as tokens.

  `rows` are the scorable rows of b's group; a singleton row gets 0 when
  singleton == "zero" and value(...) otherwise.
  """
  s, ok = ref_scores(r)
  members = ref_members(ids, ok)
  row = np.zeros(len(s))
  for b in range(len(s)):
    rows = members[int(ids[b])]
    if ok[b] and (len(rows) > 1 or singleton == "raw"):
      row[b] = value(b, rows, s)
  return ref_tokens(row, m)


def ref_rloo(r, m, ids, singleton="raw"):
  def value(b, rows, s):
    others = [s[j] for j in rows if j != b]
    return s[b] - sum(others) / len(others) if others else s[b]
  return ref_row_loop(r, m, ids, singleton, value)


def ref_opo(r, m, ids, singleton="raw"):
  lengths = [int(sum(bool(v) for v in row)) for row in m]
  def value(b, rows, s):
    den = sum(lengths[j] for j in rows)
    if len(rows) == 1 or not den:
      return s[b]
    return s[b] - sum(lengths[j] * s[j] for j in rows) / den
  return ref_row_loop(r, m, ids, singleton, value)


def ref_gpg(r, m, ids, f_norm=1.0, singleton="raw"):
  s, ok = ref_scores(r)
  nonzero = sum(1 for b in range(len(s)) if ok[b] and s[b] != 0)
  alpha = sum(ok) / max(nonzero, 1)
  def value(b, rows, s):
    mu = ref_mean([s[j] for j in rows]) if len(rows) > 1 else 0.0
    return alpha * (s[b] - mu) / f_norm
  return ref_row_loop(r, m, ids, singleton, value)


def ref_rfpp_baseline(r, m, ids, singleton="raw"):
  s, ok = ref_scores(r)
  row = ref_group_norm(s, ok, ids, scale="none", singleton=singleton)
  valid = m & ok[:, None]
  return ref_whiten(ref_tokens(row, valid), valid)


def ref_gdpo(f, m, ids, weights=None, variant="verl", normalize_by_std=True,
             eps=1e-6, ddof=1, singleton="raw"):
  f = np.asarray(f, np.float64)
  weights = np.ones(f.shape[1]) if weights is None else weights
  total = np.zeros(f.shape[0])
  for k in range(f.shape[1]):
    ok = ~np.isnan(f[:, k])
    col = np.where(ok, f[:, k], 0.0)
    z = ref_group_norm(col, ok, ids, scale="group" if normalize_by_std
                       else "none", eps=eps, ddof=ddof, singleton=singleton)
    total += weights[k] * z
  scorable = np.array([not all(math.isnan(v) for v in row) for row in f])
  if variant == "verl":
    valid = m & scorable[:, None]
    return ref_whiten(ref_tokens(total, valid), valid)
  vals = [total[b] for b in range(len(total)) if scorable[b]]
  row = np.array([(total[b] - ref_mean(vals)) / (ref_std(vals, ddof) + eps)
                  if scorable[b] else 0.0 for b in range(len(total))])
  return ref_tokens(row, m)


# (name, implementation, reference, keyword settings)
CONFIGS = [
    ("grpo", outcome.grpo, ref_grpo, {}),
    ("grpo_trl_group", outcome.grpo, ref_grpo,
     dict(eps=1e-4, singleton="zero")),
    ("grpo_trl_batch", outcome.grpo, ref_grpo,
     dict(scale="batch", eps=1e-4, singleton="zero")),
    ("grpo_batch_batch", outcome.grpo, ref_grpo,
     dict(center="batch", scale="batch")),
    ("grpo_none_ddof0", outcome.grpo, ref_grpo,
     dict(center="none", scale="group", ddof=0)),
    ("drgrpo", outcome.drgrpo, ref_drgrpo, {}),
    ("drgrpo_zero", outcome.drgrpo, ref_drgrpo, dict(singleton="zero")),
    ("passk", outcome.grpo_passk, ref_passk, {}),
    ("passk_raw_nostd", outcome.grpo_passk, ref_passk,
     dict(normalize_by_std=False, singleton="raw")),
    ("passk_raw", outcome.grpo_passk, ref_passk, dict(singleton="raw")),
    ("rloo", outcome.rloo, ref_rloo, {}),
    ("rloo_vectorized", outcome.rloo, ref_rloo, dict(singleton="zero")),
    ("opo", outcome.opo, ref_opo, {}),
    ("opo_zero", outcome.opo, ref_opo, dict(singleton="zero")),
    ("gpg", outcome.gpg, ref_gpg, {}),
    ("gpg_fnorm", outcome.gpg, ref_gpg, dict(f_norm=2.0, singleton="zero")),
    ("rfpp_baseline", outcome.reinforce_plus_plus_baseline,
     ref_rfpp_baseline, {}),
    ("rfpp_baseline_zero", outcome.reinforce_plus_plus_baseline,
     ref_rfpp_baseline, dict(singleton="zero")),
]
CONFIG_IDS = [c[0] for c in CONFIGS]

# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


def outcome_rewards(scores, mask):
  """Score at the last valid token (position 0 for an all-masked row)."""
  rewards = np.zeros(mask.shape, np.float32)
  for b, score in enumerate(scores):
    valid = np.flatnonzero(mask[b])
    rewards[b, valid[-1] if len(valid) else 0] = score
  return rewards


def golden_batch():
  ids = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.int32)
  scores = np.array([1, 0, 0, 1, 1, 1, 1, 1], np.float32)
  lengths = np.array([3, 5, 2, 4, 6, 1, 3, 2])
  mask = np.arange(6)[None, :] < lengths[:, None]
  return outcome_rewards(scores, mask), mask, ids, 2


def mixed_batch():
  """Every edge case at once, T=6, 7 non-contiguous unequal groups.

  group 0: rows 0 (right pad), 5 (interior pad, dense rewards), 9 (none).
  group 1: rows 1, 7 zero variance; row 7 has one valid token.
  group 2: row 2 singleton.
  group 3: rows 3, 8 (NaN), 11 (all masked, score 0).
  group 4: rows 4, 6, 10 unequal scores, one reward on a padded position.
  group 5: row 12 only, NaN (no scorable row).
  group 6: rows 13, 14 singleton after the NaN row 14 is dropped.
  """
  t = 6
  lengths = [4, 6, 3, 5, 6, 6, 2, 1, 6, 6, 5, 0, 6, 3, 4]
  mask = np.arange(t)[None, :] < np.array(lengths)[:, None]
  mask[5, 2:4] = False
  mask[10, 1] = False
  ids = np.array([0, 1, 2, 3, 4, 0, 4, 1, 3, 0, 4, 3, 5, 6, 6], np.int32)
  scores = [1, 1, 0.5, 2, 0.25, 0, 1.5, 1, 0, 0.5, 3, 0, 0, -1, 1]
  rewards = outcome_rewards(scores, mask)
  rewards[5] = [0.5, 0.25, 0.5, 0, -0.25, -1.0]  # dense, sums to 0
  rewards[6, 4] = 0.5  # reward on padding is summed (verl)
  rewards[8, 2] = np.nan
  rewards[12, 0] = np.nan
  rewards[14, 3] = np.nan
  return rewards, mask, ids, 7


def no_padding_batch():
  mask = np.ones((6, 4), bool)
  ids = np.array([0, 1, 0, 1, 2, 2], np.int32)
  rewards = np.zeros((6, 4), np.float32)
  rewards[:, -1] = [0.75, -0.5, 0.25, 2.0, 1.0, 1.25]
  rewards[:, 0] = [0.25, 0, 0.5, 0, -1, 0]
  return rewards, mask, ids, 3


def t1_batch():
  mask = np.array([[True], [False], [True], [True], [True]])
  ids = np.array([0, 0, 1, 1, 1], np.int32)
  rewards = np.array([[1.0], [0.0], [0.0], [1.0], [0.5]], np.float32)
  return rewards, mask, ids, 2


def singleton_batch():
  rewards = np.array([[1.0], [0.0], [1.0]], np.float32)
  return rewards, np.ones((3, 1), bool), np.array([0, 0, 1], np.int32), 2


CASES = dict(golden=golden_batch, mixed=mixed_batch,
             no_padding=no_padding_batch, t1=t1_batch,
             singletons=singleton_batch)


def check_output(out, expected, mask, atol=ATOL, rtol=RTOL):
  adv = np.asarray(out.advantages)
  assert adv.dtype == np.float32 and adv.shape == mask.shape
  assert np.all(np.isfinite(adv))
  assert np.all(adv[~mask] == 0.0)
  np.testing.assert_array_equal(adv, np.asarray(out.returns))
  np.testing.assert_allclose(adv, expected, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------
# worked numbers of docs/golden_numbers.md
# --------------------------------------------------------------------------

GOLDEN = [
    (outcome.grpo, {}, [0.866024, -0.866024, -0.866024, 0.866024]),
    (outcome.grpo, dict(eps=1e-4, singleton="zero"),
     [0.865875, -0.865875, -0.865875, 0.865875]),
    (outcome.grpo, dict(scale="batch", eps=1e-4, singleton="zero"),
     [1.07989, -1.07989, -1.07989, 1.07989]),
    (outcome.grpo, dict(scale="none", singleton="zero"),
     [0.5, -0.5, -0.5, 0.5]),
    (outcome.grpo, dict(eps=1e-9), [0.866025, -0.866025, -0.866025,
                                    0.866025]),
    (outcome.drgrpo, {}, [0.5, -0.5, -0.5, 0.5]),
    (outcome.rloo, {}, [0.666667, -0.666667, -0.666667, 0.666667]),
    (outcome.gpg, {}, [0.666667, -0.666667, -0.666667, 0.666667]),
    (outcome.opo, {}, [0.5, -0.5, -0.5, 0.5]),
    (outcome.reinforce_plus_plus_baseline, {},
     [1.336306, -1.336306, -1.336306, 1.336306]),
]


@pytest.mark.parametrize("fn,kw,first_group", GOLDEN)
def test_golden_numbers(fn, kw, first_group):
  rewards, mask, ids, groups = golden_batch()
  adv = np.asarray(fn(rewards, mask, ids, groups, **kw).advantages)
  np.testing.assert_allclose(adv[:, 0], first_group + [0.0] * 4, atol=2e-6)


def test_golden_passk():
  rewards = np.array([[1.0], [0.5], [0.0], [0.2]], np.float32)
  out = outcome.grpo_passk(rewards, np.ones((4, 1), bool), np.zeros(4, int),
                           1)
  np.testing.assert_allclose(out.advantages[:, 0], [1.1496, 0, 0, 0],
                             atol=1e-4)
  np.testing.assert_array_equal(out.info["best"], [True, False, False,
                                                   False])


def test_golden_singletons():
  rewards, mask, ids, groups = singleton_batch()
  np.testing.assert_allclose(
      outcome.grpo(rewards, mask, ids, groups).advantages[:, 0],
      [0.707106, -0.707106, 0.999999], atol=2e-6)
  np.testing.assert_allclose(
      outcome.rloo(rewards, mask, ids, groups).advantages[:, 0], [1, -1, 1])
  np.testing.assert_allclose(
      outcome.rloo(rewards, mask, ids, groups,
                   singleton="zero").advantages[:, 0], [1, -1, 0])


# --------------------------------------------------------------------------
# against the references
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name,fn,ref,kw", CONFIGS, ids=CONFIG_IDS)
def test_matches_reference(name, fn, ref, kw, case):
  del name
  rewards, mask, ids, groups = CASES[case]()
  out = fn(rewards, mask, ids, groups, **kw)
  check_output(out, ref(rewards, mask, ids, **kw), mask)


@functools.cache
def jitted_all(groups):
  """One jit computing every config (one compile per shape, not 18)."""
  def run(rewards, mask, ids):
    return tuple(fn(rewards, mask, ids, groups, **kw)
                 for _, fn, _, kw in CONFIGS)
  return jax.jit(run)


def test_jit_matches_reference():
  rewards, mask, ids, groups = mixed_batch()
  outs = jitted_all(groups)(rewards, mask, ids)
  for (_, _, ref, kw), out in zip(CONFIGS, outs):
    check_output(out, ref(rewards, mask, ids, **kw), mask)


def test_bf16_rewards():
  rewards, mask, ids, groups = no_padding_batch()
  low = jnp.asarray(rewards, jnp.bfloat16)
  for _, fn, ref, kw in CONFIGS:
    if kw:
      continue  # one setting per estimator keeps the eager bf16 pass short
    check_output(fn(low, mask, ids, groups, **kw),
                 ref(rewards, mask, ids, **kw), mask, atol=1e-2, rtol=1e-2)


def test_integer_rewards_are_not_truncated():
  rewards, mask, ids, groups = golden_batch()
  ints = (rewards * 3).astype(np.int32)
  out = outcome.grpo(ints, mask, ids, groups)
  check_output(out, ref_grpo(ints, mask, ids), mask)
  fractional = rewards * 0.7
  out = outcome.drgrpo(fractional, mask, ids, groups)
  np.testing.assert_allclose(out.advantages[0, 0], 0.35, rtol=1e-6)
  np.testing.assert_allclose(out.info["scores"][:4], [0.7, 0, 0, 0.7],
                             rtol=1e-6)


def test_numeric_mask_is_accepted():
  rewards, mask, ids, groups = mixed_batch()
  out = outcome.grpo(rewards, mask.astype(np.float32), ids, groups)
  check_output(out, ref_grpo(rewards, mask, ids), mask)


def test_info_fields():
  rewards, mask, ids, groups = mixed_batch()
  info = outcome.grpo(rewards, mask, ids, groups).info
  scorable = np.ones(15, bool)
  scorable[[8, 12, 14]] = False
  np.testing.assert_array_equal(info["scorable"], scorable)
  expected_scores, _ = ref_scores(rewards)
  np.testing.assert_allclose(info["scores"], expected_scores, atol=1e-6)
  # Informative: scorable rows of groups 0, 3, 4 (groups 1 and 6 have no
  # spread, group 2 and 6 are singletons, group 5 has no scorable row).
  informative = np.zeros(15, bool)
  informative[[0, 5, 9, 3, 11, 4, 6, 10]] = True
  np.testing.assert_array_equal(info["informative"], informative)


def test_nan_row_is_isolated():
  rewards, mask, ids, groups = mixed_batch()
  for _, fn, _, kw in CONFIGS:
    adv = np.asarray(fn(rewards, mask, ids, groups, **kw).advantages)
    assert np.all(np.isfinite(adv))
    assert np.all(adv[[8, 12, 14]] == 0.0)


def test_zero_variance_group_is_exactly_zero():
  mask = np.ones((4, 3), bool)
  rewards = np.zeros((4, 3), np.float32)
  rewards[:, 1] = 0.1
  rewards[:, 2] = 0.2  # Σ = 0.3, not exactly representable
  ids = np.array([0, 0, 0, 1], np.int32)
  for kw in ({}, dict(eps=0.0), dict(center="batch", scale="batch", eps=0.0)):
    adv = np.asarray(outcome.grpo(rewards, mask, ids, 2, **kw).advantages)
    np.testing.assert_array_equal(adv[:3], 0.0)
  for fn in (outcome.rloo, outcome.opo, outcome.drgrpo, outcome.grpo_passk):
    adv = np.asarray(fn(rewards, mask, ids, 2).advantages)
    np.testing.assert_array_equal(adv[:3], 0.0)


def test_eps_zero_is_finite():
  rewards, mask, ids, groups = mixed_batch()
  for fn in (outcome.grpo, outcome.grpo_passk):
    adv = np.asarray(fn(rewards, mask, ids, groups, eps=0.0).advantages)
    assert np.all(np.isfinite(adv))


def test_drgrpo_is_grpo_without_scale():
  rewards, mask, ids, groups = mixed_batch()
  np.testing.assert_array_equal(
      outcome.drgrpo(rewards, mask, ids, groups).advantages,
      outcome.grpo(rewards, mask, ids, groups, scale="none").advantages)


def test_gpg_alpha():
  rewards, mask, ids, groups = golden_batch()
  out = outcome.gpg(rewards, mask, ids, groups)
  np.testing.assert_allclose(out.info["alpha"], 8 / 6)
  zeros = np.zeros_like(rewards)
  out = outcome.gpg(zeros, mask, ids, groups)
  np.testing.assert_allclose(out.info["alpha"], 8.0)
  np.testing.assert_array_equal(out.advantages, 0.0)


def test_passk_ties_give_zero():
  rewards = np.array([[1.0], [1.0], [0.0]], np.float32)
  out = outcome.grpo_passk(rewards, np.ones((3, 1), bool),
                           np.zeros(3, np.int32), 1)
  np.testing.assert_array_equal(out.advantages, 0.0)
  np.testing.assert_array_equal(out.info["best"], [True, False, False])


def test_rfpp_baseline_single_valid_token():
  rewards = np.array([[0.0, 1.0], [0.0, 0.0]], np.float32)
  mask = np.array([[False, True], [False, False]])
  out = outcome.reinforce_plus_plus_baseline(rewards, mask,
                                             np.zeros(2, np.int32), 1)
  check_output(out, np.zeros((2, 2)), mask)


# --------------------------------------------------------------------------
# GDPO
# --------------------------------------------------------------------------


def gdpo_batch():
  rewards, mask, ids, groups = mixed_batch()
  rng = np.random.default_rng(3)
  comps = rng.integers(0, 3, size=(15, 3)).astype(np.float32) * 0.5
  comps[8] = np.nan          # unscorable row
  comps[2, 1] = np.nan       # one missing component
  comps[12] = np.nan
  comps[14, 0] = np.nan
  del rewards
  return comps, mask, ids, groups


GDPO_SETTINGS = [
    {},
    dict(weights=[0.3, 0.7, 1.0]),
    dict(normalize_by_std=False, singleton="zero"),
    dict(variant="normalize_then_sum", eps=1e-4, singleton="zero"),
    dict(variant="normalize_then_sum", weights=np.array([1.0, 2.0, 0.5])),
]


@pytest.mark.parametrize("kw", GDPO_SETTINGS)
def test_gdpo_matches_reference(kw):
  comps, mask, ids, groups = gdpo_batch()
  out = outcome.gdpo(comps, mask, ids, groups, **kw)
  ref_kw = dict(kw)
  if "weights" in ref_kw:
    ref_kw["weights"] = np.asarray(ref_kw["weights"], np.float64)
  check_output(out, ref_gdpo(comps, mask, ids, **ref_kw), mask)
  assert not np.asarray(out.info["scorable"])[[8, 12]].any()


def test_gdpo_jit_and_bf16():
  comps, mask, ids, groups = gdpo_batch()
  fn = jax.jit(functools.partial(outcome.gdpo, num_groups=groups))
  check_output(fn(comps, mask, ids), ref_gdpo(comps, mask, ids), mask)
  clean = np.nan_to_num(comps)
  check_output(fn(jnp.asarray(clean, jnp.bfloat16), mask, ids),
               ref_gdpo(clean, mask, ids), mask, atol=1e-2, rtol=1e-2)


def test_gdpo_single_component_is_whitened_grpo():
  rewards, mask, ids, groups = golden_batch()
  scores, _ = ref_scores(rewards)
  out = outcome.gdpo(scores[:, None], mask, ids, groups)
  grpo_tokens = ref_grpo(rewards, mask, ids)
  check_output(out, ref_whiten(grpo_tokens, mask), mask)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e30])
def test_scores_of_any_scale_neither_overflow_nor_underflow(scale):
  # At 1e20 the variance used to overflow (all-zero grpo), at 1e-20 the
  # squared deviations underflowed (all-zero drgrpo, rloo and gpg). GRPO
  # follows (s − μ)/(σ + ε) exactly at every scale (scale-invariant where
  # σ ≫ ε); the estimators without a std division scale linearly.
  ids = np.array([0, 0, 0, 1, 1, 1], np.int32)
  base = np.array([1.0, 0.0, 0.25, 0.5, 1.0, -1.0])
  mask = np.ones((6, 2), bool)
  rewards = outcome_rewards((base * scale).astype(np.float32), mask)
  scaled = rewards.sum(axis=1).astype(np.float64)
  want = np.zeros(6)
  for b in range(6):
    member = scaled[ids == ids[b]]
    want[b] = (scaled[b] - member.mean()) / (member.std(ddof=1) + 1e-6)
  got = np.asarray(outcome.grpo(rewards, mask, ids, 2).advantages)[:, 0]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  unit = outcome_rewards(base.astype(np.float32), mask)
  for estimator in (outcome.drgrpo, outcome.rloo, outcome.gpg, outcome.opo):
    got = np.asarray(estimator(rewards, mask, ids, 2).advantages, np.float64)
    np.testing.assert_allclose(
        got / scale, estimator(unit, mask, ids, 2).advantages, rtol=1e-5,
        atol=1e-6, err_msg=estimator.__name__)


_SCALE_IDS = np.array([0, 0, 0, 1, 1, 1, 2, 2], np.int32)
_SCALE_MASK = np.ones((8, 2), bool)


@functools.partial(jax.jit, static_argnames="name")
def _scaled_estimator(rewards, name):
  return getattr(outcome, name)(rewards, _SCALE_MASK, _SCALE_IDS,
                                3).advantages[:, 0]


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    steps=st.lists(st.integers(-16, 16), min_size=8, max_size=8),
    exponent=st.integers(-30, 30))
def test_scale_property(steps, exponent):
  # Without a std division the advantages scale linearly in the scores at
  # any scale; GRPO is scale-invariant wherever σ ≫ ε. (Scores are
  # multiples of 1/16 so that no scaled score is a float32 subnormal, which
  # XLA flushes to 0.)
  scores = np.asarray(steps) / 16.0
  scale = 10.0 ** exponent
  unit = outcome_rewards(np.asarray(scores, np.float32), _SCALE_MASK)
  scaled = outcome_rewards(np.asarray(scores, np.float32) * np.float32(scale),
                           _SCALE_MASK)
  for name in ("drgrpo", "rloo", "gpg", "opo"):
    want = np.asarray(_scaled_estimator(unit, name), np.float64)
    got = np.asarray(_scaled_estimator(scaled, name), np.float64) / scale
    np.testing.assert_allclose(got, want, rtol=1e-4,
                               atol=1e-5 * (1 + np.max(np.abs(want))),
                               err_msg=name)
  sigma = min(np.std(np.asarray(scores)[_SCALE_IDS == g], ddof=1)
              for g in range(3))
  if sigma * scale > 1e-2:  # σ ≫ ε = 1e-6
    np.testing.assert_allclose(_scaled_estimator(scaled, "grpo"),
                               _scaled_estimator(unit, "grpo"), rtol=1e-3,
                               atol=1e-3)


def test_gdpo_whitening_a_constant_gives_exactly_zero():
  # verl leaves ±3e-4 of float residue divided by sqrt(eps) here.
  mask = np.ones((4, 5), bool)
  ids = np.array([0, 0, 1, 1], np.int32)
  one_row = outcome.gdpo(np.array([[0.37, 2.1]], np.float32), mask[:1],
                         ids[:1], 1)
  assert not np.any(np.asarray(one_row.advantages))
  same = outcome.gdpo(np.full((4, 2), 0.37, np.float32), mask, ids, 2)
  assert not np.any(np.asarray(same.advantages))
  # Singleton groups pass raw components through: a constant total again.
  singles = outcome.gdpo(np.full((4, 3), 1e3 + 0.1, np.float32), mask,
                         np.arange(4, dtype=np.int32), 4)
  assert not np.any(np.asarray(singles.advantages))


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def test_errors_name_arguments_and_shapes():
  rewards, mask, ids, groups = golden_batch()
  with pytest.raises(ValueError, match=r"token_rewards.*\(8, 5\)"):
    outcome.grpo(rewards[:, :5], mask, ids, groups)
  with pytest.raises(ValueError, match=r"group_ids.*\(7,\)"):
    outcome.rloo(rewards, mask, ids[:7], groups)
  with pytest.raises(ValueError, match=r"mask.*rank 2"):
    outcome.opo(rewards, mask[0], ids, groups)
  with pytest.raises(ValueError, match="group_ids"):
    outcome.grpo(rewards, mask, ids.astype(np.float32), groups)
  with pytest.raises(ValueError, match="num_groups"):
    outcome.grpo(rewards, mask, ids, 0)
  with pytest.raises(ValueError, match="scale"):
    outcome.grpo(rewards, mask, ids, groups, scale="prompt")
  with pytest.raises(ValueError, match="center"):
    outcome.grpo(rewards, mask, ids, groups, center="mean")
  with pytest.raises(ValueError, match="singleton"):
    outcome.grpo_passk(rewards, mask, ids, groups, singleton="raise")
  with pytest.raises(ValueError, match="ddof"):
    outcome.grpo(rewards, mask, ids, groups, ddof=-1)
  with pytest.raises(ValueError, match="ddof"):
    outcome.grpo_passk(rewards, mask, ids, groups, ddof=0.5)
  comps = np.zeros((8, 2), np.float32)
  with pytest.raises(ValueError, match=r"reward_components.*\(7, 2\)"):
    outcome.gdpo(comps[:7], mask, ids, groups)
  with pytest.raises(ValueError, match=r"weights.*\(3,\)"):
    outcome.gdpo(comps, mask, ids, groups, weights=[1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match="variant"):
    outcome.gdpo(comps, mask, ids, groups, variant="trl")


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------

PROP_B, PROP_T, PROP_G, PAD = 6, 5, 3, 3


@st.composite
def batches(draw):
  lengths = draw(st.lists(st.integers(0, PROP_T), min_size=PROP_B,
                          max_size=PROP_B))
  mask = np.arange(PROP_T)[None, :] < np.array(lengths)[:, None]
  holes = draw(st.lists(st.integers(0, PROP_T - 1), min_size=PROP_B,
                        max_size=PROP_B))
  for b, hole in enumerate(holes):
    if 0 < hole < lengths[b] - 1:
      mask[b, hole] = False
  scores = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0,
                                          math.nan]),
                         min_size=PROP_B, max_size=PROP_B))
  ids = np.array(draw(st.lists(st.integers(0, PROP_G - 1), min_size=PROP_B,
                               max_size=PROP_B)), np.int32)
  perm = np.array(draw(st.permutations(range(PROP_B))))
  relabel = np.array(draw(st.permutations(range(PROP_G))), np.int32)
  return outcome_rewards(scores, mask), mask, ids, perm, relabel


@hypothesis.given(batches())
def test_row_permutation_equivariance(batch):
  rewards, mask, ids, perm, relabel = batch
  fn = jitted_all(PROP_G)
  base = fn(rewards, mask, ids)
  moved = fn(rewards[perm], mask[perm], relabel[ids[perm]])
  for name, out, out_moved in zip(CONFIG_IDS, base, moved):
    np.testing.assert_allclose(np.asarray(out_moved.advantages),
                               np.asarray(out.advantages)[perm], rtol=RTOL,
                               atol=ATOL, err_msg=name)


@hypothesis.given(batches())
def test_padding_invariance(batch):
  rewards, mask, ids, _, _ = batch
  fn = jitted_all(PROP_G)
  base = fn(rewards, mask, ids)
  wide = fn(np.pad(rewards, ((0, 0), (0, PAD))),
            np.pad(mask, ((0, 0), (0, PAD))), ids)
  for name, out, out_wide in zip(CONFIG_IDS, base, wide):
    adv = np.asarray(out_wide.advantages)
    np.testing.assert_allclose(adv[:, :PROP_T], np.asarray(out.advantages),
                               rtol=RTOL, atol=ATOL, err_msg=name)
    np.testing.assert_array_equal(adv[:, PROP_T:], 0.0)


@hypothesis.given(batches())
def test_random_batches_match_reference(batch):
  rewards, mask, ids, _, _ = batch
  outs = jitted_all(PROP_G)(rewards, mask, ids)
  for (_, _, ref, kw), out in zip(CONFIGS, outs):
    check_output(out, ref(rewards, mask, ids, **kw), mask)
