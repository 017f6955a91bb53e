"""Paired statistics of an ablation claim: interval, tests, power, verdict.

Each seed s gives one paired difference d_s = m(arm) − m(baseline), signed
so that d > 0 is the paper's direction (and, for a non-inferiority claim,
shifted by its margin: d_s + margin > 0 means "not worse by the margin").

* `t_interval`: mean(d) ± t(1 − α/2, n − 1) · sd(d)/√n.
* `t_test`: the two-sided paired t-test p-value of mean(d) = 0.
* `sign_flip`: the exact two-sided sign-flip (randomisation) p-value: every
  one of the 2ⁿ sign patterns is enumerated, and p is the share whose
  |Σ ± d_s| is at least the observed |Σ d_s|. Valid without normality; its
  smallest value is 2/2ⁿ (0.25 with 3 seeds, 0.0078 with 8).
* `holm`: Holm's step-down adjustment of a family's p-values.
* `power` / `min_detectable_effect`: power of the two-sided paired t-test
  from the noncentral t distribution (exact for normal differences whose
  spread is the observed one), and the smallest true mean difference that
  it detects with the given power. The common shortcut
  (t(1 − α/2, n − 1) + t(power, n − 1)) · sd/√n is within a few percent of
  it for n ≥ 5 and is not used. References: Colas, Sigaud and Oudeyer,
  "How Many Random Seeds?" (arXiv 1806.08295) for power analysis of RL
  seeds; Holm (1979), "A simple sequentially rejective multiple test
  procedure".
* `decide`: the verdict rule (docs/ablations.md, "The verdict rule").
"""

import itertools
import math

import numpy as np
from scipy import optimize
from scipy import stats

__all__ = [
    "MAX_SIGN_FLIP_SEEDS", "MIN_SEEDS", "VERDICTS", "decide", "holm",
    "min_detectable_effect", "power", "sign_flip", "t_interval", "t_test",
]

# Fewer seeds never decide: two seeds can agree by chance.
MIN_SEEDS = 3
VERDICTS = ("reproduced", "not reproduced", "underpowered", "inconclusive")
# Exact enumeration of 2ⁿ patterns: 2²⁰ ≈ 10⁶ sums at most.
MAX_SIGN_FLIP_SEEDS = 20


def _differences(d) -> np.ndarray:
  d = np.asarray(d, np.float64)
  if d.ndim != 1:
    raise ValueError(f"differences must be 1-D, got shape {d.shape}.")
  if not np.all(np.isfinite(d)):
    raise ValueError(f"differences must be finite, got {d.tolist()}.")
  return d


def _check_level(value: float, name: str) -> float:
  if not 0.0 < value < 1.0:
    raise ValueError(f"{name} must be in (0, 1), got {value!r}.")
  return float(value)


def t_interval(d, alpha: float = 0.05) -> tuple[float, float, float]:
  """(mean, low, high): the two-sided (1 − alpha) t-interval of mean(d);
  low and high are NaN with fewer than 2 values."""
  d = _differences(d)
  _check_level(alpha, "alpha")
  if d.size < 2:
    mean = float(d.mean()) if d.size else math.nan
    return mean, math.nan, math.nan
  half = (stats.t.ppf(1 - alpha / 2, d.size - 1) * d.std(ddof=1)
          / math.sqrt(d.size))
  return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def t_test(d) -> float:
  """Two-sided paired t-test p-value of mean(d) = 0; NaN with fewer than
  2 values or no spread (the statistic is undefined)."""
  d = _differences(d)
  if d.size < 2 or np.ptp(d) == 0:
    return math.nan
  t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
  return float(2 * stats.t.sf(abs(t), d.size - 1))


def sign_flip(d) -> float:
  """Exact two-sided sign-flip p-value of mean(d) = 0 (all 2ⁿ patterns)."""
  d = _differences(d)
  if d.size == 0:
    return math.nan
  if d.size > MAX_SIGN_FLIP_SEEDS:
    raise ValueError(f"sign_flip enumerates 2^n patterns; n must be at most "
                     f"{MAX_SIGN_FLIP_SEEDS}, got {d.size}.")
  signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
  sums = np.abs(signs @ d)
  observed = abs(d.sum())
  # Sums equal to the observed one up to rounding count as extreme.
  tolerance = 1e-9 * max(np.abs(d).sum(), 1e-300)
  return float(np.mean(sums >= observed - tolerance))


