"""Tests for cajax.agentic against float64 NumPy loop references."""

import functools
import inspect

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cajax
from cajax import agentic
from cajax import testing

TOL = dict(rtol=1e-5, atol=1e-5)
BF16_TOL = dict(rtol=1e-2, atol=1e-2)

_STATIC = frozenset((
    "num_groups", "num_steps", "num_turns", "num_branches", "beta",
    "step_weight", "step_baseline", "max_abs_normalize", "gamma", "fuse",
    "eps", "alpha", "success_score", "r_max", "baseline", "tau",
    "normalize_by_std", "success_threshold", "trajectory_score",
    "return_metrics"))
FUNCTIONS = ("istar", "istar_prm_dpo_loss", "matchtir", "r3l", "slate")


def _jit(fn):
  names = _STATIC & set(inspect.signature(fn).parameters)
  return jax.jit(fn, static_argnames=tuple(sorted(names)))


# Jitted once per shape; most tests call these (eager runs are checked in
# test_eager_matches_jit).
J = {name: _jit(getattr(agentic, name)) for name in FUNCTIONS}


# ----------------------------------------------------------------------------
# Random batches: right padding, interior observation runs, an empty row,
# non-contiguous groups, a singleton group and an all-equal group.
# ----------------------------------------------------------------------------

def make_batch(seed, batch=9, length=12, num_groups=4, num_steps=4,
               binary=True):
  rng = np.random.default_rng(seed)
  mask = np.zeros((batch, length), bool)
  for b in range(batch):
    n = rng.integers(1, length + 1)
    mask[b, :n] = True
    if n >= 5 and rng.random() < 0.6:
      start = rng.integers(1, n - 2)
      mask[b, start:start + rng.integers(1, 3)] = False
  mask[batch - 1] = False                      # empty row
  step_ids = np.full((batch, length), -1, np.int32)
  for b in range(batch):
    valid = np.flatnonzero(mask[b])
    if len(valid) == 0:
      continue
    pieces = min(num_steps, len(valid))
    cuts = np.sort(rng.choice(np.arange(1, len(valid)), pieces - 1,
                              replace=False)) if pieces > 1 else []
    for s, chunk in enumerate(np.split(valid, cuts)):
      step_ids[b, chunk] = s
    if len(valid) > 3 and rng.random() < 0.3:
      step_ids[b, valid[0]] = -1                # a token outside any step
  # groups: 0 and 1 random members, 2 singleton, 3 all-equal rewards
  group_ids = np.array([0, 1, 0, 1, 2, 3, 3, 0, 1][:batch], np.int32)
  token_rewards = np.zeros((batch, length), np.float32)
  ends = np.flatnonzero(mask.any(1))
  for b in ends:
    last = np.flatnonzero(mask[b])[-1]
    token_rewards[b, last] = (rng.integers(0, 2) if binary
                              else rng.normal())
  token_rewards[group_ids == 3] = 0.0
  for b in np.flatnonzero(group_ids == 3):
    if mask[b].any():
      token_rewards[b, np.flatnonzero(mask[b])[-1]] = 0.7
  old = -np.abs(rng.normal(size=(batch, length))).astype(np.float32)
  prm = (old + 0.3 * rng.normal(size=old.shape)).astype(np.float32)
  return dict(mask=mask, step_ids=step_ids, group_ids=group_ids,
              token_rewards=token_rewards, old=old, prm=prm,
              num_groups=num_groups, num_steps=num_steps, rng=rng)


def _runs(row_mask):
  """Turns of one row as lists of token indices (reference helper)."""
  runs, current = [], []
  for t, m in enumerate(row_mask):
    if m:
      current.append(t)
    elif current:
      runs.append(current)
      current = []
  if current:
    runs.append(current)
  return runs


def _rloo(x, population):
  n = len(population)
  if n <= 1:
    return x
  mean = sum(population) / n
  return x * n / (n - 1) - mean * n / (n - 1)


def _std_norm(x, members, eps):
  """verl GRPO normalisation of x among `members` (x included)."""
  n = len(members)
  if n <= 1:
    return x / (1.0 + eps)
  if max(members) == min(members):
    return 0.0
  mean = sum(members) / n
  var = sum((m - mean) ** 2 for m in members) / (n - 1)
  return (x - mean) / (np.sqrt(var) + eps)


# ----------------------------------------------------------------------------
# iStar
# ----------------------------------------------------------------------------

