"""Final-answer extraction and comparison for math text (no sympy).

`extract_answer` finds the final answer of a solution, in this order: the
last `\\boxed{...}` (or `\\fbox{...}`), the text after the last "####"
(GSM8K), the text after the last "answer is" / "answer:", else the last
number in the text. `answers_match` compares two answers: as exact rational
numbers when both parse (integers, thousands separators, decimals,
fractions `a/b` and `\\frac{a}{b}`, a sign, a trailing `%`, `$` or `.`),
otherwise as normalised strings (LaTeX spacing and `\\text{}` wrappers
removed, whitespace dropped, lower case).
"""

import fractions
import re

__all__ = [
    "answers_match", "extract_answer", "normalize_answer", "parse_number",
    "reference_answer",
]

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MARKER = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*([^\n]*)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_PLAIN = re.compile(r"^-?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?$")
_LATEX_NOISE = re.compile(
    r"\\left|\\right|\\displaystyle|\\!|\\,|\\;|\\:|\\ |\$|\\\$")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def _boxed_contents(text: str) -> str | None:
  """The contents of the last \\boxed{...}, braces balanced; None if none."""
  starts = [m.end() for m in _BOXED.finditer(text)]
  if not starts:
    return None
  depth, start = 1, starts[-1]
  for index in range(start, len(text)):
    depth += {"{": 1, "}": -1}.get(text[index], 0)
    if depth == 0:
      return text[start:index].strip()
  return None  # unbalanced: treat as no box


def extract_answer(text: str) -> str | None:
  """The final answer of a solution text, None when it has none.

  Args:
    text: a model response or a reference solution.

  Returns:
    The answer text (stripped), or None.
  """
  boxed = _boxed_contents(text)
  if boxed is not None:
    return boxed
  for pattern in (_MARKER, _ANSWER_IS):
    matches = pattern.findall(text)
    if matches and matches[-1].strip():
      return matches[-1].strip().rstrip(".").strip()
  numbers = _NUMBER.findall(text)
  return numbers[-1] if numbers else None


def reference_answer(text: str) -> str:
  """The reference answer of a dataset's answer field.

  Its last `\\boxed{}` contents, else the text after its last "####", else
  the whole field (stripped): a plain answer such as "\\frac{1}{2}" is kept
  whole rather than cut to its last number.
  """
  boxed = _boxed_contents(text)
  if boxed is not None:
    return boxed
  matches = _MARKER.findall(text)
  if matches and matches[-1].strip():
    return matches[-1].strip()
  return text.strip()


def _clean(text: str) -> str:
  text = _TEXT_WRAP.sub(r"\1", text)
  text = _LATEX_NOISE.sub("", text)
  return "".join(text.split())


def parse_number(text: str) -> fractions.Fraction | None:
  """The exact value of a numeric answer, None if it is not a number.

  Accepts "1,234", "-3.50", "3/4", "\\frac{3}{4}", "-\\dfrac{1}{2}",
  "50%" (= 50), "$12", "7." and surrounding LaTeX spacing.
  """
  text = _clean(text).rstrip(".").removesuffix("\\%").removesuffix("%")
  text = text.removeprefix("+")
  match = _FRAC.match(text)
  if match:
    sign, top, bottom = match.groups()
    top, bottom = parse_number(top), parse_number(bottom)
    if top is None or bottom is None or bottom == 0:
      return None
    return (-1 if sign else 1) * top / bottom
  if text.count("/") == 1:
    top, bottom = text.split("/")
    if _PLAIN.match(top) and _PLAIN.match(bottom) and top and bottom:
      bottom_value = fractions.Fraction(bottom.replace(",", ""))
      if bottom_value == 0:
        return None
      return fractions.Fraction(top.replace(",", "")) / bottom_value
    return None
  if not text or text in ("-", ".", "-.") or not _PLAIN.match(text):
    return None
  return fractions.Fraction(text.replace(",", ""))


def normalize_answer(text: str) -> str:
  """A canonical string for non-numeric comparison."""
  return _clean(text).rstrip(".").lower()


def answers_match(predicted: str | None, reference: str) -> bool:
  """Whether a predicted answer equals the reference.

  Args:
    predicted: the extracted answer (None: no answer, never a match).
    reference: the reference answer.

  Returns:
    True when both are numbers of equal exact value, or when neither is a
    number and their normalised strings are equal.
  """
  if predicted is None:
    return False
  left, right = parse_number(predicted), parse_number(reference)
  if left is not None and right is not None:
    return left == right
  if (left is None) != (right is None):
    return False
  return normalize_answer(predicted) == normalize_answer(reference)
