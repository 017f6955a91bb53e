"""Modular arithmetic chains shared by the chain-arithmetic and calculator tasks.

A chain is a start number and k operations applied left to right modulo m:
"3+4*2-1" with m = 10 is ((3 + 4) * 2 − 1) mod 10 = 3. The step checker
(`StepChecker`) walks a response's steps `x op y = z` and labels each one:

* CORRECT: x is the chain's current value, (op, y) is the next operation and
  z = (x op y) mod m.
* FILLER: x is the current value and the step is a true identity (`x+0=x`,
  `x-0=x`, `x*1=x`) that is not itself the next operation.
* WRONG: anything else, with the reason: "malformed" (not `x op y = z`),
  "operand" (x is not the current value), "operation" ((op, y) is not the
  next operation), "extra" (all operations are already done),
  "arithmetic" (z is not x op y).

After a wrong step the checker continues from the value the response wrote
(z, when the step parses) and moves to the next operation, so an error is
counted once, where it happens, and the later steps are judged on their own.
An identity-shaped step that is not the next operation (filler, or filler
on a wrong value) takes up no operation and leaves the value unchanged.

With `free_length`, a step may be re-checked: a verbatim repeat of the
CORRECT step just before it (or of its previous check) is a check, labelled
FILLER (true, no progress, never required). Responses can then be as short
as the solution or about twice as long, all equally right, so a method's
effect on response length can show.
"""

import dataclasses
import re
from typing import Any, Callable

import numpy as np

from experiments.tasks import base
from experiments.tasks import chain_text
from experiments.tasks import prm

__all__ = [
    "CHAIN_PATTERN", "ChainConfig", "DemoStep", "IDENTITY", "NUMBER_PATTERN",
    "OPERATORS", "StepChecker", "answer_outcome", "apply", "check_answer",
    "demo_steps", "is_identity", "is_number",
]

OPERATORS = "+-*"
IDENTITY = {"+": 0, "-": 0, "*": 1}
NUMBER_PATTERN = re.compile(rf"^{chain_text.NUMBER}$")
CHAIN_PATTERN = re.compile(
    rf"^{chain_text.NUMBER}(?:[-+*]{chain_text.NUMBER})+$")


def apply(x: int, op: str, y: int, modulus: int) -> int:
  """(x op y) mod modulus."""
  if op == "+":
    return (x + y) % modulus
  if op == "-":
    return (x - y) % modulus
  if op == "*":
    return (x * y) % modulus
  raise ValueError(f"op must be one of {OPERATORS!r}, got {op!r}.")


def is_identity(x: int, op: str, y: int, z: int) -> bool:
  """True for a true identity step `x+0=x`, `x-0=x`, `x*1=x`."""
  return y == IDENTITY[op] and z == x