def ref_step_rewards(prm, old, mask, step_ids, num_steps, beta, normalize,
                     eps=1e-6):
  batch, length = mask.shape
  r = np.zeros((batch, num_steps))
  valid = np.zeros((batch, num_steps), bool)
  for b in range(batch):
    for t in range(length):
      s = step_ids[b, t]
      if mask[b, t] and 0 <= s < num_steps:
        r[b, s] += float(prm[b, t]) - float(old[b, t])
        valid[b, s] = True
  r *= beta
  if normalize:
    scale = max([abs(r[b, s]) for b in range(batch)
                 for s in range(num_steps) if valid[b, s]] or [0.0])
    r = r / (scale + eps)
  return r, valid


def ref_istar(d, beta=0.05, w=1.0, baseline="first_row", normalize=True):
  mask, step_ids, gids = d["mask"], d["step_ids"], d["group_ids"]
  batch, length = mask.shape
  num_steps = d["num_steps"]
  r, valid = ref_step_rewards(d["prm"], d["old"], mask, step_ids, num_steps,
                              beta, normalize)
  score = d["token_rewards"].astype(np.float64).sum(1)
  ok = ~np.isnan(score)
  a_e = np.zeros(batch)
  a_s = np.zeros((batch, num_steps))
  for b in range(batch):
    if not ok[b]:
      continue
    same = [j for j in range(batch) if gids[j] == gids[b] and ok[j]]
    a_e[b] = _rloo(score[b], [score[j] for j in same])
    for s in range(num_steps):
      if not valid[b, s]:
        continue
      if baseline == "first_row":
        pop = [r[j, np.flatnonzero(valid[j])[0]] for j in same
               if valid[j].any()]
      elif baseline == "all_steps":
        pop = [r[j, k] for j in same for k in range(num_steps) if valid[j, k]]
      else:
        pop = [r[j, s] for j in same if valid[j, s]]
      a_s[b, s] = _rloo(r[b, s], pop)
  adv = np.zeros((batch, length))
  for b in range(batch):
    for t in range(length):
      if mask[b, t] and ok[b]:
        s = step_ids[b, t]
        adv[b, t] = a_e[b] + (w * a_s[b, s] if 0 <= s < num_steps else 0.0)
  return adv, r


def run_istar(d, dtype=jnp.float32, **kw):
  return J["istar"](
      jnp.asarray(d["token_rewards"], dtype), jnp.asarray(d["prm"], dtype),
      jnp.asarray(d["old"], dtype), d["mask"], d["step_ids"], d["group_ids"],
      d["num_groups"], num_steps=d["num_steps"], **kw)


@pytest.mark.parametrize("baseline", ["first_row", "all_steps",
                                      "same_index"])
@pytest.mark.parametrize("seed", [0, 1])
def test_istar_matches_reference(baseline, seed):
  d = make_batch(seed)
  out = run_istar(d, step_baseline=baseline, step_weight=0.7)
  want, r = ref_istar(d, w=0.7, baseline=baseline)
  np.testing.assert_allclose(out.advantages, want, **TOL)
  np.testing.assert_allclose(out.returns, want, **TOL)
  np.testing.assert_allclose(out.info["step_rewards"], r, **TOL)
  assert np.all(np.asarray(out.advantages)[~d["mask"]] == 0)


def test_istar_unnormalised_beta():
  d = make_batch(3)
  out = run_istar(d, max_abs_normalize=False, beta=0.2)
  want, _ = ref_istar(d, beta=0.2, normalize=False)
  np.testing.assert_allclose(out.advantages, want, **TOL)


def test_istar_step_baseline_golden():
  """Repo quirk: steps are compared with the mean *first-step* reward."""
  mask = np.ones((2, 3), bool)
  step_ids = np.array([[0, 1, 1], [0, 0, 0]], np.int32)
  prm = np.array([[1.0, 1.0, 2.0], [0.5, 0.5, 1.0]], np.float32)
  zeros = np.zeros((2, 3), np.float32)
  call = functools.partial(J["istar"], zeros, prm, zeros, mask, step_ids,
                           np.zeros(2, np.int32), 1, num_steps=2, beta=1.0,
                           max_abs_normalize=False)
  # step rewards: row 0 [1, 3], row 1 [2]; episode rewards all 0.
  first = call(step_baseline="first_row").info["step_advantages"]
  np.testing.assert_allclose(first, [[-1.0, 3.0], [1.0, 0.0]], **TOL)
  every = call(step_baseline="all_steps").info["step_advantages"]
  np.testing.assert_allclose(every, [[-1.5, 1.5], [0.0, 0.0]], **TOL)
  index = call(step_baseline="same_index").info["step_advantages"]
  np.testing.assert_allclose(index, [[-1.0, 3.0], [1.0, 0.0]], **TOL)
  np.testing.assert_allclose(call().advantages,
                             [[-1, 3, 3], [1, 1, 1]], **TOL)


