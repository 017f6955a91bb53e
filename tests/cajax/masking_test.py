"""Tests of cajax.masking and cajax.groups against float64 loop references."""

import functools
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import groups
from cajax import masking

RTOL = ATOL = 1e-5


# ---------------------------------------------------------------- references


def ref_masked_mean(x, m, eps=1e-8):
  total, count = 0.0, 0.0
  for value, keep in zip(np.ravel(x), np.ravel(m)):
    if keep:
      total += float(value)
      count += 1.0
  return total / (count + eps)


def ref_masked_var(x, m, ddof=1):
  values = [float(v) for v, k in zip(np.ravel(x), np.ravel(m)) if k]
  n = len(values)
  if n == 0:
    return 0.0
  mean = sum(values) / n
  var = sum((v - mean) ** 2 for v in values) / n
  if ddof and n > ddof:
    var *= n / (n - ddof)
  return var


def ref_masked_whiten(x, m, ddof=1, eps=1e-8, eps_mode="add"):
  mean = ref_masked_mean(x, m)
  var = ref_masked_var(x, m, ddof)
  denom = np.sqrt(var + eps) if eps_mode == "add" else np.sqrt(max(var, eps))
  out = np.zeros(np.shape(x))
  for index in np.ndindex(np.shape(x)):
    if m[index]:
      out[index] = (x[index] - mean) / denom
  return out


def ref_group_moments(values, ids, num_groups, valid, ddof):
  count, mean, std = (np.zeros(num_groups) for _ in range(3))
  for g in range(num_groups):
    members = [float(values[b]) for b in range(len(values))
               if ids[b] == g and valid[b]]
    n = len(members)
    count[g] = n
    if n:
      mean[g] = sum(members) / n
      if n > ddof:
        std[g] = np.sqrt(sum((v - mean[g]) ** 2 for v in members)
                         / (n - ddof))
  return count, mean, std


MASKS = {
    "no_padding": np.ones((3, 5), bool),
    "right_padding": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1],
                               [1, 0, 0, 0, 0]], bool),
    "interior_padding": np.array([[1, 0, 0, 1, 1], [1, 1, 0, 1, 0],
                                  [0, 1, 1, 1, 1]], bool),
    "all_masked_row": np.array([[0, 0, 0, 0, 0], [1, 1, 1, 0, 0],
                                [1, 1, 1, 1, 1]], bool),
    "one_valid_token": np.array([[0, 0, 1, 0, 0], [0, 0, 0, 0, 0],
                                 [0, 0, 0, 0, 0]], bool),
    "nothing_valid": np.zeros((3, 5), bool),
}


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize("case", sorted(MASKS))
@pytest.mark.parametrize("jit", [False, True])
def test_masked_statistics_match_reference(case, jit):
  mask = MASKS[case]
  x = np.random.default_rng(0).normal(size=mask.shape) * 3.0
  x[~mask] = np.nan  # Values under the mask never leak into results.
  wrap = jax.jit if jit else (lambda f: f)
  mean = wrap(masking.masked_mean)(x, mask)
  var = wrap(masking.masked_var)(x, mask)
  whitened = wrap(masking.masked_whiten)(x, mask)
  np.testing.assert_allclose(mean, ref_masked_mean(x, mask), RTOL, ATOL)
  np.testing.assert_allclose(var, ref_masked_var(x, mask), RTOL, ATOL)
  # atol 1e-3: with one valid token the reference keeps x·1e-4, the mean's
  # 1e-8 denominator guard seen through rsqrt(0 + 1e-8); float32 rounds it off.
  np.testing.assert_allclose(whitened, ref_masked_whiten(x, mask), 1e-4,
                             1e-3)
  assert np.all(np.isfinite(whitened))
  assert np.all(np.asarray(whitened)[~mask] == 0.0)


def test_masked_whiten_openrlhf_biased_max_form():
  mask = MASKS["right_padding"]
  x = np.random.default_rng(1).normal(size=mask.shape)
  out = masking.masked_whiten(x, mask, ddof=0, eps_mode="max")
  np.testing.assert_allclose(
      out, ref_masked_whiten(x, mask, ddof=0, eps_mode="max"), RTOL, ATOL)


