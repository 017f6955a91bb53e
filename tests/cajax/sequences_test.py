"""Tests for cajax.sequences against float64 NumPy loop references."""

import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import sequences

F32 = dict(rtol=1e-5, atol=1e-5)
BF16 = dict(rtol=1e-2, atol=1e-2)

# ----------------------------------------------------------------------------
# Independent float64 references (explicit Python loops, no cajax code).
# ----------------------------------------------------------------------------


def ref_reverse_discounted_cumsum(x, mask, discount=1.0):
  x = np.asarray(x, np.float64)
  mask = np.asarray(mask, bool)
  gamma = np.broadcast_to(np.asarray(discount, np.float64), x.shape)
  out = np.zeros_like(x)
  for b in range(x.shape[0]):
    running = 0.0
    for t in reversed(range(x.shape[1])):
      if mask[b, t]:
        running = x[b, t] + gamma[b, t] * running
        out[b, t] = running
  return out


def ref_suffix_min(x, mask):
  x = np.asarray(x, np.float64)
  out = np.zeros_like(x)
  for b in range(x.shape[0]):
    for t in range(x.shape[1]):
      if mask[b, t]:
        out[b, t] = min(x[b, s] for s in range(t, x.shape[1]) if mask[b, s])
  return out


def ref_contiguous_runs(mask):
  run_ids = np.full(mask.shape, -1, np.int64)
  num_runs = np.zeros(mask.shape[0], np.int64)
  for b in range(mask.shape[0]):
    current = -1
    for t in range(mask.shape[1]):
      if mask[b, t]:
        if t == 0 or not mask[b, t - 1]:
          current += 1
        run_ids[b, t] = current
    num_runs[b] = current + 1
  return run_ids, num_runs


def ref_steps_to_tokens(step_values, step_ids):
  out = np.zeros(step_ids.shape, np.float64)
  for b in range(step_ids.shape[0]):
    for t in range(step_ids.shape[1]):
      s = step_ids[b, t]
      if 0 <= s < step_values.shape[1]:
        out[b, t] = step_values[b, s]
  return out


def ref_tokens_to_steps(values, step_ids, num_steps, mask=None, reduce="sum"):
  batch, length = values.shape
  out = np.zeros((batch, num_steps), np.float64)
  for b in range(batch):
    for s in range(num_steps):
      members = [float(values[b, t]) for t in range(length)
                 if step_ids[b, t] == s and (mask is None or mask[b, t])]
      if not members:
        continue
      if reduce == "sum":
        out[b, s] = sum(members)
      elif reduce == "mean":
        out[b, s] = sum(members) / len(members)
      elif reduce == "max":
        out[b, s] = max(members)
      else:
        out[b, s] = min(members)
  return out


def ref_step_end_mask(step_ids, mask=None):
  batch, length = step_ids.shape
  out = np.zeros((batch, length), bool)
  for b in range(batch):
    inside = [t for t in range(length)
              if step_ids[b, t] >= 0 and (mask is None or mask[b, t])]
    for i, t in enumerate(inside):
      nxt = inside[i + 1] if i + 1 < len(inside) else None
      out[b, t] = nxt is None or step_ids[b, nxt] != step_ids[b, t]
  return out


def ref_step_prefix_mask(step_ids, num_prefix_steps):
  k = np.broadcast_to(np.asarray(num_prefix_steps), (step_ids.shape[0],))
  out = np.zeros(step_ids.shape, bool)
  for b in range(step_ids.shape[0]):
    for t in range(step_ids.shape[1]):
      out[b, t] = 0 <= step_ids[b, t] < k[b]
  return out


# ----------------------------------------------------------------------------
# Fixtures.
# ----------------------------------------------------------------------------

# Rows: no padding, right padding, interior padding, all masked, one valid
# token, interior + right padding.
MASK = np.array([
    [1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 0, 0, 0],
    [1, 1, 0, 0, 1, 1, 1],
    [0, 0, 0, 0, 0, 0, 0],
    [0, 0, 1, 0, 0, 0, 0],
    [1, 0, 1, 1, 0, 1, 0],
], bool)


