"""Descriptive readings per arm (onset, level-matched values, finals), by
hand, and the report's statement of the verifiable-reward share."""

import math

import pytest

from experiments.ablation import pipeline
from experiments.ablation import readings
from experiments.ablation import reductions
from experiments.ablation import report
from experiments.ablation import spec


def _run(filler, accuracy, entropy=None):
  return {"train": [{"step": s, "samples_seen": 64 * s,
                     "task/filler_steps": f, "rollout/accuracy": a,
                     "rollout/entropy": (entropy or [None] * len(filler))[
                         s - 1]}
                    for s, (f, a) in enumerate(zip(filler, accuracy), 1)],
          "eval": []}


# Filler: start (mean of steps 1-2) 0.1; 2-step means 0.1, 0.25, 0.55,
# 0.9, 1.0 at steps 2..6: it rises by more than 0.5 at step 5.
RISING = _run([0.0, 0.2, 0.3, 0.8, 1.0, 1.0],
              [0.5, 0.5, 0.4, 0.2, 0.1, 0.1],
              entropy=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5])


def test_onset():
  assert reductions.onset(RISING, "task/filler_steps", margin=0.5,
                          window=2) == 5
  # Accuracy's 2-step means 0.5, 0.45, 0.3, 0.15, 0.1: down by > 0.3 at 5.
  assert reductions.onset(RISING, "rollout/accuracy", margin=0.3, window=2,
                          rising=False) == 5
  assert math.isnan(reductions.onset(RISING, "task/filler_steps",
                                     margin=2.0, window=2))
  assert math.isnan(reductions.onset(RISING, "task/filler_steps",
                                     margin=0.1, window=7))


def test_at_level_and_highest_level():
  # Accuracy's 2-step means 0.5, 0.5, 0.45, ...: 0.5 first at step 2,
  # where entropy's 2-step mean is 0.95.
  assert reductions.at_level(RISING, "rollout/entropy", "rollout/accuracy",
                             0.5, window=2) == pytest.approx(0.95)
  assert math.isnan(reductions.at_level(RISING, "rollout/entropy",
                                        "rollout/accuracy", 0.6, window=2))
  assert reductions.highest_level(RISING, "rollout/accuracy",
                                  window=2) == pytest.approx(0.5)


def test_compute_and_table_with_a_common_level():
  flat = _run([0.1] * 6, [0.2, 0.3, 0.4, 0.4, 0.3, 0.3],
              entropy=[2.0, 2.0, 2.0, 1.0, 1.0, 1.0])
  ablation = spec.load("ucas").get_ablation()
  ablation = spec.Ablation(**{**ablation.__dict__, "readings": (
      spec.Reading("hacking onset", "task/filler_steps", kind="onset",
                   margin=0.5, window=2),
      spec.Reading("entropy at matched accuracy", "rollout/entropy",
                   kind="at_level", window=2),
      spec.Reading("final filler", "task/filler_steps", tail=0.5))})
  results = {"grpo": {0: RISING, 1: flat}, "ucas": {0: flat}}
  onset, matched, final = readings.compute(ablation, results)
  assert onset["values"]["grpo"][0] == 5
  assert math.isnan(onset["values"]["grpo"][1])
  # Highest 2-step accuracy: 0.5 (RISING) and 0.4 (flat): every run
  # reaches 0.4; RISING at step 2 (entropy 0.95), flat at step 4 (1.5).
  assert matched["level"] == pytest.approx(0.4)
  assert matched["values"]["grpo"] == pytest.approx({0: 0.95, 1: 1.5})
  assert final["values"]["ucas"][0] == pytest.approx(0.1)
  text = "\n".join(readings.table(ablation, [onset, matched, final]))
  assert "| grpo | 5 (1/2) | 1.23 (2/2) | 0.517 (2/2) |" in text
  assert "first reaches 0.4" in text


@pytest.mark.parametrize("fields, match", [
    (dict(kind="peak"), "kind"),
    (dict(kind="onset", metric="eval/accuracy"), "training keys"),
    (dict(kind="onset", window=0), "window"),
    (dict(reduce="last_eval"), "reads eval records"),
])
def test_bad_readings_are_clear_errors(fields, match):
  with pytest.raises(ValueError, match=match):
    spec.Reading(**{"name": "r", "metric": "rollout/accuracy", **fields})


def test_the_report_states_the_verifiable_share():
  ablation = spec.load("pure").get_ablation()
  (line,) = report.verifiable_shares(ablation, "default")
  assert line.startswith("`pure_vr`: rl.verifiable_fraction = 0.125, so")
  assert "1 of 8 groups per step (12.5%)" in line


def test_readings_name_full_keys():
  for name in pipeline.NAMES:
    for reading in spec.load(name).get_ablation().readings:
      assert reading.metric.split("/")[0] in ("eval", "rollout", "task",
                                              "update"), (name, reading)
