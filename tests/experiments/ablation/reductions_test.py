"""Reductions of a run's curves, by hand."""

import math

import pytest

from experiments.ablation import reductions

RUN = {
    "train": [{"samples_seen": 64 * s, "rollout/accuracy": a,
               "task/filler_steps": 0.1 * s}
              for s, a in enumerate((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                                    1)],
    "eval": [{"samples_seen": 0, "eval/accuracy": 0.2},
             {"samples_seen": 128, "eval/accuracy": 0.4},
             {"samples_seen": 512, "eval/accuracy": None},
             {"samples_seen": 512, "eval/accuracy": 0.6}],
}


def test_train_tail_last_eval_and_auc():
  # The last 25% of 8 steps: 0.7 and 0.8.
  assert reductions.reduce(RUN, "rollout/accuracy", "train_tail") == (
      pytest.approx(0.75))
  assert reductions.reduce(RUN, "rollout/accuracy", "train_tail",
                           tail=0.1) == pytest.approx(0.8)
  assert reductions.reduce(RUN, "eval/accuracy", "last_eval") == 0.6
  # Trapezoids: (0.2+0.4)/2*128 + (0.4+0.6)/2*384 over 512 samples.
  assert reductions.reduce(RUN, "eval/accuracy", "eval_auc") == (
      pytest.approx((0.3 * 128 + 0.5 * 384) / 512))
  assert math.isnan(reductions.reduce(RUN, "eval/entropy", "last_eval"))


def test_samples_to_target_windows_and_censoring():
  assert reductions.reduce(RUN, "rollout/accuracy", "samples_to_target",
                           target=0.5) == 64 * 5
  # The trailing mean of 3 steps is 0.4 at step 5 and 0.5 at step 6.
  assert reductions.reduce(RUN, "rollout/accuracy", "samples_to_target",
                           target=0.45, window=3) == 64 * 6
  assert reductions.reduce(RUN, "rollout/accuracy", "samples_to_target",
                           target=0.95) == 64 * 8 + 1
  assert reductions.reduce(RUN, "rollout/accuracy", "samples_to_target",
                           target=0.1, window=20) == 64 * 8 + 1


def test_start_of_a_run():
  assert reductions.start(RUN, "rollout/accuracy") == pytest.approx(0.15)
  assert reductions.start(RUN, "eval/accuracy") == 0.2


@pytest.mark.parametrize("key, how, want", [
    ("rollout/accuracy", "last_eval", "eval/accuracy"),
    ("task/filler_steps", "eval_auc", "eval/task/filler_steps"),
    ("rollout/entropy", "last_eval", "eval/entropy"),
    ("update/entropy", "last_eval", None),
    ("eval/accuracy", "train_tail", "rollout/accuracy"),
    ("eval/task/wrong_steps", "train_tail", "task/wrong_steps"),
    ("eval/accuracy", "eval_auc", "eval/accuracy"),
    ("rollout/accuracy", "samples_to_target", "rollout/accuracy"),
])
def test_counterparts(key, how, want):
  assert reductions.counterpart(key, how) == want