@dataclasses.dataclass(frozen=True)
class ChainConfig(prm.PrmConfig):
  """Difficulty, text layout and process reward model of a chain task.

  Attributes:
    min_ops, max_ops: k, the number of operations, is uniform in
      [min_ops, max_ops] (the difficulty).
    ops: the operators problems draw from, a subset of "+-*".
    modulus: m ≥ 2; every number is in [0, m) (m = 10: one digit each).
    max_response_len: response budget in tokens; None sizes it for two
      steps per operation (one filler each) and the answer.
    free_length: allow checks (see the module docstring); the chain tasks'
      length variant.
    check_rate: with free_length, the probability that a demonstration
      re-checks each correct step.
    tokenizer: None: the task's character vocabulary and the compact
      layout; else "bytes", a checkpoint directory or a tokenizer object,
      and the lines layout (`chain_text`). The loop sets it to the
      checkpoint's tokenizer when `model_path` is set.
    chat_template: optional callable prompt text -> the chat-formatted
      prompt (lines layout; the loop passes the checkpoint's).
    And the PRM's fields (`prm.PrmConfig`).
  """
  min_ops: int = 2
  max_ops: int = 4
  ops: str = "+-*"
  modulus: int = 10
  max_response_len: int | None = None
  free_length: bool = False
  check_rate: float = 0.5
  tokenizer: Any = None
  chat_template: Callable[[str], str] | None = None

  def __post_init__(self):
    super().__post_init__()
    if self.chat_template is not None and not callable(self.chat_template):
      raise ValueError(f"chat_template must be a callable or None, got "
                       f"{self.chat_template!r}.")
    if not self.ops or set(self.ops) - set(OPERATORS) or len(
        set(self.ops)) != len(self.ops):
      raise ValueError(f"ops must be distinct operators from {OPERATORS!r},"
                       f" got {self.ops!r}.")
    for name in ("modulus", "min_ops", "max_ops"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}.")
    if self.modulus < 2:
      raise ValueError(f"modulus must be ≥ 2, got {self.modulus}.")
    if not 1 <= self.min_ops <= self.max_ops:
      raise ValueError(f"need 1 ≤ min_ops ≤ max_ops, got min_ops="
                       f"{self.min_ops}, max_ops={self.max_ops}.")
    base.check_rate(self.check_rate, "check_rate")
    if not isinstance(self.free_length, bool):
      raise ValueError(f"free_length must be a bool, got "
                       f"{self.free_length!r}.")
    base.check_optional_positive_int(self.max_response_len,
                                     "max_response_len")

  @property
  def digits(self) -> int:
    """Digits of the largest number, m − 1."""
    return len(str(self.modulus - 1))

  def prompt_text(self, start: int, operations) -> str:
    """The chain as text, e.g. "3+4*2-1"."""
    return str(start) + "".join(f"{op}{y}" for op, y in operations)

  def final_value(self, start: int, operations) -> int:
    """The chain's value."""
    value = start
    for op, y in operations:
      value = apply(value, op, y, self.modulus)
    return value

  def parse_chain(self, text: str):
    """(start, operations) of a chain written as text, e.g. "3+4*2-1".

    Raises:
      ValueError: not a chain of numbers in [0, m) and the config's
        operators.
    """
    match = CHAIN_PATTERN.match(text)
    numbers = [int(n) for n in re.findall(r"[0-9]+", text)]
    ops = re.findall(r"[-+*]", text)
    if (not match or not ops or set(ops) - set(self.ops)
        or max(numbers) >= self.modulus):
      raise ValueError(f"text must be a chain like '3+4*2' of numbers in "
                       f"[0, {self.modulus}) and operators {self.ops!r}, got "
                       f"{text!r}.")
    return numbers[0], tuple(zip(ops, numbers[1:]))

  def sample_chain(self, rng: np.random.Generator):
    """(start, operations) with k uniform in [min_ops, max_ops]."""
    num_ops = int(rng.integers(self.min_ops, self.max_ops + 1))
    start = int(rng.integers(self.modulus))
    ops = rng.integers(len(self.ops), size=num_ops)
    operands = rng.integers(self.modulus, size=num_ops)
    return start, tuple((self.ops[int(o)], int(y))
                        for o, y in zip(ops, operands))


@dataclasses.dataclass(frozen=True)
class DemoStep:
  """One step of a demonstration: `x op y = z` and what the checker says."""
  x: int
  op: str
  y: int
  z: int
  label: int


