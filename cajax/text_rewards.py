"""Host-side rewards computed from answer strings (Python and NumPy only).

These run on the host after decoding, before the rewards go to the device:

* AnsF1, the set-level answer F1 of A²Search for questions with several
  valid answers, with SQuAD-style answer normalisation;
* ACRE's answer-consistency reward table over (first answer correct,
  answer unchanged after the options are shuffled).

Each returns float32 NumPy arrays (or Python floats) that feed a group
advantage estimator as outcome rewards.
"""

import re
import string
from typing import Callable, Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Matcher", "acre_reward", "acre_reward_table", "ans_f1", "batch_ans_f1",
    "normalize_answer", "unshuffle_answers",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)

Matcher = Callable[[str, str], bool]


def normalize_answer(text: str) -> str:
  """SQuAD answer normalisation: lowercase, no punctuation/articles, spaces.

  Steps, in the order of the SQuAD v1.1 evaluation script: lowercase; delete
  every ASCII punctuation character; replace the whole words "a", "an",
  "the" by a space; collapse runs of whitespace to one space and strip.

  See "SQuAD: 100,000+ Questions for Machine Comprehension of Text"
  (Rajpurkar, Zhang, Lopyrev, Liang, arXiv 1606.05250).

  Args:
    text: an answer string.

  Returns:
    The normalised answer ("" when nothing is left).
  """
  text = "".join(ch for ch in str(text).lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def _answer_set(answers: str | Iterable[str]) -> list[str]:
  if isinstance(answers, str):
    answers = [answers]
  unique = dict.fromkeys(normalize_answer(a) for a in answers)
  return [a for a in unique if a]


def ans_f1(predictions: str | Iterable[str],
           references: str | Iterable[str],
           match: Matcher | None = None) -> float:
  """A²Search's AnsF1: F1 between the predicted and the valid answer sets.

  With P the set of normalised predictions and G the set of normalised
  valid answers (reference ∪ verified alternatives):

    prec = |{p ∈ P : ∃g ∈ G, p ≡ g}| / |P|
    rec  = |{g ∈ G : ∃p ∈ P, p ≡ g}| / |G|
    AnsF1 = 2·prec·rec / (prec + rec)   (0 when P or G is empty, or nothing
                                         matches)

  ≡ is exact equality after `normalize_answer` (then AnsF1 = 2|P∩G| /
  (|P| + |G|)) unless `match` is given. Duplicates after normalisation are
  removed, so repeating an answer cannot raise precision, while listing
  wrong answers lowers it.

  [GAP] A²Search's code is unavailable: answers that normalise to "" (e.g.
  "The") are dropped from both sets, and the optional `match` (e.g. a token
  F1 threshold or an LLM judge) replaces exact match on normalised strings.

  See "A²Search: Ambiguity-Aware Question Answering with Reinforcement
  Learning" (Zhang et al., arXiv 2510.07958).

  Args:
    predictions: the model's answers (a single string is one answer).
    references: the valid answers.
    match: optional `match(pred, ref) -> bool` on normalised strings.

  Returns:
    AnsF1 in [0, 1].
  """
  pred, gold = _answer_set(predictions), _answer_set(references)
  if not pred or not gold:
    return 0.0
  if match is None:
    hits = len(set(pred) & set(gold))
    return 2.0 * hits / (len(pred) + len(gold))
  pred_hits = sum(any(match(p, g) for g in gold) for p in pred)
  gold_hits = sum(any(match(p, g) for p in pred) for g in gold)
  if pred_hits == 0 or gold_hits == 0:
    return 0.0
  precision, recall = pred_hits / len(pred), gold_hits / len(gold)
  return 2.0 * precision * recall / (precision + recall)


def batch_ans_f1(predictions: Sequence[str | Iterable[str]],
                 references: Sequence[str | Iterable[str]],
                 match: Matcher | None = None) -> np.ndarray:
  """`ans_f1` of each (predictions, references) pair, as float32[B].

  Raises:
    ValueError: if the two sequences differ in length.
  """
  if len(predictions) != len(references):
    raise ValueError(f"predictions ({len(predictions)} rows) and references "
                     f"({len(references)} rows) must have the same length.")
  return np.asarray([ans_f1(p, r, match=match)
                     for p, r in zip(predictions, references)], np.float32)


# ------------------------------------------------------------------- ACRE ---


def _choice_indices(answers, name: str) -> np.ndarray:
  """Option indices from ints or option letters ("A" → 0); −1 if invalid."""
  out = []
  for a in np.asarray(answers, dtype=object).reshape(-1):
    if isinstance(a, (str, np.str_)):
      letter = a.strip().upper()
      out.append(ord(letter) - ord("A")
                 if len(letter) == 1 and "A" <= letter <= "Z" else -1)
    elif isinstance(a, (bool, np.bool_)) or a is None:
      raise ValueError(f"{name} must hold option indices or letters, "
                       f"got {a!r}.")
    else:
      out.append(int(a))
  return np.asarray(out, np.int64)


def unshuffle_answers(shuffled_answers: Sequence[str] | np.ndarray,
                      permutations: ArrayLike) -> np.ndarray:
  """Maps answers given on shuffled options back to the original options.

  The re-prompt shows at position j the original option permutations[b, j],
  so an answer at position j means original option permutations[b, j].
  Answers outside [0, K) (unparsable, −1) stay −1.

  Args:
    shuffled_answers: [B] option indices (or letters) on the shuffled list.
    permutations: int[B, K] original option index at each shuffled position.

  Returns:
    int64[B] original option indices.

  Raises:
    ValueError: if `permutations` is not [B, K].
  """
  answers = _choice_indices(shuffled_answers, "shuffled_answers")
  perms = np.asarray(permutations)
  if perms.ndim != 2 or perms.shape[0] != answers.shape[0]:
    raise ValueError(f"permutations must have shape ({answers.shape[0]}, K), "
                     f"got {perms.shape}.")
  inside = (answers >= 0) & (answers < perms.shape[1])
  picked = perms[np.arange(answers.shape[0]), np.where(inside, answers, 0)]
  return np.where(inside, picked, -1).astype(np.int64)


def acre_reward_table(correct: ArrayLike, consistent: ArrayLike,
                      correct_consistent: float = 1.0,
                      correct_inconsistent: float = 0.5,
                      incorrect_consistent: float = 0.0,
                      incorrect_inconsistent: float = 0.0) -> np.ndarray:
  """ACRE's four-way reward r[correct, consistent].

    r = correct_consistent       if a₁ correct and a₂ = a₁
        correct_inconsistent     if a₁ correct and a₂ ≠ a₁
        incorrect_consistent     if a₁ wrong and a₂ = a₁
        incorrect_inconsistent   if a₁ wrong and a₂ ≠ a₁

  where a₁ is the answer after the chain of thought and a₂ the answer given
  for the same reasoning with shuffled options (mapped back). The reward is
  high only when the answer is right and follows from the reasoning.

  [GAP] The paper states only that the reward is high when the answer is
  both correct and consistent and lower otherwise; its values are not
  available. The defaults 1.0 / 0.5 / 0 / 0 are cajax's choice, in
  particular the partial reward 0.5 for a correct but inconsistent answer
  (anything in [0, 1) keeps the ordering the paper describes).

  See "Answer-Consistent Chain-of-thought Reinforcement Learning for
  Multi-modal Large Language Models" (Huang et al., arXiv 2510.10104).

  Args:
    correct: bool[B] whether a₁ is correct.
    consistent: bool[B] whether a₂ (mapped back) equals a₁.
    correct_consistent: reward of a correct, consistent answer.
    correct_inconsistent: reward of a correct answer that changes.
    incorrect_consistent: reward of a wrong answer that is stable.
    incorrect_inconsistent: reward of a wrong answer that changes.

  Returns:
    float32[B] rewards.

  Raises:
    ValueError: if `correct` and `consistent` differ in shape.
  """
  correct = np.asarray(correct, bool)
  consistent = np.asarray(consistent, bool)
  if correct.shape != consistent.shape:
    raise ValueError(f"correct {correct.shape} and consistent "
                     f"{consistent.shape} must have the same shape.")
  table = np.array([[incorrect_inconsistent, incorrect_consistent],
                    [correct_inconsistent, correct_consistent]], np.float32)
  return table[correct.astype(np.int64), consistent.astype(np.int64)]


def acre_reward(first_answers: Sequence[str] | np.ndarray,
                shuffled_answers: Sequence[str] | np.ndarray,
                permutations: ArrayLike,
                gold_answers: Sequence[str] | np.ndarray,
                **table: float) -> np.ndarray:
  """ACRE reward from raw multiple-choice answers.

  correct = (a₁ = gold), consistent = (a₁ = unshuffle(a₂)) with a₁ a valid
  option; then `acre_reward_table(correct, consistent, **table)`.

  See "Answer-Consistent Chain-of-thought Reinforcement Learning for
  Multi-modal Large Language Models" (Huang et al., arXiv 2510.10104).

  Args:
    first_answers: [B] a₁, option indices or letters.
    shuffled_answers: [B] a₂ on the shuffled options.
    permutations: int[B, K] original option at each shuffled position.
    gold_answers: [B] correct options.
    **table: reward values, see `acre_reward_table`.

  Returns:
    float32[B] rewards.

  Raises:
    ValueError: on answer arrays of different lengths or bad permutations.
  """
  first = _choice_indices(first_answers, "first_answers")
  gold = _choice_indices(gold_answers, "gold_answers")
  second = unshuffle_answers(shuffled_answers, permutations)
  if not first.shape == gold.shape == second.shape:
    raise ValueError(f"first_answers {first.shape}, shuffled_answers "
                     f"{second.shape} and gold_answers {gold.shape} must "
                     "have the same length.")
  valid = first >= 0
  return acre_reward_table(valid & (first == gold), valid & (first == second),
                           **table)
