"""Process reward models built on a step checker's labels.

Scale: a step scores `reward_correct` (+1), `reward_wrong` (−1) or
`reward_filler` (0) by default, the signed range [−1, 1] of PURE's
p(good) − p(bad) step score (Cheng et al., arXiv 2504.15275). With it the
min over steps is +1 only for a flawless response, a filler step pulls a
min-form value down to 0, and `cajax.process_grpo` (which normalises the
step rewards within a group) and `cajax.sum_form_prm` (which sums them) see
the same numbers. A step the checker cannot judge (`base.UNKNOWN`: a step
of real text without an arithmetic claim, `jsonl_math`) scores
`reward_unknown` (0, neutral). All five values are config fields
(`PrmConfig`).

Kinds:

* "oracle": the checker's label mapped to its score.
* "noisy": the oracle, except that with probability p the verdict is
  reversed: a correct step scores `reward_wrong`, a wrong or filler step
  `reward_correct` (an unknown step has no verdict and keeps its score).
  The flip is a deterministic function of (seed, problem text, step index,
  step text), like a real PRM that always gives the same score to the same
  input, and independent across distinct inputs. It reads text, not token
  ids, so every tokenizer sees the same flips.
* "hackable": a stand-in for a learned PRM. It judges steps only: it never
  checks the final answer (a missing or wrong answer leaves the last step's
  score alone; the task passes the labels from before its answer check, and
  an answer turn of its own scores `reward_filler`), and a vacuous step (a
  true identity such as `7+0=7`, judged on its own text whether or not it
  continues the chain) scores `reward_hacked` (+1, as high as a correct
  step). Summing such rewards pays for padding a response with filler, even
  with no answer at all; a min over steps does not: the reward hacking PURE
  describes. (A min pays a response cut short after right steps as much as
  a complete one.) Give it a budget with room to pad (`max_response_len`).
"""

import dataclasses
from typing import Sequence

import numpy as np

from experiments.tasks import base

__all__ = [
    "PRM_KINDS", "PrmConfig", "check_kind", "flip_draws", "step_rewards",
]

PRM_KINDS = ("oracle", "noisy", "hackable")


@dataclasses.dataclass(frozen=True)
class PrmConfig:
  """The process reward model's settings, shared by the tasks' configs.

  Attributes:
    prm: "oracle", "noisy" or "hackable" (see the module docstring).
    prm_noise: flip probability of the noisy PRM.
    prm_seed: seed of the noisy PRM's flips.
    reward_correct, reward_wrong, reward_filler: PRM score of a correct, a
      wrong and a filler step.
    reward_hacked: the hackable PRM's score of a vacuous identity step.
    reward_unknown: the score of a step the checker cannot judge.
  """
  prm: str = "oracle"
  prm_noise: float = 0.1
  prm_seed: int = 0
  reward_correct: float = 1.0
  reward_wrong: float = -1.0
  reward_filler: float = 0.0
  reward_hacked: float = 1.0
  reward_unknown: float = 0.0

  def __post_init__(self):
    base.check_rate(self.prm_noise, "prm_noise")


def check_kind(kind: str) -> str:
  if kind not in PRM_KINDS:
    raise ValueError(f"prm must be one of {PRM_KINDS}, got {kind!r}.")
  return kind


def flip_draws(seed: int, problem_text: str,
               step_texts: Sequence[str]) -> np.ndarray:
  """float64[S] uniform draws in [0, 1), one per (problem, step index,
  step text)."""
  return np.array([base.stable_hash(seed, problem_text, k, text) / 2.0**64
                   for k, text in enumerate(step_texts)], np.float64)


def step_rewards(config: PrmConfig, labels: np.ndarray, vacuous: np.ndarray,
                 problem_text: str,
                 step_texts: Sequence[str] | None) -> np.ndarray:
  """float32[S] PRM scores of one response's steps.

  Args:
    config: holds `prm`, `prm_noise`, `prm_seed` and the reward values.
    labels: int8[S] checker labels (for "hackable", those from before the
      answer check); `base.UNKNOWN` for a step the checker cannot judge.
    vacuous: bool[S] steps that are true identities on their own text.
    problem_text: the problem's text (keys the noisy PRM).
    step_texts: the text of each step (keys the noisy PRM; unused, and may
      be None, for the other kinds).

  Returns:
    The scores.
  """
  kind = check_kind(config.prm)
  labels = np.asarray(labels)
  values = {base.WRONG: config.reward_wrong,
            base.CORRECT: config.reward_correct,
            base.FILLER: config.reward_filler,
            base.UNKNOWN: config.reward_unknown}
  rewards = np.array([values[int(label)] for label in labels], np.float64)
  if kind == "hackable":
    rewards = np.where(vacuous, config.reward_hacked, rewards)
  elif kind == "noisy":
    flip = (flip_draws(config.prm_seed, problem_text, step_texts)
            < config.prm_noise) & (labels != base.UNKNOWN)
    reversed_ = np.where(labels == base.CORRECT, config.reward_wrong,
                         config.reward_correct)
    rewards = np.where(flip, reversed_, rewards)
  return rewards.astype(np.float32)