def _values(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _step_ids(mask, num_steps, seed=0):
  """Contiguous steps over the valid tokens of each row, -1 elsewhere."""
  rng = np.random.default_rng(seed)
  ids = np.full(mask.shape, -1, np.int32)
  for b in range(mask.shape[0]):
    valid = np.flatnonzero(mask[b])
    if len(valid):
      ids[b, valid] = np.sort(rng.integers(0, num_steps, size=len(valid)))
  return ids


def _variants(fn, **static):
  """The function as called eagerly and under jit (static kwargs bound)."""
  bound = functools.partial(fn, **static)
  return {"eager": bound, "jit": jax.jit(bound)}


@pytest.mark.parametrize("discount", [1.0, 0.9, 0.5, 0.0])
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_reverse_discounted_cumsum_scalar_discount(discount, mode):
  x = _values(MASK.shape)
  fn = _variants(sequences.reverse_discounted_cumsum, gamma=discount)
  out = fn[mode](x, MASK)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(
      out, ref_reverse_discounted_cumsum(x, MASK, discount), **F32)
  assert np.all(np.asarray(out)[~MASK] == 0.0)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_reverse_discounted_cumsum_per_token_discount(mode):
  rng = np.random.default_rng(1)
  x = _values(MASK.shape, 1)
  gamma = rng.uniform(0.0, 1.0, size=MASK.shape).astype(np.float32)
  gamma[0, 3] = 0.0  # an episode end inside a row
  fn = _variants(sequences.reverse_discounted_cumsum)
  np.testing.assert_allclose(
      fn[mode](x, MASK, gamma),
      ref_reverse_discounted_cumsum(x, MASK, gamma), **F32)


def test_reverse_discounted_cumsum_golden_skip_semantics():
  # Interior masked token is skipped: no discount and its value is ignored.
  x = np.array([[1.0, 100.0, 2.0, 4.0, 7.0]], np.float32)
  mask = np.array([[True, False, True, True, False]])
  out = sequences.reverse_discounted_cumsum(x, mask, 0.5)
  # G2 = 2 + .5*4 = 4; G0 = 1 + .5*G2 = 3 (token 1 skipped).
  np.testing.assert_allclose(out, [[3.0, 0.0, 4.0, 4.0, 0.0]], **F32)


def test_reverse_discounted_cumsum_traced_discount():
  x = _values(MASK.shape, 2)
  fn = jax.jit(sequences.reverse_discounted_cumsum)
  np.testing.assert_allclose(
      fn(x, MASK, jnp.float32(0.95)),
      ref_reverse_discounted_cumsum(x, MASK, 0.95), **F32)


def test_reverse_discounted_cumsum_t1():
  x = np.array([[2.5], [-1.0]], np.float32)
  mask = np.array([[True], [False]])
  np.testing.assert_allclose(
      sequences.reverse_discounted_cumsum(x, mask, 0.9), [[2.5], [0.0]])


def test_reverse_discounted_cumsum_bf16_and_int_inputs():
  x = _values(MASK.shape, 3)
  out = sequences.reverse_discounted_cumsum(
      jnp.asarray(x, jnp.bfloat16), MASK, 0.9)
  assert out.dtype == jnp.float32
  expected = ref_reverse_discounted_cumsum(
      np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64), MASK, 0.9)
  np.testing.assert_allclose(out, expected, **BF16)
  ints = np.arange(MASK.size).reshape(MASK.shape).astype(np.int32)
  np.testing.assert_allclose(
      sequences.reverse_discounted_cumsum(ints, MASK.astype(np.int32)),
      ref_reverse_discounted_cumsum(ints, MASK), **F32)


@pytest.mark.parametrize("discount", [0.9, 0.99, 1.0])
def test_reverse_discounted_cumsum_long_rows_stay_float32_accurate(discount):
  length = 32768
  rng = np.random.default_rng(4)
  x = rng.uniform(0.0, 1.0, size=(2, length)).astype(np.float32)
  mask = np.ones((2, length), bool)
  mask[1, 1000:1100] = False
  mask[1, 30000:] = False
  out = jax.jit(functools.partial(sequences.reverse_discounted_cumsum,
                                  gamma=discount))(x, mask)
  np.testing.assert_allclose(
      out, ref_reverse_discounted_cumsum(x, mask, discount),
      rtol=1e-5, atol=0)


