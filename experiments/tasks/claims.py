"""Arithmetic claims in free text, checked exactly: `jsonl_math`'s step
checker.

A claim is a chain of equal signs between arithmetic sides, at least one of
which has an operator: `48/2 = 24`, `3 × 4 = 12`, `<<48/2=24>>`,
`2 * 3 * 4 = 6 * 4 = 24`, `1/2 + 1/4 = 3/4`. A side is numbers joined by
+, −, *, ×, ·, /, ÷, `\\times`, `\\cdot`, `\\div` or a spaced `x`, with an
optional leading minus; a number may have thousands separators (1,234),
decimals, a leading `$` and a trailing `%` (a hundredth). Sides are
evaluated exactly with `fractions.Fraction` (× and ÷ before + and −; no
floating point, no sympy). A claim holds when every side with an operator
equals the first such side, and every side that is a single number equals
it too, or, for a decimal written with d decimals (`10/3 = 3.33`), is that
value rounded to d decimals. A division by zero is false.

Only claims that stand alone are checked. A chain that may be part of a
larger expression is skipped: one right after an operator, `^`, a closing
bracket or a backslash, or glued to a letter, digit or dot before it; one
followed by an operator, `^`, an opening bracket or a backslash, or glued
to a letter after it (`= 7x`, `= 2^3`). Skipped text is unchecked, never
wrong.

A step's label (`label`): WRONG when a claim in it is false; FILLER when it
has claims and each is a true identity (`7 + 0 = 7`, `1 * 5 = 5`, `9 / 1 =
9`: no progress); CORRECT when its claims all hold and one is not an
identity; UNKNOWN (the neutral label, see `prm.PrmConfig.reward_unknown`)
when it has no checkable claim: prose, algebra, a final answer. Real
solutions interleave words and arithmetic, and a rule can only judge the
arithmetic; a step it cannot read is neither rewarded nor punished.
"""

import dataclasses
import fractions
import re

from experiments.tasks import base

__all__ = [
    "Claim", "Fraction", "find", "label",
]

Fraction = fractions.Fraction

_NUMBER = r"\$?\d+(?:,\d{3})*(?:\.\d+)?%?"
_OP = r"(?:\s*[-+*/]\s*)"
_SIDE = rf"-?{_NUMBER}(?:{_OP}{_NUMBER})*"
_CHAIN = re.compile(rf"{_SIDE}(?:\s*=\s*{_SIDE})+")
_TERM = re.compile(rf"({_NUMBER})|([-+*/])")
# Spellings of the four operators, rewritten before matching.
_SPELLINGS = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"),
              ("×", "*"), ("·", "*"), ("÷", "/"), ("−", "-"))
_SPACED_X = re.compile(r"(?<=[\d%])\s+x\s+(?=\$?\d)")
_BLOCK_BEFORE = set("+-*/^)]}\\")
_BLOCK_AFTER = set("+-*/^([{\\")
# The operand that makes a binary operation an identity, per side.
_IDENTITY_RIGHT = {"+": 0, "-": 0, "*": 1, "/": 1}
_IDENTITY_LEFT = {"+": 0, "*": 1}


@dataclasses.dataclass(frozen=True)
class Claim:
  """One checked claim.

  Attributes:
    text: the claim as written (operators normalised).
    holds: every side equals the first computed one.
    vacuous: it holds and every side with an operator is an identity
      (`a + 0`, `0 + a`, `a − 0`, `a * 1`, `1 * a`, `a / 1`).
  """
  text: str
  holds: bool
  vacuous: bool


def _normalise(text: str) -> str:
  for spelling, op in _SPELLINGS:
    text = text.replace(spelling, op)
  return _SPACED_X.sub(" * ", text)


def _number(text: str) -> Fraction:
  value = Fraction(text.strip("$%").replace(",", ""))
  return value / 100 if text.endswith("%") else value


def _decimals(text: str) -> int:
  body = text.strip("$%")
  return len(body.split(".")[1]) if "." in body else 0


def _side(text: str):
  """(value or None for a division by zero, operands, operators)."""
  text = text.strip()
  negate = text.startswith("-")
  numbers, ops = [], []
  for number, op in _TERM.findall(text[1:] if negate else text):
    if number:
      numbers.append(number)
    else:
      ops.append(op)
  values = [_number(n) for n in numbers]
  if negate:
    values[0] = -values[0]
  # × and ÷ first: fold them into terms, then add the terms.
  terms, signs = [values[0]], [1]
  for op, value in zip(ops, values[1:]):
    if op in "*/":
      if op == "/" and value == 0:
        return None, values, ops
      terms[-1] = terms[-1] * value if op == "*" else terms[-1] / value
    else:
      terms.append(value)
      signs.append(1 if op == "+" else -1)
  return sum(s * t for s, t in zip(signs, terms)), values, ops


def _is_identity(values, ops, result) -> bool:
  if len(ops) != 1:
    return False
  op = ops[0]
  return (values[1] == _IDENTITY_RIGHT[op] and values[0] == result) or (
      op in _IDENTITY_LEFT and values[0] == _IDENTITY_LEFT[op]
      and values[1] == result)


def _stands_alone(text: str, start: int, stop: int) -> bool:
  if start and (text[start - 1].isalnum() or text[start - 1] in "._"):
    return False
  before = text[:start].rstrip()
  if before and before[-1] in _BLOCK_BEFORE:
    return False
  if stop < len(text) and (text[stop].isalpha() or text[stop] in "_"):
    return False
  after = text[stop:].lstrip()
  return not (after and after[0] in _BLOCK_AFTER)


def _check(chain: str) -> Claim | None:
  sides = [_side(side) for side in chain.split("=")]
  computed = [s for s in sides if s[2]]
  if not computed:
    return None  # "3 = 3": no operation to check
  reference = computed[0][0]
  holds = reference is not None
  for (value, values, ops), text in zip(sides, chain.split("=")):
    if not holds:
      break
    if ops:
      holds = value == reference
    else:
      text = text.strip()
      places = _decimals(text)
      scale = Fraction(1, 100) if text.endswith("%") else 1
      holds = abs(value - reference) <= (
          scale * Fraction(1, 2 * 10**places) if places else 0)
  vacuous = holds and all(_is_identity(values, ops, reference)
                          for _, values, ops in computed)
  return Claim(chain, holds, vacuous)


def find(text: str) -> list[Claim]:
  """The claims of `text` that stand alone, checked, in order."""
  text = _normalise(text)
  out = []
  for match in _CHAIN.finditer(text):
    if _stands_alone(text, match.start(), match.end()):
      claim = _check(match.group())
      if claim is not None:
        out.append(claim)
  return out


def label(text: str) -> tuple[int, str]:
  """(label, reason) of one step's text (see the module docstring); the
  reason is "arithmetic" for a false claim, else ""."""
  found = find(text)
  if not found:
    return base.UNKNOWN, ""
  if not all(c.holds for c in found):
    return base.WRONG, "arithmetic"
  if all(c.vacuous for c in found):
    return base.FILLER, ""
  return base.CORRECT, ""
