"""Tests of cajax/process.py against float64 NumPy loop references.

The references are written from the PURE repository's main branch,
DeepSeekMath §4.1.3 and the TP-GRPO description with explicit Python loops;
they share no code with cajax. Hand-computed goldens pin the PURE repo quirks.
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
from cajax import process

ATOL = RTOL = 1e-5
# Every batch is padded to one shape so that eager ops compile once.
B, T, S, G = 6, 12, 4, 4

# --------------------------------------------------------------------------
# Random batches with steps, interior skips, empty rows and invalid steps.
# --------------------------------------------------------------------------


def make_batch(seed, batch=B, length=T, num_steps=S, group_size=2):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, length + 1, size=batch)
  lengths[0] = length
  mask = np.arange(length)[None, :] < lengths[:, None]
  step_ids = np.full((batch, length), -1, np.int32)
  step_mask = np.zeros((batch, num_steps), bool)
  for b in range(batch):
    if lengths[b] >= 5 and rng.random() < 0.6:
      start = rng.integers(1, lengths[b] - 2)
      mask[b, start:start + 2] = False  # interior observation tokens
    valid = np.flatnonzero(mask[b])
    if rng.random() < 0.3 and len(valid) > 1:
      valid = valid[1:]  # a leading token outside any step
    pieces = min(num_steps, len(valid))
    if pieces == 0:
      continue
    cuts = np.sort(rng.choice(np.arange(1, len(valid)), size=pieces - 1,
                              replace=False)) if pieces > 1 else []
    for s, chunk in enumerate(np.split(valid, cuts)):
      step_ids[b, chunk[0]:chunk[-1] + 1] = s  # spans skipped tokens too
      step_mask[b, s] = True
    if pieces >= 3 and rng.random() < 0.3:
      step_mask[b, 1] = False  # an interior invalid step
  step_rewards = rng.uniform(-1, 1, size=(batch, num_steps))
  step_rewards[~step_mask] = 7.0  # junk that must be ignored
  return dict(
      step_rewards=step_rewards.astype(np.float32), step_mask=step_mask,
      step_ids=step_ids, mask=mask,
      group_ids=np.repeat(np.arange(batch // group_size),
                          group_size).astype(np.int32),
      num_groups=G,
      outcome=rng.integers(0, 2, size=batch).astype(np.float32),
      kl=rng.normal(size=(batch, length)).astype(np.float32))


# --------------------------------------------------------------------------
# float64 references
# --------------------------------------------------------------------------


def ref_steps(step_mask, step_ids, mask):
  """Valid steps, token counts and the index of each valid step's end."""
  batch, num_steps = step_mask.shape
  counts = np.zeros((batch, num_steps))
  end = np.full((batch, num_steps), -1)
  for b in range(batch):
    for t in range(mask.shape[1]):
      s = int(step_ids[b, t])
      if mask[b, t] and 0 <= s < num_steps:
        counts[b, s] += 1
        end[b, s] = t
  valid = np.asarray(step_mask, bool) & (counts > 0)
  return valid, counts, np.where(valid, end, -1)


def ref_last(mask):
  last = np.full(mask.shape[0], -1)
  for b in range(mask.shape[0]):
    for t in range(mask.shape[1]):
      if mask[b, t]:
        last[b] = t
  return last


def ref_pure_values(rewards, valid, mode, temperature):
  out = np.zeros(rewards.shape)
  for b in range(rewards.shape[0]):
    ks = [k for k in range(rewards.shape[1]) if valid[b, k]]
    if not ks:
      continue
    r = [float(rewards[b, k]) for k in ks]
    if mode == "softmin":
      lo = min(r)
      w = [math.exp(-(x - lo) / temperature) for x in r]
      for k, wk, x in zip(ks, w, r):
        out[b, k] = wk / sum(w) * x
    elif mode == "uniform":
      for k, x in zip(ks, r):
        out[b, k] = x / len(ks)
    else:
      for i, k in enumerate(ks):
        later = min(r[i + 1:]) if i + 1 < len(r) else 0.0
        out[b, k] = min(r[i:]) - later
  return out


def ref_others(b, group_ids, ok=None):
  return [j for j in range(len(group_ids))
          if group_ids[j] == group_ids[b] and j != b and (ok is None or ok[j])]


def ref_returns(rewards, mask, gamma_t):
  """Gₜ = Σ_{u ≥ t valid} reward_u · Π_{valid v in [t, u)} γ_v."""
  batch, length = rewards.shape
  out = np.zeros(rewards.shape)
  for b in range(batch):
    for t in range(length):
      if not mask[b, t]:
        continue
      factor = 1.0
      for u in range(t, length):
        if mask[b, u]:
          out[b, t] += factor * rewards[b, u]
          factor *= gamma_t[b, u]
  return out