def test_masked_whiten_keep_mean_and_axis():
  mask = MASKS["right_padding"]
  x = np.random.default_rng(2).normal(size=mask.shape)
  kept = masking.masked_whiten(x, mask, shift_mean=False)
  expected = ref_masked_whiten(x, mask) + ref_masked_mean(x, mask) * mask
  np.testing.assert_allclose(kept, expected, 1e-4, 1e-4)
  rows = masking.masked_whiten(x, mask, axis=1, ddof=0)
  for b in range(mask.shape[0]):
    np.testing.assert_allclose(
        rows[b], ref_masked_whiten(x[b], mask[b], ddof=0), 1e-4, 1e-4)


def test_masked_var_single_token_gives_zero_not_nan():
  # verl raises and Tunix returns NaN for one valid token; we return 0.
  mask = MASKS["one_valid_token"]
  x = np.full(mask.shape, 7.0)
  assert float(masking.masked_var(x, mask)) == 0.0
  out = masking.masked_whiten(x, mask)
  assert np.all(np.isfinite(out))


SCALES = (1e-30, 1e-20, 1e-10, 1.0, 1e10, 1e20, 1e30)


def test_masked_whiten_of_a_constant_is_exactly_zero():
  # One valid token, or every valid token equal: exactly 0, not the
  # rounding residue of the mean divided by sqrt(eps).
  for value in (0.7, 1e3 + 0.1, -3.3e-7, 1e30):
    for mask in (MASKS["one_valid_token"], MASKS["right_padding"]):
      out = masking.masked_whiten(np.full(mask.shape, value, np.float32),
                                  mask)
      assert not np.any(np.asarray(out)), (value, out)
      rows = masking.masked_whiten(np.full(mask.shape, value, np.float32),
                                   mask, axis=1, eps=0.0)
      assert not np.any(np.asarray(rows)), (value, rows)


@pytest.mark.parametrize("scale", SCALES)
def test_masked_whiten_and_var_at_every_scale(scale):
  # verl's (x − μ)·rsqrt(var + eps), in float64, at scales whose squares
  # overflow (1e30: x² = inf) or underflow (1e-30: x² = 0) in float32.
  mask = MASKS["right_padding"]
  x = np.random.default_rng(3).normal(size=mask.shape)
  scaled = (x * scale).astype(np.float32)
  values = scaled.astype(np.float64)[mask]
  mu = values.mean()
  var = ((values - mu) ** 2).sum() / (values.size - 1)
  for mode in ("add", "max"):
    denom = math.sqrt(var + 1e-8) if mode == "add" else math.sqrt(
        max(var, 1e-8))
    want = np.where(mask, (scaled.astype(np.float64) - mu) / denom, 0.0)
    got = np.asarray(masking.masked_whiten(scaled, mask, eps_mode=mode),
                     np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5,
                               atol=1e-5 * np.max(np.abs(want)))
  got_var = float(masking.masked_var(scaled, mask))
  if 1e-37 < var < 1e38:  # a normal float32
    assert got_var == pytest.approx(var, rel=1e-5)
  elif var >= 1e38:
    assert got_var == np.inf
  else:  # below float32's normal range (XLA flushes subnormals to 0)
    assert 0.0 <= got_var < 1e-37


@pytest.mark.parametrize("scale", SCALES)
def test_group_moments_at_every_scale(scale):
  ids = np.array([0, 1, 0, 1, 0, 2], np.int32)
  base = np.array([1.0, 0.25, 0.0, -0.5, 0.25, 3.0])
  values = (base * scale).astype(np.float32)
  moments = groups.group_moments(values, ids, 3)
  for g in range(3):
    member = values[ids == g].astype(np.float64)
    assert float(moments.mean[g]) == pytest.approx(member.mean(), rel=1e-6)
    sd = member.std(ddof=1) if member.size > 1 else 0.0
    assert float(moments.std[g]) == pytest.approx(sd, rel=1e-5)
  # GRPO-style normalisation is scale-invariant while σ ≫ eps and follows
  # (x − μ)/(σ + eps) exactly below that (no underflow to all zeros).
  out = np.asarray(groups.group_normalize(values, ids, 3), np.float64)
  for b in range(len(ids)):
    member = values[ids == ids[b]].astype(np.float64)
    if member.size == 1:
      want = member[0] / (1 + 1e-6)
    else:
      want = (values[b] - member.mean()) / (member.std(ddof=1) + 1e-6)
    assert out[b] == pytest.approx(want, rel=1e-5, abs=1e-45), b
  assert np.all(out[:5] != 0)
  centred = np.asarray(groups.group_normalize(values, ids, 3, mode="mean"))
  np.testing.assert_allclose(centred / scale,
                             groups.group_normalize(base, ids, 3,
                                                    mode="mean"),
                             rtol=1e-5, atol=1e-6)


