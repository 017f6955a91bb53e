"""Math word problems from a local JSONL file, for users with real data.

Each non-blank line is a JSON object with a question and an answer (keys
configurable), e.g. GSM8K's `{"question": "...", "answer": "... #### 72"}`
or `{"problem": "...", "solution": "... \\boxed{\\frac{1}{2}}"}`. Nothing is
downloaded: `path` must be a local file, and the tokenizer is `"bytes"`, a
local tokenizer.json or a `base.Tokenizer` object
(`text_tokenizers.load_tokenizer`).

* Prompt: `chat_template(question)` when a callable is given, else
  `prompt_template.format(question=...)`, encoded, with BOS in front when
  the tokenizer has one and `add_bos` is set. Prompts longer than
  `max_prompt_len` are skipped at load time (counted in `num_skipped`).
* Reference answer: the line's answer field reduced by
  `answers.reference_answer` (its `\\boxed{}` or "####" part when present).
* Outcome: 1.0 when the response ends with EOS (unless `require_eos` is
  off) and the answer `answers.extract_answer` finds in it matches the
  reference (`answers.answers_match`), else 0.0; never NaN.
* Split: 1/8 of the lines (by a hash of the question, `splits.partition`)
  are held out for evaluation and never sampled for training.
* Steps: a step ends at each token after which the text ends with
  `step_separator` ("\\n\\n", as PURE segments responses; None: one step);
  the rest of the response, EOS included, is the last step. There is no
  step checker or process reward model: step rewards are 0 and step labels
  `base.UNKNOWN`.
"""

import dataclasses
import json
import os
from typing import Any, Callable

from absl import logging
import numpy as np

from experiments.tasks import answers
from experiments.tasks import base
from experiments.tasks import splits
from experiments.tasks import text_tokenizers

__all__ = ["JsonlMathConfig", "JsonlMathTask", "read_jsonl"]


@dataclasses.dataclass(frozen=True)
class JsonlMathConfig:
  """Where the data is and how prompts are written.

  Attributes:
    path: a local .jsonl file (required).
    question_key, answer_key: the fields of each line.
    tokenizer: "bytes", a tokenizer.json path or a tokenizer object.
    eos_token, pad_token, bos_token: token texts for a tokenizer.json.
    add_bos: put the tokenizer's BOS in front of the prompt.
    prompt_template: format string with "{question}".
    chat_template: optional callable question -> prompt text (wins over
      `prompt_template`).
    max_prompt_len, max_response_len: token budgets.
    step_separator: text that ends a step; None for one step.
    require_eos: a response without EOS scores 0.
  """
  path: str = ""
  question_key: str = "question"
  answer_key: str = "answer"
  tokenizer: Any = "bytes"
  eos_token: str | None = None
  pad_token: str | None = None
  bos_token: str | None = None
  add_bos: bool = True
  prompt_template: str = "{question}\n"
  chat_template: Callable[[str], str] | None = None
  max_prompt_len: int = 512
  max_response_len: int = 512
  step_separator: str | None = "\n\n"
  require_eos: bool = True

  def __post_init__(self):
    for name in ("max_prompt_len", "max_response_len"):
      base.check_optional_positive_int(getattr(self, name), name)
    if "{question}" not in self.prompt_template:
      raise ValueError(f"prompt_template must contain '{{question}}', got "
                       f"{self.prompt_template!r}.")
    if self.chat_template is not None and not callable(self.chat_template):
      raise ValueError(f"chat_template must be a callable or None, got "
                       f"{self.chat_template!r}.")
    if self.step_separator == "":
      raise ValueError("step_separator must be non-empty text or None.")


def read_jsonl(path: str, question_key: str,
               answer_key: str) -> list[tuple[int, str, str]]:
  """(line number, question, answer text) of every non-blank line.

  Raises:
    ValueError: a URL, a missing file, a line that is not a JSON object, or
      a missing / non-text field; the line number is named.
  """
  if "://" in path:
    raise ValueError(f"path must be a local file; nothing is downloaded, "
                     f"got {path!r}.")
  if not os.path.isfile(path):
    raise ValueError(f"path {path!r} does not exist or is not a file.")
  records = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{number}: not valid JSON ({error.msg}).") \
            from error
      if not isinstance(record, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object, got "
                         f"{type(record).__name__}.")
      fields = []
      for key in (question_key, answer_key):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          value = str(value)
        if not isinstance(value, str) or not value.strip():
          raise ValueError(f"{path}:{number}: field {key!r} must be "
                           f"non-empty text, got {value!r} (keys: "
                           f"{sorted(record)}).")
        fields.append(value)
      records.append((number, *fields))
  if not records:
    raise ValueError(f"path {path!r} holds no records.")
  return records


