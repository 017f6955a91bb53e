"""Tests for the calculator tool-use task: environment, checker, matching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cajax
from cajax import matching
from experiments.tasks import base
from experiments.tasks import batching
from experiments.tasks import calculator

C, W, F = base.CORRECT, base.WRONG, base.FILLER


def make(**config):
  return calculator.CalculatorTask(config)


def rollout(task, problem, turns):
  """Plays `turns` of policy text against the environment, as the loop."""
  ids, observed = [], []
  for text in turns:
    tokens = task.tokenizer.encode(text.rstrip("$"))
    if text.endswith("$"):
      tokens.append(task.tokenizer.eos_id)
    ids += tokens
    observed += [False] * len(tokens)
    if tokens[-1] in task.stop_tokens and tokens[-1] != task.tokenizer.eos_id:
      result = task.observation(problem, ids)
      if result is None:
        break
      ids += result
      observed += [True] * len(result)
  return np.array(ids), np.array(observed)


def test_layout_of_the_docstring_example():
  task = make()
  problem = task.problem_from_text("3+4*2-1")
  ids, observed = rollout(task, problem, ["[3+4]", "[7*2]", "[4-1]", ">3$"])
  assert task.tokenizer.decode(ids) == "[3+4]=7[7*2]=4[4-1]=3>3"
  assert observed.astype(int).tolist() == (
      [0] * 5 + [1] * 2 + [0] * 5 + [1] * 2 + [0] * 5 + [1] * 2 + [0] * 3)
  np.testing.assert_array_equal(task.observation_mask(problem, ids), observed)
  score = task.score(problem, ids, observed)
  assert score.step_ids.tolist() == (
      [0] * 5 + [-1] * 2 + [1] * 5 + [-1] * 2 + [2] * 5 + [-1] * 2 + [3] * 3)
  assert score.step_labels.tolist() == [C, C, C, C]
  assert score.outcome == 1.0
  assert score.metrics["tool_calls"] == 3
  assert score.extra["gt_calls"] == [calculator.tool_call(3, "+", 4),
                                     calculator.tool_call(7, "*", 2),
                                     calculator.tool_call(4, "-", 1)]
  assert score.extra["turns"][-1] == {"tool_calls": [], "answer": "3"}


def test_observation_round_trip_on_random_policies():
  task = make(max_tool_calls=5)
  rng = np.random.default_rng(0)
  problem = task.problem_from_text("3+4*2-1")
  pieces = ["[3+4]", "[7*2]", "[4-1]", "[7+0]", "[3+]", "[12*3]", "5",
            ">3$", ">4$", "]", "[[1-1]"]
  for _ in range(100):
    turns = list(rng.choice(pieces, size=rng.integers(1, 9)))
    ids, observed = rollout(task, problem, turns)
    if np.any(ids == task.tokenizer.eos_id):
      ids, observed = ids[:np.argmax(ids == task.tokenizer.eos_id) + 1], (
          observed[:np.argmax(ids == task.tokenizer.eos_id) + 1])
    np.testing.assert_array_equal(task.observation_mask(problem, ids),
                                  observed)
    with_mask = task.score(problem, ids, observed)
    replayed = task.score(problem, ids)
    np.testing.assert_array_equal(with_mask.step_ids, replayed.step_ids)
    np.testing.assert_array_equal(with_mask.step_labels,
                                  replayed.step_labels)
    assert np.all((with_mask.step_ids == -1) == observed)
    assert with_mask.metrics["tool_calls"] <= 6


def test_observation_values_and_none():
  task = make(max_tool_calls=2)
  problem = task.problem_from_text("3+4*2-1")
  encode = task.tokenizer.encode
  assert task.tokenizer.decode(task.observation(problem, encode("[9*9]"))) == (
      "=1")
  assert task.tokenizer.decode(task.observation(problem, encode("[9+]"))) == (
      "=!")
  assert task.observation(problem, encode("[3+4")) is None
  assert task.observation(problem, encode(">7") + [2]) is None
  assert task.observation(problem, []) is None
  # The third call is over the budget of two: the episode ends.
  assert task.observation(problem, encode("[3+4]=7[7*2]=4[4-1]")) is None
  assert task.observation(problem, encode("[3+4]=7[7*2]")) is not None


def test_forged_observation_is_rejected():
  task = make()
  problem = task.problem_from_text("3+4")
  ids = task.tokenizer.encode("[3+4]=8>8") + [2]
  with pytest.raises(ValueError, match="tool's result"):
    task.observation_mask(problem, ids)
  with pytest.raises(ValueError, match="observation_mask must have shape"):
    task.score(problem, np.array(ids), np.zeros(3, bool))


@pytest.mark.parametrize("turns, labels, reasons, outcome", [
    (["[3+4]", "[7+0]", "[7*2]", "[4-1]", ">3$"], [C, F, C, C, C],
     [""] * 5, 1.0),
    (["[3+4]", "[6*2]", "[2-1]", ">1$"], [C, W, C, C],
     ["", "operand", "", ""], 0.0),
    (["[3+4]", "[6*2]", "[2-1]", ">3$"], [C, W, C, W],
     ["", "operand", "", "answer"], 1.0),
    (["[3+4]", "[7*]", "[4-1]", ">3$"], [C, W, W, C],
     ["", "malformed", "operand", ""], 1.0),
    (["[3+4]", "[7*2]", "[4-1]", ">5$"], [C, C, C, W],
     ["", "", "", "answer"], 0.0),
    (["[3+4]", "[7*2]", ">4$"], [C, C, W], ["", "", "incomplete"], 0.0),
    (["[3+4]", "[7*2]", "[4-1]", "3$"], [C, C, C, W],
     ["", "", "", "no_answer"], 0.0),
    (["[3+4]", "[7*2]", "[4-1]"], [C, C, W], ["", "", "no_answer"], 0.0),
    (["$"], [W], ["no_answer"], 0.0),
])
def test_checker_labels(turns, labels, reasons, outcome):
  task = make()
  problem = task.problem_from_text("3+4*2-1")
  ids, observed = rollout(task, problem, turns)
  score = task.score(problem, ids, observed)
  assert score.step_labels.tolist() == labels
  assert score.extra["step_errors"] == reasons
  assert score.outcome == outcome


def test_prm_kinds():
  problem_turns = ["[3+4]", "[7+0]", "[5*1]", "[7*2]", "[4-1]", ">3$"]
  rewards = {}
  for kind in ("oracle", "hackable", "matching"):
    task = make(prm=kind)
    problem = task.problem_from_text("3+4*2-1")
    ids, observed = rollout(task, problem, problem_turns)
    rewards[kind] = task.score(problem, ids, observed).step_rewards.tolist()
  assert rewards["oracle"] == [1, 0, -1, 1, 1, 1]
  # Hackable: vacuous calls score +1, the answer turn is not judged (0).
  assert rewards["hackable"] == [1, 1, 1, 1, 1, 0]
  # Matching: unmatched filler calls earn 0, matched calls their similarity.
  assert rewards["matching"] == [1, 0, 0, 1, 1, 1]


def test_matching_rewards_equal_cajax_matching():
  rng = np.random.default_rng(1)
  for assignment in calculator.ASSIGNMENTS:
    task = make(prm="matching", assignment=assignment)
    for problem in task.sample_problems(rng, 20):
      demo = task.demonstration(problem, rng, wrong_rate=0.4,
                                filler_rate=0.4)
      score = task.score(problem, np.array(demo))
      want = matching.trajectory_turn_rewards(
          score.extra["turns"], task.gt_calls(problem), problem.answer,
          assignment=assignment)
      np.testing.assert_allclose(score.step_rewards, want, rtol=1e-6)
  task = make(prm="matching")
  problem = task.problem_from_text("3+4*2-1")
  ids, observed = rollout(task, problem, ["[3+4]", "[6*2]", "[2-1]", ">1$"])
  np.testing.assert_allclose(task.score(problem, ids).step_rewards,
                             [1, 0.8, 0.8, 0])


def test_demonstrations():
  task = make(min_ops=1, max_ops=5)
  rng = np.random.default_rng(2)
  wrong = filler = ops = 0
  for problem in task.sample_problems(rng, 400):
    clean = task.demonstration(problem, rng)
    score = task.score(problem, np.array(clean))
    assert score.outcome == 1.0 and np.all(score.step_labels == C)
    assert task.retry_prefix(problem, clean, score) is None
    demo = task.demonstration(problem, rng, wrong_rate=0.25, filler_rate=0.2)
    assert len(demo) <= task.max_response_len
    score = task.score(problem, np.array(demo))
    errors = score.extra["step_errors"][:-1]  # calls; the last is the answer
    assert set(errors) <= {"", "operand"}
    wrong += errors.count("operand")
    filler += score.metrics["filler_steps"]
    ops += len(problem.operations)
  for count, rate in ((wrong, 0.25), (filler, 0.2)):
    assert abs(count / ops - rate) < 5 * np.sqrt(rate * (1 - rate) / ops)


def test_retry_prefix_keeps_observations():
  task = make()
  problem = task.problem_from_text("3+4*2-1")
  ids, _ = rollout(task, problem, ["[3+4]", "[6*2]", "[2-1]", ">1$"])
  score = task.score(problem, ids)
  prefix = task.retry_prefix(problem, ids, score)
  assert task.tokenizer.decode(prefix) == "[3+4]=7"
  assert task.observation_mask(problem, prefix).tolist() == [0] * 5 + [1] * 2


def test_tokens_and_config():
  task = make()
  vocab = task.tokenizer
  assert set(task.banned_tokens) == {vocab.pad_id, vocab.bos_id, vocab.id("?"),
                                     vocab.id("="), vocab.id("!")}
  assert task.stop_tokens == (vocab.eos_id, vocab.id("]"))
  # One limit: None means two calls per operation.
  assert calculator.CalculatorConfig().max_tool_calls is None
  assert base.make_task({"name": "calculator"}).max_tool_calls == 8
  assert make(max_ops=6).max_tool_calls == 12
  assert make(max_tool_calls=3).max_tool_calls == 3
  with pytest.raises(ValueError, match="assignment"):
    make(assignment="magic")
  with pytest.raises(ValueError, match="soft_scale"):
    make(soft_scale="magic")
  with pytest.raises(ValueError, match="free_length"):
    make(free_length=True)
  with pytest.raises(ValueError, match="max_tool_calls"):
    make(max_tool_calls=0)
  with pytest.raises(ValueError, match="prm must be one of"):
    make(prm="magic")


def test_matchtir_and_istar_run_on_calculator_scores():
  task = make(prm="matching", min_ops=2, max_ops=3)
  rng = np.random.default_rng(3)
  scores, masks, groups = [], [], []
  for g, problem in enumerate(task.sample_problems(rng, 2)):
    for _ in range(4):
      demo = task.demonstration(problem, rng, 0.4, 0.4)
      scores.append(task.score(problem, np.array(demo)))
      masks.append(task.observation_mask(problem, demo))
      groups.append(g)
  arrays = batching.scores_to_arrays(scores, task.max_response_len,
                                     task.max_steps, masks)
  mask = jnp.asarray(arrays["mask"])
  rollouts = cajax.Rollouts(
      mask=mask, token_rewards=jnp.asarray(arrays["step_token_rewards"]),
      group_ids=jnp.asarray(groups, jnp.int32), num_groups=2,
      step_ids=jnp.asarray(arrays["step_ids"]))
  out = jax.jit(lambda r: cajax.estimate("matchtir", r, num_turns=12))(
      rollouts)
  # matchtir reads the step rewards back as its turn rewards.
  turn_rewards = np.asarray(out.info["turn_rewards"])
  for row, score in enumerate(scores):
    np.testing.assert_allclose(turn_rewards[row, :score.step_rewards.size],
                               score.step_rewards)
  logprobs = jnp.asarray(rng.normal(size=mask.shape), jnp.float32)
  rollouts = rollouts.replace(token_rewards=jnp.asarray(
      arrays["token_rewards"]), logprobs=logprobs, old_logprobs=0 * logprobs)
  out = jax.jit(lambda r: cajax.estimate("istar", r, num_steps=12))(rollouts)
  advantages = np.asarray(out.advantages)
  assert np.all(np.isfinite(advantages))
  assert np.all(advantages[~arrays["mask"]] == 0)


@pytest.mark.parametrize("turns, precision, recall, redundant", [
    (["[3+4]", "[7*2]", "[4-1]", ">3$"], 1.0, 1.0, 0),
    # A repeat of a matched call and an identity change nothing; a wrong
    # call is neither matched nor redundant; a malformed call is a call.
    (["[3+4]", "[3+4]", "[7+0]", "[7*2]", "[9-1]", "[4-1]", ">3$"],
     3 / 6, 1.0, 2),
    (["[3+4]", "[3+]", ">7$"], 1 / 2, 1 / 3, 0),
    ([">3$"], 0.0, 0.0, 0),
])
def test_call_metrics(turns, precision, recall, redundant):
  for prm, assignment in (("oracle", "greedy"), ("matching", "sinkhorn")):
    task = make(prm=prm, assignment=assignment, max_tool_calls=10)
    problem = task.problem_from_text("3+4*2-1")
    ids, observed = rollout(task, problem, turns)
    metrics = task.score(problem, ids, observed).metrics
    assert metrics["call_precision"] == pytest.approx(precision)
    assert metrics["call_recall"] == pytest.approx(recall)
    assert metrics["redundant_calls"] == redundant
    assert metrics["tool_calls"] == len(turns) - 1


def test_call_metrics_match_duplicate_true_calls_one_to_one():
  gt = [calculator.tool_call(1, "*", 1), calculator.tool_call(1, "*", 1)]
  once = calculator.call_metrics([(1, "*", 1)], gt)
  assert once == {"call_precision": 1.0, "call_recall": 0.5,
                  "redundant_calls": 0.0}
  thrice = calculator.call_metrics([(1, "*", 1)] * 3, gt)
  assert thrice == {"call_precision": 2 / 3, "call_recall": 1.0,
                    "redundant_calls": 1.0}


def test_soft_and_hard_turn_rewards_share_a_scale():
  # A flawless trace: the hard rewards are all 1; the soft ones (default
  # scale) stay within the same range, the authors' raw plan near 1/P.
  problem_turns = ["[3+4]", "[7*2]", "[4-1]", ">3$"]
  rewards = {}
  for assignment, scale in (("hungarian", "matched"),
                            ("sinkhorn", "matched"), ("sinkhorn", "plan")):
    task = make(prm="matching", assignment=assignment, soft_scale=scale)
    problem = task.problem_from_text("3+4*2-1")
    ids, observed = rollout(task, problem, problem_turns)
    rewards[assignment, scale] = task.score(problem, ids,
                                            observed).step_rewards
  hard, soft = rewards["hungarian", "matched"], rewards["sinkhorn", "matched"]
  raw = rewards["sinkhorn", "plan"]
  np.testing.assert_allclose(hard, [1, 1, 1, 1])
  np.testing.assert_allclose(soft[:3], 3 * raw[:3], rtol=1e-6)
  assert np.all(soft[:3] > 0.8) and np.all(raw[:3] < 0.34)
  assert soft[3] == raw[3] == 1.0  # the answer turn's F1