def ref_whiten_nonzero(x, mask):
  vals = [x[b, t] for b in range(x.shape[0]) for t in range(x.shape[1])
          if mask[b, t]]
  count = sum(1 for v in vals if v != 0)
  out = np.zeros(x.shape)
  if count == 0:
    return out
  mean = sum(vals) / count
  var = sum((v - mean) ** 2 for v in vals) / count
  rstd = 1.0 / math.sqrt(max(var, 1e-8))
  for b in range(x.shape[0]):
    for t in range(x.shape[1]):
      if mask[b, t] and x[b, t] != 0:
        out[b, t] = (x[b, t] - mean) * rstd
  return out


def ref_pure(d, mode="softmin", temperature=0.1, baseline="token", vr=None,
             vr_coef=1.0, kl=None, kl_coef=0.001, mask_step_end=True,
             whiten=True, gamma=1.0, transform=True):
  mask = np.asarray(d["mask"], bool)
  gids = d["group_ids"]
  valid, counts, end = ref_steps(d["step_mask"], d["step_ids"], mask)
  rewards64 = np.asarray(d["step_rewards"], np.float64)
  values = (ref_pure_values(rewards64, valid, mode, temperature) if transform
            else np.where(valid, rewards64, 0.0))
  batch, length = mask.shape
  outcome = values.sum(1)
  lengths = mask.sum(1)
  nsteps = valid.sum(1)
  token_r = np.zeros((batch, length))
  gamma_t = np.ones((batch, length))
  for b in range(batch):
    others = ref_others(b, gids)
    for k in range(values.shape[1]):
      if not valid[b, k]:
        continue
      if baseline == "token":
        den = sum(lengths[j] for j in others)
        per_tok = sum(outcome[j] for j in others) / den if den else 0.0
        base = per_tok * (counts[b, k] - 1)
      elif baseline == "step":
        avgs = [outcome[j] / nsteps[j] if nsteps[j] else 0.0 for j in others]
        base = sum(avgs) / len(avgs) if avgs else 0.0
      else:
        base = 0.0
      token_r[b, end[b, k]] += values[b, k] - base
      gamma_t[b, end[b, k]] = gamma
  last = ref_last(mask)
  if vr is not None:
    ok = np.isfinite(vr)
    for b in range(batch):
      others = ref_others(b, gids, ok)
      if last[b] >= 0 and ok[b] and others:
        adv = vr[b] - sum(vr[j] for j in others) / len(others)
        token_r[b, last[b]] += vr_coef * adv
  if kl is not None:
    token_r -= kl_coef * np.where(mask, kl, 0.0)
  returns = ref_returns(token_r, mask, gamma_t)
  if mask_step_end:
    for b in range(batch):
      for k in range(values.shape[1]):
        if valid[b, k]:
          returns[b, end[b, k]] = 0.0
      if last[b] >= 0:
        returns[b, last[b]] = 0.0
  adv = ref_whiten_nonzero(returns, mask) if whiten else returns
  return adv, returns, outcome


def ref_std(xs, ddof):
  if len(xs) - ddof <= 0:
    return 0.0
  mu = sum(xs) / len(xs)
  return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - ddof))


def ref_zscore(value, members, eps, ddof, scale=True):
  """verl GRPO of one value against its group's values `members`."""
  if len(members) == 1:
    return value
  mu = sum(members) / len(members)
  sd = ref_std(members, ddof)
  if sd == 0:
    return 0.0
  return (value - mu) / (sd + eps) if scale else value - mu


def ref_process_grpo(d, eps=1e-6, ddof=1, scale=True):
  mask = np.asarray(d["mask"], bool)
  gids = d["group_ids"]
  valid, _, end = ref_steps(d["step_mask"], d["step_ids"], mask)
  r = np.asarray(d["step_rewards"], np.float64)
  batch, num_steps = r.shape
  normed = np.zeros(r.shape)
  for b in range(batch):
    pool = [r[j, k] for j in range(batch) if gids[j] == gids[b]
            for k in range(num_steps) if valid[j, k]]
    for k in range(num_steps):
      if valid[b, k]:
        normed[b, k] = ref_zscore(r[b, k], pool, eps, ddof, scale)
  adv = np.zeros(mask.shape)
  for b in range(batch):
    for t in range(mask.shape[1]):
      if mask[b, t]:
        adv[b, t] = sum(normed[b, k] for k in range(num_steps)
                        if valid[b, k] and end[b, k] >= t)
  return adv, normed


