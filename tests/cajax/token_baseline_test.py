"""Tests of cajax/token_baseline.py against float64 loops of verl's OTB.

The references transcribe verl's `compute_optimal_token_baseline_advantage`
and its multi-turn variant one row at a time with explicit Python loops;
they share no code with cajax.
"""

import collections
import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import registry
from cajax import testing
from cajax import token_baseline
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


def data(seed=0, batch=B, length=T):
  """Rewards, old log-probs, Σπ² and rollout IS weights, random."""
  rng = np.random.default_rng(seed)
  lp = -np.abs(rng.normal(size=(batch, length)))
  return {"r": rng.normal(size=lp.shape), "lp": lp,
          "spp": rng.uniform(0.05, 1.0, size=lp.shape),
          "rho": np.exp(rng.normal(size=lp.shape) * 0.5)}


def f32(x):
  return np.asarray(x, np.float32)


def assert_tokens(out, ref, mask, tol=None):
  testing.assert_masked_allclose(out, ref, mask, **(tol or TOL))
GROUP_IDS = np.array([0, 1, 0, 1, 2, 0], np.int32)   # non-contiguous; 2 is
NUM_GROUPS = 3                                         # a singleton.


def ref_otb(r, m, gid, old_lp, spp, isw=None, zero_tail=True):
  """verl compute_optimal_token_baseline_advantage."""
  r = r * m
  ret = np.flip(np.cumsum(np.flip(r, 1), 1), 1)
  w = 1 - 2 * np.exp(old_lp) + spp
  if isw is not None:
    w = w * isw ** 2
  wc = np.cumsum(w * m, 1)
  base = np.zeros_like(ret)
  members = collections.defaultdict(list)
  for b, g in enumerate(gid):
    members[g].append(b)
  for rows in members.values():
    if len(rows) == 1:
      continue
    for t in range(r.shape[1]):
      num = sum(ret[j, t] * wc[j, t] * m[j, t] for j in rows)
      den = sum(wc[j, t] * m[j, t] for j in rows) + 1e-8
      for j in rows:
        base[j, t] = num / den
    if zero_tail:
      lengths = [int(m[j].sum()) for j in rows]
      ordered = sorted(lengths)
      longest = [j for j, n in zip(rows, lengths) if n == ordered[-1]]
      if len(longest) == 1 and ordered[-1] > ordered[-2]:
        base[longest[0], ordered[-2]:] = 0.0
  return (ret - base) * m, ret


def ref_otb_tir(r, m, gid, old_lp, spp, zero_tail=True):
  """verl compute_multi_turn_optimal_token_baseline_advantage."""
  ret = np.flip(np.cumsum(np.flip(r * m, 1), 1), 1)
  wc = np.cumsum((1 - 2 * np.exp(old_lp) + spp) * m, 1)
  lengths = m.sum(1).astype(int)
  width = max(int(lengths.max()), 1)
  all_w = np.zeros((len(r), width))
  all_r = np.zeros((len(r), width))
  for i in range(len(r)):
    all_w[i, :lengths[i]] = wc[i, m[i]]
    all_r[i, :lengths[i]] = ret[i, m[i]]
  members = collections.defaultdict(list)
  for i, g in enumerate(gid):
    if lengths[i]:
      members[g].append(i)
  base = np.zeros_like(all_r)
  for rows in members.values():
    if len(rows) == 1:
      continue
    b_star = (all_r[rows] * all_w[rows]).sum(0) / (all_w[rows].sum(0) + 1e-8)
    base[rows] = b_star
    if zero_tail:
      group_lengths = lengths[rows]
      ordered = np.sort(group_lengths)
      at_max = np.flatnonzero(group_lengths == ordered[-1])
      if len(at_max) == 1 and ordered[-1] > ordered[-2]:
        base[rows[at_max[0]], ordered[-2]:] = 0.0
  adv = np.zeros_like(ret)
  for i in range(len(r)):
    adv[i, m[i]] = (all_r[i] - base[i])[:lengths[i]]
  return adv, ret


@pytest.mark.parametrize("mask_name,jit", MASK_CASES)
def test_optimal_token_baseline_matches_verl(mask_name, jit):
  mask, x = MASKS[mask_name], data(5)
  fn = maybe_jit(token_baseline.optimal_token_baseline, jit,
                 num_groups=NUM_GROUPS)
  out = fn(f32(x["r"]), f32(x["lp"]), f32(x["spp"]), mask, GROUP_IDS)
  adv, ret = ref_otb(x["r"], mask, GROUP_IDS, x["lp"], x["spp"])
  assert_tokens(out.advantages, adv, mask, dict(rtol=1e-4, atol=1e-4))
  assert_tokens(out.returns, ret, mask)


