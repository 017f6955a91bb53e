"""Held-out evaluation problems: disjoint from training by construction."""

import json

import numpy as np
import pytest

from experiments.tasks import base
from experiments.tasks import jsonl_math
from experiments.tasks import splits


def test_split_of_holds_out_an_eighth_stably():
  texts = [f"{a}+{b}*{c}" for a in range(10) for b in range(10)
           for c in range(10)]
  held = [t for t in texts if splits.split_of(t) == "eval"]
  assert len(held) / len(texts) == pytest.approx(splits.EVAL_FRACTION,
                                                 abs=0.03)
  assert held == [t for t in texts if splits.split_of(t) == "eval"]
  with pytest.raises(ValueError, match="split must be one of"):
    splits.check_split("test")


@pytest.mark.parametrize("name", ["chain_arith", "calculator"])
def test_generated_tasks_sample_only_their_split(name):
  task = base.make_task({"name": name, "min_ops": 1, "max_ops": 3})
  train = task.sample_problems(np.random.default_rng(0), 400)
  held = task.sample_problems(np.random.default_rng(0), 400, split="eval")
  assert {splits.split_of(p.text) for p in train} == {"train"}
  assert {splits.split_of(p.text) for p in held} == {"eval"}
  assert not {p.text for p in train} & {p.text for p in held}
  # The difficulty mix is the same in both splits.
  for problems in (train, held):
    ops = np.bincount([len(p.operations) for p in problems], minlength=4)
    assert np.all(ops[1:] > 100)
  again = task.sample_problems(np.random.default_rng(0), 400, split="eval")
  assert [p.text for p in again] == [p.text for p in held]


def test_a_space_too_small_to_split_is_a_clear_error():
  # The four chains "a+b" mod 2 all hash into the train split.
  assert {splits.split_of(f"{a}+{b}") for a in range(2)
          for b in range(2)} == {"train"}
  task = base.make_task({"name": "chain_arith", "min_ops": 1, "max_ops": 1,
                         "ops": "+", "modulus": 2})
  assert len(task.sample_problems(np.random.default_rng(0), 3)) == 3
  with pytest.raises(ValueError, match="too small"):
    task.sample_problems(np.random.default_rng(0), 3, split="eval")


def _write(tmp_path, questions):
  path = tmp_path / "data.jsonl"
  path.write_text("".join(json.dumps({"question": q, "answer": "1"}) + "\n"
                          for q in questions))
  return str(path)


def test_jsonl_lines_split_by_question_hash(tmp_path):
  questions = [f"What is {i} + 1?" for i in range(40)] + ["What is 3 + 1?"]
  task = jsonl_math.JsonlMathTask({"path": _write(tmp_path, questions)})
  rng = np.random.default_rng(0)
  train = {p.text for p in task.sample_problems(rng, 500)}
  held = {p.text for p in task.sample_problems(rng, 500, split="eval")}
  assert train and held and not train & held
  # 40 distinct questions: ⌈40/8⌉ = 5 held out, each by its hash rank.
  assert len(held) == 5 and len(train) == 35
  ranked = sorted(set(questions), key=splits.split_hash)
  assert held == set(ranked[:5])


def test_tiny_jsonl_files_keep_a_training_line(tmp_path):
  two = jsonl_math.JsonlMathTask({"path": _write(tmp_path, ["a?", "b?"])})
  rng = np.random.default_rng(0)
  assert len({p.text for p in two.sample_problems(rng, 20)}) == 1
  assert len({p.text for p in two.sample_problems(rng, 20, "eval")}) == 1
  one = jsonl_math.JsonlMathTask({"path": _write(tmp_path, ["a?"])})
  assert one.sample_problems(rng, 2)[0].text == "a?"
  with pytest.raises(ValueError, match="at least 2"):
    one.sample_problems(rng, 2, split="eval")
