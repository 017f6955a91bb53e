"""Process reward models built on a step checker's labels.

Scale: a step scores `reward_correct` (+1), `reward_wrong` (−1) or
`reward_filler` (0) by default, the signed range [−1, 1] of PURE's
p(good) − p(bad) step score (Cheng et al., arXiv 2504.15275). With it the
min over steps is +1 only for a flawless response, a filler step pulls a
min-form value down to 0, and `cajax.process_grpo` (which normalises the
step rewards within a group) and `cajax.sum_form_prm` (which sums them) see
the same numbers. All four values are config fields.

Kinds:

* "oracle": the checker's label mapped to its score.
* "noisy": the oracle, except that with probability p the verdict is
  reversed: a correct step scores `reward_wrong`, a wrong or filler step
  `reward_correct`. The flip is a deterministic function of (seed, problem
  prompt, step index, step tokens), like a real PRM that always gives the
  same score to the same input, and independent across distinct inputs.
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

from typing import Sequence

import numpy as np

from experiments.tasks import arith
from experiments.tasks import base

__all__ = ["PRM_KINDS", "check_kind", "flip_draws", "step_rewards"]

PRM_KINDS = ("oracle", "noisy", "hackable")


def check_kind(kind: str) -> str:
  if kind not in PRM_KINDS:
    raise ValueError(f"prm must be one of {PRM_KINDS}, got {kind!r}.")
  return kind


def flip_draws(seed: int, prompt_ids: Sequence[int],
               step_tokens: Sequence[Sequence[int]]) -> np.ndarray:
  """float64[S] uniform draws in [0, 1), one per (prompt, step index, step)."""
  return np.array([
      arith.stable_hash(seed, [int(t) for t in prompt_ids], k,
                        [int(t) for t in tokens]) / 2.0**64
      for k, tokens in enumerate(step_tokens)], np.float64)


def step_rewards(config: arith.ChainConfig, labels: np.ndarray,
                 vacuous: np.ndarray, prompt_ids: Sequence[int],
                 step_tokens: Sequence[Sequence[int]] | None) -> np.ndarray:
  """float32[S] PRM scores of one response's steps.

  Args:
    config: holds `prm`, `prm_noise`, `prm_seed` and the reward values.
    labels: int8[S] checker labels (for "hackable", those from before the
      answer check).
    vacuous: bool[S] steps that are true identities on their own text.
    prompt_ids: the problem's prompt (keys the noisy PRM).
    step_tokens: the token ids of each step (keys the noisy PRM; unused,
      and may be None, for the other kinds).

  Returns:
    The scores.
  """
  kind = check_kind(config.prm)
  labels = np.asarray(labels)
  values = np.array([config.reward_wrong, config.reward_correct,
                     config.reward_filler], np.float64)
  rewards = values[labels]
  if kind == "hackable":
    rewards = np.where(vacuous, config.reward_hacked, rewards)
  elif kind == "noisy":
    flip = flip_draws(config.prm_seed, prompt_ids, step_tokens) < (
        config.prm_noise)
    reversed_ = np.where(labels == base.CORRECT, config.reward_wrong,
                         config.reward_correct)
    rewards = np.where(flip, reversed_, rewards)
  return rewards.astype(np.float32)
