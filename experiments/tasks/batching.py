"""Pads a batch of task `Score`s into the `[B, T]` / `[B, S]` arrays of cajax.

`scores_to_arrays` gives what `cajax.Rollouts` needs from the tasks: outcome
rewards at the last valid token (the verl convention: the sequence score of
a row is Σ_t token_rewards), the step layout, the PRM step rewards, and the
same step rewards placed at each step's last valid token (the turn rewards
`cajax.agentic.matchtir` reads when steps are turns).
"""

from typing import Sequence

import numpy as np

from experiments.tasks import base

__all__ = ["LABEL_PAD", "scores_to_arrays"]

LABEL_PAD = base.UNKNOWN  # step_labels of padded steps


def scores_to_arrays(scores: Sequence[base.Score], num_tokens: int,
                     num_steps: int,
                     observation_masks: Sequence[np.ndarray] | None = None
                     ) -> dict[str, np.ndarray]:
  """Stacks B scores into padded NumPy arrays.

  Row b's response has `len(scores[b].step_ids)` tokens; its valid tokens
  are those that are not observations. Padding: step id −1, step reward 0,
  step mask False, label `LABEL_PAD`.

  Args:
    scores: B scores.
    num_tokens: T ≥ every response length.
    num_steps: S ≥ every row's step count.
    observation_masks: optional B bool arrays (True on environment tokens),
      each as long as its response.

  Returns:
    A dict of
      "mask": bool[B, T] valid (trainable) response tokens,
      "token_rewards": f32[B, T] the outcome at the last valid token (NaN
        for an unscorable row; a row without a valid token gets none),
      "outcomes": f32[B],
      "step_ids": int32[B, T], with observations and padding −1,
      "step_rewards": f32[B, S], "step_mask": bool[B, S],
      "step_labels": int8[B, S],
      "step_token_rewards": f32[B, T] each step's reward at its last valid
        token.

  Raises:
    ValueError: a response longer than `num_tokens`, more steps than
      `num_steps`, or an observation mask of the wrong length.
  """
  batch = len(scores)
  if observation_masks is not None and len(observation_masks) != batch:
    raise ValueError(f"observation_masks must hold one mask per score "
                     f"({batch}), got {len(observation_masks)}.")
  out = {
      "mask": np.zeros((batch, num_tokens), bool),
      "token_rewards": np.zeros((batch, num_tokens), np.float32),
      "outcomes": np.zeros((batch,), np.float32),
      "step_ids": np.full((batch, num_tokens), -1, np.int32),
      "step_rewards": np.zeros((batch, num_steps), np.float32),
      "step_mask": np.zeros((batch, num_steps), bool),
      "step_labels": np.full((batch, num_steps), LABEL_PAD, np.int8),
      "step_token_rewards": np.zeros((batch, num_tokens), np.float32),
  }
  for row, score in enumerate(scores):
    length, steps = score.step_ids.shape[0], score.step_rewards.shape[0]
    if length > num_tokens:
      raise ValueError(f"scores[{row}] has a response of {length} tokens, "
                       f"more than num_tokens={num_tokens}.")
    if steps > num_steps:
      raise ValueError(f"scores[{row}] has {steps} steps, more than "
                       f"num_steps={num_steps}.")
    valid = np.ones(length, bool)
    if observation_masks is not None:
      observed = np.asarray(observation_masks[row], bool)
      if observed.shape != (length,):
        raise ValueError(f"observation_masks[{row}] must have shape "
                         f"({length},), got {observed.shape}.")
      valid = ~observed
    out["mask"][row, :length] = valid
    out["outcomes"][row] = score.outcome
    positions = np.flatnonzero(valid)
    if positions.size:
      out["token_rewards"][row, positions[-1]] = score.outcome
    step_ids = np.where(valid, score.step_ids, -1)
    out["step_ids"][row, :length] = step_ids
    out["step_rewards"][row, :steps] = score.step_rewards
    out["step_mask"][row, :steps] = True
    out["step_labels"][row, :steps] = score.step_labels
    for k in range(steps):
      owned = np.flatnonzero(step_ids == k)
      if owned.size:
        out["step_token_rewards"][row, owned[-1]] = score.step_rewards[k]
  return out
