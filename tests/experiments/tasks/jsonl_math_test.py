"""Tests for the JSONL math loader, answer extraction and text tokenizers."""

import fractions
import json

import ml_collections
import numpy as np
import pytest

from experiments.tasks import answers
from experiments.tasks import base
from experiments.tasks import jsonl_math
from experiments.tasks import text_tokenizers


@pytest.mark.parametrize("text, want", [
    ("so the total is 18.\n#### 18", "18"),
    ("#### 1,234", "1,234"),
    ("We get \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{\\sqrt{2}+{3}}", "\\sqrt{2}+{3}"),
    ("\\fbox{7}", "7"),
    ("The answer is 42.", "42"),
    ("answer: -3.5", "-3.5"),
    ("5 apples and 7, pears, total 12, ok", "12"),
    ("no digits here", None),
    ("\\boxed{unbalanced", None),
    ("", None),
])
def test_extract_answer(text, want):
  assert answers.extract_answer(text) == want


@pytest.mark.parametrize("text, want", [
    ("42", fractions.Fraction(42)),
    ("-42", fractions.Fraction(-42)),
    ("+7", fractions.Fraction(7)),
    ("1,234", fractions.Fraction(1234)),
    ("3.50", fractions.Fraction(7, 2)),
    (".5", fractions.Fraction(1, 2)),
    ("3/4", fractions.Fraction(3, 4)),
    ("\\frac{3}{4}", fractions.Fraction(3, 4)),
    ("-\\dfrac{1}{2}", fractions.Fraction(-1, 2)),
    ("\\frac{1,000}{4}", fractions.Fraction(250)),
    ("50%", fractions.Fraction(50)),
    ("50\\%", fractions.Fraction(50)),
    ("$12", fractions.Fraction(12)),
    ("\\$ 12.", fractions.Fraction(12)),
    ("\\text{12}", fractions.Fraction(12)),
    ("1/0", None),
    ("\\frac{1}{0}", None),
    ("12,34", None),
    ("x+1", None),
    ("-", None),
    ("", None),
    ("\\sqrt{2}", None),
])
def test_parse_number(text, want):
  assert answers.parse_number(text) == want


@pytest.mark.parametrize("predicted, reference, want", [
    ("0.5", "\\frac{1}{2}", True),
    ("1/2", "0.5", True),
    ("1,000", "1000", True),
    ("1000.0", "1000", True),
    ("72", "72", True),
    ("71", "72", False),
    ("\\text{Monday}", "monday", True),
    ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("(1,3)", "(1,2)", False),
    ("5", "x = 5", False),
    (None, "5", False),
])
def test_answers_match(predicted, reference, want):
  assert answers.answers_match(predicted, reference) is want


@pytest.mark.parametrize("field, want", [
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("\\frac{1}{2}", "\\frac{1}{2}"),
    ("so \\boxed{3}", "3"),
    ("  17 ", "17"),
])
def test_reference_answer(field, want):
  assert answers.reference_answer(field) == want


def write(tmp_path, lines, name="data.jsonl"):
  path = tmp_path / name
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(path)


def gsm_lines():
  return [json.dumps({"question": f"What is {i} + {i}?",
                      "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"})
          for i in range(5)]


def test_loads_prompts_and_scores(tmp_path):
  path = write(tmp_path, gsm_lines())
  task = jsonl_math.JsonlMathTask({"path": path})
  assert len(task) == 5
  tok = task.tokenizer
  problem = task.sample_problems(np.random.default_rng(0), 1)[0]
  i = int(problem.text.split()[2])
  assert problem.prompt_ids[0] == tok.bos_id
  assert tok.decode(problem.prompt_ids) == f"What is {i} + {i}?\n"
  assert problem.answer == str(2 * i)

  def score(text, eos=True):
    ids = tok.encode(text) + ([tok.eos_id] if eos else [])
    return task.score(problem, np.array(ids))

  assert score(f"Add them.\n\nSo \\boxed{{{2 * i}}}").outcome == 1.0
  assert score(f"#### {2 * i}.0").outcome == 1.0
  assert score(f"#### {2 * i + 1}").outcome == 0.0
  assert score(f"#### {2 * i}", eos=False).outcome == 0.0
  assert score("I do not know").metrics["answered"] == 0.0
  # The demonstration is the data's solution and scores as correct.
  demo = task.demonstration(problem, np.random.default_rng(0))
  assert score(tok.decode(demo)).outcome == 1.0
  with pytest.raises(ValueError, match="wrong_rate"):
    task.demonstration(problem, np.random.default_rng(0), wrong_rate=0.1)


