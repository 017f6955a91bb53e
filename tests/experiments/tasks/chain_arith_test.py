"""Tests for the chain-arithmetic task: checker, PRMs, demonstrations."""

import numpy as np
import pytest

from experiments.tasks import arith
from experiments.tasks import base
from experiments.tasks import chain_arith

C, W, F = base.CORRECT, base.WRONG, base.FILLER


def make(**config):
  return chain_arith.ChainArithTask(config)


def score_text(task, problem, text, eos=True):
  ids = task.tokenizer.encode(text) + ([task.tokenizer.eos_id] if eos else [])
  return task.score(problem, np.array(ids))


@pytest.mark.parametrize("text, labels, reasons, outcome", [
    ("3+4=7;7*2=4;4-1=3;>3", [C, C, C], ["", "", ""], 1.0),
    ("3+4=7;7+0=7;7*2=4;4-1=3;>3", [C, F, C, C], [""] * 4, 1.0),
    ("3+4=7;7*2=4;4*1=4;4-1=3;3-0=3;>3", [C, C, F, C, F], [""] * 5, 1.0),
    ("3+4=8;8*2=6;6-1=5;>5", [W, C, C], ["arithmetic", "", ""], 0.0),
    ("3+4=7;6*2=2;2-1=1;>1", [C, W, C], ["", "operand", ""], 0.0),
    ("3+4=7;7+2=9;9-1=8;>8", [C, W, C], ["", "operation", ""], 0.0),
    ("3+4=7;7*2=4;4-1=3;3+5=8;>8", [C, C, C, W],
     ["", "", "", "extra"], 0.0),
    ("3+4=7;7*2;4-1=3;>3", [C, W, W], ["", "malformed", "operand"], 1.0),
    ("3+4=7;7+0=7;5+0=5;7*2=4;4-1=3;>3", [C, F, W, C, C],
     ["", "", "operand", "", ""], 1.0),
    ("3+4=7;7*2=4;4-1=3;>5", [C, C, W], ["", "", "answer"], 0.0),
    ("3+4=7;7*2=4;>4", [C, W], ["", "incomplete"], 0.0),
    ("3+4=7;7*2=4;4-1=3;", [C, C, W], ["", "", "no_answer"], 0.0),
    ("3+4=7;7*2=4;4-1=3;>03", [C, C, W], ["", "", "answer_malformed"], 0.0),
    ("3+4=7;7*2=4;4-1=3", [C, C, W], ["", "", "no_answer"], 0.0),
    (">3", [W], ["incomplete"], 1.0),
    ("", [W], ["no_answer"], 0.0),
])
def test_checker_labels(text, labels, reasons, outcome):
  task = make()
  problem = task.problem_from_text("3+4*2-1")
  score = score_text(task, problem, text)
  assert score.step_labels.tolist() == labels
  assert score.extra["step_errors"] == reasons
  assert score.outcome == outcome
  assert score.metrics["num_steps"] == len(labels)
  assert score.metrics["filler_steps"] == labels.count(F)
  assert score.metrics["wrong_steps"] == labels.count(W)


def test_no_eos_scores_zero_and_blames_the_last_step():
  task = make()
  problem = task.problem_from_text("3+4*2-1")
  score = score_text(task, problem, "3+4=7;7*2=4;4-1=3;>3", eos=False)
  assert score.outcome == 0.0
  assert score.step_labels.tolist() == [C, C, W]
  assert score.extra["step_errors"][-1] == "no_eos"
  assert score.metrics["has_eos"] == 0.0


def test_identity_that_is_the_next_operation_is_correct():
  task = make()
  problem = task.problem_from_text("3+0*1")
  score = score_text(task, problem, "3+0=3;3*1=3;3+0=3;>3")
  assert score.step_labels.tolist() == [C, C, F]