def ref_thoughts(labels, valid, merge=True):
  ids = np.full(labels.shape, -1)
  for b in range(labels.shape[0]):
    current, prev = -1, None
    for k in range(labels.shape[1]):
      if not valid[b, k]:
        continue
      if prev is None or labels[b, k] != prev or not merge:
        current += 1
      ids[b, k] = current
      prev = labels[b, k]
  return ids


def ref_tp_grpo(d, outcome, positive_scale=0.5, negative_scale=0.5,
                adapt="linear", adapt_power=1.0, credit="local",
                correct_threshold=0.5, eps=1e-6, merge_thoughts=True):
  mask = np.asarray(d["mask"], bool)
  gids = d["group_ids"]
  valid, _, end = ref_steps(d["step_mask"], d["step_ids"], mask)
  labels = np.where(valid, np.sign(d["step_rewards"]), 0.0)
  thoughts = ref_thoughts(labels, valid, merge_thoughts)
  batch, num_steps = labels.shape
  ok = np.isfinite(outcome)
  adv = np.zeros(mask.shape)
  for b in range(batch):
    if not ok[b]:
      continue
    members = [j for j in range(batch) if gids[j] == gids[b] and ok[j]]
    a_out = ref_zscore(outcome[b], [outcome[j] for j in members], eps, 1)
    acc = sum(outcome[j] > correct_threshold for j in members) / len(members)
    correct = outcome[b] > correct_threshold
    f = (1 - acc) ** adapt_power if adapt == "linear" else 1.0
    g = acc ** adapt_power if adapt == "linear" else 1.0
    step_r = np.zeros(num_steps)
    for k in range(num_steps):
      if valid[b, k] and labels[b, k] > 0 and not correct:
        step_r[k] = positive_scale * f
      if valid[b, k] and labels[b, k] < 0 and correct:
        step_r[k] = -negative_scale * g
    thought_end = {}
    for k in range(num_steps):
      if valid[b, k]:
        thought_end[thoughts[b, k]] = (end[b, k], step_r[k])
    for t in range(mask.shape[1]):
      if not mask[b, t]:
        continue
      if credit == "local":
        s = int(d["step_ids"][b, t])
        proc = step_r[s] if 0 <= s < num_steps and valid[b, s] else 0.0
      else:
        proc = sum(v for e, v in thought_end.values() if e >= t)
      adv[b, t] = a_out + proc
  return adv, thoughts


def embed(d):
  """Pads a hand-made batch to [B, T] and [B, S]; the extra rows are empty
  and sit alone in group G − 1, so they change nothing."""
  rows, length = d["mask"].shape
  grow = lambda x, value, cols: np.pad(
      x, ((0, B - rows), (0, cols - x.shape[1])), constant_values=value)
  out = dict(d, num_groups=G)
  out["mask"] = grow(d["mask"], False, T)
  out["step_ids"] = grow(d["step_ids"], -1, T)
  out["step_rewards"] = grow(d["step_rewards"], 0.0, S)
  out["step_mask"] = grow(d["step_mask"], False, S)
  out["group_ids"] = np.pad(d["group_ids"], (0, B - rows),
                            constant_values=G - 1)
  for key, cols in (("outcome", None), ("kl", T)):
    if key in d:
      out[key] = (np.pad(d[key], (0, B - rows)) if cols is None
                  else grow(d[key], 0.0, cols))
  return out


def close(actual, expected, tol=ATOL):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected,
                             rtol=tol, atol=tol)


def pure_args(d):
  return (d["step_rewards"], d["mask"], d["step_ids"], d["step_mask"],
          d["group_ids"], d["num_groups"])


# --------------------------------------------------------------------------
# PURE and sum-form against the reference
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["softmin", "strict", "uniform"])
@pytest.mark.parametrize("baseline", ["token", "step", "none"])
def test_pure_matches_reference(mode, baseline):
  d = make_batch(1)
  out = process.pure(*pure_args(d), verifiable_rewards=d["outcome"],
                     token_kl=d["kl"], mode=mode, baseline=baseline)
  adv, ret, outcome = ref_pure(d, mode=mode, baseline=baseline,
                               vr=d["outcome"], kl=d["kl"])
  close(out.returns, ret)
  close(out.advantages, adv)
  close(out.info["process_outcome"], outcome)
  assert out.advantages.dtype == jnp.float32


@pytest.mark.parametrize("mask_step_end,whiten", [(False, False),
                                                     (False, True),
                                                     (True, False)])