class JsonlMathTask(base.NoEnvironment):
  """Math problems from a JSONL file (see the module docstring).

  Attributes:
    num_skipped: lines whose prompt exceeds `max_prompt_len`.
  """

  name = "jsonl_math"

  def __init__(self, config=None):
    """Loads the data; see `JsonlMathConfig` for the fields."""
    self.config = base.build_config(JsonlMathConfig, config or {},
                                    self.name)
    c = self.config
    if not c.path:
      raise ValueError("jsonl_math needs config.path, a local .jsonl file.")
    self.tokenizer = text_tokenizers.load_tokenizer(
        c.tokenizer, c.eos_token, c.pad_token, c.bos_token)
    tok = self.tokenizer
    self.banned_tokens = tuple(sorted({tok.pad_id} - {tok.eos_id} | (
        set() if tok.bos_id is None else {tok.bos_id})))
    self.stop_tokens = (tok.eos_id,)
    self.max_prompt_len = c.max_prompt_len
    self.max_response_len = c.max_response_len
    self.max_steps = c.max_response_len
    self._problems, self._solutions = [], {}
    self.num_skipped = 0
    for number, question, answer in read_jsonl(c.path, c.question_key,
                                               c.answer_key):
      prompt = self._prompt_ids(question)
      if len(prompt) > c.max_prompt_len:
        self.num_skipped += 1
        continue
      self._problems.append(base.Problem(
          prompt_ids=prompt, answer=answers.reference_answer(answer),
          uid=number, text=question))
      self._solutions[number] = answer
    if self.num_skipped:
      logging.warning("jsonl_math: skipped %d of %d lines of %s whose prompt "
                      "exceeds max_prompt_len=%d.", self.num_skipped,
                      self.num_skipped + len(self._problems), c.path,
                      c.max_prompt_len)
    if not self._problems:
      raise ValueError(f"every prompt of {c.path!r} exceeds max_prompt_len="
                       f"{c.max_prompt_len}.")
    self._splits = splits.partition([p.text for p in self._problems])
    self._token_text = {}

  def __len__(self) -> int:
    return len(self._problems)

  def _prompt_ids(self, question: str) -> list[int]:
    c = self.config
    text = (c.chat_template(question) if c.chat_template is not None
            else c.prompt_template.format(question=question))
    bos = ([self.tokenizer.bos_id]
           if c.add_bos and self.tokenizer.bos_id is not None else [])
    return bos + list(self.tokenizer.encode(text))

  def sample_problems(self, rng: np.random.Generator, n: int,
                      split: str = "train") -> list[base.Problem]:
    """n problems of `split` (lines held out by `splits.partition` of their
    questions) drawn uniformly with replacement; deterministic in rng.

    Raises:
      ValueError: an unknown split, or the eval split of a one-line file.
    """
    pool = self._splits[splits.check_split(split)]
    if not pool:
      raise ValueError(f"{self.config.path!r} has {len(self)} usable line(s)"
                       f"; holding one out for the {split!r} split needs at "
                       f"least 2.")
    return [self._problems[pool[int(i)]]
            for i in rng.integers(len(pool), size=n)]

  def _step_ends(self, ids: np.ndarray) -> np.ndarray:
    """Token positions after which the text ends with the separator."""
    separator = self.config.step_separator
    if separator is None:
      return np.zeros(0, np.int64)
    pieces = []
    for token in ids.tolist():
      if token not in self._token_text:
        self._token_text[token] = self.tokenizer.decode([token])
      pieces.append(self._token_text[token])
    ends, text = [], ""
    for index, piece in enumerate(pieces):
      text = (text + piece)[-len(separator):]
      if piece and text.endswith(separator):
        ends.append(index)
    return np.array(ends, np.int64)

  def score(self, problem: base.Problem, response_ids,
            observation_mask=None) -> base.Score:
    """Extracts and checks the final answer; see the module docstring."""
    ids = base.check_response(response_ids, self.tokenizer)
    self.check_no_observations(observation_mask)
    has_eos = bool(ids.size) and ids[-1] == self.tokenizer.eos_id
    body = ids[:-1] if has_eos else ids
    predicted = answers.extract_answer(self.tokenizer.decode(body))
    correct = answers.answers_match(predicted, problem.answer)
    outcome = float(correct and (has_eos or not self.config.require_eos))
    ends = self._step_ends(body)
    # A separator at the end of the text opens no step: EOS joins the last.
    ends = ends[ends < body.size - 1]
    step_ids = np.zeros(ids.size, np.int32)
    step_ids[ends + 1] = 1
    step_ids = np.cumsum(step_ids, dtype=np.int32)
    num_steps = int(step_ids[-1]) + 1 if ids.size else 1
    return base.Score(
        outcome=outcome, step_ids=step_ids,
        step_rewards=np.zeros(num_steps, np.float32),
        step_labels=np.full(num_steps, base.UNKNOWN, np.int8),
        metrics={"num_steps": float(num_steps),
                 "answered": float(predicted is not None),
                 "has_eos": float(has_eos),
                 "response_len": float(ids.size)},
        extra={"answer": predicted, "reference": problem.answer})

  def demonstration(self, problem: base.Problem, rng: np.random.Generator,
                    wrong_rate: float = 0.0,
                    filler_rate: float = 0.0) -> list[int]:
    """The line's answer field (the reference solution) and EOS.

    Raises:
      ValueError: non-zero rates (real solutions cannot be corrupted step
        by step).
    """
    del rng
    if wrong_rate or filler_rate:
      raise ValueError(f"jsonl_math demonstrations are the data's solutions:"
                       f" wrong_rate and filler_rate must be 0, got "
                       f"{wrong_rate!r} and {filler_rate!r}.")
    return list(self.tokenizer.encode(self._solutions[problem.uid])) + [
        self.tokenizer.eos_id]

  def retry_prefix(self, problem: base.Problem, response_ids,
                   score: base.Score) -> None:
    """No step checker, so no first wrong step: always None."""
    del problem, response_ids, score
