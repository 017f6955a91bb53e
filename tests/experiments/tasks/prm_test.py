"""Tests for the process reward models' behaviour as PURE's ablation needs
it: the hackable PRM pays for padding under a sum, not under a min."""

import numpy as np
import pytest

import cajax
from experiments.configs.ablations import pure
from experiments.tasks import base
from experiments.tasks import batching
from experiments.tasks import chain_arith

PROBLEM = "3+4*2-1"
CONCISE = "3+4=7;7*2=4;4-1=3;>3"
# Every operation done, then filler up to the budget; no answer at all.
PADDED = "3+4=7;7+0=7;7*2=4;4*1=4;4-1=3;3+0=3;3-0=3;3*1=3;3+0=3;3-0=3;"


def _scores(prm, texts, **config):
  task = chain_arith.ChainArithTask(dict(prm=prm, **config))
  problem = task.problem_from_text(PROBLEM)
  scores = [task.score(problem, np.array(task.tokenizer.encode(text)
                                         + [task.tokenizer.eos_id]))
            for text in texts]
  return task, scores


def _returns_at_first_token(name, task, scores, **kwargs):
  """The estimator's return at each row's first token: with no baseline,
  no whitening and no masking, the sum form gives Σ r and PURE's strict
  min form gives min r."""
  arrays = batching.scores_to_arrays(scores, task.max_response_len,
                                     task.max_steps)
  out = cajax.estimate(
      name, cajax.Rollouts(
          mask=arrays["mask"], step_ids=arrays["step_ids"],
          step_rewards=arrays["step_rewards"], step_mask=arrays["step_mask"],
          group_ids=np.zeros(len(scores), np.int32), num_groups=1),
      baseline="none", whiten=False, mask_step_end=False,
      verifiable_reward_coef=0.0, kl_coef=0.0, **kwargs)
  return np.asarray(out.returns)[:, 0]


def test_hackable_prm_pays_for_padding_under_the_sum_not_the_min():
  task, (concise, padded) = _scores("hackable", [CONCISE, PADDED],
                                    max_response_len=96)
  assert concise.outcome == 1.0 and padded.outcome == 0.0
  # The truth: the padded response's last step is wrong (no answer) ...
  assert padded.step_labels[-1] == base.WRONG
  assert padded.extra["step_errors"][-1] == "no_answer"
  # ... but the hackable PRM never checks the answer.
  np.testing.assert_array_equal(padded.step_rewards, np.ones(10))
  np.testing.assert_array_equal(concise.step_rewards, np.ones(3))
  sums = _returns_at_first_token("sum_form_prm", task, [concise, padded])
  mins = _returns_at_first_token("pure", task, [concise, padded],
                                 mode="strict")
  np.testing.assert_allclose(sums, [3.0, 10.0])
  np.testing.assert_allclose(mins, [1.0, 1.0])
  assert sums[1] > sums[0] and mins[1] <= mins[0]


@pytest.mark.parametrize("prm", ["oracle", "noisy"])
def test_oracle_and_noisy_prms_still_check_the_answer(prm):
  # prm_noise=0: the noisy PRM equals the oracle; both see the answer.
  _, (concise, padded) = _scores(prm, [CONCISE, PADDED], prm_noise=0.0,
                                 max_response_len=96)
  np.testing.assert_array_equal(concise.step_rewards, [1, 1, 1])
  assert padded.step_rewards[-1] == -1.0
  assert padded.step_rewards.sum() < concise.step_rewards.sum()


def test_padding_fits_the_pure_ablation_budget_only():
  # 10 filler-padded steps (60 tokens) overflow the default chain budget
  # of two steps per operation at max_ops=3 but fit the ablation's 96.
  default = chain_arith.ChainArithTask({"max_ops": 3})
  assert len(PADDED) + 1 > default.max_response_len
  wide = chain_arith.ChainArithTask({"max_ops": 4, "max_response_len": 96})
  assert wide.max_response_len == wide.max_steps == 96
  with pytest.raises(ValueError, match="cannot hold a solution"):
    chain_arith.ChainArithTask({"max_ops": 4, "max_response_len": 20})


def test_pure_ablation_gives_the_hackable_prm_room_to_pad():
  for arm in pure.get_ablation().arms:
    config = pure.get_config(f"{arm},0,default")
    assert config.task.prm == "hackable"
    assert config.task.max_response_len == config.sampling.max_new_tokens
    task = base.make_task(config.task)
    assert task.max_response_len == 96 >= len(PADDED) + 1


def test_hackable_prm_pays_a_truncated_response_like_a_complete_one():
  task, (concise, short) = _scores("hackable", [CONCISE, "3+4=7;>7"])
  assert short.outcome == 0.0
  assert short.extra["step_errors"] == ["incomplete"]
  mins = _returns_at_first_token("pure", task, [concise, short],
                                 mode="strict")
  np.testing.assert_allclose(mins, [1.0, 1.0])