def test_step_ids_layout_answer_and_eos_in_last_step():
  task = make()
  problem = task.problem_from_text("3+4*2-1")
  text = "3+4=7;7+0=7;7*2=4;4-1=3;>3"
  score = score_text(task, problem, text)
  want = [0] * 6 + [1] * 6 + [2] * 6 + [3] * 9
  assert score.step_ids.tolist() == want
  assert score.extra["step_spans"] == [(0, 6), (6, 12), (12, 18), (18, 27)]
  # Never −1 in this task, whatever the response.
  rng = np.random.default_rng(0)
  vocab = np.array(sorted(set(range(3, task.tokenizer.vocab_size))
                          - set(task.banned_tokens)))
  for _ in range(200):
    ids = list(rng.choice(vocab, size=rng.integers(0, 30)))
    if rng.random() < 0.5:
      ids.append(task.tokenizer.eos_id)
    score = task.score(problem, np.array(ids, np.int64))
    assert np.all(score.step_ids >= 0)
    assert np.all(np.diff(score.step_ids) >= 0)
    assert score.step_ids[-1:].tolist() in ([], [score.step_labels.size - 1])
    assert set(score.step_ids.tolist()) <= set(range(score.step_labels.size))
    assert score.step_rewards.shape == score.step_labels.shape


def test_oracle_rewards_and_scale():
  task = make(prm="oracle")
  problem = task.problem_from_text("3+4*2-1")
  score = score_text(task, problem, "3+4=8;8+0=8;8*2=6;6-1=5;>5")
  assert score.step_labels.tolist() == [W, F, C, C]
  np.testing.assert_array_equal(score.step_rewards, [-1, 0, 1, 1])
  task = make(prm="oracle", reward_correct=0.9, reward_wrong=0.1,
              reward_filler=0.5)
  score = score_text(task, problem, "3+4=8;8+0=8;8*2=6;6-1=5;>5")
  np.testing.assert_allclose(score.step_rewards, [0.1, 0.5, 0.9, 0.9])


def test_hackable_prm_scores_vacuous_steps_high_and_ignores_the_answer():
  task = make(prm="hackable")
  problem = task.problem_from_text("3+4*2-1")
  text = "3+4=7;7+0=7;7*1=7;5-0=5;7*2=4;4-1=3;>3"
  score = score_text(task, problem, text)
  assert score.step_labels.tolist() == [C, F, F, W, C, C]
  np.testing.assert_array_equal(score.step_rewards, [1, 1, 1, 1, 1, 1])
  oracle = make(prm="oracle").score(problem, task.tokenizer.encode(text)
                                    + [2])
  np.testing.assert_array_equal(oracle.step_rewards, [1, 0, 0, -1, 1, 1])
  # Like a learned PRM it never checks the answer: a filler last step
  # followed by a wrong answer scores +1, while the checker says WRONG.
  score = score_text(task, problem, "3+4=7;7*2=4;4-1=3;3+0=3;>5")
  np.testing.assert_array_equal(score.step_rewards, [1, 1, 1, 1])
  assert score.step_labels.tolist() == [C, C, C, W]
  assert score.outcome == 0.0
  # Filler padding raises the summed reward, not the min.
  plain = score_text(task, problem, "3+4=7;7*2=4;4-1=3;>3")
  assert score_text(task, problem, text).step_rewards.sum() > (
      plain.step_rewards.sum())
  assert score_text(task, problem, text).step_rewards.min() == (
      plain.step_rewards.min())