@pytest.mark.parametrize("length", [700, 1024])
def test_reverse_discounted_cumsum_blocked_path_long_rows(length):
  # Rows of >= 512 tokens take the two-level blocked scan; 700 is not a
  # multiple of its block size, so the padded tail is exercised too.
  rng = np.random.default_rng(length)
  x = rng.normal(size=(4, length)).astype(np.float32)
  mask = rng.uniform(size=(4, length)) < 0.8
  mask[1, length // 2:] = False
  mask[2] = False
  mask[3, :] = False
  mask[3, length - 1] = True
  gamma = rng.uniform(0.0, 1.0, size=(4, length)).astype(np.float32)
  gamma[0, ::37] = 0.0
  fn = jax.jit(sequences.reverse_discounted_cumsum)
  for discount in (gamma, jnp.float32(0.97), jnp.float32(1.0)):
    np.testing.assert_allclose(
        fn(x, mask, discount),
        ref_reverse_discounted_cumsum(x, mask, np.asarray(discount)),
        **F32)


@pytest.mark.parametrize("discount", [1.0, 0.97, 0.3, 0.2, 0.01])
def test_reverse_discounted_cumsum_static_discount_long_rows(discount):
  # A Python-number γ takes the chunked matmul path (chunk 64, 32 or 16 by
  # γ; 0.01 falls back to the scan); 700 is no multiple of any chunk.
  rng = np.random.default_rng(7)
  x = rng.normal(size=(4, 700)).astype(np.float32)
  mask = rng.uniform(size=(4, 700)) < 0.8
  mask[1, 350:] = False
  mask[2] = False
  mask[3, :] = False
  mask[3, 699] = True
  out = jax.jit(functools.partial(sequences.reverse_discounted_cumsum,
                                  gamma=discount))(x, mask)
  np.testing.assert_allclose(
      out, ref_reverse_discounted_cumsum(x, mask, discount), **F32)
  assert np.all(np.asarray(out)[~mask] == 0.0)


@pytest.mark.parametrize("discount", [1.0, 0.9, 0.5, 0.3])
@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_reverse_discounted_cumsum_static_discount_at_any_reward_scale(discount, scale):
  # Rewards of 1e-30 used to flush to 0 late in a matmul chunk when γ^k
  # pushed x·γ^k below float32's normal range; 1e30 must not overflow.
  rng = np.random.default_rng(8)
  x = rng.normal(size=(3, 200)).astype(np.float32)
  mask = rng.uniform(size=(3, 200)) < 0.9
  out = jax.jit(functools.partial(sequences.reverse_discounted_cumsum,
                                  gamma=discount))(x * scale, mask)
  want = ref_reverse_discounted_cumsum(x, mask, discount)
  # A flushed reward would be off by about |x| ~ 1.
  np.testing.assert_allclose(np.asarray(out, np.float64) / scale, want,
                             rtol=1e-4, atol=1e-4)


def test_reverse_discounted_cumsum_bad_inputs():
  x = np.zeros((2, 3), np.float32)
  mask = np.ones((2, 3), bool)
  with pytest.raises(ValueError, match="x must have shape"):
    sequences.reverse_discounted_cumsum(np.zeros((2, 4)), mask)
  with pytest.raises(ValueError, match="mask must have rank 2"):
    sequences.reverse_discounted_cumsum(x, np.ones(3, bool))
  with pytest.raises(ValueError, match="gamma must have shape"):
    sequences.reverse_discounted_cumsum(x, mask, np.ones((3, 2)))
  with pytest.raises(ValueError, match="x must be real"):
    sequences.reverse_discounted_cumsum(np.zeros((2, 3), np.complex64),
                                        mask)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_suffix_min_matches_reference(mode):
  x = _values(MASK.shape, 5)
  out = _variants(sequences.suffix_min)[mode](x, MASK)
  np.testing.assert_allclose(out, ref_suffix_min(x, MASK), **F32)
  assert np.all(np.asarray(out)[~MASK] == 0.0)


def test_suffix_min_golden_and_t1():
  x = np.array([[3.0, -9.0, 1.0, 2.0]], np.float32)
  mask = np.array([[True, False, True, True]])
  np.testing.assert_allclose(sequences.suffix_min(x, mask),
                             [[1.0, 0.0, 1.0, 2.0]])
  np.testing.assert_allclose(
      sequences.suffix_min(np.array([[4.0]]), np.array([[True]])), [[4.0]])


def test_suffix_min_bf16():
  x = jnp.asarray(_values(MASK.shape, 6), jnp.bfloat16)
  out = sequences.suffix_min(x, MASK)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(
      out, ref_suffix_min(np.asarray(x, np.float64), MASK), **BF16)


def test_suffix_min_bad_inputs():
  with pytest.raises(ValueError, match="x must have shape"):
    sequences.suffix_min(np.zeros((2, 2)), np.ones((2, 3), bool))


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_contiguous_runs_matches_reference(mode):
  run_ids, num_runs = _variants(sequences.contiguous_runs)[mode](MASK)
  want_ids, want_runs = ref_contiguous_runs(MASK)
  np.testing.assert_array_equal(run_ids, want_ids)
  np.testing.assert_array_equal(num_runs, want_runs)
  assert run_ids.dtype == jnp.int32


def test_contiguous_runs_t1_and_numeric_mask():
  run_ids, num_runs = sequences.contiguous_runs(np.array([[1], [0]]))
  np.testing.assert_array_equal(run_ids, [[0], [-1]])
  np.testing.assert_array_equal(num_runs, [1, 0])


def test_contiguous_runs_bad_inputs():
  with pytest.raises(ValueError, match="mask must have rank 2"):
    sequences.contiguous_runs(np.ones(3, bool))


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_steps_to_tokens(mode):
  step_ids = _step_ids(MASK, 3)
  step_ids[0, 0] = 5  # out of range -> 0
  step_values = _values((MASK.shape[0], 3), 7)
  out = _variants(sequences.steps_to_tokens)[mode](step_values, step_ids)
  np.testing.assert_allclose(out, ref_steps_to_tokens(step_values,
                                                      step_ids), **F32)


def test_steps_to_tokens_bf16():
  step_ids = _step_ids(MASK, 3)
  step_values = jnp.asarray(_values((MASK.shape[0], 3), 8), jnp.bfloat16)
  out = sequences.steps_to_tokens(step_values, step_ids)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(
      out, ref_steps_to_tokens(np.asarray(step_values, np.float64),
                               step_ids), **BF16)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_tokens_to_steps(reduce, with_mask, mode):
  step_ids = _step_ids(np.ones_like(MASK), 4, seed=9)
  step_ids[1, 0] = -1
  step_ids[2, 1] = 7  # >= num_steps: ignored
  values = _values(MASK.shape, 10)
  mask = MASK if with_mask else None
  fn = _variants(sequences.tokens_to_steps, num_steps=4, reduce=reduce)
  np.testing.assert_allclose(
      fn[mode](values, step_ids, mask=mask),
      ref_tokens_to_steps(values, step_ids, 4, mask, reduce), **F32)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_step_token_counts(mode):
  step_ids = _step_ids(np.ones_like(MASK), 3, seed=11)
  fn = _variants(sequences.step_token_counts, num_steps=3)
  for mask in (None, MASK):
    want = ref_tokens_to_steps(np.ones(MASK.shape), step_ids, 3, mask)
    np.testing.assert_allclose(fn[mode](step_ids, mask=mask), want)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_step_end_mask(mode):
  step_ids = _step_ids(np.ones_like(MASK), 3, seed=12)
  step_ids[0, 3] = -1
  fn = _variants(sequences.step_end_mask)
  for mask in (None, MASK):
    np.testing.assert_array_equal(fn[mode](step_ids, mask=mask),
                                  ref_step_end_mask(step_ids, mask))


def test_step_end_mask_golden():
  # The step-0 token before an observation ends at its last valid token.
  step_ids = np.array([[0, 0, 0, 1, 1, -1]], np.int32)
  mask = np.array([[True, True, False, True, True, False]])
  np.testing.assert_array_equal(
      sequences.step_end_mask(step_ids, mask),
      [[False, True, False, False, True, False]])


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_step_prefix_mask(mode):
  step_ids = _step_ids(MASK, 4, seed=13)
  k = np.array([0, 1, 2, 3, 4, 1], np.int32)
  fn = _variants(sequences.step_prefix_mask)
  np.testing.assert_array_equal(fn[mode](step_ids, k),
                                ref_step_prefix_mask(step_ids, k))
  np.testing.assert_array_equal(fn[mode](step_ids, 2),
                                ref_step_prefix_mask(step_ids, 2))


def test_steps_t1():
  step_ids = np.array([[0], [-1]], np.int32)
  np.testing.assert_allclose(
      sequences.tokens_to_steps(np.array([[3.0], [4.0]]), step_ids, 1),
      [[3.0], [0.0]])
  np.testing.assert_array_equal(sequences.step_end_mask(step_ids),
                                [[True], [False]])


def test_steps_bad_inputs():
  step_ids = np.zeros((2, 3), np.int32)
  values = np.zeros((2, 3), np.float32)
  with pytest.raises(ValueError, match="step_values must have rank 2"):
    sequences.steps_to_tokens(np.zeros(3), step_ids)
  with pytest.raises(ValueError, match="step_ids must have 2 rows"):
    sequences.steps_to_tokens(np.zeros((2, 4)), np.zeros((3, 3), np.int32))
  with pytest.raises(ValueError, match="step_ids must be an integer"):
    sequences.steps_to_tokens(np.zeros((2, 4)), values)
  with pytest.raises(ValueError, match="num_steps must be a static"):
    sequences.tokens_to_steps(values, step_ids, 0)
  with pytest.raises(ValueError, match="reduce must be one of"):
    sequences.tokens_to_steps(values, step_ids, 2, reduce="prod")
  with pytest.raises(ValueError, match="step_ids must have shape"):
    sequences.tokens_to_steps(values, np.zeros((2, 4), np.int32), 2)
  with pytest.raises(ValueError, match="mask must have shape"):
    sequences.tokens_to_steps(values, step_ids, 2, mask=np.ones((2, 2)))
  with pytest.raises(ValueError, match="token_values must have rank 2"):
    sequences.tokens_to_steps(np.zeros(3), step_ids, 2)
  with pytest.raises(ValueError, match="step_ids must have rank 2"):
    sequences.step_end_mask(np.zeros(3, np.int32))
  with pytest.raises(ValueError, match="mask must have shape"):
    sequences.step_end_mask(step_ids, np.ones((2, 2), bool))
  with pytest.raises(ValueError, match="num_prefix_steps"):
    sequences.step_prefix_mask(step_ids, np.zeros(3, np.int32))
  with pytest.raises(ValueError, match="num_prefix_steps"):
    sequences.step_prefix_mask(step_ids, np.zeros(2, np.float32))


# ----------------------------------------------------------------------------
# Property tests: right padding and inserted interior masked columns.
# ----------------------------------------------------------------------------

_JIT_RDC = jax.jit(sequences.reverse_discounted_cumsum)
_JIT_SUFFIX_MIN = jax.jit(sequences.suffix_min)
_JIT_END = jax.jit(sequences.step_end_mask)
_JIT_RUNS = jax.jit(sequences.contiguous_runs)
_JIT_TO_STEPS = jax.jit(sequences.tokens_to_steps,
                        static_argnames=("num_steps", "reduce"))


_BASE_WIDTH = 8    # every example is right-padded to this width ...
_WIDE_WIDTH = 16   # ... and its widened copy to this one (one compile each).


@st.composite
def _batches(draw):
  length = draw(st.integers(1, _BASE_WIDTH))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  mask = rng.uniform(size=(2, length)) < 0.7
  x = rng.normal(size=(2, length)).astype(np.float32)
  gamma = rng.uniform(0.5, 1.0, size=(2, length)).astype(np.float32)
  step_ids = _step_ids(mask, 3, seed)
  inserts = sorted(draw(st.lists(st.integers(0, length), max_size=3)))
  return [x, gamma, step_ids], mask, inserts, rng


def _insert_masked(arrays, mask, positions, width, rng):
  """Inserts masked columns at `positions`, then right-pads to `width`.

  New columns hold junk values. Returns the widened arrays, the widened
  mask and the new column index of every original column.
  """
  length = mask.shape[1]
  columns = []
  for t in range(length + 1):
    columns += [None] * positions.count(t)
    if t < length:
      columns.append(t)
  columns += [None] * (width - len(columns))
  keep = np.array([i for i, t in enumerate(columns) if t is not None])
  widened = []
  for a in list(arrays) + [mask]:
    junk = np.zeros(a.shape[0], bool) if a is mask else (
        rng.normal(size=a.shape[0]) * 3).astype(a.dtype)
    widened.append(np.stack([junk if t is None else a[:, t]
                             for t in columns], axis=1))
  return widened[:-1], widened[-1], keep


@hypothesis.given(_batches())
def test_masked_columns_do_not_change_valid_outputs(batch):
  arrays, mask, inserts, rng = batch
  length = mask.shape[1]
  (x, gamma, step_ids), mask, _ = _insert_masked(arrays, mask, [],
                                                 _BASE_WIDTH, rng)
  (wx, wg, wids), wmask, keep = _insert_masked(arrays, mask[:, :length],
                                               inserts, _WIDE_WIDTH, rng)
  for d, wd in ((0.9, 0.9), (gamma, wg)):
    base = np.asarray(_JIT_RDC(x, mask, d))
    wide = np.asarray(_JIT_RDC(wx, wmask, wd))
    np.testing.assert_allclose(wide[:, keep], base[:, :length], **F32)
    np.testing.assert_allclose(
        base, ref_reverse_discounted_cumsum(x, mask, d), **F32)
    assert np.all(np.delete(wide, keep, axis=1) == 0.0)
  np.testing.assert_array_equal(
      np.asarray(_JIT_SUFFIX_MIN(wx, wmask))[:, keep],
      np.asarray(_JIT_SUFFIX_MIN(x, mask))[:, :length])
  np.testing.assert_array_equal(
      np.asarray(_JIT_END(wids, wmask))[:, keep],
      np.asarray(_JIT_END(step_ids, mask))[:, :length])
  for reduce in ("sum", "max"):
    np.testing.assert_allclose(
        _JIT_TO_STEPS(wx, wids, mask=wmask, num_steps=3, reduce=reduce),
        _JIT_TO_STEPS(x, step_ids, mask=mask, num_steps=3, reduce=reduce),
        **F32)


@hypothesis.given(_batches())
def test_right_padding_keeps_runs(batch):
  arrays, mask, _, rng = batch
  length = mask.shape[1]
  _, base_mask, _ = _insert_masked(arrays, mask, [], _BASE_WIDTH, rng)
  _, wide_mask, _ = _insert_masked(arrays, mask, [], _WIDE_WIDTH, rng)
  run_ids, num_runs = _JIT_RUNS(wide_mask)
  base_ids, base_runs = _JIT_RUNS(base_mask)
  np.testing.assert_array_equal(np.asarray(run_ids)[:, :length],
                                np.asarray(base_ids)[:, :length])
  np.testing.assert_array_equal(num_runs, base_runs)
  np.testing.assert_array_equal(base_ids, ref_contiguous_runs(base_mask)[0])



@pytest.mark.parametrize("shape", [(3, 1), (4, 37), (2, 700)])
def test_masked_cumsum_matches_loop(shape):
  rng = np.random.default_rng(shape[1] + 1)
  x = rng.normal(size=shape).astype(np.float32)
  mask = rng.random(shape) < 0.7
  x[~mask] = np.nan  # masked values are ignored, even NaN
  expected = np.zeros(shape)
  for b in range(shape[0]):
    running = 0.0
    for t in range(shape[1]):
      if mask[b, t]:
        running += float(x[b, t])
        expected[b, t] = running
  got = jax.jit(sequences.masked_cumsum)(x, mask)
  np.testing.assert_allclose(got, expected, **F32)


@pytest.mark.parametrize("shape", [(3, 1), (4, 37), (2, 700)])
def test_prefix_count_matches_loop(shape):
  flags = np.random.default_rng(shape[1]).random(shape) < 0.6
  expected = np.zeros(shape, np.int64)
  for b in range(shape[0]):
    running = 0
    for t in range(shape[1]):
      running += int(flags[b, t])
      expected[b, t] = running
  got = jax.jit(sequences.prefix_count)(flags)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, expected)
  with pytest.raises(ValueError, match="flags must have rank 2"):
    sequences.prefix_count(flags[0])

