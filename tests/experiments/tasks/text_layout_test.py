"""The chain tasks through real tokenizers: the lines layout, the checker on
decoded text, and step boundaries mapped back to tokens when a BPE merges
a step end into its neighbours."""

import string

import numpy as np
import pytest

from experiments.models.tokenizer import Tokenizer
from experiments.tasks import base
from experiments.tasks import offsets
from experiments.tasks import step_scores
from experiments.tasks import text_tokenizers

C, W, F = base.CORRECT, base.WRONG, base.FILLER
SOLUTION = "3+4=7\n7*2=4\n4-1=3\nAnswer: 3"


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
  return Tokenizer(tiny_checkpoint)


def make(name, tokenizer, **config):
  template = lambda text: tokenizer.apply_chat_template(
      [{"role": "user", "content": text}])
  return base.make_task({"name": name, "tokenizer": tokenizer,
                         "chat_template": template, **config})


def reference_steps(tokenizer, ids, starts):
  """Step of each token by its first character, from decoding prefixes;
  steps that own no token are merged into the one before (renumbered)."""
  out = []
  for i in range(len(ids)):
    first = len(tokenizer.decode(ids[:i]))
    out.append(sum(1 for s in starts[1:] if s <= first))
  return np.unique(out, return_inverse=True)[1].tolist()


def line_starts(text):
  """Where each step starts: every non-blank line before the answer line
  (blank lines and the answer belong to the step before)."""
  starts, position = [], 0
  for line in text.split("\n"):
    if line.strip() and not line.startswith("Answer:"):
      starts.append(position)
    position += len(line) + 1
  return starts or [0]


def test_bpe_merges_step_ends_into_neighbours(tokenizer):
  # The trained BPE holds tokens that cross a step end ("=7\n7"), so the
  # tests below exercise merged boundaries, not one token per character.
  ids = tokenizer.encode(SOLUTION)
  pieces = [tokenizer.decode([t]) for t in ids]
  assert "".join(pieces) == SOLUTION
  crossing = [p for p in pieces if "\n" in p and p.strip("\n")]
  assert crossing, pieces


def test_prompt_is_the_chat_formatted_instruction(tokenizer):
  task = make("chain_arith", tokenizer)
  problem = task.problem_from_text("3+4*2-1")
  text = tokenizer.decode(problem.prompt_ids, skip_special_tokens=False)
  assert text.startswith("<|im_start|>user\nCompute 3+4*2-1 modulo 10")
  assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
  assert len(problem.prompt_ids) <= task.max_prompt_len
  for p in task.sample_problems(np.random.default_rng(0), 200):
    assert len(p.prompt_ids) <= task.max_prompt_len


@pytest.mark.parametrize("text, labels, reasons, outcome", [
    (SOLUTION, [C, C, C], ["", "", ""], 1.0),
    ("3+4=7\n7+0=7\n7*2=4\n4-1=3\nAnswer: 3", [C, F, C, C], [""] * 4, 1.0),
    ("3 + 4 = 7\n\n7*2=4\n4-1=3\nAnswer:3", [C, C, C], ["", "", ""], 1.0),
    ("3+4=8\n8*2=6\n6-1=5\nAnswer: 5", [W, C, C], ["arithmetic", "", ""],
     0.0),
    ("3+4=7\n7*2=4\nAnswer: 4", [C, W], ["", "incomplete"], 0.0),
    ("3+4=7\n7*2=4\n4-1=3\n", [C, C, W], ["", "", "no_answer"], 0.0),
])
def test_checker_on_decoded_text(tokenizer, text, labels, reasons, outcome):
  task = make("chain_arith", tokenizer)
  problem = task.problem_from_text("3+4*2-1")
  ids = tokenizer.encode(text) + [tokenizer.eos_id]
  score = task.score(problem, np.array(ids))
  assert score.step_labels.tolist() == labels
  assert score.extra["step_errors"] == reasons
  assert score.outcome == outcome
  assert score.step_ids.tolist() == reference_steps(tokenizer, ids,
                                                    line_starts(text))


def test_layouts_agree_on_labels_and_rewards(tokenizer):
  """The same solutions in the compact and the lines layout: same labels,
  same oracle and hackable rewards, same outcome."""
  rng = np.random.default_rng(3)
  for prm in ("oracle", "hackable"):
    compact = base.make_task({"name": "chain_arith", "prm": prm,
                              "max_response_len": 96})
    lines = make("chain_arith", tokenizer, prm=prm, max_response_len=96)
    for problem in compact.sample_problems(rng, 40):
      ids = compact.demonstration(problem, rng, 0.3, 0.3)
      text = compact.tokenizer.decode(ids)
      as_lines = text.replace(";", "\n").replace(">", "Answer: ")
      a = compact.score(problem, np.array(ids))
      b = lines.score(lines.problem_from_text(problem.text), np.array(
          tokenizer.encode(as_lines) + [tokenizer.eos_id]))
      np.testing.assert_array_equal(a.step_labels, b.step_labels)
      np.testing.assert_array_equal(a.step_rewards, b.step_rewards)
      assert a.outcome == b.outcome