def test_noisy_prm_flip_rate_and_determinism():
  task = make(prm="noisy", prm_noise=0.3, prm_seed=7)
  oracle = make(prm="oracle")
  rng = np.random.default_rng(0)
  flips = total = 0
  for problem in task.sample_problems(rng, 300):
    demo = np.array(task.demonstration(problem, rng, 0.3, 0.3))
    noisy = task.score(problem, demo)
    again = task.score(problem, demo)
    np.testing.assert_array_equal(noisy.step_rewards, again.step_rewards)
    truth = oracle.score(problem, demo)
    flipped = noisy.step_rewards != truth.step_rewards
    # A flip reverses the verdict: correct -> wrong, wrong/filler -> correct.
    want = np.where(truth.step_labels == C, -1.0, 1.0)
    np.testing.assert_array_equal(noisy.step_rewards[flipped],
                                  want[flipped])
    flips += flipped.sum()
    total += flipped.size
  # Binomial: 0.3 within 5 standard deviations.
  assert total > 1000
  assert abs(flips / total - 0.3) < 5 * np.sqrt(0.3 * 0.7 / total)


def test_noisy_prm_depends_on_seed_and_extremes():
  problem_task = make()
  rng = np.random.default_rng(1)
  problems = problem_task.sample_problems(rng, 50)
  demos = [np.array(problem_task.demonstration(p, rng)) for p in problems]

  def rewards(**config):
    task = make(**config)
    return np.concatenate([task.score(p, d).step_rewards
                           for p, d in zip(problems, demos)])

  assert not np.array_equal(rewards(prm="noisy", prm_noise=0.5, prm_seed=0),
                            rewards(prm="noisy", prm_noise=0.5, prm_seed=1))
  np.testing.assert_array_equal(rewards(prm="noisy", prm_noise=0.0),
                                rewards(prm="oracle"))
  np.testing.assert_array_equal(rewards(prm="noisy", prm_noise=1.0),
                                -rewards(prm="oracle"))


def test_clean_demonstrations_are_correct():
  task = make(min_ops=1, max_ops=6, ops="+-*", modulus=13)
  rng = np.random.default_rng(2)
  for problem in task.sample_problems(rng, 200):
    demo = task.demonstration(problem, rng)
    assert demo[-1] == task.tokenizer.eos_id
    assert len(demo) <= task.max_response_len
    score = task.score(problem, np.array(demo))
    assert score.outcome == 1.0
    assert np.all(score.step_labels == C)
    assert score.step_labels.size == len(problem.operations)
    assert task.retry_prefix(problem, demo, score) is None


def test_demonstration_rates():
  task = make(min_ops=2, max_ops=4)
  rng = np.random.default_rng(3)
  wrong = filler = ops = 0
  for problem in task.sample_problems(rng, 600):
    demo = task.demonstration(problem, rng, wrong_rate=0.2, filler_rate=0.3)
    assert len(demo) <= task.max_response_len
    score = task.score(problem, np.array(demo))
    errors = score.extra["step_errors"]
    assert set(errors) <= {"", "arithmetic"}
    wrong += errors.count("arithmetic")
    filler += score.metrics["filler_steps"]
    ops += len(problem.operations)
    # Without a wrong step the answer is right.
    if "arithmetic" not in errors:
      assert score.outcome == 1.0
  for count, rate in ((wrong, 0.2), (filler, 0.3)):
    assert abs(count / ops - rate) < 5 * np.sqrt(rate * (1 - rate) / ops)


def test_worst_case_demonstration_fits_the_budget():
  task = make(min_ops=4, max_ops=4, modulus=100)
  rng = np.random.default_rng(4)
  for problem in task.sample_problems(rng, 20):
    demo = task.demonstration(problem, rng, wrong_rate=1.0, filler_rate=1.0)
    assert len(demo) <= task.max_response_len
    assert len(problem.prompt_ids) <= task.max_prompt_len


