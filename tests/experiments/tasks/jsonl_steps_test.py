"""`jsonl_math`'s steps, rule checker and PRMs on a small JSONL file made
here, through bytes and through a BPE with a chat template."""

import json

import numpy as np
import pytest

from experiments.models.tokenizer import Tokenizer
from experiments.tasks import base
from experiments.tasks import jsonl_math

C, W, F, U = base.CORRECT, base.WRONG, base.FILLER, base.UNKNOWN
QUESTION = "Natalia sold 48 clips in April and half as many in May. Total?"
CONCISE = ("In May she sold 48/2 = 24 clips.\n\n"
           "Altogether 48 + 24 = 72 clips.\n\n#### 72")
# Vacuous identity steps and no answer at all.
PADDED = "\n\n".join(["48/2 = 24"] + ["24 + 0 = 24", "24 * 1 = 24"] * 4)


@pytest.fixture()
def path(tmp_path):
  lines = [{"question": QUESTION, "answer": CONCISE}] + [
      {"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}"
                                                     f"\n\n#### {2 * i}"}
      for i in range(7)]
  file = tmp_path / "data.jsonl"
  file.write_text("\n".join(json.dumps(line) for line in lines))
  return str(file)


def make(path, **config):
  task = jsonl_math.JsonlMathTask({"path": path, "max_response_len": 160,
                                   **config})
  rng = np.random.default_rng(0)
  drawn = task.sample_problems(rng, 64) + task.sample_problems(rng, 64,
                                                               "eval")
  return task, next(p for p in drawn if p.text == QUESTION)


def score(task, problem, text, eos=True):
  tok = task.tokenizer
  ids = tok.encode(text) + ([tok.eos_id] if eos else [])
  return task.score(problem, np.array(ids)), ids


@pytest.mark.parametrize("text, labels, reasons, outcome", [
    (CONCISE, [C, C, U], ["", "", ""], 1.0),
    ("In May 48/2 = 25.\n\n48 + 25 = 73\n\n#### 73", [W, C, W],
     ["arithmetic", "", "answer"], 0.0),
    ("Half of 48 is 24.\n\n24 + 0 = 24\n\n48 + 24 = 72\n\n#### 72",
     [U, F, C, U], [""] * 4, 1.0),
    ("48/2 = 24\n\n48 + 24 = 72", [C, C], ["", ""], 1.0),
    ("48/2 = 24\n\nI am not sure.", [C, W], ["", "answer"], 0.0),
    ("Half of them.\n\nI am not sure.", [U, W], ["", "no_answer"], 0.0),
])
def test_labels_and_answer_check(path, text, labels, reasons, outcome):
  task, problem = make(path)
  got, _ = score(task, problem, text)
  assert got.step_labels.tolist() == labels
  assert got.extra["step_errors"] == reasons
  assert got.outcome == outcome
  assert got.metrics["unknown_steps"] == labels.count(U)
  assert got.metrics["filler_steps"] == labels.count(F)
  # The oracle PRM: +1 / -1 / 0, unknown steps neutral.
  want = {C: 1.0, W: -1.0, F: 0.0, U: 0.0}
  assert got.step_rewards.tolist() == [want[label] for label in labels]


def test_no_eos_blames_the_last_step(path):
  task, problem = make(path)
  got, _ = score(task, problem, "48/2 = 24\n\n48 + 24 = 72\n\n#### 72",
                 eos=False)
  assert got.outcome == 0.0 and got.extra["step_errors"][-1] == "no_eos"


def test_newline_separator(path):
  task, problem = make(path, step_separator="\n")
  got, ids = score(task, problem, "48/2 = 24\n48 + 24 = 72\n#### 72")
  assert got.step_labels.tolist() == [C, C, U]
  assert got.step_ids.tolist() == [0] * 10 + [1] * 13 + [2] * 8


@pytest.mark.parametrize("unknown, concise_min", [(0.0, 0.0), (1.0, 1.0)])
def test_hackable_rule_prm_pays_padding_under_the_sum(path, unknown,
                                                      concise_min):
  """Without a baseline, the sum form's return at the first token is the
  sum of the step rewards and PURE's strict min form their min
  (prm_test.py runs the estimators on such scores)."""
  task, problem = make(path, prm="hackable", reward_unknown=unknown)
  (concise, _), (padded, _) = [score(task, problem, t)
                               for t in (CONCISE, PADDED)]
  assert concise.outcome == 1.0 and padded.outcome == 0.0
  # The truth: padding is filler and the missing answer is wrong ...
  assert padded.step_labels.tolist() == [C] + [F] * 7 + [W]
  # ... but the hackable PRM pays identities and never checks the answer.
  np.testing.assert_array_equal(padded.step_rewards, np.ones(9))
  np.testing.assert_array_equal(concise.step_rewards, [1, 1, unknown])
  assert padded.step_rewards.sum() == 9 > concise.step_rewards.sum()
  # The answer line has no claim: a neutral 0 caps the concise response's
  # min below the padded one's; scoring unchecked steps like correct ones
  # (a learned PRM's view of sound prose) leaves the min form no gain.
  assert concise.step_rewards.min() == concise_min
  assert padded.step_rewards.min() == 1.0
  oracle, _ = score(make(path)[0], problem, PADDED)
  assert oracle.step_rewards.sum() < 2.0


def test_noisy_prm_flips_verdicts_never_unknown_steps(path):
  task, problem = make(path, prm="noisy", prm_noise=1.0)
  got, _ = score(task, problem, CONCISE)
  assert got.step_rewards.tolist() == [-1.0, -1.0, 0.0]
  again, _ = score(make(path, prm="noisy", prm_noise=0.5)[0], problem,
                   CONCISE)
  assert np.isin(again.step_rewards, [-1.0, 1.0, 0.0]).all()


def test_through_a_bpe_with_a_chat_template(path, tiny_checkpoint):
  tok = Tokenizer(tiny_checkpoint)
  template = lambda q: tok.apply_chat_template([{"role": "user",
                                                 "content": q}])
  task, problem = make(path, tokenizer=str(tiny_checkpoint),
                       chat_template=template)
  assert tok.decode(problem.prompt_ids, skip_special_tokens=False) == (
      f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
  text = "48/2 = 25\n\n48 + 25 = 73 clips\n\n#### 73"
  got, ids = score(task, problem, text)
  assert got.step_labels.tolist() == [W, C, W]
  # Steps by each token's first character, from decoding prefixes.
  starts = [0, text.index("48 +"), text.index("####")]
  want = [sum(1 for s in starts[1:] if s <= len(tok.decode(ids[:i])))
          for i in range(len(ids))]
  assert got.step_ids.tolist() == want
  prefix = task.retry_prefix(problem, ids, got)
  assert prefix == []  # the first step is wrong: nothing to keep
  got, ids = score(task, problem, "48/2 = 24\n\n48 + 24 = 70\n\n#### 70")
  prefix = task.retry_prefix(problem, ids, got)
  assert tok.decode(prefix) == "48/2 = 24\n\n"[:len(tok.decode(prefix))]
  assert len(tok.decode(prefix)) <= len("48/2 = 24\n\n")
  assert len(tok.decode(ids[:len(prefix) + 1])) > len("48/2 = 24\n\n")