def demo_steps(config: ChainConfig, start: int, operations,
               rng: np.random.Generator, wrong_rate: float,
               filler_rate: float, wrong_kind: str) -> list[DemoStep]:
  """The steps of a demonstration with random wrong and filler steps.

  Each operation gives one step, wrong with probability `wrong_rate`, and is
  followed (with `config.free_length`) by a check, a repeat of the step,
  with probability `config.check_rate` when the step is correct, then by a
  filler step (a random identity on the current value, never
  the next operation itself) with probability `filler_rate` (no filler
  when the only operator's identity is the next operation). A wrong step is made by `wrong_kind`:
  "result" writes a wrong z; "operand" uses a wrong x (and the true result
  of that x, as a calculator would return). Later steps continue from the
  value the wrong step wrote, so the final answer is usually wrong.

  Args:
    config: the chain config.
    start, operations: the problem.
    rng: random draws.
    wrong_rate, filler_rate: probabilities in [0, 1].
    wrong_kind: "result" or "operand".

  Returns:
    The steps in order.
  """
  wrong_rate = base.check_rate(wrong_rate, "wrong_rate")
  filler_rate = base.check_rate(filler_rate, "filler_rate")
  m = config.modulus
  steps, value = [], start
  for index, (op, y) in enumerate(operations):
    x, z, label = value, apply(value, op, y, m), base.CORRECT
    if rng.random() < wrong_rate:
      label = base.WRONG
      shift = int(rng.integers(1, m))
      if wrong_kind == "result":
        z = (z + shift) % m
      else:
        x = (x + shift) % m
        z = apply(x, op, y, m)
    steps.append(DemoStep(x, op, y, z, label))
    # Drawn only in the variant, so other demonstrations stay as they were.
    if (config.free_length and label == base.CORRECT
        and rng.random() < config.check_rate):
      steps.append(DemoStep(x, op, y, z, base.FILLER))
    value = z
    # A filler equal to the next operation would be that operation's step.
    upcoming = operations[index + 1] if index + 1 < len(operations) else None
    choices = [o for o in config.ops if (o, IDENTITY[o]) != upcoming]
    if rng.random() < filler_rate and choices:
      filler_op = choices[int(rng.integers(len(choices)))]
      steps.append(DemoStep(value, filler_op, IDENTITY[filler_op], value,
                            base.FILLER))
  return steps


class StepChecker:
  """Labels the steps of one response in order (see the module docstring)."""

  def __init__(self, config: ChainConfig, start: int, operations):
    self._m = config.modulus
    self._operations = tuple(operations)
    self._free_length = config.free_length
    self._checkable = None  # the step a check may repeat
    self.value = start
    self.done = 0  # operations attempted so far
    self.checks = 0

  @property
  def complete(self) -> bool:
    """All operations have been attempted."""
    return self.done >= len(self._operations)

  def check(self, step) -> tuple[int, str]:
    """Labels one step and advances the chain.

    Args:
      step: (x, op, y, z) ints and operator, or None for a malformed step.

    Returns:
      (label, reason); reason is "" unless the label is WRONG.
    """
    if step is not None and step == self._checkable:
      self.checks += 1
      return base.FILLER, ""
    label, reason = self._check(step)
    self._checkable = (step if self._free_length and label == base.CORRECT
                       else None)
    return label, reason

  def _check(self, step) -> tuple[int, str]:
    if step is None:
      self.done += 1
      return base.WRONG, "malformed"
    x, op, y, z = step
    upcoming = None if self.complete else self._operations[self.done]
    if (op, y) != upcoming and is_identity(x, op, y, z):
      # Identity-shaped steps never take up an operation.
      return (base.FILLER, "") if x == self.value else (base.WRONG, "operand")
    if upcoming is None:
      reason = "extra"
    elif x != self.value:
      reason = "operand"
    elif (op, y) != upcoming:
      reason = "operation"
    elif z != apply(x, op, y, self._m):
      reason = "arithmetic"
    else:
      reason = ""
    self.done += 1
    self.value = z
    return (base.WRONG if reason else base.CORRECT), reason


def check_answer(checker: StepChecker, answer_text: str | None,
                 has_eos: bool) -> str:
  """Why the final answer does not follow from the steps ("" if it does).

  The answer must be present ("no_answer"), a number ("answer_malformed"),
  end with EOS ("no_eos"), come after every operation ("incomplete") and
  equal the chain's current value ("answer"). With every step correct or
  filler, an answer that follows is the right answer.
  """
  if answer_text is None:
    return "no_answer"
  if not is_number(answer_text):
    return "answer_malformed"
  if not has_eos:
    return "no_eos"
  if not checker.complete:
    return "incomplete"
  if int(answer_text) != checker.value:
    return "answer"
  return ""


def is_number(answer_text: str | None) -> bool:
  """A well-formed answer: a number without leading zeros."""
  return answer_text is not None and bool(NUMBER_PATTERN.match(answer_text))


def answer_outcome(problem: base.Problem, answer_text: str | None,
                   has_eos: bool) -> float:
  """1.0 for a well-formed answer equal to the reference, ended by EOS."""
  return float(has_eos and is_number(answer_text)
               and answer_text == problem.answer)