def test_steps_split_on_blank_lines(tmp_path):
  task = jsonl_math.JsonlMathTask({"path": write(tmp_path, gsm_lines())})
  tok = task.tokenizer
  problem = task.sample_problems(np.random.default_rng(0), 1)[0]
  text = "a\n\nbc\n\n\\boxed{1}"
  ids = np.array(tok.encode(text) + [tok.eos_id])
  score = task.score(problem, ids)
  want = [0] * 3 + [1] * 4 + [2] * 10
  assert score.step_ids.tolist() == want
  # No arithmetic claim: unknown (neutral) steps; the wrong answer makes
  # the last step wrong.
  assert score.step_labels.tolist() == [base.UNKNOWN] * 2 + [base.WRONG]
  assert score.step_rewards.tolist() == [0.0, 0.0, -1.0]
  assert task.retry_prefix(problem, ids, score) == ids[:7].tolist()
  # A separator at the very end does not open an empty step.
  score = task.score(problem, np.array(tok.encode("a\n\n") + [tok.eos_id]))
  assert score.step_ids.tolist() == [0, 0, 0, 0]
  one = jsonl_math.JsonlMathTask({"path": task.config.path,
                                  "step_separator": None})
  assert set(one.score(problem, ids).step_ids.tolist()) == {0}


def test_config_keys_templates_and_config_dict(tmp_path):
  path = write(tmp_path, [json.dumps({"problem": "1+1?", "solution": 2})])
  config = ml_collections.ConfigDict({
      "name": "jsonl_math", "path": path, "question_key": "problem",
      "answer_key": "solution", "add_bos": False,
      "prompt_template": "Q: {question}\nA:"})
  task = base.make_task(config)
  problem = task.sample_problems(np.random.default_rng(0), 1)[0]
  assert task.tokenizer.decode(problem.prompt_ids) == "Q: 1+1?\nA:"
  assert problem.prompt_ids[0] != task.tokenizer.bos_id
  assert problem.answer == "2"
  chat = jsonl_math.JsonlMathTask({
      "path": path, "question_key": "problem", "answer_key": "solution",
      "chat_template": lambda q: f"<user>{q}</user>"})
  prompt = chat.sample_problems(np.random.default_rng(0), 1)[0].prompt_ids
  assert chat.tokenizer.decode(prompt) == "<user>1+1?</user>"


def test_sampling_is_deterministic(tmp_path):
  task = jsonl_math.JsonlMathTask({"path": write(tmp_path, gsm_lines())})
  first = task.sample_problems(np.random.default_rng(3), 20)
  second = task.sample_problems(np.random.default_rng(3), 20)
  assert [p.uid for p in first] == [p.uid for p in second]
  assert len({p.uid for p in first}) > 1


def test_long_prompts_are_skipped(tmp_path):
  lines = gsm_lines() + [json.dumps({"question": "x" * 100, "answer": "1"})]
  task = jsonl_math.JsonlMathTask({"path": write(tmp_path, lines),
                                   "max_prompt_len": 40})
  assert task.num_skipped == 1 and len(task) == 5
  with pytest.raises(ValueError, match="every prompt"):
    jsonl_math.JsonlMathTask({"path": write(tmp_path, lines),
                              "max_prompt_len": 2})


