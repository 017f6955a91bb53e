"""Tests for cajax.text_rewards against plain-Python references."""

import string

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from cajax import text_rewards as tx


def ref_normalize(text):
  out = []
  for ch in text.lower():
    if ch not in string.punctuation:
      out.append(ch)
  words = [w for w in "".join(out).split() if w not in ("a", "an", "the")]
  return " ".join(words)


def ref_ans_f1(preds, golds):
  pred, gold = [], []
  for src, dst in ((preds, pred), (golds, gold)):
    for a in src:
      n = ref_normalize(a)
      if n and n not in dst:
        dst.append(n)
  if not pred or not gold:
    return 0.0
  tp_p = sum(1 for p in pred if p in gold)
  tp_g = sum(1 for g in gold if g in pred)
  if tp_p == 0:
    return 0.0
  prec, rec = tp_p / len(pred), tp_g / len(gold)
  return 2 * prec * rec / (prec + rec)


@pytest.mark.parametrize("text,want", [
    ("The Eiffel Tower", "eiffel tower"),
    ("  An apple,  a day!! ", "apple day"),
    ("theatre", "theatre"),           # articles only as whole words
    ("U.S.A.", "usa"),
    ("the", ""),
    ("", ""),
    ("Tab\tand\nnewline", "tab and newline"),
])
def test_normalize_answer(text, want):
  assert tx.normalize_answer(text) == want
  assert ref_normalize(text) == want


@pytest.mark.parametrize("preds,golds,want", [
    (["Paris"], ["paris"], 1.0),
    (["Paris", "Lyon"], ["Paris"], 2 / 3),          # over-listing: precision
    (["Paris"], ["Paris", "Lyon", "Nice"], 0.5),    # partial recall
    (["Paris", "paris.", "The Paris"], ["Paris", "Lyon"], 2 / 3),  # dups
    ([], ["Paris"], 0.0),                           # empty predictions
    (["Paris"], [], 0.0),                           # empty references
    ([], [], 0.0),
    (["the"], ["a"], 0.0),                          # normalise to empty
    (["Rome"], ["Paris"], 0.0),
])
def test_ans_f1_cases(preds, golds, want):
  assert tx.ans_f1(preds, golds) == pytest.approx(want, abs=1e-12)
  assert ref_ans_f1(preds, golds) == pytest.approx(want, abs=1e-12)


def test_ans_f1_string_arguments_and_batch():
  assert tx.ans_f1("Paris", "paris!") == 1.0
  got = tx.batch_ans_f1([["a b"], ["x", "y"], []], [["A B"], ["y"], ["z"]])
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, [1.0, 2 / 3, 0.0], rtol=1e-6)
  with pytest.raises(ValueError, match="same length"):
    tx.batch_ans_f1([["a"]], [["a"], ["b"]])


def test_ans_f1_custom_match():
  def prefix_match(p, g):
    return p.startswith(g) or g.startswith(p)
  # P = {new york, new york city, boston}, G = {new york}: 2 of 3 predictions
  # match, the one reference is matched.
  got = tx.ans_f1(["New York", "New York City", "Boston"], ["new york"],
                  match=prefix_match)
  prec, rec = 2 / 3, 1.0
  assert got == pytest.approx(2 * prec * rec / (prec + rec))
  assert tx.ans_f1(["x"], ["y"], match=prefix_match) == 0.0


_WORDS = st.sampled_from(["Paris", "paris", "The Paris", "Lyon", "lyon!",
                          "Nice", "a", "Rome", "new york"])


@hypothesis.given(preds=st.lists(_WORDS, max_size=6),
                  golds=st.lists(_WORDS, max_size=4),
                  seed=st.integers(0, 1000))
def test_ans_f1_properties(preds, golds, seed):
  value = tx.ans_f1(preds, golds)
  assert value == pytest.approx(ref_ans_f1(preds, golds), abs=1e-12)
  assert 0.0 <= value <= 1.0
  # Exact-match AnsF1 is symmetric, order-free and duplicate-proof.
  assert tx.ans_f1(golds, preds) == pytest.approx(value, abs=1e-12)
  rng = np.random.default_rng(seed)
  shuffled = [preds[i] for i in rng.permutation(len(preds))]
  assert tx.ans_f1(shuffled + preds, golds) == pytest.approx(value, abs=1e-12)


# ------------------------------------------------------------------- ACRE ---


def ref_acre(first, second, perms, gold, table):
  out = []
  for a1, a2, perm, g in zip(first, second, perms, gold):
    a2_orig = perm[a2] if 0 <= a2 < len(perm) else -1
    if a1 < 0:
      correct = consistent = False
    else:
      correct, consistent = a1 == g, a1 == a2_orig
    out.append(table[(correct, consistent)])
  return out


def test_acre_reward_table_defaults_and_knobs():
  correct = np.array([True, True, False, False])
  consistent = np.array([True, False, True, False])
  np.testing.assert_array_equal(tx.acre_reward_table(correct, consistent),
                                np.array([1.0, 0.5, 0.0, 0.0], np.float32))
  got = tx.acre_reward_table(correct, consistent, correct_consistent=2.0,
                             correct_inconsistent=0.25,
                             incorrect_consistent=-0.5,
                             incorrect_inconsistent=-1.0)
  np.testing.assert_array_equal(got, [2.0, 0.25, -0.5, -1.0])
  assert tx.acre_reward_table([], []).shape == (0,)
  with pytest.raises(ValueError, match="same shape"):
    tx.acre_reward_table([True], [True, False])


def test_acre_reward_from_answers():
  rng = np.random.default_rng(0)
  num, k = 12, 4
  perms = np.stack([rng.permutation(k) for _ in range(num)])
  first = rng.integers(-1, k, num)
  second = rng.integers(-1, k + 1, num)   # includes unparsable / out of range
  gold = rng.integers(0, k, num)
  table = {(True, True): 1.0, (True, False): 0.3, (False, True): 0.1,
           (False, False): 0.0}
  got = tx.acre_reward(first, second, perms, gold, correct_inconsistent=0.3,
                       incorrect_consistent=0.1)
  np.testing.assert_allclose(got, ref_acre(first, second, perms, gold, table))
  # Letters are option labels: "B" on the shuffled list [2, 0, 1] is option 0.
  assert tx.unshuffle_answers(["B"], [[2, 0, 1]])[0] == 0
  np.testing.assert_array_equal(
      tx.acre_reward(["A", "c"], ["B", "?"], [[2, 0, 1], [0, 1, 2]],
                     ["A", "C"]),
      [1.0, 0.5])
  with pytest.raises(ValueError, match="permutations"):
    tx.unshuffle_answers([0, 1], [[0, 1]])


def test_acre_partial_reward_is_marked_as_a_choice():
  # The 0.5 for a correct but inconsistent answer is cajax's, not the
  # paper's: the docstring must say so.
  doc = tx.acre_reward_table.__doc__
  assert "[GAP]" in doc and "0.5" in doc and "choice" in doc