def test_pure_switches_match_reference(mask_step_end, whiten):
  d = make_batch(2)
  out = process.pure(*pure_args(d), temperature=0.3,
                     mask_step_end=mask_step_end, whiten=whiten,
                     verifiable_reward_coef=0.5)
  vr = d["outcome"].astype(np.float64)
  adv, _, _ = ref_pure(d, temperature=0.3, mask_step_end=mask_step_end,
                       whiten=whiten, vr=None)
  close(out.advantages, adv)  # verifiable_rewards=None ignores the coef
  out = process.pure(*pure_args(d), verifiable_rewards=vr,
                     verifiable_reward_coef=0.5, mask_step_end=mask_step_end,
                     whiten=whiten)
  adv, _, _ = ref_pure(d, vr=vr, vr_coef=0.5, mask_step_end=mask_step_end,
                       whiten=whiten)
  close(out.advantages, adv)


def test_sum_form_attribution_is_marked_as_a_choice():
  # PURE's repository has no sum-form arm: building it from PURE's pipeline
  # is cajax's choice and the docstring must say so.
  doc = process.sum_form_prm.__doc__
  assert "[GAP]" in doc and "choice" in doc


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("baseline", ["token", "none"])
def test_sum_form_matches_reference(gamma, baseline):
  d = make_batch(3)
  out = process.sum_form_prm(*pure_args(d), verifiable_rewards=d["outcome"],
                             token_kl=d["kl"], gamma=gamma,
                             baseline=baseline)
  adv, ret, outcome = ref_pure(d, baseline=baseline, vr=d["outcome"],
                               kl=d["kl"], gamma=gamma, transform=False)
  close(out.returns, ret)
  close(out.advantages, adv)
  close(out.info["process_outcome"], outcome)


# --------------------------------------------------------------------------
# PURE repo quirks, each pinned with hand-computed numbers
# --------------------------------------------------------------------------


def close_crop(actual, expected):
  """Compares the top-left corner with `expected`; the rest must be 0."""
  expected = np.asarray(expected, np.float64)
  actual = np.asarray(actual, np.float64)
  rows, cols = expected.shape
  close(actual[:rows, :cols], expected)
  assert not np.any(actual[rows:]) and not np.any(actual[:, cols:])


def two_rows():
  """Row 0: steps [0,0,1,1], r = (0.4, 0.8); row 1: step [0,0,0], r = −0.5."""
  return embed(dict(
      step_rewards=np.array([[0.4, 0.8], [-0.5, 0.0]], np.float32),
      step_mask=np.array([[True, True], [True, False]]),
      step_ids=np.array([[0, 0, 1, 1], [0, 0, 0, -1]], np.int32),
      mask=np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool),
      group_ids=np.array([0, 0], np.int32)))


def one_row(rewards):
  """A single row with steps [0,0,1,1] and the given two step rewards."""
  return embed(dict(step_rewards=np.array([rewards], np.float32),
                    step_mask=np.ones((1, 2), bool),
                    step_ids=np.array([[0, 0, 1, 1]], np.int32),
                    mask=np.ones((1, 4), bool),
                    group_ids=np.zeros(1, np.int32)))


def row_values(values):
  return np.pad(np.asarray(values, np.float64), (0, B - len(values)))


def test_token_baseline_counts_exclude_step_end():
  # Uniform weights: r* = (0.2, 0.4) and (−0.5,); lengths 4 and 3.
  # Row 0: b = −0.5 / 3, times nₖ − 1 = 1 token per step (not 2).
  # Row 1: b = 0.6 / 4, times 3 − 1 = 2 tokens -> r̃ = −0.5 − 0.3.
  out = process.pure(*pure_args(two_rows()), mode="uniform",
                     mask_step_end=False, whiten=False)
  r0 = [0.2 + 1 / 6, 0.4 + 1 / 6]
  close_crop(out.returns, [[r0[0] + r0[1]] * 2 + [r0[1]] * 2,
                           [-0.8] * 3 + [0]])


def test_step_baseline_golden():
  # Per-step averages 0.6 / 2 = 0.3 and −0.5 / 1; each row subtracts the
  # other's at every one of its step ends.
  out = process.pure(*pure_args(two_rows()), mode="uniform",
                     baseline="step", mask_step_end=False, whiten=False)
  close_crop(out.returns, [[1.6, 1.6, 0.9, 0.9], [-0.8, -0.8, -0.8, 0.0]])


def test_step_ends_and_last_token_get_zero_advantage():
  out = process.pure(*pure_args(two_rows()), mode="uniform",
                     whiten=False)
  r0 = [0.2 + 1 / 6, 0.4 + 1 / 6]
  close_crop(out.returns, [[r0[0] + r0[1], 0, r0[1], 0], [-0.8, -0.8, 0, 0]])


