"""Tests for the task protocol helpers: vocabulary, registry, validation."""

import ml_collections
import numpy as np
import pytest

from experiments.tasks import base
from experiments.tasks import chain_arith
from experiments.tasks import registry


def test_char_vocab_round_trip_and_specials():
  vocab = base.CharVocab("ab;?", banned_symbols="?")
  assert (vocab.pad_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2)
  assert vocab.vocab_size == 7
  assert vocab.encode("ab;") == [3, 4, 5]
  assert vocab.decode([1, 3, 4, 5, 2, 0]) == "ab;"
  assert vocab.banned_tokens == (0, 1, 6)
  assert vocab.id("?") == 6


@pytest.mark.parametrize("symbols, banned, match", [
    ("aa", "", "distinct"),
    ("", "", "distinct"),
    ("ab", "c", "banned_symbols"),
])
def test_char_vocab_bad_construction(symbols, banned, match):
  with pytest.raises(ValueError, match=match):
    base.CharVocab(symbols, banned)


def test_char_vocab_bad_text_and_ids():
  vocab = base.CharVocab("ab")
  with pytest.raises(ValueError, match=r"text\[1\] = 'x'"):
    vocab.encode("ax")
  with pytest.raises(ValueError, match=r"ids\[0\] = 9"):
    vocab.decode([9])


def test_make_task_from_dict_and_config_dict():
  task = base.make_task({"name": "chain_arith", "max_ops": 3})
  assert isinstance(task, chain_arith.ChainArithTask)
  assert task.config.max_ops == 3
  config = ml_collections.ConfigDict({"name": "chain_arith", "modulus": 7})
  assert base.make_task(config).config.modulus == 7


def test_make_task_unknown_name_lists_names():
  with pytest.raises(ValueError, match="chain_arith"):
    base.make_task({"name": "sudoku"})
  with pytest.raises(ValueError, match="task.name: unknown task None"):
    base.make_task({})
  with pytest.raises(ValueError, match="ConfigDict or a mapping"):
    base.make_task("chain_arith")
  assert "chain_arith" in registry.task_names()


@pytest.mark.parametrize("ids, match", [
    ([[3, 4]], "1-D"),
    ([3.0, 4.0], "1-D integer"),
    ([3, 99], "lie in"),
    ([3, -1], "lie in"),
    ([3, 0, 4], "PAD"),
    ([3, 2, 4], "first EOS"),
])
def test_check_response_rejects(ids, match):
  vocab = base.CharVocab("ab")
  with pytest.raises(ValueError, match=match):
    base.check_response(np.array(ids), vocab)


def test_check_response_accepts_empty_and_truncated():
  vocab = base.CharVocab("ab")
  assert base.check_response(np.array([], np.int32), vocab).size == 0
  assert base.check_response([3, 4], vocab).tolist() == [3, 4]
  assert base.check_response([3, 2], vocab).tolist() == [3, 2]


def test_score_validates_shapes():
  with pytest.raises(ValueError, match="step_ids must lie"):
    base.Score(1.0, np.array([0, 1]), np.zeros(1), np.zeros(1))
  with pytest.raises(ValueError, match="one shape"):
    base.Score(1.0, np.array([0]), np.zeros(2), np.zeros(1))
  score = base.Score(1.0, [0, -1], [0.5], [1])
  assert score.step_ids.dtype == np.int32
  assert score.step_labels.dtype == np.int8


def test_every_task_implements_the_protocol(tmp_path):
  data = tmp_path / "data.jsonl"
  data.write_text('{"question": "1+1?", "answer": "2"}\n')
  members = ("name", "tokenizer", "banned_tokens", "stop_tokens",
             "max_prompt_len", "max_response_len", "max_steps",
             "max_tool_calls", "sample_problems", "score", "demonstration",
             "observation", "observation_mask", "retry_prefix")
  assert set(members) == set(base.PROTOCOL_MEMBERS)
  for name in registry.task_names():
    task = base.make_task({"name": name, "path": str(data)}
                          if name == "jsonl_math" else {"name": name})
    missing = [m for m in members if not hasattr(task, m)]
    assert not missing, (name, missing)
    rng = np.random.default_rng(0)
    problem = task.sample_problems(rng, 1)[0]
    demo = task.demonstration(problem, rng)
    assert len(problem.prompt_ids) <= task.max_prompt_len
    assert len(demo) <= task.max_response_len
    assert demo[-1] == task.tokenizer.eos_id
    observed = task.observation_mask(problem, demo)
    # The policy's own tokens never include a banned one.
    assert not set(np.array(demo)[~observed].tolist()) & set(
        task.banned_tokens)
    score = task.score(problem, np.array(demo), observed)
    assert score.outcome == 1.0
    assert score.step_rewards.size <= task.max_steps