@pytest.mark.parametrize("mask_name", list(MASKS))
def test_optimal_token_baseline_options(mask_name):
  mask, x = MASKS[mask_name], data(6)
  common = (f32(x["r"]), f32(x["lp"]), f32(x["spp"]), mask, GROUP_IDS)
  otb = functools.partial(testing.jit_with_static,
                          token_baseline.optimal_token_baseline,
                          True, num_groups=NUM_GROUPS)
  out = otb(handle_zero_tail=False)(*common,
                                    rollout_is_weights=f32(x["rho"]))
  adv, _ = ref_otb(x["r"], mask, GROUP_IDS, x["lp"], x["spp"], x["rho"],
                   zero_tail=False)
  assert_tokens(out.advantages, adv, mask, dict(rtol=1e-4, atol=1e-4))
  for tail in (True, False):
    out = otb(multi_turn=True, handle_zero_tail=tail)(*common)
    adv, _ = ref_otb_tir(x["r"], mask, GROUP_IDS, x["lp"], x["spp"], tail)
    assert_tokens(out.advantages, adv, mask, dict(rtol=1e-4, atol=1e-4))


def test_optimal_token_baseline_singleton_and_zero_tail():
  mask = np.arange(4)[None, :] < np.array([4, 2, 3])[:, None]
  r = np.zeros((3, 4), np.float32)
  r[0, 3], r[1, 1], r[2, 2] = 1.0, 0.5, 2.0
  ones = np.zeros((3, 4), np.float32)
  out = jax.jit(token_baseline.optimal_token_baseline, static_argnums=5)(
      r, ones - 1.0, ones + 0.5, mask, np.array([0, 0, 1]), 2)
  # Singleton row 2: advantage = return.
  np.testing.assert_allclose(out.advantages[2], [2, 2, 2, 0])
  # Unique longest row 0: baseline 0 from position 2 (the other length).
  np.testing.assert_allclose(out.info["baselines"][0, 2:], [0, 0])
  assert np.all(np.asarray(out.info["baselines"])[0, :2] != 0)


def test_all_masked_batch_is_zero():
  r = np.ones((2, 3), np.float32)
  empty = np.zeros((2, 3), bool)
  out = maybe_jit(token_baseline.optimal_token_baseline,
                                num_groups=1)(r, -r, r, empty,
                                              np.array([0, 0]))
  assert np.all(np.asarray(out.advantages) == 0.0)


def test_bad_inputs_raise():
  r = np.zeros((2, 3), np.float32)
  with pytest.raises(ValueError, match="num_groups"):
    token_baseline.optimal_token_baseline(r, r, r, np.ones((2, 3), bool),
                                          np.zeros(2, np.int32), 0)


def test_registered_estimator_matches_plain_function():
  mask, x = MASKS["interior"], data(17)
  rollouts = types.Rollouts(
      mask=mask, token_rewards=f32(np.where(mask, x["r"], 0)),
      group_ids=GROUP_IDS, num_groups=NUM_GROUPS,
      old_logprobs=f32(x["lp"]), sum_pi_squared=f32(x["spp"]))
  got = registry.estimate("optimal_token_baseline", rollouts)
  want = token_baseline.optimal_token_baseline(
      rollouts.token_rewards, rollouts.old_logprobs, rollouts.sum_pi_squared,
      mask, GROUP_IDS, NUM_GROUPS)
  np.testing.assert_allclose(got.advantages, want.advantages, **TOL)
  np.testing.assert_allclose(got.returns, want.returns, **TOL)


@functools.partial(jax.jit, static_argnums=3)
def _otb(mask, r, v, multi_turn):
  ids = jnp.arange(PB, dtype=jnp.int32) % 2
  out = token_baseline.optimal_token_baseline(
      r, -jnp.abs(v), jnp.abs(v) * 0.1 + 0.1, mask, ids, 2,
      multi_turn=multi_turn)
  return out.advantages, out.returns


@hypothesis.given(masked_batches(), st.booleans())
def test_padding_invariance(batch, multi_turn):
  mask, r, v = batch
  garbage = np.full((PB, PAD), 7.0, np.float32)
  wide = _otb(np.concatenate([mask, np.zeros((PB, PAD), bool)], axis=1),
              np.concatenate([r, garbage], axis=1),
              np.concatenate([v, garbage], axis=1), multi_turn)
  for a, b in zip(_otb(mask, r, v, multi_turn), wide):
    np.testing.assert_allclose(np.asarray(b)[:, :PT], a, rtol=1e-4,
                               atol=1e-4)
    assert np.all(np.asarray(b)[:, PT:] == 0.0)