def test_whitening_skips_zeros_in_count_but_not_in_variance():
  # Returns (0.6, 0, 0.4, 0): mean over the 2 non-zeros is 0.5, but the
  # variance numerator also sums the two zeroed step ends:
  # (0.01 + 0.25 + 0.01 + 0.25) / 2 = 0.26 (a clean whitening gives ±1).
  out = process.pure(*pure_args(one_row([0.4, 0.8])), mode="uniform",
                     baseline="none")
  close_crop(out.returns, [[0.6, 0.0, 0.4, 0.0]])
  z = 0.1 / math.sqrt(0.26)
  close_crop(out.advantages, [[z, 0.0, -z, 0.0]])


def test_verifiable_reward_is_loo_at_last_token_and_shift_invariant():
  d = two_rows()
  base = process.pure(*pure_args(d), mask_step_end=False, whiten=False)
  # VR in {−1, 0} (repo: solved − 1) and in {0, 1} give the same advantage.
  for vr in ([0.0, -1.0], [1.0, 0.0]):
    out = process.pure(*pure_args(d), verifiable_rewards=row_values(vr),
                       mask_step_end=False, whiten=False)
    close_crop(out.returns - base.returns, [[1.0] * 4, [-1.0] * 3 + [0.0]])
    close(out.info["verifiable_advantage"], row_values([1.0, -1.0]))
  # The last token is zeroed, but the VR still reaches the earlier tokens.
  out = process.pure(*pure_args(d), verifiable_rewards=row_values([1, 0]),
                     whiten=False)
  ref = process.pure(*pure_args(d), whiten=False)
  close_crop(out.returns - ref.returns, [[1, 0, 1, 0], [-1, -1, 0, 0]])
  # A prompt without ground truth (all rows equal) gets no VR term.
  out = process.pure(*pure_args(d), verifiable_rewards=row_values([0, 0]))
  close(out.advantages, np.asarray(process.pure(*pure_args(d)).advantages))
  # A non-finite VR makes its row unscorable: 0 everywhere, and row 0 gets
  # what it gets without row 1 in the batch.
  alone = embed({k: v[:1] for k, v in two_rows().items()
                 if k != "num_groups"})
  want = process.pure(*pure_args(alone), verifiable_rewards=row_values([1]))
  for bad in (np.nan, np.inf, -np.inf):
    out = process.pure(*pure_args(d),
                       verifiable_rewards=row_values([1.0, bad]))
    assert not np.any(np.asarray(out.advantages)[1])
    assert not np.any(np.asarray(out.returns)[1])
    close(out.advantages[0], np.asarray(want.advantages)[0])


def test_softmin_tends_to_min_and_strict_gives_suffix_min():
  d = make_batch(4)
  valid, _, _ = ref_steps(d["step_mask"], d["step_ids"], d["mask"])
  mins = [min(d["step_rewards"][b][valid[b]]) if valid[b].any() else 0.0
          for b in range(6)]
  soft = process.pure_step_rewards(d["step_rewards"], valid,
                                   temperature=1e-4)
  assert np.all(np.isfinite(soft))
  close(np.sum(soft, 1), mins, tol=1e-4)
  strict = process.pure_step_rewards(d["step_rewards"], valid, mode="strict")
  close(np.sum(strict, 1), mins)
  uniform = process.pure_step_rewards(d["step_rewards"], valid,
                                      mode="uniform")
  means = [np.mean(d["step_rewards"][b][valid[b]]) if valid[b].any() else 0.0
           for b in range(6)]
  close(np.sum(uniform, 1), means)
  # Strict returns within step k are min over valid later steps (the
  # interior invalid step with reward 7 is skipped).
  out = process.pure(*pure_args(d), mode="strict", baseline="none",
                     mask_step_end=False, whiten=False)
  for b in range(6):
    for t in range(12):
      s = d["step_ids"][b, t]
      if d["mask"][b, t] and s >= 0 and valid[b, s]:
        later = [d["step_rewards"][b, k] for k in range(s, 4) if valid[b, k]]
        close(out.returns[b, t], min(later))


def test_strict_is_not_capped_by_zero_tokens():
  # The verl branch's token-level running min caps returns at 0 wherever a
  # later zero token exists; the cajax strict mode must not.
  out = process.pure(*pure_args(one_row([0.5, 0.8])), mode="strict",
                     baseline="none", mask_step_end=False, whiten=False)
  close_crop(out.returns, [[0.5, 0.5, 0.8, 0.8]])


def test_gradients_are_finite():
  # The strict mode runs a cummin over +inf fillers; its gradient must not
  # pick up NaN from them.
  d = make_batch(11)
  for mode in ("strict", "softmin"):
    grad = jax.grad(lambda r, m=mode: jnp.sum(process.pure(
        r, *pure_args(d)[1:], mode=m).advantages ** 2))(
            jnp.asarray(d["step_rewards"]))
    assert np.all(np.isfinite(np.asarray(grad))) and np.any(grad)


