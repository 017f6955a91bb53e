"""Verdicts of an ablation's claims from its runs' records.

For each claim: every seed's reduced metric in both arms, the paired
differences (signed so that > 0 is the paper's direction; a versus_start
claim pairs each run with its own start), their
(1 − α) t-interval, the paired t and exact sign-flip p-values, the p-value
the ablation's test names adjusted by its correction over the primary
claims (secondary claims are exploratory: unadjusted), the minimum
detectable effect at the ablation's power, and the verdict
(`statistics.decide`). A non-inferiority claim is tested on d + margin.

The MDE of a primary claim under Holm is computed at α/m (m primary
claims), the level of Holm's first step, so it bounds the MDE of every step.

Robustness: the whole family is judged again under each other reduction
of `reductions.ROBUSTNESS` (the metric's counterpart where the records
differ). Each gives "reproduced", "not reproduced", "no effect" (not
significant) or "n/a" (no such metric); the claim is robust when each
available one agrees with its own verdict (underpowered and inconclusive
count as "no effect"). A samples-to-target claim is judged under the level
reductions with "higher is better".
"""

import dataclasses
import math

import numpy as np

from experiments.ablation import reductions
from experiments.ablation import statistics

__all__ = [
    "judge",
]


def _analyse(ablation, claim, results: dict, how: str | None) -> dict | None:
  """Paired values, differences, interval and p-values of one claim under
  reduction `how` (None: its own); None when the metric has no
  counterpart for `how`."""
  if how is None or how == claim.reduce:
    key, how, better = claim.metric, claim.reduce, claim.better
  else:
    key = reductions.counterpart(claim.metric, how)
    better = ("higher" if claim.reduce == "samples_to_target"
              else claim.better)
  if key is None:
    return None
  runs = results.get(claim.arm, {})
  a = {seed: reductions.reduce(run, key, how, **claim.reduce_kwargs())
       for seed, run in runs.items()}
  if claim.versus_start:
    b = {seed: reductions.start(run, key, tail=claim.tail)
         for seed, run in runs.items()}
  else:
    b = {seed: reductions.reduce(run, key, how, **claim.reduce_kwargs())
         for seed, run in results.get(claim.baseline, {}).items()}
  seeds = sorted(s for s in set(a) & set(b)
                 if math.isfinite(a[s]) and math.isfinite(b[s]))
  sign = 1.0 if better == "higher" else -1.0
  d = np.asarray([sign * (a[s] - b[s]) for s in seeds], np.float64)
  same_units = how == claim.reduce or claim.reduce != "samples_to_target"
  shift = (claim.smallest_effect
           if claim.kind == "non_inferiority" and same_units else 0.0)
  mean, low, high = statistics.t_interval(d, ablation.alpha)
  return {"metric": key, "reduce": how, "values": {"arm": a, "baseline": b},
          "seeds": seeds,
          "differences": d, "shift": shift, "mean": mean, "low": low,
          "high": high, "sd": float(d.std(ddof=1)) if d.size > 1 else math.nan,
          "p_t": statistics.t_test(d + shift),
          "p_sign_flip": statistics.sign_flip(d + shift)}


def _family(ablation, results: dict, how: str | None) -> list[dict | None]:
  """Every claim analysed under `how`, with its adjusted p, MDE and
  verdict."""
  analysed = [_analyse(ablation, c, results, how) for c in ablation.claims]
  primary = [i for i, c in enumerate(ablation.claims) if c.primary]
  test = "p_t" if ablation.test == "t" else "p_sign_flip"
  raw = [math.nan if a is None else a[test] for a in analysed]
  adjusted = list(raw)
  level = {i: ablation.alpha for i in range(len(raw))}
  if ablation.correction == "holm" and primary:
    for i, p in zip(primary, statistics.holm([raw[i] for i in primary])):
      adjusted[i] = p
      level[i] = ablation.alpha / len(primary)
  for i, (claim, a) in enumerate(zip(ablation.claims, analysed)):
    if a is None:
      continue
    d = a["differences"] + a["shift"]
    mde = statistics.min_detectable_effect(a["sd"], d.size, level[i],
                                           ablation.power)
    p = adjusted[i] if math.isfinite(adjusted[i]) else 1.0
    verdict, reason = statistics.decide(
        float(d.mean()) if d.size else math.nan, p, mde,
        claim.smallest_effect, ablation.alpha, d.size,
        float(np.ptp(d)) if d.size else 0.0)
    a.update(p_adjusted=adjusted[i], alpha_for_power=level[i], mde=mde,
             verdict=verdict, reason=reason)
  return analysed


def _outcome(analysed: dict | None) -> str:
  if analysed is None or not analysed["seeds"]:
    return "n/a"
  if analysed["verdict"] in ("reproduced", "not reproduced"):
    return analysed["verdict"]
  return "no effect"


def judge(ablation, results: dict, warm_seed) -> list[dict]:
  """The judged claims, JSON-ready, in the ablation's order.

  Args:
    ablation: the `spec.Ablation`.
    results: {arm: {seed: {"train": records, "eval": records}}}.
    warm_seed: seed -> the warm start it started from.
  """
  main = _family(ablation, results, None)
  others = {how: _family(ablation, results, how)
            for how in reductions.ROBUSTNESS}
  judged = []
  for index, (claim, a) in enumerate(zip(ablation.claims, main)):
    own = _outcome(a)
    robustness = {how: _outcome(family[index])
                  for how, family in others.items() if how != claim.reduce}
    available = [o for o in robustness.values() if o != "n/a"]
    by_warm = {}
    for seed, d in zip(a["seeds"], a["differences"]):
      by_warm.setdefault(warm_seed(seed), []).append(d)
    judged.append({
        **dataclasses.asdict(claim),
        "values": {side: {str(s): v for s, v in per.items()}
                   for side, per in a["values"].items()},
        "differences": dict(zip(map(str, a["seeds"]),
                                a["differences"].tolist())),
        "n": len(a["seeds"]),
        **{k: a[k] for k in ("mean", "low", "high", "sd", "p_t",
                             "p_sign_flip", "p_adjusted", "alpha_for_power",
                             "mde", "verdict", "reason")},
        "exploratory": not claim.primary,
        "robustness": robustness, "robustness_own": own,
        "robust": (all(o == own for o in available) if available and
                   own != "n/a" else None),
        "by_warm_start": {str(w): float(np.mean(v))
                          for w, v in sorted(by_warm.items())},
    })
  return judged
