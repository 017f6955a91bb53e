"""Chain arithmetic: solve a chain of k modular operations step by step.

Layout (m = 10, k = 3; `^` is BOS, `$` EOS), compact, on the task's own
character vocabulary (the default):

  prompt    ^3+4*2-1?                   operations applied left to right
  response  3+4=7;7*2=4;4-1=3;>3$
  steps     000000111111222222222       step_ids: the answer ">3" and EOS
                                        belong to the last step

Each step is `x op y = z` ended by the step separator ";"; ">" marks the
final answer, then EOS. The prompt-only "?" is banned from responses. With
any other tokenizer (`tokenizer`, e.g. a checkpoint's) the task writes the
lines layout of `chain_text`: an instruction as the prompt, one step per
line and "Answer: 3" on the last line. Rules for responses:

* `chain_text.split` cuts the text into steps and the answer: the text
  after the first answer mark is the answer; everything before it is split
  after each step end, an unterminated trailing piece is a step too, and a
  blank line joins the step before it. The answer and EOS join the last
  step, so every response token has a step id (never −1). A response
  without any step before the answer (or an empty one) is a single step.
* Tokens: a token belongs to the step its first character is in
  (`offsets`), so a token that merges a step end with its neighbours
  (";7", "=7\\n") belongs to the earlier step, which it completes.
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
from experiments.tasks import chain_problems
from experiments.tasks import chain_text
from experiments.tasks import offsets
from experiments.tasks import prm
from experiments.tasks import step_scores

__all__ = [
    "ChainArithTask", "SYMBOLS",
]

SYMBOLS = "0123456789+-*=;>?"


class ChainArithTask(chain_problems.ChainProblems, base.NoEnvironment):
  """The chain-arithmetic task (see the module docstring).

  Attributes:
    config: the `arith.ChainConfig`.
    tokenizer: a `base.CharVocab` (compact layout) or the configured
      tokenizer (lines layout).
    layout: the `chain_text.Layout`.
  """

  name = "chain_arith"

  def __init__(self, config=None):
    """Builds the task from a mapping of `arith.ChainConfig` fields."""
    self.config = base.build_config(arith.ChainConfig, config or {},
                                    self.name)
    prm.check_kind(self.config.prm)
    self._set_up(SYMBOLS, chain_text.PROMPT_END, tool=False)
    tok = self.tokenizer
    self.banned_tokens = (tok.banned_tokens if self.layout is
                          chain_text.COMPACT else
                          chain_problems.special_bans(tok))
    self.stop_tokens = (tok.eos_id,)

  def score(self, problem: base.Problem, response_ids,
            observation_mask=None) -> base.Score:
    """Checks every step and the answer; see the module docstring."""
    ids = base.check_response(response_ids, self.tokenizer)
    self.check_no_observations(observation_mask)
    has_eos = bool(ids.size) and ids[-1] == self.tokenizer.eos_id
    text, ends = self.text.decode(ids)
    cut = chain_text.split(text, self.layout)
    checker = arith.StepChecker(self.config, problem.start,
                                problem.operations)
    labels, reasons, vacuous = [], [], []
    for piece in cut.texts:
      match = chain_text.STEP_PATTERN.match(
          chain_text.step_text(piece, self.layout))
      step = None
      if match:
        x, op, y, z = match.groups()
        step = (int(x), op, int(y), int(z))
      label, reason = checker.check(step)
      labels.append(label)
      reasons.append(reason)
      vacuous.append(step is not None and arith.is_identity(*step))
    if not cut.texts:  # the answer (or nothing) alone: one step
      labels, reasons, vacuous = [base.WRONG], [""], [False]
    step_only = list(labels)  # the hackable PRM never sees the answer check
    answer_reason = arith.check_answer(checker, cut.answer, has_eos)
    if answer_reason and not reasons[-1]:
      labels[-1], reasons[-1] = base.WRONG, answer_reason
    starts = [a for a, _ in cut.spans]
    steps = step_scores.CheckedSteps(
        token_steps=offsets.token_steps(ends, starts[1:]),
        prefixes=[offsets.tokens_before(ends, a) for a in starts],
        texts=[text[a:b] for a, b in cut.spans], labels=labels,
        reasons=reasons, vacuous=vacuous, step_only_labels=step_only)
    metrics = ({"check_steps": float(checker.checks)}
               if self.config.free_length else None)
    return step_scores.make_score(
        self.config, problem, ids, steps,
        outcome=arith.answer_outcome(problem, cut.answer, has_eos),
        answer=cut.answer, answered=arith.is_number(cut.answer),
        has_eos=has_eos, metrics=metrics)

  def demonstration(self, problem: base.Problem, rng: np.random.Generator,
                    wrong_rate: float = 0.0,
                    filler_rate: float = 0.0) -> list[int]:
    """A worked response; wrong steps write a wrong result (see
    `arith.demo_steps`), and the answer is the last value written. Filler
    steps that would overflow `max_response_len` are left out."""
    steps = arith.demo_steps(self.config, problem.start, problem.operations,
                             rng, wrong_rate, filler_rate,
                             wrong_kind="result")
    return self._fit_demo(steps, problem.start)

  def _demo_ids(self, steps, answer: int) -> list[int]:
    end = self.layout.step_end
    text = "".join(f"{s.x}{s.op}{s.y}={s.z}{end}" for s in steps)
    text += self.layout.answer_format.format(z=answer)
    return self.tokenizer.encode(text) + [self.tokenizer.eos_id]

  def retry_prefix(self, problem: base.Problem, response_ids,
                   score: base.Score) -> list[int] | None:
    """The response before its first wrong step (R3L), None without one:
    the tokens that hold none of that step's text."""
    del problem
    return step_scores.retry_prefix(response_ids, score)