# --------------------------------------------------------------------------
# DeepSeekMath process GRPO and TP-GRPO
# --------------------------------------------------------------------------


@pytest.mark.parametrize("ddof,scale", [(1, True), (0, True), (1, False)])
def test_process_grpo_matches_reference(ddof, scale):
  d = make_batch(5)
  out = process.process_grpo(*pure_args(d), ddof=ddof,
                             normalize_by_std=scale)
  adv, normed = ref_process_grpo(d, ddof=ddof, scale=scale)
  close(out.advantages, adv)
  close(out.info["normalized_step_rewards"], normed)
  close(out.returns, adv)


def test_process_grpo_golden():
  # Group step rewards {0.4, 0.8, −0.5}: mean 7/30, std (ddof 1) 0.6658.
  out = process.process_grpo(*pure_args(two_rows()))
  pool = [0.4, 0.8, -0.5]
  mu, sd = sum(pool) / 3, ref_std(pool, 1)
  z = [(x - mu) / (sd + 1e-6) for x in pool]
  close_crop(out.advantages, [[z[0] + z[1]] * 2 + [z[1]] * 2,
                              [z[2]] * 3 + [0]])


def test_thought_segments_golden():
  labels = np.zeros((B, S), np.float32)
  step_mask = np.zeros((B, S), bool)
  labels[:3] = [[1, 1, -1, -1], [0.3, -2, 0.5, 0], [1, 0, 0, -1]]
  step_mask[:3] = [[1, 1, 1, 1], [1, 0, 1, 1], [1, 1, 1, 1]]
  ids, num = process.thought_segments(labels, step_mask)
  np.testing.assert_array_equal(
      ids, [[0, 0, 1, 1], [0, -1, 0, 1], [0, 1, 1, 2]] + [[-1] * S] * 3)
  np.testing.assert_array_equal(num, [2, 2, 3, 0, 0, 0])


@pytest.mark.parametrize("adapt,credit,merge", [
    ("linear", "local", True), ("none", "local", True),
    ("linear", "return", True), ("linear", "return", False),
    ("none", "return", False)])
def test_tp_grpo_matches_reference(adapt, credit, merge):
  d = make_batch(6)
  outcome = d["outcome"].astype(np.float64)
  outcome[4] = np.nan
  out = process.tp_grpo(outcome, *pure_args(d), adapt=adapt, credit=credit,
                        adapt_power=2.0, merge_thoughts=merge)
  adv, thoughts = ref_tp_grpo(d, outcome, adapt=adapt, credit=credit,
                              adapt_power=2.0, merge_thoughts=merge)
  close(out.advantages, adv)
  # The unscorable row 4 has no valid step left, hence no thought.
  thoughts = np.array(thoughts)
  thoughts[4] = -1
  np.testing.assert_array_equal(out.info["thought_ids"], thoughts)
  assert np.all(np.asarray(out.advantages)[4] == 0)


def test_tp_grpo_gives_signal_in_zero_variance_groups():
  # All-wrong group: correct thoughts get +0.5·(1 − 0); all-right group:
  # wrong thoughts get −0.5·1. GRPO alone gives 0 to both groups.
  d = embed(dict(
      step_rewards=np.array([[1, -1], [1, 1], [-1, 1], [1, 1]], np.float32),
      step_mask=np.ones((4, 2), bool),
      step_ids=np.array([[0, 1]] * 4, np.int32), mask=np.ones((4, 2), bool),
      group_ids=np.array([0, 0, 1, 1], np.int32)))
  out = process.tp_grpo(row_values([0, 0, 1, 1]), *pure_args(d))
  close_crop(out.advantages, [[0.5, 0], [0.5, 0.5], [-0.5, 0], [0, 0]])
  # Merging into thoughts: with return credit, two −1 steps in a row count
  # once, exactly like a single −1 step.
  d = embed(dict(
      step_rewards=np.array([[-1, -1], [-1, 0], [1, 1]], np.float32),
      step_mask=np.array([[1, 1], [1, 0], [1, 1]], bool),
      step_ids=np.array([[0, 1], [0, 0], [0, 1]], np.int32),
      mask=np.ones((3, 2), bool), group_ids=np.zeros(3, np.int32)))
  merged = process.tp_grpo(row_values([1, 1, 0]), *pure_args(d),
                           credit="return")
  row0, row1 = np.asarray(merged.advantages)[:2]
  close(row0, row1)
  # Step-level credit (no merge): the two −1 steps pay twice on the first
  # token; with local credit the merge changes nothing.
  steps = process.tp_grpo(row_values([1, 1, 0]), *pure_args(d),
                          credit="return", merge_thoughts=False)
  row0 = np.asarray(steps.advantages)[0]
  assert row0[0] < np.asarray(merged.advantages)[0, 0]
  close(row0[1], np.asarray(merged.advantages)[0, 1])
  for merge in (True, False):
    close(process.tp_grpo(row_values([1, 1, 0]), *pure_args(d),
                          merge_thoughts=merge).advantages,
          process.tp_grpo(row_values([1, 1, 0]), *pure_args(d)).advantages)


