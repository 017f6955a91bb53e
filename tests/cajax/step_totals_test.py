"""The scatter-free step search agrees with the scatter form and a loop;
the order check agrees with a loop."""

import functools
import re

import hypothesis
from hypothesis import strategies as st
import jax
from jax.experimental import checkify
import numpy as np
import pytest

from cajax import agentic
from cajax import process
from cajax import sequences
from cajax import step_totals

_B, _T, _S = 3, 45, 9  # T is not a multiple of the chunk (8 for T = 45).


@st.composite
def _layouts(draw):
  """Ordered steps with empty steps, padding, interior masked tokens, junk
  ids on masked tokens and tokens outside any step; S ≥ the steps used."""
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, _T + 1, size=_B)
  mask = np.arange(_T)[None, :] < lengths[:, None]
  mask &= rng.random((_B, _T)) < draw(st.floats(0.3, 1.0))
  used = draw(st.integers(1, _S))  # steps actually used: may be < S
  ids = np.sort(rng.integers(0, used, size=(_B, _T)), axis=1)
  outside = rng.random((_B, _T)) < 0.1  # tokens outside any step: id -1
  ids = np.where(outside, -1, ids)
  junk = rng.integers(-3, 3 * _S, size=(_B, _T))
  ids = np.where(mask, ids, junk).astype(np.int32)  # padding ids are junk
  values = rng.normal(size=(2, _B, _T)).astype(np.float32)
  return ids, mask, values


def _ref(ids, mask, values):
  """Loop reference: count, last position, sum and max per (row, step)."""
  count = np.zeros((_B, _S), np.int64)
  last = np.full((_B, _S), -1)
  total = np.zeros((_B, _S))
  peak = np.full((_B, _S), -np.inf)
  for b in range(_B):
    for t in range(_T):
      k = ids[b, t]
      if mask[b, t] and 0 <= k < _S:
        count[b, k] += 1
        last[b, k] = t
        total[b, k] += values[0, b, t]
        peak[b, k] = max(peak[b, k], values[1, b, t])
  return count, last, total, peak


def _run(fn):
  def run(ids, mask, values):
    kept = mask & (ids >= 0) & (ids < _S)
    return fn(ids, kept, _S, sums=(values[0],), maxima=(values[1],))
  return jax.jit(run)


_SEARCH = _run(step_totals.step_totals)
_SCATTER = _run(step_totals.scatter_totals)


@hypothesis.given(_layouts())
def test_search_matches_scatter_and_loop(layout):
  ids, mask, values = layout
  count, last, total, peak = _ref(ids, mask, values)
  for out in (_SEARCH(ids, mask, values), _SCATTER(ids, mask, values)):
    np.testing.assert_array_equal(out.count, count)
    np.testing.assert_array_equal(out.last, last)
    np.testing.assert_allclose(out.sums[0], total, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.maxima[0], peak.astype(np.float32))


_TO_STEPS = jax.jit(sequences.tokens_to_steps,
                    static_argnames=("num_steps", "reduce", "ordered"))


@hypothesis.given(_layouts())
def test_tokens_to_steps_ordered_matches_unordered(layout):
  ids, mask, values = layout
  for reduce in ("sum", "mean", "max", "min"):
    args = dict(mask=mask, num_steps=_S, reduce=reduce)
    np.testing.assert_allclose(
        _TO_STEPS(values[0], ids, ordered=True, **args),
        _TO_STEPS(values[0], ids, ordered=False, **args), rtol=1e-5,
        atol=1e-5)


@hypothesis.given(_layouts())
def test_step_ends_and_counts(layout):
  ids, mask, values = layout
  step_mask = values[1][:, :_S] > -0.5
  steps = jax.jit(process._prepare_steps)(values[0][:, :_S], step_mask, ids,
                                          mask)
  count, last, _, _ = _ref(ids, mask, values)
  valid = step_mask & (count > 0)
  want_ends = np.zeros((_B, _T), bool)
  for b, k in zip(*np.nonzero(valid)):
    want_ends[b, last[b, k]] = True
  np.testing.assert_array_equal(steps.valid, valid)
  np.testing.assert_array_equal(steps.counts, count)
  np.testing.assert_array_equal(steps.ends, want_ends)


@pytest.mark.parametrize("length,num_steps,expected", [
    (4096, 16, True), (32768, 16, True), (4096, 4096, False),
    (1, 1, False), (64, 2, True), (45, 2, True), (45, 3, False)])
def test_fits(length, num_steps, expected):
  assert step_totals.fits(length, num_steps) == expected


@hypothesis.given(_layouts(), st.integers(1, 4))
def test_turn_rewards_search_matches_a_loop(layout, num_turns):
  """Turns (runs of mask) found by the search when few fit (K ≤ 2 here), by
  the scatter otherwise (K = 3, 4 and the default ⌈T/2⌉); turns past K are
  dropped."""
  _, mask, values = layout
  want = np.zeros((_B, (_T + 1) // 2))
  count = np.zeros(_B, int)
  for b in range(_B):
    for t in range(_T):
      if mask[b, t] and (t == 0 or not mask[b, t - 1]):
        count[b] += 1
      if mask[b, t] and (t + 1 == _T or not mask[b, t + 1]):
        want[b, count[b] - 1] = values[0, b, t]
  for k in (num_turns, None):
    got, valid, _ = jax.jit(functools.partial(
        agentic.turn_rewards, num_turns=k))(values[0], mask)
    k = got.shape[1]
    np.testing.assert_allclose(got, want[:, :k], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(valid, np.arange(k)[None] < count[:, None])


def _decreasing_rows(ids, kept):
  """Loop reference: rows where a kept id is below an earlier kept id."""
  rows = []
  for b in range(ids.shape[0]):
    highest = -1
    for t in range(ids.shape[1]):
      if kept[b, t]:
        if ids[b, t] < highest:
          rows.append(b)
          break
        highest = max(highest, ids[b, t])
  return rows


@hypothesis.given(_layouts(), st.integers(0, 2**31 - 1), st.booleans())
def test_check_order_matches_a_loop(layout, seed, shuffle):
  ids, mask, _ = layout
  if shuffle:  # swap the ids of two tokens of one row: often a decrease
    rng = np.random.default_rng(seed)
    row = rng.integers(_B)
    a, b = rng.integers(_T, size=2)
    ids = ids.copy()
    ids[row, [a, b]] = ids[row, [b, a]]
  kept = mask & (ids >= 0) & (ids < _S)
  rows = _decreasing_rows(ids, kept)
  checked = jax.jit(checkify.checkify(step_totals.check_order))
  error, _ = checked(ids, kept)
  if not rows:
    step_totals.check_order(ids, kept)
    error.throw()
    return
  with pytest.raises(ValueError, match=rf"step_ids must not decrease.*rows "
                     rf"{re.escape(str(rows))} decrease"):
    step_totals.check_order(ids, kept)
  with pytest.raises(checkify.JaxRuntimeError,
                     match=rf"row {rows[0]} decreases"):
    error.throw()


def test_check_order_allows_gaps_inside_a_step():
  # Masked tokens and tokens outside any step (-1) may sit inside a step;
  # only the kept tokens' ids are read.
  ids = np.array([[0, -1, 0, 1, 7, 1, 2]])
  mask = np.array([[1, 1, 1, 1, 0, 1, 1]], bool)
  step_totals.check_order(ids, mask & (ids >= 0))
  with pytest.raises(ValueError, match=r"rows \[0\] decrease"):
    step_totals.check_order(ids, np.ones_like(mask) & (ids >= 0))