def test_masked_mean_axis_and_eps_zero():
  mask = MASKS["all_masked_row"]
  x = np.arange(15, dtype=np.float32).reshape(3, 5)
  rows = masking.masked_mean(x, mask, axis=1, eps=0.0)
  np.testing.assert_allclose(rows, [0.0, 6.0, 12.0], RTOL, ATOL)


def test_bf16_and_integer_inputs_compute_in_float32():
  mask = MASKS["right_padding"]
  x = np.random.default_rng(3).normal(size=mask.shape)
  out = masking.masked_mean(jnp.asarray(x, jnp.bfloat16), mask)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref_masked_mean(x, mask), 1e-2, 1e-2)
  ints = np.array([[1, 2, 3, 0, 0]])
  np.testing.assert_allclose(masking.masked_mean(ints, ints > 0), 2.0)


def test_masked_min_max_softmax():
  mask = MASKS["all_masked_row"]
  x = np.random.default_rng(4).normal(size=mask.shape)
  lo, hi = masking.masked_min_max(x, mask, axis=1)
  np.testing.assert_allclose(lo, [0.0, x[1, :3].min(), x[2].min()], RTOL)
  np.testing.assert_allclose(hi, [0.0, x[1, :3].max(), x[2].max()], RTOL)
  probs = masking.masked_softmax(x, mask, temperature=0.5)
  for b in range(3):
    expected = np.zeros(5)
    valid = np.flatnonzero(mask[b])
    if valid.size:
      weights = np.exp((x[b, valid] - x[b, valid].max()) / 0.5)
      expected[valid] = weights / weights.sum()
    np.testing.assert_allclose(probs[b], expected, RTOL, ATOL)


def test_row_helpers():
  mask = MASKS["interior_padding"]
  np.testing.assert_array_equal(masking.sequence_lengths(mask), [3, 3, 4])
  np.testing.assert_array_equal(masking.last_valid_index(mask), [4, 3, 4])
  np.testing.assert_array_equal(
      masking.last_valid_index(MASKS["all_masked_row"]), [-1, 2, 4])
  last = np.asarray(masking.last_token_mask(mask))
  assert last.sum() == 3 and last[0, 4] and last[1, 3] and last[2, 4]
  np.testing.assert_array_equal(
      masking.prefix_mask(np.array([0, 2, 5]), 4),
      [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
  tokens = masking.broadcast_to_tokens(np.array([1.0, -2.0, 3.0]), mask)
  np.testing.assert_allclose(tokens, mask * np.array([[1.0], [-2.0], [3.0]]))


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match=r"mask must have shape \(2, 3\)"):
    masking.masked_mean(np.zeros((2, 3)), np.ones((2, 4), bool))
  with pytest.raises(ValueError, match="eps_mode"):
    masking.masked_whiten(np.zeros((2, 3)), np.ones((2, 3)), eps_mode="x")
  with pytest.raises(ValueError, match="row_values"):
    masking.broadcast_to_tokens(np.zeros(3), np.ones((2, 3), bool))
  with pytest.raises(ValueError, match="lengths must be an integer"):
    masking.prefix_mask(np.array([1.5]), 3)


@hypothesis.given(
    st.integers(1, 4), st.integers(1, 6), st.integers(0, 3),
    st.integers(0, 10_000))
def test_whiten_is_padding_invariant(batch, length, extra, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, length)).astype(np.float32)
  mask = rng.random((batch, length)) < 0.7
  padded_x = np.concatenate([x, rng.normal(size=(batch, extra))], 1)
  padded_m = np.concatenate([mask, np.zeros((batch, extra), bool)], 1)
  base = masking.masked_whiten(x, mask)
  padded = masking.masked_whiten(padded_x, padded_m)
  np.testing.assert_allclose(padded[:, :length], base, 1e-5, 1e-5)
  np.testing.assert_array_equal(np.asarray(padded)[:, length:], 0.0)