def test_sampling_is_deterministic_and_in_range():
  task = make(min_ops=2, max_ops=5, ops="+*", modulus=7)
  first = task.sample_problems(np.random.default_rng(5), 100)
  second = task.sample_problems(np.random.default_rng(5), 100)
  assert first == second
  assert {len(p.operations) for p in first} == {2, 3, 4, 5}
  for p in first:
    assert p.prompt_ids[0] == task.tokenizer.bos_id
    assert task.tokenizer.decode(p.prompt_ids) == p.text + "?"
    assert {op for op, _ in p.operations} <= {"+", "*"}
    assert all(0 <= y < 7 for _, y in p.operations) and 0 <= p.start < 7
    assert p.answer == str(task.config.final_value(p.start, p.operations))
    assert task.problem_from_text(p.text) == p
  rng = np.random.default_rng(6)
  problem = first[0]
  assert (task.demonstration(problem, rng, 0.5, 0.5)
          == task.demonstration(problem, np.random.default_rng(6), 0.5, 0.5))


def test_retry_prefix_stops_before_first_wrong_step():
  task = make()
  problem = task.problem_from_text("3+4*2-1")
  ids = task.tokenizer.encode("3+4=7;7*2=5;5-1=4;>4") + [2]
  score = task.score(problem, np.array(ids))
  assert score.extra["first_wrong_step"] == 1
  assert score.extra["first_wrong_token"] == 6
  prefix = task.retry_prefix(problem, ids, score)
  assert task.tokenizer.decode(prefix) == "3+4=7;"
  ids = task.tokenizer.encode("3+4=8;8*2=6;6-1=5;>5") + [2]
  assert task.retry_prefix(problem, ids,
                           task.score(problem, np.array(ids))) == []


def test_no_observations():
  task = make()
  problem = task.problem_from_text("3+4")
  assert task.observation(problem, [5, 6]) is None
  assert not task.observation_mask(problem, [5, 6]).any()
  with pytest.raises(ValueError, match="observation_mask"):
    task.score(problem, np.array([5, 2]), np.array([True, False]))


def test_banned_tokens_and_vocab():
  task = make()
  vocab = task.tokenizer
  assert set(task.banned_tokens) == {vocab.pad_id, vocab.bos_id,
                                     vocab.id("?")}
  assert task.stop_tokens == (vocab.eos_id,)
  assert vocab.decode(vocab.encode("3+4=7;>7")) == "3+4=7;>7"


@pytest.mark.parametrize("config, match", [
    (dict(ops="+/"), "ops"),
    (dict(ops="++"), "ops"),
    (dict(min_ops=3, max_ops=2), "min_ops"),
    (dict(min_ops=0), "min_ops"),
    (dict(modulus=1), "modulus"),
    (dict(modulus=10.0), "modulus"),
    (dict(prm="magic"), "prm must be one of"),
    (dict(prm_noise=1.5), "prm_noise"),
    (dict(max_response_len=0), "max_response_len"),
    (dict(bogus=1), "`task.bogus` is not a key of the chain_arith task"),
])
def test_bad_config(config, match):
  with pytest.raises(ValueError, match=match):
    make(**config)


def test_bad_text_and_rates():
  task = make(ops="+-")
  with pytest.raises(ValueError, match="text"):
    task.problem_from_text("3*4")
  with pytest.raises(ValueError, match="text"):
    task.problem_from_text("3+12")
  with pytest.raises(ValueError, match="text"):
    task.problem_from_text("3")
  problem = task.problem_from_text("3+4")
  with pytest.raises(ValueError, match="wrong_rate"):
    task.demonstration(problem, np.random.default_rng(0), wrong_rate=2.0)


def test_checker_continues_from_written_value():
  config = arith.ChainConfig(modulus=10)
  checker = arith.StepChecker(config, 3, (("+", 4), ("*", 2)))
  assert checker.check((3, "+", 4, 8)) == (W, "arithmetic")
  assert checker.check((8, "*", 2, 6)) == (C, "")
  assert checker.complete and checker.value == 6