# --------------------------------------------------------------------------
# Edge cases, dtypes, jit, registry, validation
# --------------------------------------------------------------------------

ESTIMATORS = {
    "pure": lambda d, **kw: process.pure(*pure_args(d), **kw),
    "sum_form_prm": lambda d, **kw: process.sum_form_prm(*pure_args(d),
                                                         **kw),
    "process_grpo": lambda d, **kw: process.process_grpo(*pure_args(d),
                                                         **kw),
    "tp_grpo": lambda d, **kw: process.tp_grpo(d["outcome"], *pure_args(d),
                                               **kw),
}


def edge_batch():
  """Rows: no step; empty; a singleton group; an all-equal group of two."""
  return embed(dict(
      step_rewards=np.array([[0.3, 0], [0, 0], [0.9, -0.2], [0.5, 0.5],
                             [0.5, 0.5]], np.float32),
      step_mask=np.array([[0, 0], [1, 0], [1, 1], [1, 1], [1, 1]], bool),
      step_ids=np.array([[-1, -1, -1], [0, 0, 0], [0, 0, 1], [0, 1, 1],
                         [0, 1, 1]], np.int32),
      mask=np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 1]],
                    bool),
      group_ids=np.array([0, 0, 1, 2, 2], np.int32),
      outcome=np.array([1, 0, 1, 1, 1], np.float32),
      kl=np.zeros((5, 3), np.float32)))


def ref_advantages(name, d, kl=None):
  if name in ("pure", "sum_form_prm"):
    return ref_pure(d, transform=name == "pure", kl=kl)[0]
  if name == "process_grpo":
    return ref_process_grpo(d)[0]
  return ref_tp_grpo(d, d["outcome"].astype(np.float64))[0]


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_edge_cases_match_reference(name):
  d = edge_batch()
  out = ESTIMATORS[name](d)
  close(out.advantages, ref_advantages(name, d))
  adv = np.asarray(out.advantages)
  assert np.all(np.isfinite(adv)) and np.all(adv[~d["mask"]] == 0)
  assert np.all(adv[1] == 0)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_single_token_and_bf16(name):
  d = make_batch(7, length=1, num_steps=1)
  d["mask"][:4] = True
  d["step_ids"][:] = np.where(d["mask"], 0, -1)
  d["step_mask"][:] = d["mask"]
  keys = ("step_rewards", "step_mask", "step_ids", "mask", "group_ids",
          "outcome", "kl")
  out = jitted(name)(*(d[k] for k in keys))  # jit, unlike the other tests
  assert out.shape == (B, 1)
  kl = d["kl"] if name in ("pure", "sum_form_prm") else None
  close(out, ref_advantages(name, d, kl=kl))
  d = make_batch(8)
  full = ESTIMATORS[name](d)
  d["step_rewards"] = jnp.asarray(d["step_rewards"], jnp.bfloat16)
  d["step_rewards"] = np.asarray(d["step_rewards"].astype(jnp.float32))
  rounded = ESTIMATORS[name](d)
  d["step_rewards"] = jnp.asarray(d["step_rewards"], jnp.bfloat16)
  low = ESTIMATORS[name](d)
  assert low.advantages.dtype == jnp.float32
  close(low.advantages, np.asarray(rounded.advantages))
  close(low.advantages, np.asarray(full.advantages), tol=5e-2)


def rollouts_of(d):
  token_rewards = np.zeros(d["mask"].shape, np.float32)
  last = ref_last(d["mask"])
  for b, t in enumerate(last):
    if t >= 0:
      token_rewards[b, t] = d["outcome"][b]
  return cajax.Rollouts(
      mask=jnp.asarray(d["mask"]), token_rewards=jnp.asarray(token_rewards),
      group_ids=jnp.asarray(d["group_ids"]), num_groups=d["num_groups"],
      step_ids=jnp.asarray(d["step_ids"]),
      step_rewards=jnp.asarray(d["step_rewards"]),
      step_mask=jnp.asarray(d["step_mask"]),
      old_logprobs=jnp.asarray(d["kl"]),
      ref_logprobs=jnp.zeros(d["mask"].shape, jnp.float32))


