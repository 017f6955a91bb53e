"""Tests of the controlled-bifurcation task and the credit benchmark."""

import os
import subprocess
import sys

import numpy as np
import pytest

import cajax
from experiments import credit_task


@pytest.mark.parametrize("granularity", credit_task.GRANULARITIES)
@pytest.mark.parametrize("position", credit_task.POSITIONS)
def test_batch_ground_truth(granularity, position):
  config = credit_task.TaskConfig(num_groups=4, group_size=4, num_steps=5,
                                  step_length=3, granularity=granularity,
                                  position=position, seed=1)
  batch = credit_task.make_batch(config)
  mask = np.asarray(batch.rollouts.mask)
  step_ids = np.asarray(batch.rollouts.step_ids)
  decision = {"early": 0, "middle": 2, "late": 4}[position]
  per_row = batch.decisive.sum(1)
  np.testing.assert_array_equal(per_row, 1 if granularity == "token" else 3)
  assert np.all(step_ids[batch.decisive] == decision)
  assert not np.any(batch.decisive & ~mask)
  if granularity == "turn":
    runs, count = cajax.contiguous_runs(mask)
    np.testing.assert_array_equal(count, 5)
    np.testing.assert_array_equal(np.asarray(runs)[mask], step_ids[mask])
  # A* is P(s | branch) − P(s): +0.4 after the good branch, −0.4 after bad.
  decided = batch.true_advantage[batch.decisive]
  rows = np.nonzero(batch.decisive)[0]
  np.testing.assert_allclose(decided, np.where(batch.good[rows], 0.4, -0.4))
  assert np.all(batch.true_advantage[~batch.decisive] == 0.0)
  cajax.validate(batch.rollouts)


def test_metrics_of_perfect_and_uniform_credit():
  config = credit_task.TaskConfig(num_groups=8, group_size=4, seed=3)
  batch = credit_task.make_batch(config)
  perfect = credit_task.credit_metrics(batch.true_advantage, batch)
  assert perfect["localisation"] == pytest.approx(1.0)
  assert perfect["spearman"] == pytest.approx(1.0)
  assert perfect["sign_accuracy"] == 1.0
  assert perfect["distractor_var"] == 0.0
  mask = np.asarray(batch.rollouts.mask)
  row_sign = np.where(batch.good, 1.0, -1.0)[:, None]
  uniform = credit_task.credit_metrics(mask * row_sign, batch)
  assert uniform["localisation"] == pytest.approx(1 / config.num_steps)
  assert uniform["sign_accuracy"] == 1.0
  assert uniform["distractor_var"] > 0.5


def test_benchmark_runs_every_estimator(tmp_path):
  names = cajax.estimator_names()
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  result = subprocess.run(
      [sys.executable, "-m", "experiments.bench_credit", "--batch=32",
       "--group_sizes=2,4", "--seeds=1", "--num_steps=4", "--step_length=3",
       f"--output_dir={tmp_path}"],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  table = (tmp_path / "credit.md").read_text()
  for name in names:
    assert f"| {name} |" in table
  assert (tmp_path / "credit.png").stat().st_size > 1000


def test_hackable_prm_over_rewards_distractor_steps_only():
  config = credit_task.TaskConfig(num_groups=8, group_size=4, num_steps=6,
                                  signal_quality=1.0, hack_rate=0.5,
                                  hack_bonus=2.0, seed=5)
  batch = credit_task.make_batch(config)
  rewards = np.asarray(batch.rollouts.step_rewards)
  decision = credit_task.decisive_step(config)
  hacked = rewards > 1.5
  assert 0.3 < hacked.mean() < 0.6
  assert not hacked[:, decision].any()
  np.testing.assert_allclose(rewards[hacked], 3.0)
  clean = credit_task.make_batch(
      credit_task.TaskConfig(num_groups=8, group_size=4, num_steps=6,
                             signal_quality=1.0, seed=5))
  assert np.asarray(clean.rollouts.step_rewards).max() <= 1.0