def test_demonstrations_round_trip_and_step_ids(tokenizer):
  task = make("chain_arith", tokenizer, max_response_len=96)
  rng = np.random.default_rng(0)
  merged = 0
  for problem in task.sample_problems(rng, 60):
    clean = task.demonstration(problem, rng)
    assert task.score(problem, np.array(clean)).outcome == 1.0
    ids = task.demonstration(problem, rng, 0.3, 0.3)
    assert len(ids) <= task.max_response_len
    assert ids[-1] == task.tokenizer.eos_id
    text = tokenizer.decode(ids)
    score = task.score(problem, np.array(ids))
    want = reference_steps(tokenizer, ids, line_starts(text))
    assert score.step_ids.tolist() == want
    # Each step's last token ends at or after the step's last character.
    pieces = [tokenizer.decode([t]) for t in ids]
    ends = np.cumsum([len(p) for p in pieces])
    starts = line_starts(text)
    if len(score.extra["step_spans"]) == len(starts):  # nothing merged
      for k, (_, stop) in enumerate(score.extra["step_spans"][:-1]):
        assert ends[stop - 1] >= starts[k + 1]
    merged += sum(1 for i, p in enumerate(pieces[:-1])
                  if "\n" in p[:-1] and p.strip("\n"))
  assert merged > 0  # some tokens straddled a step boundary


def test_retry_prefix_holds_nothing_of_the_wrong_step(tokenizer):
  task = make("chain_arith", tokenizer)
  problem = task.problem_from_text("3+4*2-1")
  text = "3+4=7\n7*2=5\n5-1=4\nAnswer: 4"
  ids = tokenizer.encode(text) + [tokenizer.eos_id]
  score = task.score(problem, np.array(ids))
  assert score.step_labels.tolist() == [C, W, C]
  prefix = task.retry_prefix(problem, ids, score)
  wrong_start = len("3+4=7\n")
  # The longest token prefix whose text ends at or before the wrong step.
  want = max(i for i in range(len(ids) + 1)
             if len(tokenizer.decode(ids[:i])) <= wrong_start)
  assert prefix == ids[:want]
  assert wrong_start - 3 <= len(tokenizer.decode(prefix)) <= wrong_start


def test_calculator_through_the_bpe(tokenizer):
  task = make("calculator", tokenizer, max_ops=3)
  rng = np.random.default_rng(1)
  closes = {t for t in range(tokenizer.vocab_size)
            if "]" in tokenizer.decode([t])}
  banned = {t for t in range(tokenizer.vocab_size)
            if "=" in tokenizer.decode([t])}
  assert banned <= set(task.banned_tokens)
  assert set(task.stop_tokens) == (closes - banned) | {tokenizer.eos_id}
  assert not set(task.stop_tokens) & set(task.banned_tokens)
  for problem in task.sample_problems(rng, 40):
    ids = task.demonstration(problem, rng, 0.3, 0.3)
    mask = task.observation_mask(problem, ids)
    score = task.score(problem, np.array(ids))
    text = tokenizer.decode(ids)
    assert text.endswith(f"Answer: {score.extra['answer']}")
    # The observations are the tool's "=z\n" lines.
    observed = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert observed == "".join(line[line.index("="):] + "\n"
                               for line in text.split("\n")[:-1])
    assert (score.step_ids[mask] == -1).all()
    clean = task.demonstration(problem, rng)
    assert task.score(problem, np.array(clean)).outcome == 1.0


def test_calculator_random_policies_through_the_bpe(tokenizer):
  """Random allowed tokens with the environment's replies: scoring and the
  observation replay never fail."""
  task = make("calculator", tokenizer, max_ops=2)
  rng = np.random.default_rng(2)
  allowed = [t for t in range(tokenizer.vocab_size)
             if t not in set(task.banned_tokens)]
  for problem in task.sample_problems(rng, 30):
    ids, mask = [], []
    while len(ids) < task.max_response_len:
      token = int(rng.choice(allowed))
      ids.append(token)
      mask.append(False)
      if token == tokenizer.eos_id:
        break
      obs = task.observation(problem, ids) if token in task.stop_tokens else (
          None)
      if obs:
        ids += obs
        mask += [True] * len(obs)
    ids, mask = ids[:task.max_response_len], mask[:task.max_response_len]
    np.testing.assert_array_equal(task.observation_mask(problem, ids), mask)
    task.score(problem, np.array(ids))


def test_bytes_tokenizer_gives_the_lines_layout():
  task = base.make_task({"name": "chain_arith", "tokenizer": "bytes"})
  problem = task.problem_from_text("3+4*2-1")
  assert task.tokenizer.decode(problem.prompt_ids).endswith("result.\n")
  ids = task.tokenizer.encode(SOLUTION) + [task.tokenizer.eos_id]
  score = task.score(problem, np.array(ids))
  assert score.outcome == 1.0
  assert score.step_ids.tolist() == [0] * 6 + [1] * 6 + [2] * (
      len(ids) - 12)