def holm(p_values) -> np.ndarray:
  """Holm-adjusted p-values of one family, in the input order.

  The k-th smallest of m p-values is multiplied by m − k + 1, and the
  adjusted values are made non-decreasing in that order (capped at 1). A
  NaN p-value (a claim without data) still counts in m, sorts last and
  stays NaN.
  """
  p = np.asarray(p_values, np.float64)
  if p.ndim != 1:
    raise ValueError(f"p_values must be 1-D, got shape {p.shape}.")
  finite = p[np.isfinite(p)]
  if np.any((finite < 0) | (finite > 1)):
    raise ValueError(f"p_values must lie in [0, 1], got {p.tolist()}.")
  m = p.size
  order = np.argsort(np.where(np.isfinite(p), p, np.inf), kind="stable")
  adjusted = np.full(m, math.nan)
  running = 0.0
  for rank, index in enumerate(order):
    if not np.isfinite(p[index]):
      continue
    running = max(running, min(1.0, (m - rank) * p[index]))
    adjusted[index] = running
  return adjusted


def power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
  """Power of the two-sided paired t-test at level alpha with n pairs when
  the true mean difference is `effect` and its spread `sd` (noncentral t,
  both rejection tails)."""
  _check_level(alpha, "alpha")
  if n < 2:
    raise ValueError(f"n must be at least 2, got {n}.")
  if not sd > 0:
    raise ValueError(f"sd must be > 0, got {sd!r}.")
  df = n - 1
  critical = stats.t.ppf(1 - alpha / 2, df)
  shift = abs(effect) * math.sqrt(n) / sd  # power is symmetric in the sign
  # The far tail underflows to NaN in scipy for large shifts: it is ~0.
  far = stats.nct.cdf(-critical, df, shift)
  return float(stats.nct.sf(critical, df, shift)
               + (far if np.isfinite(far) else 0.0))


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05,
                          target_power: float = 0.8) -> float:
  """The smallest true mean difference the paired t-test detects with
  `target_power` (see `power`); NaN with fewer than 2 pairs, 0 without
  spread."""
  _check_level(target_power, "target_power")
  _check_level(alpha, "alpha")
  if n < 2 or not np.isfinite(sd):
    return math.nan
  if sd == 0 or target_power <= alpha:  # power(0) is alpha already
    return 0.0
  high = sd
  while power(high, sd, n, alpha) < target_power:
    high *= 2
  return float(optimize.brentq(
      lambda e: power(e, sd, n, alpha) - target_power, 0.0, high,
      xtol=1e-12 * sd, rtol=1e-10))


def decide(mean: float, p_adjusted: float, mde: float,
           smallest_effect: float, alpha: float, n: int,
           spread: float) -> tuple[str, str]:
  """(verdict, reason) of one claim from its direction-signed,
  margin-shifted differences' mean and spread, its adjusted p-value and its
  MDE.

  Fewer than MIN_SEEDS seeds, or no spread, are inconclusive; an adjusted
  p below alpha is "reproduced" (mean > 0) or "not reproduced" (mean < 0);
  otherwise "underpowered" when the MDE exceeds the smallest effect of
  interest, else "inconclusive".
  """
  if n < MIN_SEEDS:
    return "inconclusive", f"{n} seed(s); at least {MIN_SEEDS} decide"
  if spread == 0:
    return "inconclusive", "the same difference in every seed (no spread)"
  if p_adjusted < alpha:
    if mean > 0:
      return "reproduced", f"p = {p_adjusted:.2g} < {alpha:g}"
    return "not reproduced", (f"p = {p_adjusted:.2g} < {alpha:g}, opposite "
                              "direction")
  if mde > smallest_effect:
    return "underpowered", (f"MDE {mde:.3g} > smallest effect "
                            f"{smallest_effect:.3g}")
  return "inconclusive", (f"p = {p_adjusted:.2g} ≥ {alpha:g} at MDE "
                          f"{mde:.3g} ≤ {smallest_effect:.3g}")
