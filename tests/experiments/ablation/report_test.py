"""Verdicts, robustness and the report on synthetic runs (no training)."""

import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from experiments.ablation import cost
from experiments.ablation import report
from experiments.ablation import spec
from experiments.ablation import verdicts

SEEDS = range(8)
STEPS = 40
# A shared per-seed level (an initial policy's skill) and per-arm noise.
_SEED = 0.01 * np.arange(8)
_JITTER = np.array([0.01, -0.01, 0.02, 0.0, 0.01, -0.02, 0.015, -0.005])
LEVELS = {
    "b": 0.5 + _SEED,
    "a": 0.6 + _SEED + _JITTER,                         # b + 0.1
    "c": 0.5 + _SEED + 0.05 * np.array([1, -1] * 4) + 0.003,  # noisy
    "z": 0.5 + _SEED + 0.2 * _JITTER,                   # b, nearly
    "y": 0.62 + _SEED + _JITTER,                        # b + 0.12 in training
}
_START = 0.3  # every run's first quarter of steps and first evaluation


def _run(arm, seed):
  level = LEVELS[arm][seed]
  train = [{"step": s, "samples_seen": 64 * s,
            "rollout/accuracy": _START if s <= STEPS // 4 else level}
           for s in range(1, STEPS + 1)]
  # Arm y's gain shows in training only: its evaluations are b's.
  evaluated = LEVELS["b" if arm == "y" else arm][seed]
  evals = [{"step": s, "samples_seen": 64 * s,
            "eval/accuracy": _START if s == 0 else evaluated}
           for s in (0, STEPS // 2, STEPS)]
  return {"train": train, "eval": evals}


RESULTS = {arm: {s: _run(arm, s) for s in SEEDS} for arm in LEVELS}


def _ablation(*claims, **kwargs):
  timing = cost.Timing(rl_step=0.1, evaluation=0.1, warm_start_step=0.1)
  return spec.Ablation(
      name="synthetic", description="Synthetic runs.",
      arms={arm: {} for arm in LEVELS},
      sizes={"default": spec.Size({}, seeds=8, warm_starts=3, timing=timing),
             "smoke": spec.SMOKE},
      claims=tuple(claims), **kwargs)


CLAIMS = (
    spec.Claim("a beats b", "big", "a", "b"),
    spec.Claim("b beats a", "wrong way", "b", "a"),
    spec.Claim("c beats b", "noisy", "c", "b", smallest_effect=0.01),
    spec.Claim("z beats b", "null", "z", "b"),
    spec.Claim("z at least b", "same", "z", "b", kind="non_inferiority"),
    spec.Claim("a rises", "within arm", "a", "a", versus_start=True),
    spec.Claim("y beats b", "training only", "y", "b", primary=False),
)


@pytest.fixture(scope="module")
def judged():
  return verdicts.judge(_ablation(*CLAIMS), RESULTS, lambda s: s % 3)


def test_verdicts(judged):
  got = {c["name"]: c["verdict"] for c in judged}
  assert got == {"a beats b": "reproduced", "b beats a": "not reproduced",
                 "c beats b": "underpowered", "z beats b": "inconclusive",
                 "z at least b": "reproduced", "a rises": "reproduced",
                 "y beats b": "reproduced"}


def test_differences_p_values_and_holm_by_hand(judged):
  d_ab = LEVELS["a"] - LEVELS["b"]
  first = judged[0]
  assert [first["differences"][str(s)] for s in SEEDS] == pytest.approx(d_ab)
  assert first["values"]["arm"]["3"] == pytest.approx(LEVELS["a"][3])
  # Raw paired t p-values of the six primary claims, Holm by hand.
  diffs = [d_ab, -d_ab, LEVELS["c"] - LEVELS["b"], LEVELS["z"] - LEVELS["b"],
           LEVELS["z"] - LEVELS["b"] + 0.05, LEVELS["a"] - _START]
  raw = np.array([stats.ttest_1samp(d, 0.0).pvalue for d in diffs])
  order = np.argsort(raw)
  want = np.empty(6)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (6 - rank) * raw[i]))
    want[i] = running
  assert [c["p_adjusted"] for c in judged[:6]] == pytest.approx(want)
  assert [c["p_t"] for c in judged[:6]] == pytest.approx(raw)
  # The secondary claim is exploratory: its p is not adjusted.
  assert judged[6]["exploratory"]
  assert judged[6]["p_adjusted"] == judged[6]["p_t"]
  # The MDE of primary claims is at alpha / 6.
  assert first["alpha_for_power"] == pytest.approx(0.05 / 6)
  # 8 seeds of one sign: the sign-flip p is 2 / 2^8.
  assert first["p_sign_flip"] == pytest.approx(2 / 256)


def test_robustness_and_initial_policies(judged):
  by_name = {c["name"]: c for c in judged}
  assert by_name["a beats b"]["robustness"] == {
      "last_eval": "reproduced", "eval_auc": "reproduced"}
  assert by_name["a beats b"]["robust"] is True
  # y's gain is in its training batches only: the evaluations disagree.
  assert by_name["y beats b"]["robustness"]["last_eval"] == "no effect"
  assert by_name["y beats b"]["robust"] is False
  d_ab = LEVELS["a"] - LEVELS["b"]
  assert by_name["a beats b"]["by_warm_start"] == pytest.approx(
      {str(w): d_ab[w::3].mean() for w in range(3)})


def test_test_and_correction_are_pre_registered_choices():
  sign_flip = verdicts.judge(_ablation(*CLAIMS[:2], test="sign_flip",
                                       correction="none"),
                             RESULTS, lambda s: 0)
  assert sign_flip[0]["p_adjusted"] == pytest.approx(2 / 256)
  assert sign_flip[0]["alpha_for_power"] == 0.05


def test_missing_runs_and_metrics_are_inconclusive():
  ablation = _ablation(spec.Claim("a beats b", "big", "a", "b",
                                  metric="rollout/entropy"))
  (claim,) = verdicts.judge(ablation, RESULTS, lambda s: 0)
  assert claim["n"] == 0 and claim["verdict"] == "inconclusive"
  few = {arm: {s: RESULTS[arm][s] for s in range(2)} for arm in ("a", "b")}
  (claim,) = verdicts.judge(_ablation(CLAIMS[0]), few, lambda s: 0)
  assert claim["verdict"] == "inconclusive" and "2 seed" in claim["reason"]


def test_report_links_every_row_to_its_panel(tmp_path, judged):
  ablation = _ablation(*CLAIMS, plot_metrics=("eval/accuracy",))
  images = report.plot(ablation, RESULTS, judged, str(tmp_path))
  assert images[-1] == "synthetic_curves.png"
  for name in images:
    assert os.path.getsize(tmp_path / name) > 1000
  registration = {"hash": "f" * 64, "commit": "abc", "registered_at": "now",
                  "plan": {}}
  environment = {"cpu": "Test CPU", "cores": 2, "jax": "1", "jaxlib": "1",
                 "backend": "cpu", "xla_flags": "--x"}
  measured = {"core_seconds": dict.fromkeys(cost.PARTS, 1.0),
              "total_core_seconds": 6.0, "dominant": "sampling",
              "counts": {}}
  report.write(ablation, RESULTS, judged, str(tmp_path), size="default",
               seeds=8, command="test", registration=registration,
               environment=environment, measured=measured, images=images)
  text = (tmp_path / "report.md").read_text()
  for number, claim in enumerate(judged, 1):
    row = next(line for line in text.splitlines()
               if line.startswith(f"| [{number}"))
    assert f"(#claim-{number})" in row and claim["verdict"] in row
    assert f'<a id="claim-{number}"></a>' in text
    assert f"![claim {number}](synthetic_claim{number}.png)" in text
  assert "| [7*](#claim-7)" in text  # the exploratory claim
  assert "no: last_eval no effect" in text  # y's robustness column
  assert "Test CPU" in text and "`ffffffffffff`" in text
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["preregistration"]["hash"] == "f" * 64
  assert [c["verdict"] for c in saved["claims"]] == [
      c["verdict"] for c in judged]
  assert not any(math.isnan(c["mean"]) for c in saved["claims"])
