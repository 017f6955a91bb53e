"""Paired statistics against independent references and published values."""

import itertools
import math

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest
from scipy import stats

from experiments.ablation import statistics


def _sign_flip_loop(d):
  """Reference: every sign pattern by its bits, one at a time."""
  n, observed, extreme = len(d), abs(sum(d)), 0
  for bits in range(2**n):
    total = sum(x if (bits >> i) & 1 else -x for i, x in enumerate(d))
    extreme += abs(total) >= observed - 1e-9
  return extreme / 2**n


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-50, 50), min_size=1, max_size=10))
def test_sign_flip_matches_an_explicit_enumeration(values):
  # Integer-valued differences make ties exact, so both count them alike.
  d = [v / 8 for v in values]
  assert statistics.sign_flip(d) == pytest.approx(_sign_flip_loop(d))


def test_sign_flip_known_values():
  # All differences of one sign: only the two uniform patterns are as
  # extreme, p = 2 / 2^n.
  assert statistics.sign_flip([0.1, 0.2, 0.3]) == 0.25
  assert statistics.sign_flip(np.linspace(0.1, 0.8, 8)) == 2 / 256
  # Balanced differences: every pattern is at least as extreme.
  assert statistics.sign_flip([1.0, -1.0, 1.0, -1.0]) == 1.0
  # [3, 1, 1]: |sum| 5 reached by ±(3+1+1) only; 3 by ±(3+1−1), ±(3−1+1).
  assert statistics.sign_flip([3.0, 1.0, 1.0]) == 2 / 8
  assert statistics.sign_flip([3.0, 1.0, -1.0]) == 6 / 8
  with pytest.raises(ValueError, match="at most 20"):
    statistics.sign_flip(np.ones(21))
  with pytest.raises(ValueError, match="finite"):
    statistics.sign_flip([1.0, math.nan])


def test_t_test_and_interval_match_scipy_and_the_formula():
  rng = np.random.default_rng(0)
  d = rng.normal(0.02, 0.03, size=8)
  assert statistics.t_test(d) == pytest.approx(
      stats.ttest_1samp(d, 0.0).pvalue, rel=1e-10)
  mean, low, high = statistics.t_interval(d, alpha=0.1)
  half = stats.t.ppf(0.95, 7) * np.std(d, ddof=1) / math.sqrt(8)
  assert (low, high) == pytest.approx((d.mean() - half, d.mean() + half))
  assert mean == pytest.approx(d.mean())
  assert math.isnan(statistics.t_test([0.1, 0.1, 0.1]))  # no spread
  assert math.isnan(statistics.t_interval([0.3])[1])


def _holm_reference(p, alpha):
  """Reference: Holm's sequential rejection at level alpha."""
  order = sorted(range(len(p)), key=lambda i: p[i])
  rejected = set()
  for rank, i in enumerate(order):
    if p[i] > alpha / (len(p) - rank):
      break
    rejected.add(i)
  return rejected


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
       st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_adjusted_p_rejects_what_the_sequential_rule_rejects(p, alpha):
  adjusted = statistics.holm(p)
  got = {i for i, q in enumerate(adjusted) if q <= alpha}
  # Adjusted values within rounding of alpha may fall either way.
  near = {i for i, q in enumerate(adjusted) if abs(q - alpha) < 1e-12}
  assert got - near == _holm_reference(p, alpha) - near


def test_holm_known_values_and_missing_p():
  np.testing.assert_allclose(statistics.holm([0.01, 0.04, 0.03, 0.005]),
                             [0.03, 0.06, 0.06, 0.02])
  # A claim without data counts in the family but stays NaN.
  adjusted = statistics.holm([0.01, math.nan, 0.02])
  np.testing.assert_allclose(adjusted[[0, 2]], [0.03, 0.04])
  assert math.isnan(adjusted[1])
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    statistics.holm([1.5])


def test_power_matches_published_values():
  # G*Power 3.1, "t tests - Means: difference from constant (one sample
  # case)", two tails, alpha 0.05: effect 0.5 needs n = 34 (actual power
  # 0.8077775), effect 0.8 needs n = 15 (actual power 0.8213105).
  assert statistics.power(0.5, 1.0, 34) == pytest.approx(0.8077775, abs=1e-6)
  assert statistics.power(0.8, 1.0, 15) == pytest.approx(0.8213105, abs=1e-6)
  assert statistics.power(0.5, 1.0, 33) < 0.8
  # Power at no effect is the level.
  assert statistics.power(0.0, 1.0, 8) == pytest.approx(0.05)


def test_min_detectable_effect_inverts_power_and_scales_with_sd():
  mde = statistics.min_detectable_effect(1.0, 34)
  assert mde < 0.5 < statistics.min_detectable_effect(1.0, 33)
  assert statistics.power(mde, 1.0, 34) == pytest.approx(0.8, abs=1e-8)
  assert statistics.min_detectable_effect(0.02, 8) == pytest.approx(
      0.02 * statistics.min_detectable_effect(1.0, 8))
  # The textbook shortcut (t_{1-a/2} + t_{power}) sd / sqrt(n) is close
  # from 8 pairs on.
  for n in (8, 16):
    shortcut = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) / (
        math.sqrt(n))
    assert statistics.min_detectable_effect(1.0, n) == pytest.approx(
        shortcut, rel=0.01)
  assert statistics.min_detectable_effect(0.0, 8) == 0.0
  assert math.isnan(statistics.min_detectable_effect(0.1, 1))


def test_min_detectable_effect_has_its_power_by_simulation():
  # Paired normal differences whose mean is the MDE are detected by
  # scipy's t-test in 80% of 20000 simulated 8-seed experiments.
  rng = np.random.default_rng(1)
  sd, n = 0.03, 8
  mde = statistics.min_detectable_effect(sd, n, alpha=0.0125)
  d = rng.normal(mde, sd, size=(20000, n))
  rejected = stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.0125
  assert rejected.mean() == pytest.approx(0.8, abs=0.015)


@pytest.mark.parametrize("args, verdict", [
    ((0.1, 0.01, 0.03, 0.05, 0.05, 8, 0.1), "reproduced"),
    ((-0.1, 0.01, 0.03, 0.05, 0.05, 8, 0.1), "not reproduced"),
    ((0.01, 0.4, 0.09, 0.05, 0.05, 8, 0.1), "underpowered"),
    ((0.01, 0.4, 0.03, 0.05, 0.05, 8, 0.1), "inconclusive"),
    ((0.1, 0.001, 0.03, 0.05, 0.05, 2, 0.1), "inconclusive"),
    ((0.1, 1.0, 0.0, 0.05, 0.05, 8, 0.0), "inconclusive"),
])
def test_decide(args, verdict):
  assert statistics.decide(*args)[0] == verdict