def test_istar_normalisation_bounds_step_rewards():
  d = make_batch(4)
  out = run_istar(d)
  r = np.asarray(out.info["step_rewards"])
  assert np.max(np.abs(r)) <= 1.0
  assert np.isclose(np.max(np.abs(r)), 1.0, atol=1e-4)


def test_istar_no_steps_and_nan_rows():
  d = make_batch(5)
  d["step_ids"][:] = -1
  out = run_istar(d)
  want, _ = ref_istar(d)
  np.testing.assert_allclose(out.advantages, want, **TOL)
  assert np.all(np.isfinite(out.advantages))
  d = make_batch(5)
  d["token_rewards"][0, 0] = np.nan
  out = run_istar(d)
  want, _ = ref_istar(d)
  np.testing.assert_allclose(out.advantages, want, **TOL)
  assert np.all(np.asarray(out.advantages)[0] == 0)


def test_istar_bf16():
  d = make_batch(6)
  d["prm"] = np.asarray(jnp.asarray(d["prm"], jnp.bfloat16), np.float32)
  d["old"] = np.asarray(jnp.asarray(d["old"], jnp.bfloat16), np.float32)
  out = run_istar(d, dtype=jnp.bfloat16)
  want, _ = ref_istar(d)
  assert out.advantages.dtype == jnp.float32
  np.testing.assert_allclose(out.advantages, want, **BF16_TOL)


# ----------------------------------------------------------------------------
# iStar PRM trajectory-DPO loss
# ----------------------------------------------------------------------------

def ref_dpo(prm, ref, d, beta=0.05, threshold=0.0, mode="step_mean",
            accuracy=False):
  """Loss and d loss / d prm in float64 (with `accuracy`, the share of
  pairs with Q(τ⁺) > Q(τ⁻) instead of the gradient)."""
  mask, step_ids, gids = d["mask"], d["step_ids"], d["group_ids"]
  batch, length = mask.shape
  num_steps = d["num_steps"]
  r, valid = ref_step_rewards(prm, ref, mask, step_ids, num_steps, beta,
                              False)
  q = np.zeros(batch)
  dq = np.zeros((batch, length))
  has = np.zeros(batch, bool)
  for b in range(batch):
    if mode == "step_mean":
      n = valid[b].sum()
      has[b] = n > 0
      q[b] = r[b][valid[b]].sum() / max(n, 1)
      for t in range(length):
        if mask[b, t] and 0 <= step_ids[b, t] < num_steps and n:
          dq[b, t] = beta / n
    else:
      has[b] = mask[b].any()
      q[b] = beta * sum(float(prm[b, t]) - float(ref[b, t])
                        for t in range(length) if mask[b, t])
      dq[b] = beta * mask[b]
  score = d["token_rewards"].astype(np.float64).sum(1)
  use = has & ~np.isnan(score)
  pairs = [(i, j) for i in range(batch) for j in range(batch)
           if use[i] and use[j] and gids[i] == gids[j]
           and score[i] > threshold and not score[j] > threshold]
  if not pairs:
    return 0.0, np.nan if accuracy else np.zeros((batch, length))
  if accuracy:
    ordered = sum(q[i] > q[j] for i, j in pairs)
    return None, ordered / len(pairs)
  loss, dldq = 0.0, np.zeros(batch)
  for i, j in pairs:
    m = q[i] - q[j]
    loss += np.log1p(np.exp(-m))
    sig = 1.0 / (1.0 + np.exp(m))
    dldq[i] -= sig
    dldq[j] += sig
  return loss / len(pairs), dldq[:, None] * dq / len(pairs)


def _paired_batch():
  """make_batch(7) with two successes and two failures in rows 0-3."""
  d = make_batch(7)
  for b, reward in zip(range(4), [1.0, 1.0, 0.0, 0.0]):
    d["token_rewards"][b] = 0.0
    d["token_rewards"][b, np.flatnonzero(d["mask"][b])[-1]] = reward
  return d


@pytest.mark.parametrize("mode", ["step_mean", "sum"])
def test_dpo_loss_and_gradient(mode):
  d = _paired_batch()
  d["prm"] = (d["old"] + np.random.default_rng(1).normal(
      size=d["old"].shape) * 5).astype(np.float32)
  fn = functools.partial(
      J["istar_prm_dpo_loss"], ref_logprobs=d["old"],
      token_rewards=d["token_rewards"], mask=d["mask"],
      step_ids=d["step_ids"],
      group_ids=d["group_ids"], num_groups=d["num_groups"],
      num_steps=d["num_steps"], beta=0.3, trajectory_score=mode)
  loss, grad = jax.jit(jax.value_and_grad(fn))(jnp.asarray(d["prm"]))
  want_loss, want_grad = ref_dpo(d["prm"], d["old"], d, beta=0.3, mode=mode)
  assert want_loss > 0
  np.testing.assert_allclose(loss, want_loss, **TOL)
  np.testing.assert_allclose(grad, want_grad, **TOL)