# ---------------------------------------------------------------- groups


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("jit", [False, True])
def test_group_moments_non_contiguous_unequal_groups(ddof, jit):
  ids = np.array([2, 0, 1, 0, 2, 2, 0, 3], np.int32)
  values = np.array([1.0, 0.0, 5.0, 1.0, 0.5, 0.5, 1.0, -2.0])
  valid = np.array([1, 1, 1, 1, 1, 0, 1, 1], bool)
  fn = (jax.jit(groups.group_moments, static_argnames=("num_groups", "ddof"))
        if jit else groups.group_moments)
  got = fn(values, ids, num_groups=5, valid=valid, ddof=ddof)
  count, mean, std = ref_group_moments(values, ids, 5, valid, ddof)
  np.testing.assert_allclose(got.count, count)
  np.testing.assert_allclose(got.mean, mean, RTOL, ATOL)
  np.testing.assert_allclose(got.std, std, RTOL, ATOL)


def test_group_moments_equal_scores_have_exactly_zero_std():
  # The one-pass formula leaves ~1e-4 of residue here in float32.
  values = np.full(16, 0.1 + 1e3, np.float32)
  moments = groups.group_moments(values, np.zeros(16, np.int32), 1)
  assert float(moments.std[0]) == 0.0


def test_golden_group_std_from_peers():
  ids = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  scores = np.array([1, 0, 0, 1, 1, 1, 1, 1], np.int32)
  moments = groups.group_moments(scores, ids, 2)
  np.testing.assert_allclose(moments.mean, [0.5, 1.0])
  np.testing.assert_allclose(moments.std, [0.57735027, 0.0], 1e-6)
  batch = groups.batch_moments(scores)
  np.testing.assert_allclose(batch.std, np.std(scores, ddof=1), 1e-6)


def test_group_sum_and_max():
  ids = np.array([1, 0, 1, 1], np.int32)
  values = np.array([1.0, 2.0, 3.0, np.nan])
  valid = np.array([1, 1, 1, 0], bool)
  np.testing.assert_allclose(groups.group_sum(values, ids, 3, valid=valid),
                             [2.0, 4.0, 0.0])
  np.testing.assert_allclose(
      groups.group_max(values, ids, 3, valid=valid), [2.0, 3.0, -np.inf])


def test_group_bad_inputs():
  with pytest.raises(ValueError, match="num_groups"):
    groups.group_moments(np.zeros(3), np.zeros(3, np.int32), 0)
  with pytest.raises(ValueError, match="group_ids must be an integer"):
    groups.group_moments(np.zeros(3), np.zeros(3), 2)
  with pytest.raises(ValueError, match=r"group_ids must have shape \(3,\)"):
    groups.group_moments(np.zeros(3), np.zeros(4, np.int32), 2)


@hypothesis.given(st.integers(1, 12), st.integers(1, 4),
                  st.integers(0, 10_000))
def test_group_moments_permutation_equivariant(batch, num_groups, seed):
  rng = np.random.default_rng(seed)
  values = rng.normal(size=batch).astype(np.float32)
  ids = rng.integers(0, num_groups, size=batch).astype(np.int32)
  perm = rng.permutation(batch)
  a = groups.group_moments(values, ids, num_groups)
  b = groups.group_moments(values[perm], ids[perm], num_groups)
  for field_a, field_b in zip(a, b):
    np.testing.assert_allclose(field_a, field_b, 1e-5, 1e-5)


# ------------------------------------------------------- group_normalize