class _Greedy:
  """A tokenizer of fixed pieces, longest match first (PAD 0, EOS 1)."""
  pad_id, eos_id, bos_id = 0, 1, None

  def __init__(self, pieces):
    self.pieces = ["", ""] + sorted(set(pieces), key=len, reverse=True)
    self.vocab_size = len(self.pieces)

  def encode(self, text):
    ids = []
    while text:
      i = next(i for i, p in enumerate(self.pieces) if p and
               text.startswith(p))
      ids.append(i)
      text = text[len(self.pieces[i]):]
    return ids

  def decode(self, ids):
    return "".join(self.pieces[int(i)] for i in ids)


@pytest.mark.parametrize("prm, reward", [("oracle", 0.0), ("hackable", 1.0)])
def test_a_step_inside_another_steps_token_is_merged(prm, reward):
  """Step 1 ("7+0=7\\n") lies inside a token that began in step 0: it
  joins step 0, which takes the worst label and the lowest reward."""
  tok = _Greedy(["3+4=7", "\n7+0=7\n", "7*2=4\n", "4-1=3\n", "Answer: 3"]
                + list(string.printable))
  task = base.make_task({"name": "chain_arith", "tokenizer": tok,
                         "prm": prm})
  problem = task.problem_from_text("3+4*2-1")
  text = "3+4=7\n7+0=7\n7*2=4\n4-1=3\nAnswer: 3"
  ids = tok.encode(text) + [tok.eos_id]
  assert [tok.decode([i]) for i in ids[:2]] == ["3+4=7", "\n7+0=7\n"]
  score = task.score(problem, np.array(ids))
  assert score.metrics["num_steps"] == 4  # the text's steps
  assert score.metrics["filler_steps"] == 1
  assert score.step_labels.tolist() == [F, C, C]
  assert score.step_rewards.tolist() == [reward, 1.0, 1.0]
  assert score.step_ids.tolist() == [0, 0, 1, 2, 2, 2]
  assert score.outcome == 1.0


def test_token_text_offsets_with_tokens_that_differ_alone():
  """A tokenizer whose tokens decode differently alone (a leading space
  dropped, as SentencePiece does) and a character split over two bytes."""

  class Spaces(_Greedy):
    def decode(self, ids):
      text = super().decode(ids)
      return text.lstrip(" ") if len(ids) == 1 else text

  tok = Spaces([" is", " 7", "x", "\n"])
  ids = tok.encode("x is 7\nx is 7")
  text, ends = offsets.TokenText(tok).decode(ids)
  assert text == "x is 7\nx is 7"
  assert ends.tolist() == [1, 4, 6, 7, 8, 11, 13]
  byte = text_tokenizers.ByteVocab()
  text, ends = offsets.TokenText(byte).decode(byte.encode("aé=7"))
  assert text == "aé=7" and ends.tolist() == [1, 1, 2, 3, 4]
  assert offsets.token_steps(ends, [2]).tolist() == [0, 0, 0, 1, 1]
  assert offsets.tokens_before(ends, 2) == 3
  # An empty token (EOS) where a step starts belongs to that step.
  assert offsets.tokens_before(np.array([0]), 0) == 0
  assert offsets.tokens_before(np.array([3, 3, 5]), 3) == 1


def test_merge_keeps_the_first_wrong_step_and_its_prefix():
  steps = step_scores.CheckedSteps(
      token_steps=np.array([0, 0, 2, 3]), prefixes=[0, 1, 1, 2],
      texts=["a", "b", "c", "d"], labels=[C, W, C, F],
      reasons=["", "arithmetic", "", ""], vacuous=[False] * 4)
  config = base.make_task({"name": "chain_arith"}).config
  score = step_scores.make_score(
      config, base.Problem([1], "3", text="3+4"), np.arange(4), steps,
      outcome=0.0, answer=None, answered=False, has_eos=False)
  assert score.step_labels.tolist() == [W, C, F]
  assert score.step_rewards.tolist() == [-1.0, 1.0, 0.0]
  assert score.extra["first_wrong_step"] == 0
  assert score.extra["first_wrong_token"] == 1


@pytest.mark.parametrize("lines", [False, True])
def test_retry_prefixes_of_random_responses(tokenizer, lines):
  """A retry prefix is a proper prefix without EOS, and holds nothing of
  the first wrong step (it decodes to text before that step's start)."""
  task = (make("chain_arith", tokenizer) if lines
          else base.make_task({"name": "chain_arith"}))
  tok = task.tokenizer
  rng = np.random.default_rng(5)
  allowed = [t for t in range(tok.vocab_size)
             if t not in set(task.banned_tokens) | {tok.eos_id}]
  problem = task.problem_from_text("3+4*2-1")
  for _ in range(200):
    ids = [int(t) for t in rng.choice(allowed, size=rng.integers(0, 12))]
    ids += [tok.eos_id] if rng.random() < 0.8 else []
    score = task.score(problem, np.array(ids, np.int64))
    prefix = task.retry_prefix(problem, ids, score)
    if prefix is None:
      assert base.WRONG not in score.step_labels.tolist()
      continue
    assert prefix == ids[:len(prefix)] and tok.eos_id not in prefix
    assert len(prefix) < max(len(ids), 1)