@pytest.mark.parametrize("mode", ["step_mean", "sum"])
def test_dpo_pair_accuracy(mode):
  d = _paired_batch()
  args = (d["prm"], d["old"], d["token_rewards"], d["mask"], d["step_ids"],
          d["group_ids"], d["num_groups"])
  kwargs = dict(num_steps=d["num_steps"], beta=0.3, trajectory_score=mode)
  loss, metrics = J["istar_prm_dpo_loss"](*args, return_metrics=True,
                                          **kwargs)
  np.testing.assert_allclose(loss, J["istar_prm_dpo_loss"](*args, **kwargs))
  _, want = ref_dpo(d["prm"], d["old"], d, beta=0.3, mode=mode,
                    accuracy=True)
  assert 0.0 < want < 1.0
  np.testing.assert_allclose(metrics["pair_accuracy"], want, **TOL)
  # Without a success there is no pair: the accuracy is undefined.
  d["token_rewards"][:] = 0.0
  _, metrics = J["istar_prm_dpo_loss"](*args, return_metrics=True, **kwargs)
  assert np.isnan(metrics["pair_accuracy"]) and metrics["num_pairs"] == 0


def test_dpo_loss_no_pairs_is_zero():
  d = make_batch(8)
  d["token_rewards"][:] = 0.0                      # no success at all
  loss, grad = jax.value_and_grad(
      lambda p: J["istar_prm_dpo_loss"](
          p, d["old"], d["token_rewards"], d["mask"], d["step_ids"],
          d["group_ids"], d["num_groups"], num_steps=d["num_steps"]))(
              jnp.asarray(d["prm"]))
  assert float(loss) == 0.0
  assert np.all(np.asarray(grad) == 0)


def test_dpo_loss_threshold_and_bad_option():
  d = make_batch(9, binary=False)
  got = J["istar_prm_dpo_loss"](
      d["prm"], d["old"], d["token_rewards"], d["mask"], d["step_ids"],
      d["group_ids"], d["num_groups"], num_steps=d["num_steps"],
      success_threshold=0.3)
  want, _ = ref_dpo(d["prm"], d["old"], d, threshold=0.3)
  np.testing.assert_allclose(got, want, **TOL)
  with pytest.raises(ValueError, match="trajectory_score"):
    J["istar_prm_dpo_loss"](
        d["prm"], d["old"], d["token_rewards"], d["mask"], d["step_ids"],
        d["group_ids"], d["num_groups"], num_steps=4, trajectory_score="x")


# ----------------------------------------------------------------------------
# MatchTIR
# ----------------------------------------------------------------------------

def ref_matchtir(token_rewards, mask, gids, gamma=0.9, fuse="mean",
                 eps=1e-6):
  batch, length = mask.shape
  turns = [_runs(mask[b]) for b in range(batch)]
  rewards = [[float(token_rewards[b, run[-1]]) for run in turns[b]]
             for b in range(batch)]
  ok = [bool(turns[b]) and not np.isnan(sum(rewards[b]))
        for b in range(batch)]
  returns = []
  for b in range(batch):
    g, out = 0.0, []
    for r in reversed(rewards[b]):
      g = r + gamma * g
      out.append(g)
    returns.append(out[::-1])
  adv = np.zeros((batch, length))
  for b in range(batch):
    if not ok[b]:
      continue
    same = [j for j in range(batch) if gids[j] == gids[b] and ok[j]]
    a_g = _std_norm(sum(rewards[b]), [sum(rewards[j]) for j in same], eps)
    for k, run in enumerate(turns[b]):
      members = [returns[j][k] for j in same if len(turns[j]) > k]
      a_l = _std_norm(returns[b][k], members, eps)
      value = (a_g + a_l) * (0.5 if fuse == "mean" else 1.0)
      for t in run:
        adv[b, t] = value
  return adv


def turn_batch(seed):
  """Batch whose rows have 0..3 turns with rewards at the turn ends."""
  d = make_batch(seed)
  rng = d["rng"]
  rewards = np.zeros(d["mask"].shape, np.float32)
  for b in range(d["mask"].shape[0]):
    for run in _runs(d["mask"][b]):
      rewards[b, run[-1]] = rng.choice([0.0, 0.5, 1.0])
      rewards[b, run[0]] += 0.25 if len(run) > 1 else 0.0   # ignored
  return d, rewards


