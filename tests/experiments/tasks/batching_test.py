"""Tests that task scores pad into cajax inputs and run through estimators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cajax
from experiments.tasks import base
from experiments.tasks import batching
from experiments.tasks import chain_arith


def chain_batch(prm="oracle", groups=3, per_group=4, seed=0):
  task = chain_arith.ChainArithTask({"prm": prm, "min_ops": 2, "max_ops": 3})
  rng = np.random.default_rng(seed)
  problems = task.sample_problems(rng, groups)
  scores, group_ids = [], []
  for g, problem in enumerate(problems):
    for _ in range(per_group):
      demo = task.demonstration(problem, rng, wrong_rate=0.4,
                                filler_rate=0.4)
      scores.append(task.score(problem, np.array(demo)))
      group_ids.append(g)
  return task, scores, np.array(group_ids, np.int32)


def estimate(name, rollouts, **kwargs):
  """`cajax.estimate` jitted, as the loop runs it (eager dispatch is slow)."""
  return jax.jit(lambda r: cajax.estimate(name, r, **kwargs))(rollouts)


def rollouts_from(arrays, group_ids, num_groups):
  return cajax.Rollouts(
      mask=jnp.asarray(arrays["mask"]),
      token_rewards=jnp.asarray(arrays["token_rewards"]),
      group_ids=jnp.asarray(group_ids), num_groups=num_groups,
      step_ids=jnp.asarray(arrays["step_ids"]),
      step_rewards=jnp.asarray(arrays["step_rewards"]),
      step_mask=jnp.asarray(arrays["step_mask"]))


def test_layout_of_real_scores():
  task, scores, _ = chain_batch()
  arrays = batching.scores_to_arrays(scores, task.max_response_len,
                                     task.max_steps)
  for row, score in enumerate(scores):
    length = score.step_ids.size
    steps = score.step_rewards.size
    assert arrays["mask"][row].tolist() == [True] * length + [False] * (
        task.max_response_len - length)
    want = np.zeros(task.max_response_len, np.float32)
    want[length - 1] = score.outcome
    np.testing.assert_array_equal(arrays["token_rewards"][row], want)
    np.testing.assert_array_equal(arrays["step_ids"][row, :length],
                                  score.step_ids)
    assert np.all(arrays["step_ids"][row, length:] == -1)
    assert arrays["step_mask"][row].sum() == steps
    np.testing.assert_array_equal(arrays["step_labels"][row, :steps],
                                  score.step_labels)
    assert np.all(arrays["step_labels"][row, steps:] == batching.LABEL_PAD)
    # Step rewards sit at the last token of each step.
    ends = [stop - 1 for _, stop in score.extra["step_spans"]]
    want = np.zeros(task.max_response_len, np.float32)
    want[ends] = score.step_rewards
    np.testing.assert_array_equal(arrays["step_token_rewards"][row], want)


@pytest.mark.parametrize("name, kwargs", [
    ("pure", {}),
    ("process_grpo", {}),
    ("tp_grpo", {}),
])
def test_estimators_run_on_task_scores(name, kwargs):
  task, scores, group_ids = chain_batch(prm="hackable")
  arrays = batching.scores_to_arrays(scores, task.max_response_len,
                                     task.max_steps)
  rollouts = rollouts_from(arrays, group_ids, 3)
  out = estimate(name, rollouts, **kwargs)
  advantages = np.asarray(out.advantages)
  assert advantages.shape == arrays["mask"].shape
  assert np.all(np.isfinite(advantages))
  assert np.all(advantages[~arrays["mask"]] == 0)
  assert np.any(advantages != 0)


def test_process_grpo_favours_a_flawless_row():
  task = chain_arith.ChainArithTask({"prm": "oracle"})
  problem = task.problem_from_text("3+4*2-1")
  texts = ["3+4=7;7*2=4;4-1=3;>3", "3+4=8;8*2=6;6-1=5;>5",
           "3+4=7;7*2=5;5-1=4;>4", "3+4=7;7+0=7;7*2=4;4-1=3;>3"]
  scores = [task.score(problem, np.array(task.tokenizer.encode(t) + [2]))
            for t in texts]
  arrays = batching.scores_to_arrays(scores, 32, 8)
  rollouts = rollouts_from(arrays, np.zeros(4, np.int32), 1)
  advantages = np.asarray(estimate("process_grpo", rollouts).advantages)
  flawless = advantages[0][arrays["mask"][0]]
  assert np.all(flawless > 0)
  # The first wrong step of row 1 gets less credit than row 0's first step.
  assert advantages[1, 0] < advantages[0, 0]
  # PURE strict min-form: the flawless row is the only one with min +1.
  pure = np.asarray(estimate(
      "pure", rollouts, mode="strict", whiten=False, baseline="none",
      verifiable_reward_coef=0.0, mask_step_end=False).advantages)
  np.testing.assert_allclose(pure[0][arrays["mask"][0]], 1.0)
  np.testing.assert_allclose(pure[1, 0], -1.0)
  np.testing.assert_allclose(pure[3, 0], 0.0)  # the filler caps the min at 0


def test_observation_masks_and_nan_outcome():
  score = base.Score(float("nan"), [0, 0, -1, -1, 1, 1], [0.5, -1.0], [1, 0])
  arrays = batching.scores_to_arrays(
      [score], 8, 3, observation_masks=[np.array([0, 0, 1, 1, 0, 0], bool)])
  assert arrays["mask"][0].tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
  assert np.isnan(arrays["token_rewards"][0, 5])
  assert np.isnan(arrays["outcomes"][0])
  assert arrays["step_token_rewards"][0].tolist() == [0, 0.5, 0, 0, 0, -1,
                                                      0, 0]


def test_bad_sizes():
  score = base.Score(1.0, [0, 0, 1], [1.0, 1.0], [1, 1])
  with pytest.raises(ValueError, match="num_tokens=2"):
    batching.scores_to_arrays([score], 2, 4)
  with pytest.raises(ValueError, match="num_steps=1"):
    batching.scores_to_arrays([score], 4, 1)
  with pytest.raises(ValueError, match=r"observation_masks\[0\]"):
    batching.scores_to_arrays([score], 4, 4, [np.zeros(2, bool)])
  with pytest.raises(ValueError, match="one mask per score"):
    batching.scores_to_arrays([score], 4, 4, [])