def ref_group_normalize(values, ids, valid, mode="std", eps=1e-6, ddof=1,
                        singleton="raw", population=None):
  """float64 loop reference; `ids` has the same shape as `values`."""
  values = np.asarray(values, np.float64)
  population = valid if population is None else population
  out = np.zeros(values.shape)
  for index in np.ndindex(values.shape):
    if not valid[index]:
      continue
    x = float(values[index])
    members = [float(values[j]) for j in np.ndindex(values.shape)
               if ids[j] == ids[index] and population[j]]
    n = len(members)
    if n <= 1:
      if singleton == "zero":
        out[index] = 0.0
      elif singleton == "raw" and mode == "std":
        out[index] = x / (1.0 + eps)
      else:
        out[index] = x
      continue
    if population[index] and max(members) == min(members):
      out[index] = 0.0
      continue
    mu = sum(members) / n
    if mode == "std":
      sd = (math.sqrt(sum((v - mu) ** 2 for v in members) / (n - ddof))
            if n > ddof else 0.0)
      out[index] = (x - mu) / (sd + eps)
    elif mode == "rloo":
      out[index] = x - (sum(members) - x) / (n - 1)
    else:
      out[index] = x - mu
  return out


@pytest.mark.parametrize("mode", ["std", "mean", "rloo"])
@pytest.mark.parametrize("singleton", ["raw", "keep", "zero"])
def test_group_normalize_matches_reference(mode, singleton):
  # Groups: 0 mixed, 1 all equal, 2 singleton, 3 empty, 4 mixed with an
  # invalid row; rows 8 and 9 are invalid.
  values = np.array([1.0, 2.0, 4.5, 3.0, 3.0, 3.0, 7.0, -1.0, 9.0, 0.5],
                    np.float32)
  ids = np.array([0, 0, 0, 1, 1, 1, 2, 4, 4, 4], np.int32)
  valid = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 1], bool)
  for ddof, eps in ((1, 1e-6), (0, 0.1)):
    got = groups.group_normalize(values, ids, 5, valid, mode=mode, eps=eps,
                                 ddof=ddof, singleton=singleton)
    want = ref_group_normalize(values, ids, valid, mode, eps, ddof,
                               singleton)
    np.testing.assert_allclose(got, want, RTOL, ATOL)
    assert got.dtype == jnp.float32
    assert np.all(np.asarray(got)[3:6] == 0.0)  # all-equal: exactly 0
    assert np.asarray(got)[8] == 0.0  # invalid row: exactly 0


def test_group_normalize_golden_and_defaults():
  # Group {1, 2, 3}: μ = 2, σ = 1 → (−1, 0, 1)/(1 + ε); singleton → 5/(1 + ε).
  got = groups.group_normalize(np.array([1, 2, 3, 5]),
                               np.array([0, 0, 0, 1]), 2)
  np.testing.assert_allclose(got, np.array([-1, 0, 1, 5]) / (1 + 1e-6),
                             1e-6, 1e-6)
  # RLOO: x − mean of the others.
  got = groups.group_normalize(np.array([1.0, 2.0, 6.0]), np.zeros(3, int),
                               1, mode="rloo")
  np.testing.assert_allclose(got, [1 - 4, 2 - 3.5, 6 - 1.5], 1e-6, 1e-6)
  # Equal scores far from 0 stay exactly 0 even with a tiny eps.
  got = groups.group_normalize(np.full(8, 0.1, np.float32), np.zeros(8, int),
                               1, eps=1e-9)
  assert np.all(np.asarray(got) == 0.0)


def test_group_normalize_trailing_axes_population_and_jit():
  rng = np.random.default_rng(3)
  values = rng.normal(size=(6, 4)).astype(np.float32)
  row_ids = np.array([0, 1, 0, 1, 2, 2], np.int32)
  valid = rng.random((6, 4)) < 0.7
  population = valid & (np.arange(4)[None, :] == 0)
  full_ids = np.broadcast_to(row_ids[:, None], (6, 4))
  fn = jax.jit(groups.group_normalize,
               static_argnames=("num_groups", "mode", "singleton"))
  for mode in ("std", "rloo"):
    got = fn(values, row_ids, num_groups=3, valid=valid, mode=mode,
             population=population)
    want = ref_group_normalize(values, full_ids, valid, mode,
                               population=population)
    np.testing.assert_allclose(got, want, RTOL, ATOL)
  # Per-entry ids (segments finer than rows) give the same as the reference.
  seg_ids = row_ids[:, None] * 4 + np.arange(4)[None, :]
  got = groups.group_normalize(values, seg_ids, 12, valid)
  np.testing.assert_allclose(
      got, ref_group_normalize(values, seg_ids, valid), RTOL, ATOL)


