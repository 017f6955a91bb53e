"""The rule-based checker of arithmetic claims in free text (`claims`)."""

import fractions

import hypothesis
from hypothesis import strategies as st
import pytest

from experiments.tasks import base
from experiments.tasks import claims

C, W, F, U = base.CORRECT, base.WRONG, base.FILLER, base.UNKNOWN


@pytest.mark.parametrize("text, label", [
    ("48/2 = 24", C),
    ("She sold <<48/2=24>>24 clips.", C),
    ("3 × 4 = 12 and 3 x 4 = 12", C),
    ("$3 \\times 4 = 12$", C),
    ("6 \\div 3 = 2", C),
    ("2 * 3 * 4 = 6 * 4 = 24", C),
    ("1/2 + 1/4 = 3/4", C),
    ("5 + 3 * 2 = 11", C),
    ("3 − 5 = −2", C),
    ("-5 + 3 = -2", C),
    ("1,200 + 34 = 1,234 dollars", C),
    ("$5 * 3 = $15", C),
    ("30/60 = 50%", C),
    ("10/3 = 3.33", C),
    ("10/3 = 3.3", C),
    ("10/3 = 3.4", W),
    ("5 + 3 * 2 = 16", W),
    ("3 x 4 = 13", W),
    ("4 / 0 = 1", W),
    ("So 3 + 4 = 7, then 7 * 2 = 15.", W),
    ("7 + 0 = 7", F),
    ("0 + 7 = 7 and 5 * 1 = 5 and 9 / 1 = 9", F),
    ("7 + 0 = 7 and 7 * 2 = 14", C),
    ("7 + 0 = 8", W),
    ("Tom has 3 apples.", U),
    ("5 = 5", U),
    ("(3 + 4) * 2 = 14", U),   # part of a larger expression: unchecked
    ("x^2 + 3 = 7", U),
    ("2x + 3 = 7", U),
    ("x - 3 + 4 = 1", U),
    ("3 + 4 = 7x", U),
    ("2 * 3 = 2^3", U),
    ("\\frac{1}{2} \\cdot 4 = 2", U),
    ("", U),
])
def test_labels(text, label):
  assert claims.label(text)[0] == label
  assert claims.label(text)[1] == ("arithmetic" if label == W else "")


@hypothesis.given(
    st.lists(st.integers(0, 999), min_size=2, max_size=4),
    st.lists(st.sampled_from("+-*"), min_size=3, max_size=3),
    st.integers(-2, 2), st.sampled_from(["{} = {}", "{}={}", "<<{}={}>>"]))
def test_integer_claims_against_exact_evaluation(numbers, ops, shift, form):
  """`a op b op c = r` holds exactly when r is the value with × first,
  computed here term by term with Python integers."""
  ops = ops[:len(numbers) - 1]
  terms, signs = [fractions.Fraction(numbers[0])], [1]
  for op, value in zip(ops, numbers[1:]):
    if op == "*":
      terms[-1] *= value
    else:
      terms.append(fractions.Fraction(value))
      signs.append(1 if op == "+" else -1)
  value = sum(s * t for s, t in zip(signs, terms)) + shift
  lhs = " ".join(f"{n} {o}" for n, o in zip(numbers, ops)) + f" {numbers[-1]}"
  (found,) = claims.find(form.format(lhs, value))
  assert found.holds == (shift == 0)