@pytest.mark.parametrize("lines, match", [
    (["{\"question\": \"a\", \"answer\": \"1\"}", "{oops"],
     r"data.jsonl:2: not valid JSON"),
    (["[1, 2]"], r"data.jsonl:1: expected a JSON object"),
    (["{\"question\": \"a\"}"], r"data.jsonl:1: field 'answer'"),
    (["", "{\"question\": \"\", \"answer\": \"1\"}"],
     r"data.jsonl:2: field 'question'"),
    (["{\"question\": \"a\", \"answer\": true}"],
     r"data.jsonl:1: field 'answer'"),
    ([""], "holds no records"),
])
def test_malformed_lines(tmp_path, lines, match):
  with pytest.raises(ValueError, match=match):
    jsonl_math.JsonlMathTask({"path": write(tmp_path, lines)})


def test_bad_paths_and_config(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    jsonl_math.JsonlMathTask({"path": str(tmp_path / "missing.jsonl")})
  with pytest.raises(ValueError, match="nothing is downloaded"):
    jsonl_math.JsonlMathTask({"path": "https://example.com/x.jsonl"})
  with pytest.raises(ValueError, match="config.path"):
    jsonl_math.JsonlMathTask({})
  path = write(tmp_path, gsm_lines())
  with pytest.raises(ValueError, match="prompt_template"):
    jsonl_math.JsonlMathTask({"path": path, "prompt_template": "no field"})
  with pytest.raises(ValueError, match="is not a key of the jsonl_math task"):
    jsonl_math.JsonlMathTask({"path": path, "questions": "q"})
  with pytest.raises(ValueError, match="nothing is downloaded"):
    jsonl_math.JsonlMathTask({"path": path,
                              "tokenizer": "https://example.com/t.json",
                              "eos_token": "x"})
  with pytest.raises(ValueError, match="lacks"):
    jsonl_math.JsonlMathTask({"path": path, "tokenizer": object()})


def test_byte_vocab_round_trip():
  vocab = text_tokenizers.ByteVocab()
  text = "héllo\n\n\\boxed{½}"
  assert vocab.decode([vocab.bos_id] + vocab.encode(text)
                      + [vocab.eos_id]) == text
  assert min(vocab.encode(text)) >= 3
  assert max(vocab.encode(text)) < vocab.vocab_size


def test_tokenizer_json_file(tmp_path):
  tokenizers = pytest.importorskip("tokenizers")
  vocab = {"[PAD]": 0, "<s>": 1, "</s>": 2, "[UNK]": 3}
  for word in ("what", "is", "1", "+", "?", "####", "2", "\n"):
    vocab[word] = len(vocab)
  model = tokenizers.models.WordLevel(vocab, unk_token="[UNK]")
  tokenizer = tokenizers.Tokenizer(model)
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tokenizer.add_special_tokens(["[PAD]", "<s>", "</s>"])
  tokenizer_path = str(tmp_path / "tokenizer.json")
  tokenizer.save(tokenizer_path)
  data = write(tmp_path, [json.dumps({"question": "what is 1 + 1 ?",
                                      "answer": "#### 2"})])
  task = jsonl_math.JsonlMathTask({
      "path": data, "tokenizer": tokenizer_path, "eos_token": "</s>",
      "pad_token": "[PAD]", "bos_token": "<s>", "step_separator": None})
  tok = task.tokenizer
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert task.banned_tokens == (0, 1)
  problem = task.sample_problems(np.random.default_rng(0), 1)[0]
  assert problem.prompt_ids == [1] + tok.encode("what is 1 + 1 ?\n")
  response = np.array(tok.encode("#### 2") + [tok.eos_id])
  assert task.score(problem, response).outcome == 1.0
  with pytest.raises(ValueError, match="eos_token 'nope'"):
    jsonl_math.JsonlMathTask({"path": data, "tokenizer": tokenizer_path,
                              "eos_token": "nope"})
  with pytest.raises(ValueError, match="eos_token is needed"):
    jsonl_math.JsonlMathTask({"path": data, "tokenizer": tokenizer_path})