def test_registry_adapters_and_jit():
  d = make_batch(9)
  rollouts = rollouts_of(d)
  for name in ESTIMATORS:
    assert name in cajax.estimator_names()
  expected = {
      "pure": process.pure(*pure_args(d), verifiable_rewards=d["outcome"]),
      "sum_form_prm": process.sum_form_prm(
          *pure_args(d), verifiable_rewards=d["outcome"], token_kl=d["kl"]),
      "process_grpo": process.process_grpo(*pure_args(d)),
      "tp_grpo": process.tp_grpo(d["outcome"], *pure_args(d)),
  }
  kwargs = {"sum_form_prm": {"kl_in_reward": True}}
  for name, want in expected.items():
    fn = jax.jit(functools.partial(cajax.estimate, name,
                                   **kwargs.get(name, {})))
    got = fn(rollouts)
    close(got.advantages, np.asarray(want.advantages))
    close(cajax.estimate(name, rollouts, **kwargs.get(name, {})).advantages,
          np.asarray(want.advantages))
  adv, _, _ = ref_pure(d, vr=d["outcome"], vr_coef=0.0)
  close(cajax.estimate("pure", rollouts,
                       verifiable_reward_coef=0.0).advantages, adv)


def test_bad_inputs_raise():
  d = make_batch(10)
  with pytest.raises(ValueError, match="mode"):
    process.pure(*pure_args(d), mode="max")
  with pytest.raises(ValueError, match="temperature"):
    process.pure(*pure_args(d), temperature=0.0)
  with pytest.raises(ValueError, match="baseline"):
    process.sum_form_prm(*pure_args(d), baseline="group")
  with pytest.raises(ValueError, match="step_mask"):
    process.process_grpo(d["step_rewards"], d["mask"], d["step_ids"],
                         d["step_mask"][:, :2], *pure_args(d)[4:])
  with pytest.raises(ValueError, match="step_ids"):
    process.pure(d["step_rewards"], d["mask"],
                 d["step_ids"].astype(np.float32), *pure_args(d)[3:])
  with pytest.raises(ValueError, match="group_ids"):
    process.process_grpo(*pure_args(d)[:4], d["group_ids"][:3], 2)
  with pytest.raises(ValueError, match="credit"):
    process.tp_grpo(d["outcome"], *pure_args(d), credit="global")
  with pytest.raises(ValueError, match="outcome_rewards"):
    process.tp_grpo(d["outcome"][:2], *pure_args(d))
  with pytest.raises(ValueError, match="old_logprobs"):
    cajax.estimate("pure", rollouts_of(d).replace(old_logprobs=None),
                   kl_in_reward=True)


# --------------------------------------------------------------------------
# Property: trailing padding (tokens and steps) changes nothing
# --------------------------------------------------------------------------


def padded(d, extra_tokens=3, extra_steps=2, junk=5.0):
  out = dict(d)
  batch = d["mask"].shape[0]
  out["mask"] = np.pad(d["mask"], ((0, 0), (0, extra_tokens)))
  out["kl"] = np.pad(d["kl"], ((0, 0), (0, extra_tokens)),
                     constant_values=junk)
  out["step_ids"] = np.pad(d["step_ids"], ((0, 0), (0, extra_tokens)),
                           constant_values=0)
  out["step_rewards"] = np.pad(d["step_rewards"], ((0, 0), (0, extra_steps)),
                               constant_values=junk)
  out["step_mask"] = np.pad(d["step_mask"], ((0, 0), (0, extra_steps)))
  assert out["mask"].shape[0] == batch
  return out


@functools.lru_cache(maxsize=None)
def jitted(name):
  def run(step_rewards, step_mask, step_ids, mask, group_ids, outcome, kl):
    d = dict(step_rewards=step_rewards, step_mask=step_mask,
             step_ids=step_ids, mask=mask, group_ids=group_ids, num_groups=G,
             outcome=outcome)
    kw = {"token_kl": kl} if name in ("pure", "sum_form_prm") else {}
    return ESTIMATORS[name](d, **kw).advantages
  return jax.jit(run)


@hypothesis.given(seed=st.integers(0, 2**31 - 1))
def test_trailing_padding_invariance(seed):
  d = make_batch(seed)
  p = padded(d)
  keys = ("step_rewards", "step_mask", "step_ids", "mask", "group_ids",
          "outcome", "kl")
  for name in ESTIMATORS:
    base = np.asarray(jitted(name)(*(d[k] for k in keys)))
    pad = np.asarray(jitted(name)(*(p[k] for k in keys)))
    np.testing.assert_allclose(pad[:, :12], base, rtol=1e-6, atol=1e-6)
    assert np.all(pad[:, 12:] == 0)