@pytest.mark.parametrize("mode", ["std", "rloo"])
@pytest.mark.parametrize("singleton", ["raw", "zero"])
def test_group_normalize_by_position(mode, singleton):
  # Statistics keyed by (group, column): the reference with full-shape ids
  # group·K + k. Column 3 has one valid row per group (singletons), column 2
  # all-equal values in group 0.
  rng = np.random.default_rng(4)
  values = rng.normal(size=(6, 4)).astype(np.float32)
  values[[0, 2], 2] = 1.5
  row_ids = np.array([0, 1, 0, 1, 2, 2], np.int32)
  valid = rng.random((6, 4)) < 0.8
  valid[:, 3] = [1, 1, 0, 0, 1, 0]
  valid[[0, 2], 2] = True
  full_ids = row_ids[:, None] * 4 + np.arange(4)[None, :]
  got = jax.jit(functools.partial(
      groups.group_normalize, num_groups=3, mode=mode, singleton=singleton,
      by_position=True))(values, row_ids, valid=valid)
  want = ref_group_normalize(values, full_ids, valid, mode,
                             singleton=singleton)
  np.testing.assert_allclose(got, want, RTOL, ATOL)
  assert np.all(np.asarray(got)[[0, 2], 2] == 0.0)
  with pytest.raises(ValueError, match="by_position"):
    groups.group_normalize(values, full_ids, 12, by_position=True)


def test_group_normalize_bf16_and_bad_inputs():
  values = np.array([0.5, 1.5, 2.0, 2.0], np.float32)
  ids = np.array([0, 0, 1, 1], np.int32)
  got = groups.group_normalize(jnp.asarray(values, jnp.bfloat16), ids, 2)
  np.testing.assert_allclose(
      got, ref_group_normalize(values, ids, np.ones(4, bool)), 1e-2, 1e-2)
  with pytest.raises(ValueError, match="group_ids"):
    groups.group_normalize(values, np.zeros(3, np.int32), 2)
  with pytest.raises(ValueError, match="group_ids"):
    groups.group_normalize(values, np.zeros(4), 2)
  with pytest.raises(ValueError, match="mode"):
    groups.group_normalize(values, ids, 2, mode="median")
  with pytest.raises(ValueError, match="singleton"):
    groups.group_normalize(values, ids, 2, singleton="drop")
  with pytest.raises(ValueError, match="ddof"):
    groups.group_normalize(values, ids, 2, ddof=-1)
  with pytest.raises(ValueError, match="valid"):
    groups.group_normalize(values, ids, 2, valid=np.ones(3, bool))
  with pytest.raises(ValueError, match="num_groups"):
    groups.group_normalize(values, ids, 0)


@hypothesis.given(st.integers(1, 12), st.integers(1, 4),
                  st.sampled_from(["std", "mean", "rloo"]),
                  st.integers(0, 10_000))
def test_group_normalize_permutation_equivariant(batch, num_groups, mode,
                                                 seed):
  rng = np.random.default_rng(seed)
  # Few distinct values so that all-equal groups occur.
  values = rng.integers(0, 3, size=batch).astype(np.float32)
  ids = rng.integers(0, num_groups, size=batch).astype(np.int32)
  valid = rng.random(batch) < 0.8
  perm = rng.permutation(batch)
  a = groups.group_normalize(values, ids, num_groups, valid, mode=mode)
  b = groups.group_normalize(values[perm], ids[perm], num_groups,
                             valid[perm], mode=mode)
  np.testing.assert_allclose(np.asarray(a)[perm], b, 1e-5, 1e-5)
  np.testing.assert_allclose(
      a, ref_group_normalize(values, ids, valid, mode), RTOL, ATOL)
