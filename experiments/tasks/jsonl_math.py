"""Math word problems from a local JSONL file, for users with real data.

Each non-blank line is a JSON object with a question and an answer (keys
configurable), e.g. GSM8K's `{"question": "...", "answer": "... #### 72"}`
or `{"problem": "...", "solution": "... \\boxed{\\frac{1}{2}}"}`. Nothing is
downloaded: `path` must be a local file, and the tokenizer is `"bytes"`, a
local tokenizer.json or a `base.Tokenizer` object
(`text_tokenizers.load_tokenizer`).

* Prompt: `chat_template(question)` when a callable is given (the
  template writes any BOS itself), else
  `prompt_template.format(question=...)` with BOS in front when the
  tokenizer has one and `add_bos` is set; encoded. Prompts longer than
  `max_prompt_len` are skipped at load time (counted in `num_skipped`).
* Reference answer: the line's answer field reduced by
  `answers.reference_answer` (its `\\boxed{}` or "####" part when present).
* Outcome: 1.0 when the response ends with EOS (unless `require_eos` is
  off) and the answer `answers.extract_answer` finds in it matches the
  reference (`answers.answers_match`), else 0.0; never NaN.
* Split: 1/8 of the lines (by a hash of the question, `splits.partition`)
  are held out for evaluation and never sampled for training.
* Steps: the response text is cut after each `step_separator` ("\\n\\n",
  as PURE segments responses; "\\n" for one step per line; None: one step)
  by `offsets.cut` (a blank piece joins the step before it); the rest of
  the response, EOS included, is the last step. A token belongs to the
  step its first character is in (`offsets`), so a token that merges a
  separator with the next words stays with the step the separator ends.
* Step checker (`claims`): the arithmetic claims in a step (`48/2 = 24`)
  are checked exactly. A step with a false claim is WRONG, one with only
  true identities (`7 + 0 = 7`) FILLER, one with a true claim CORRECT, and
  a step without a checkable claim (prose, algebra) UNKNOWN: the neutral
  label, scored `reward_unknown` (0), because a rule cannot judge it. The
  last step is also WRONG when the outcome is 0 ("no_answer", "no_eos" or
  "answer"), as in the chain tasks.
* Process rewards (`prm`): "oracle", "noisy" and "hackable" as in
  `prm.py`. The hackable rule PRM never checks the final answer and pays a
  vacuous identity step `reward_hacked` (+1, as much as a correct one), so
  a sum over steps pays a response padded with `x + 0 = x` lines: PURE's
  reward hacking on real data. Retries (R3L) restart before the first
  wrong step.
"""

import dataclasses
import json
import os
from typing import Any, Callable

from absl import logging
import numpy as np

from experiments.tasks import answers
from experiments.tasks import base
from experiments.tasks import claims
from experiments.tasks import offsets
from experiments.tasks import prm
from experiments.tasks import splits
from experiments.tasks import step_scores
from experiments.tasks import text_tokenizers

__all__ = ["JsonlMathConfig", "JsonlMathTask", "read_jsonl"]


@dataclasses.dataclass(frozen=True)
class JsonlMathConfig(prm.PrmConfig):
  """Where the data is, how prompts are written, steps and the PRM.

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
    step_separator: text that ends a step ("\\n\\n" or "\\n"); None for
      one step.
    require_eos: a response without EOS scores 0.
    And the PRM's fields (`prm.PrmConfig`).
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
    super().__post_init__()
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
    prm.check_kind(c.prm)
    self.tokenizer = text_tokenizers.load_tokenizer(
        c.tokenizer, c.eos_token, c.pad_token, c.bos_token)
    self.text = offsets.TokenText(self.tokenizer)
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

  def __len__(self) -> int:
    return len(self._problems)

  def _prompt_ids(self, question: str) -> list[int]:
    c = self.config
    if c.chat_template is not None:
      return list(self.tokenizer.encode(c.chat_template(question)))
    bos = ([self.tokenizer.bos_id]
           if c.add_bos and self.tokenizer.bos_id is not None else [])
    return bos + list(self.tokenizer.encode(
        c.prompt_template.format(question=question)))

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

  def score(self, problem: base.Problem, response_ids,
            observation_mask=None) -> base.Score:
    """Checks the answer and every step; see the module docstring."""
    ids = base.check_response(response_ids, self.tokenizer)
    self.check_no_observations(observation_mask)
    has_eos = bool(ids.size) and ids[-1] == self.tokenizer.eos_id
    text, ends = self.text.decode(ids)
    predicted = answers.extract_answer(text)
    correct = answers.answers_match(predicted, problem.answer)
    outcome = float(correct and (has_eos or not self.config.require_eos))
    separator = self.config.step_separator
    spans = offsets.cut(text, separator) if separator else []
    spans = spans or [[0, len(text)]]
    spans[-1][1] = len(text)  # the rest, and EOS, join the last step
    texts = [text[a:b] for a, b in spans]
    checked = [claims.label(piece) for piece in texts]
    labels = [label for label, _ in checked]
    reasons = [reason for _, reason in checked]
    step_only = list(labels)
    if not outcome and labels[-1] != base.WRONG:
      labels[-1] = base.WRONG
      reasons[-1] = ("no_answer" if predicted is None
                     else "no_eos" if correct else "answer")
    starts = [a for a, _ in spans]
    steps = step_scores.CheckedSteps(
        token_steps=offsets.token_steps(ends, starts[1:]),
        prefixes=[offsets.tokens_before(ends, a) for a in starts],
        texts=texts, labels=labels, reasons=reasons,
        vacuous=[label == base.FILLER for label in step_only],
        step_only_labels=step_only)
    return step_scores.make_score(
        self.config, problem, ids, steps, outcome=outcome, answer=predicted,
        answered=predicted is not None, has_eos=has_eos,
        metrics={"unknown_steps": float(labels.count(base.UNKNOWN))},
        extra={"reference": problem.answer})

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
                   score: base.Score) -> list[int] | None:
    """The response before its first wrong step (R3L), None without one:
    the tokens that hold none of that step's text."""
    del problem
    return step_scores.retry_prefix(response_ids, score)