@pytest.mark.parametrize("fuse", ["mean", "sum"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matchtir_matches_reference(fuse, seed):
  d, rewards = turn_batch(seed)
  out = J["matchtir"](rewards, d["mask"], d["group_ids"], d["num_groups"],
                      fuse=fuse)
  want = ref_matchtir(rewards, d["mask"], d["group_ids"], fuse=fuse)
  np.testing.assert_allclose(out.advantages, want, **TOL)
  assert np.all(np.asarray(out.advantages)[~d["mask"]] == 0)


def test_matchtir_fuse_is_a_factor_of_two():
  d, rewards = turn_batch(3)
  mean = J["matchtir"](rewards, d["mask"], d["group_ids"], 4).advantages
  total = J["matchtir"](rewards, d["mask"], d["group_ids"], 4,
                        fuse="sum").advantages
  np.testing.assert_allclose(2 * np.asarray(mean), total, **TOL)


def test_matchtir_golden_late_single_turn_passes_through():
  # Row 0: turns [1, 0.5, 1]; row 1: turn [0]; one group.
  mask = np.array([[1, 0, 1, 1, 0, 1], [1, 1, 0, 0, 0, 0]], bool)
  rewards = np.zeros((2, 6), np.float32)
  rewards[0, [0, 3, 5]] = [1.0, 0.5, 1.0]
  out = J["matchtir"](rewards, mask, np.zeros(2, np.int32), 1,
                      gamma=0.5)
  # Returns row 0: [1 + .5(.5 + .5) = 1.5, 1.0, 1.0]; row 1: [0].
  np.testing.assert_allclose(out.info["turn_returns"][0, :3],
                             [1.5, 1.0, 1.0], **TOL)
  a_g = np.array([2.5 - 1.25, -1.25]) / (np.sqrt(2 * 1.25 ** 2) + 1e-6)
  a_l0 = np.array([0.75, -0.75]) / (np.sqrt(2 * 0.75 ** 2) + 1e-6)
  late = 1.0 / (1.0 + 1e-6)
  want = np.zeros((2, 6))
  want[0, 0] = (a_g[0] + a_l0[0]) / 2
  want[0, 2:4] = (a_g[0] + late) / 2
  want[0, 5] = (a_g[0] + late) / 2
  want[1, :2] = (a_g[1] + a_l0[1]) / 2
  np.testing.assert_allclose(out.advantages, want, **TOL)


def test_matchtir_edge_cases():
  # Empty rows, an all-equal group, T=1 and bf16.
  mask = np.array([[1], [1], [0], [1]], bool)
  rewards = np.array([[1.0], [1.0], [0.0], [0.3]], np.float32)
  gids = np.array([0, 0, 0, 1], np.int32)
  out = J["matchtir"](jnp.asarray(rewards, jnp.bfloat16), mask, gids, 2)
  want = ref_matchtir(rewards, mask, gids)
  np.testing.assert_allclose(out.advantages, want, **BF16_TOL)
  assert np.asarray(out.advantages)[0, 0] == 0.0
  none = J["matchtir"](rewards, np.zeros_like(mask), gids, 2)
  assert np.all(np.asarray(none.advantages) == 0)


# ----------------------------------------------------------------------------
# R³L
# ----------------------------------------------------------------------------

def ref_r3l(token_rewards, mask, gids, pivots=None, alpha=3.0,
            success_score=1.0, r_max=1.0, baseline="mean", tau=1.0,
            normalize_by_std=False, eps=1e-6):
  batch, length = mask.shape
  score = token_rewards.astype(np.float64).sum(1)
  ok = ~np.isnan(score)
  adv = np.zeros((batch, length))
  for b in range(batch):
    if not ok[b]:
      continue
    same = [score[j] for j in range(batch) if gids[j] == gids[b] and ok[j]]
    n = len(same)
    if n == 1:
      base = 0.0
    elif baseline == "mean":
      base = sum(same) / n
    else:
      base = tau * (np.log(sum(np.exp(x / tau) for x in same)) - np.log(n))
    s = score[b] - base
    if normalize_by_std:
      if n == 1:
        s = s / (1.0 + eps)
      elif max(same) == min(same):
        s = 0.0
      else:
        mean = sum(same) / n
        std = np.sqrt(sum((x - mean) ** 2 for x in same) / (n - 1))
        s = s / (std + eps)
    if n > 1 and max(same) == min(same):
      s = 0.0
    if score[b] >= r_max:
      a = success_score
    elif s >= 0:
      a = alpha * s
    else:
      a = s
    skip = 0 if pivots is None else pivots[b]
    for k, run in enumerate(_runs(mask[b])):
      if k >= skip:
        adv[b, run] = a
  return adv


@pytest.mark.parametrize("kw", [
    dict(), dict(baseline="logavgexp", tau=0.5), dict(normalize_by_std=True),
    dict(baseline="logavgexp", normalize_by_std=True),
    dict(alpha=2.0, success_score=3.0, r_max=0.9)])
@pytest.mark.parametrize("seed", [0, 1])
def test_r3l_matches_reference(kw, seed):
  d = make_batch(seed, binary=False)
  d["token_rewards"][0, 0] = 1.2 if d["mask"][0, 0] else 0.0
  pivots = d["rng"].integers(0, 3, size=9).astype(np.int32)
  out = J["r3l"](d["token_rewards"], d["mask"], d["group_ids"], 4,
                 pivot_turns=pivots, **kw)
  want = ref_r3l(d["token_rewards"], d["mask"], d["group_ids"], pivots, **kw)
  np.testing.assert_allclose(out.advantages, want, **TOL)
  loss_mask = np.zeros_like(d["mask"])
  for b in range(9):
    for k, run in enumerate(_runs(d["mask"][b])):
      loss_mask[b, run] = k >= pivots[b]
  np.testing.assert_array_equal(out.info["loss_mask"], loss_mask)


def test_r3l_quirks_golden():
  mask = np.ones((6, 2), bool)
  rewards = np.zeros((6, 2), np.float32)
  rewards[:, 1] = [1, 1, 0, 0, 1, 0.5]
  gids = np.array([0, 0, 1, 1, 2, 2], np.int32)
  out = J["r3l"](rewards, mask, gids, 3)
  # all-success group -> 1.0 (not 0); all-fail -> 0; mixed group: the
  # success gets 1.0 and the 0.5 row gets s = -0.25 (negative, untouched).
  np.testing.assert_allclose(out.info["row_advantages"],
                             [1, 1, 0, 0, 1, -0.25], **TOL)
  docs = J["r3l"](rewards, mask, gids, 3, success_score=3.0)
  np.testing.assert_allclose(docs.info["row_advantages"],
                             [3, 3, 0, 0, 3, -0.25], **TOL)
  # Positive amplification: 0.5 in a group with a 0 gets α·0.25.
  rewards[3, 1] = 0.5
  amp = J["r3l"](rewards, mask, gids, 3)
  np.testing.assert_allclose(amp.info["row_advantages"][2:4],
                             [-0.25, 0.75], **TOL)


def test_r3l_pivot_masking():
  mask = np.array([[1, 1, 0, 1, 0, 1, 1], [1, 0, 1, 0, 0, 0, 0]], bool)
  rewards = np.zeros((2, 7), np.float32)
  rewards[0, 6] = 1.0
  out = J["r3l"](rewards, mask, np.zeros(2, np.int32), 1,
                 pivot_turns=np.array([2, 5], np.int32))
  np.testing.assert_array_equal(out.info["loss_mask"][0],
                                [0, 0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(out.info["fully_masked"], [False, True])
  assert np.all(np.asarray(out.advantages)[1] == 0)
  zero = J["r3l"](rewards, mask, np.zeros(2, np.int32), 1,
                  pivot_turns=np.zeros(2, np.int32))
  np.testing.assert_array_equal(zero.info["loss_mask"], mask)


# ----------------------------------------------------------------------------
# SLATE
# ----------------------------------------------------------------------------

def ref_slate(token_rewards, mask, sibling_ids, prefix, normalize_by_std,
              eps=1e-6):
  batch, length = mask.shape
  score = np.array([sum(float(token_rewards[b, t]) for t in range(length)
                        if t >= prefix[b]) for b in range(batch)])
  ok = ~np.isnan(score)
  adv = np.zeros((batch, length))
  for b in range(batch):
    if not ok[b]:
      continue
    same = [score[j] for j in range(batch)
            if sibling_ids[j] == sibling_ids[b] and ok[j]]
    if normalize_by_std:
      a = _std_norm(score[b], same, eps)
    elif len(same) == 1:
      a = score[b]
    else:
      a = 0.0 if max(same) == min(same) else score[b] - sum(same) / len(same)
    for t in range(length):
      if mask[b, t] and t >= prefix[b]:
        adv[b, t] = a
  return adv


@pytest.mark.parametrize("normalize_by_std", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_slate_matches_reference(normalize_by_std, seed):
  d = make_batch(seed, binary=False)
  rng = d["rng"]
  d["token_rewards"] += rng.normal(size=d["mask"].shape).astype(
      np.float32) * d["mask"]
  siblings = np.array([2, 0, 2, 5, 5, 1, 1, 0, 3], np.int32)
  prefix = rng.integers(0, 6, size=9).astype(np.int32)
  out = J["slate"](d["token_rewards"], d["mask"], siblings, 6,
                   prefix_lengths=prefix, normalize_by_std=normalize_by_std)
  want = ref_slate(d["token_rewards"], d["mask"], siblings, prefix,
                   normalize_by_std)
  np.testing.assert_allclose(out.advantages, want, **TOL)


def test_slate_equal_siblings_and_no_prefix():
  mask = np.ones((3, 2), bool)
  rewards = np.array([[0, 1], [0, 1], [0, 0.2]], np.float32)
  out = J["slate"](rewards, mask, np.array([0, 0, 1], np.int32), 2)
  np.testing.assert_allclose(out.advantages,
                             [[0, 0], [0, 0], [0.2 / (1 + 1e-6)] * 2], **TOL)


def test_slate_step_reward():
  got = agentic.slate_step_reward(
      jnp.array([1, 0, -1.0]), jnp.array([1, -1, 0.0]),
      jnp.array([0, 1, 1.0]), jnp.array([False, True, True]),
      weights=(1.0, 2.0, 1.0))
  np.testing.assert_allclose(got, [1.0, (0 - 2 + 1) / 4, (-1 + 1) / 4], **TOL)
  with pytest.raises(ValueError, match="weights"):
    agentic.slate_step_reward(1.0, 1.0, 1.0, True, weights=(1.0, 0.0, 1.0))


# ----------------------------------------------------------------------------
# Shared properties: registry, jit, padding invariance, errors.
# ----------------------------------------------------------------------------

NAMES = ("istar", "matchtir", "r3l", "slate")


def _rollouts(seed):
  return testing.make_rollouts(batch=9, length=12, group_size=3,
                                          seed=seed)


def test_registry_jit_and_example_inputs():
  rollouts = _rollouts(3)
  rng = np.random.default_rng(0)
  for name in NAMES:
    assert name in cajax.estimator_names()
    kw = cajax.example_inputs(name, rollouts, rng)
    out = jax.jit(functools.partial(cajax.estimate, name))(rollouts, **kw)
    assert out.advantages.shape == rollouts.mask.shape
    assert out.advantages.dtype == jnp.float32
    assert np.all(np.isfinite(out.advantages))
    assert np.all(np.asarray(out.advantages)[~np.asarray(rollouts.mask)]
                  == 0)
    assert np.any(np.asarray(out.advantages) != 0)


def test_adapters_match_plain_functions():
  r = _rollouts(4)
  estimate = lambda name, **kw: jax.jit(
      functools.partial(cajax.estimate, name, **kw))(r).advantages
  want = J["istar"](r.token_rewards, r.logprobs, r.old_logprobs, r.mask,
                    r.step_ids, r.group_ids, r.num_groups, num_steps=12,
                    step_baseline="all_steps")
  np.testing.assert_allclose(estimate("istar", step_baseline="all_steps"),
                             want.advantages, **TOL)
  prm = r.logprobs + 1.0
  out = jax.jit(functools.partial(cajax.estimate, "istar", num_steps=4))(
      r, prm_logprobs=prm)
  want = J["istar"](r.token_rewards, prm, r.old_logprobs, r.mask,
                    r.step_ids, r.group_ids, r.num_groups, num_steps=4)
  np.testing.assert_allclose(out.advantages, want.advantages, **TOL)
  want = J["slate"](r.token_rewards, r.mask, r.group_ids, r.num_groups)
  np.testing.assert_allclose(estimate("slate"), want.advantages, **TOL)
  sib = jnp.arange(9, dtype=jnp.int32) // 2
  out = jax.jit(functools.partial(cajax.estimate, "slate"))(
      r, sibling_ids=sib)
  want = J["slate"](r.token_rewards, r.mask, sib, 9)
  np.testing.assert_allclose(out.advantages, want.advantages, **TOL)
  want = J["matchtir"](r.token_rewards, r.mask, r.group_ids, r.num_groups)
  np.testing.assert_allclose(estimate("matchtir"), want.advantages, **TOL)
  want = J["r3l"](r.token_rewards, r.mask, r.group_ids, r.num_groups,
                  alpha=2.0)
  np.testing.assert_allclose(estimate("r3l", alpha=2.0), want.advantages,
                             **TOL)


def test_eager_matches_jit():
  d, rewards = turn_batch(0)
  pivots = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2], np.int32)
  # matchtir's eager run is the slowest (~2 s of op compiles); its jitted
  # version is checked against the reference above.
  eager = {name: getattr(agentic, name) for name in FUNCTIONS}
  eager["matchtir"] = J["matchtir"]
  got = _call_all(d, rewards, pivots, pivots, eager)
  want = _call_all(d, rewards, pivots, pivots, J)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], **TOL)
  np.testing.assert_allclose(got["istar"], ref_istar(d)[0], **TOL)


def _call_all(d, rewards, pivots, prefix, fns=None):
  fns = J if fns is None else fns
  return dict(
      istar=fns["istar"](d["token_rewards"], d["prm"], d["old"], d["mask"],
                         d["step_ids"], d["group_ids"], 4,
                         num_steps=4).advantages,
      istar_dpo=fns["istar_prm_dpo_loss"](
          d["prm"], d["old"], d["token_rewards"], d["mask"], d["step_ids"],
          d["group_ids"], 4, num_steps=4),
      matchtir=fns["matchtir"](rewards, d["mask"], d["group_ids"],
                               4).advantages,
      r3l=fns["r3l"](d["token_rewards"], d["mask"], d["group_ids"], 4,
                     pivot_turns=pivots).advantages,
      slate=fns["slate"](d["token_rewards"], d["mask"], d["group_ids"], 4,
                         prefix_lengths=prefix).advantages)


@hypothesis.settings(max_examples=6)
@hypothesis.given(seed=st.integers(0, 1000), pad=st.sampled_from([2]))
def test_padding_invariance(seed, pad):
  d, rewards = turn_batch(seed % 5)
  rng = np.random.default_rng(seed)
  pivots = rng.integers(0, 3, size=9).astype(np.int32)
  prefix = rng.integers(0, 6, size=9).astype(np.int32)
  base = _call_all(d, rewards, pivots, prefix)
  padded = dict(d)
  widen = lambda x, v: np.concatenate(
      [x, np.full((x.shape[0], pad), v, x.dtype)], axis=1)
  padded["mask"] = widen(d["mask"], False)
  padded["step_ids"] = widen(d["step_ids"], -1)
  padded["token_rewards"] = widen(d["token_rewards"], 0.0)
  padded["prm"] = widen(d["prm"], rng.normal())
  padded["old"] = widen(d["old"], rng.normal())
  more = _call_all(padded, widen(rewards, 0.0), pivots, prefix)
  length = d["mask"].shape[1]
  for name, value in base.items():
    value, wide = np.asarray(value), np.asarray(more[name])
    if value.ndim:
      np.testing.assert_allclose(wide[:, :length], value, **TOL)
      assert np.all(wide[:, length:] == 0)
    else:
      np.testing.assert_allclose(wide, value, **TOL)


_D = make_batch(0)
_BAD_CALLS = {
    "step_baseline": lambda d: run_istar(d, step_baseline="mean"),
    "group_ids": lambda d: J["matchtir"](d["token_rewards"], d["mask"],
                                         d["group_ids"][:3], 4),
    "fuse": lambda d: J["matchtir"](d["token_rewards"], d["mask"],
                                    d["group_ids"], 4, fuse="max"),
    "pivot_turns": lambda d: J["r3l"](d["token_rewards"], d["mask"],
                                      d["group_ids"], 4,
                                      pivot_turns=np.zeros(3, np.int32)),
    "baseline": lambda d: J["r3l"](d["token_rewards"], d["mask"],
                                   d["group_ids"], 4, baseline="max"),
    "num_groups": lambda d: J["r3l"](d["token_rewards"], d["mask"],
                                     d["group_ids"], 0),
    "prefix_lengths": lambda d: J["slate"](
        d["token_rewards"], d["mask"], d["group_ids"], 4,
        prefix_lengths=np.zeros(3, np.int32)),
    "token_rewards": lambda d: J["slate"](d["token_rewards"][:, :3],
                                          d["mask"], d["group_ids"], 4),
    "sibling_ids": lambda d: J["slate"](d["token_rewards"], d["mask"],
                                        d["group_ids"].astype(np.float32),
                                        4),
    "num_branches": lambda d: J["slate"](d["token_rewards"], d["mask"],
                                         d["group_ids"], 0),
    "step_ids": lambda d: J["istar"](
        d["token_rewards"], d["prm"], d["old"], d["mask"],
        d["step_ids"][:, :3], d["group_ids"], 4, num_steps=4),
}


@pytest.mark.parametrize("argument", sorted(_BAD_CALLS))
def test_errors_name_arguments(argument):
  with pytest.raises(ValueError, match=argument):
    _BAD_CALLS[argument](_D)