@pytest.mark.parametrize("name", ["chain_arith", "calculator"])
def test_tight_budget_drops_filler_only(name):
  task = base.make_task({"name": name, "min_ops": 4, "max_ops": 4,
                         "max_response_len": 40})
  rng = np.random.default_rng(7)
  fillers = 0
  for problem in task.sample_problems(rng, 50):
    demo = task.demonstration(problem, rng, wrong_rate=0.5, filler_rate=1.0)
    assert len(demo) <= 40
    score = task.score(problem, np.array(demo),
                       task.observation_mask(problem, demo))
    assert score.metrics["wrong_steps"] + score.metrics["correct_steps"] >= 4
    fillers += score.metrics["filler_steps"]
  assert fillers > 0
  with pytest.raises(ValueError, match="max_response_len=20 cannot hold"):
    base.make_task({"name": name, "max_ops": 4, "max_response_len": 20})


@pytest.mark.parametrize("text, labels, checks, outcome", [
    ("3+4=7;3+4=7;7*2=4;7*2=4;7*2=4;4-1=3;>3", [C, F, C, F, F, C], 3, 1.0),
    ("3+4=7;7*2=4;4-1=3;4-1=3;>3", [C, C, C, F], 1, 1.0),
    # A repeat of a wrong step is not a check: it takes up the next
    # operation, as without free_length, and the later steps shift.
    ("3+4=8;3+4=8;8*2=6;6-1=5;>5", [W, W, W, W], 0, 0.0),
    # Only the step just before may be repeated.
    ("3+4=7;7*2=4;3+4=7;4-1=3;>3", [C, C, W, W], 0, 1.0),
    ("3+4=7;7+0=7;7+0=7;7*2=4;4-1=3;>3", [C, F, F, C, C], 0, 1.0),
])
def test_free_length_checks(text, labels, checks, outcome):
  task = make(free_length=True)
  problem = task.problem_from_text("3+4*2-1")
  score = score_text(task, problem, text)
  assert score.step_labels.tolist() == labels
  assert score.metrics["check_steps"] == checks
  assert score.outcome == outcome
  # Checks are neither required nor rewarded (oracle: filler's 0).
  np.testing.assert_array_equal(
      score.step_rewards, np.select([score.step_labels == C,
                                     score.step_labels == F], [1, 0], -1))


def test_without_free_length_a_repeat_is_wrong():
  task = make()
  problem = task.problem_from_text("3+4*2-1")
  score = score_text(task, problem, "3+4=7;3+4=7;7*2=4;4-1=3;>3")
  assert score.step_labels.tolist() == [C, W, W, W]
  assert "check_steps" not in score.metrics


def test_free_length_demonstrations_vary_in_length():
  rate = 0.5
  task = make(min_ops=4, max_ops=4, free_length=True, check_rate=rate,
              max_response_len=64)
  plain = make(min_ops=4, max_ops=4, max_response_len=64)
  rng = np.random.default_rng(5)
  lengths, checks, correct = [], 0, 0
  for problem in task.sample_problems(rng, 400):
    demo = task.demonstration(problem, rng, wrong_rate=0.2)
    score = task.score(problem, np.array(demo))
    assert len(demo) <= task.max_response_len
    lengths.append(len(demo))
    checks += score.metrics["check_steps"]
    correct += int(np.sum(score.step_labels == C))
    # Checks are never wrong, and without a wrong step the answer is
    # right; the plain task, which has no checks, sees no check.
    if not np.any(score.step_labels == W):
      assert score.outcome == 1.0
    assert "check_steps" not in plain.score(problem, np.array(demo)).metrics
  # Every correct step is re-checked with probability `rate`.
  assert abs(checks / correct - rate) < 5 * np.sqrt(rate * (1 - rate)
                                                    / correct)
  # Four operations: from 27 tokens (no check) to 51 (all checked).
  assert min(lengths) == 27 and max(lengths) == 51
  assert np.std(lengths) > 4


def test_free_length_bad_config():
  with pytest.raises(ValueError, match="check_rate"):
    make(free_length=True, check_rate=1.5)
  with pytest.raises(ValueError, match="free_length"):
    make(free_length=1)
