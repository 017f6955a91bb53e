"""Chain arithmetic: solve a chain of k modular operations step by step.

Layout (m = 10, k = 3; `^` is BOS, `$` EOS):

  prompt    ^3+4*2-1?                   operations applied left to right
  response  3+4=7;7*2=4;4-1=3;>3$
  steps     000000111111222222222       step_ids: the answer ">3" and EOS
                                        belong to the last step

Each step is `x op y = z` ended by the step separator ";"; ">" marks the
final answer, then EOS. The prompt-only "?" is banned from responses. Rules
for responses that do not follow the layout:

* The text after the first ">" (up to EOS) is the answer; everything before
  it is split after each ";", and an unterminated trailing piece is a step
  too. The answer tokens and EOS join the last step, so every response token
  has a step id (never −1). A response without any step before the answer
  (or an empty one) is a single step.
* The step checker (`arith.StepChecker`) labels every step CORRECT, WRONG or
  FILLER. The last step is also WRONG when the answer does not follow from
  the steps (`arith.check_answer`: no answer, not a number, no EOS, an
  operation left undone, or not the chain's value).
* `free_length=True` (the length variant): a step may be followed by
  checks, verbatim repeats of a CORRECT step (`7*2=4;7*2=4;`), labelled
  FILLER; metric `check_steps` counts them.
* Outcome reward: 1.0 when the response ends with EOS and its answer equals
  the chain's value, else 0.0 (a missing answer, a malformed answer or a
  response cut at the length limit without EOS all score 0). Every response
  is scorable: the outcome is never NaN.

Process rewards: `prm.py` ("oracle", "noisy", "hackable"; +1 / −1 / 0 by
default). The hackable PRM scores the steps without the answer check.
"""

import numpy as np

from experiments.tasks import arith
from experiments.tasks import base
from experiments.tasks import prm
from experiments.tasks import step_scores

__all__ = ["ANSWER", "ChainArithTask", "PROMPT_END", "STEP_END", "SYMBOLS"]

SYMBOLS = "0123456789+-*=;>?"
STEP_END = ";"
ANSWER = ">"
PROMPT_END = arith.PROMPT_END


class ChainArithTask(arith.ChainProblems, base.NoEnvironment):
  """The chain-arithmetic task (see the module docstring).

  Attributes:
    config: the `arith.ChainConfig`.
    tokenizer: a `base.CharVocab`.
  """

  name = "chain_arith"

  def __init__(self, config=None):
    """Builds the task from a mapping of `arith.ChainConfig` fields."""
    self.config = base.build_config(arith.ChainConfig, config or {},
                                    self.name)
    prm.check_kind(self.config.prm)
    self.tokenizer = base.CharVocab(SYMBOLS, banned_symbols=PROMPT_END)
    self.banned_tokens = self.tokenizer.banned_tokens
    self.stop_tokens = (self.tokenizer.eos_id,)
    step_len = 3 * self.config.digits + 3  # x op y = z ;
    self.max_prompt_len, self.max_response_len = arith.lengths(
        self.config, step_len)
    # Every step holds at least one token.
    self.max_steps = self.max_response_len

  def score(self, problem: base.Problem, response_ids,
            observation_mask=None) -> base.Score:
    """Checks every step and the answer; see the module docstring."""
    ids = base.check_response(response_ids, self.tokenizer)
    self.check_no_observations(observation_mask)
    has_eos = bool(ids.size) and ids[-1] == self.tokenizer.eos_id
    # One character per token, so text positions are token positions.
    text = self.tokenizer.chars(ids[:ids.size - 1] if has_eos else ids)
    steps_end = text.find(ANSWER)
    answer_text = None if steps_end < 0 else text[steps_end + 1:]
    steps_end = len(text) if steps_end < 0 else steps_end
    spans, start = [], 0
    while start < steps_end:
      stop = text.find(STEP_END, start, steps_end) + 1 or steps_end
      spans.append([start, stop])
      start = stop
    checker = arith.StepChecker(self.config, problem.start,
                                problem.operations)
    labels, reasons, vacuous = [], [], []
    for start, stop in spans:
      match = arith.STEP_PATTERN.match(
          text[start:stop].removesuffix(STEP_END))
      step = None
      if match:
        x, op, y, z = match.groups()
        step = (int(x), op, int(y), int(z))
      label, reason = checker.check(step)
      labels.append(label)
      reasons.append(reason)
      vacuous.append(step is not None and arith.is_identity(*step))
    if not spans:  # the answer (or nothing) alone: one step
      spans = [[0, ids.size]]
      labels, reasons, vacuous = [base.WRONG], [""], [False]
    spans[-1][1] = ids.size  # the answer and EOS join the last step
    step_only = list(labels)  # the hackable PRM never sees the answer check
    answer_reason = arith.check_answer(checker, answer_text, has_eos)
    if answer_reason and not reasons[-1]:
      labels[-1], reasons[-1] = base.WRONG, answer_reason
    outcome = arith.answer_outcome(problem, answer_text, has_eos)
    metrics = ({"check_steps": float(checker.checks)}
               if self.config.free_length else None)
    return step_scores.make_score(self.config, problem, ids, spans, labels,
                                  reasons, vacuous, outcome, answer_text,
                                  step_only_labels=step_only,
                                  metrics=metrics)

  def demonstration(self, problem: base.Problem, rng: np.random.Generator,
                    wrong_rate: float = 0.0,
                    filler_rate: float = 0.0) -> list[int]:
    """A worked response; wrong steps write a wrong result (see
    `arith.demo_steps`), and the answer is the last value written. Filler
    steps that would overflow `max_response_len` are left out."""
    steps = arith.demo_steps(self.config, problem.start, problem.operations,
                             rng, wrong_rate, filler_rate,
                             wrong_kind="result")
    text = arith.demo_text(steps, problem.start, "{x}{op}{y}={z}" + STEP_END,
                           ANSWER, self.max_response_len - 1)
    return self.tokenizer.encode(text) + [self.tokenizer.eos_id]

  def retry_prefix(self, problem: base.Problem, response_ids,
                   score: base.Score) -> list[int] | None:
    """The response before its first wrong step (R3L), None without one."""
    del problem
    return step_scores.retry_prefix(response_ids, score)
