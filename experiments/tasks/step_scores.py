"""Turns the checked steps of a response into a `Score`.

A task's checker finds the steps of the text (`CheckedSteps`): their labels,
the token each one starts at, and which step owns each token
(`offsets.token_steps`). A step of the text that owns no token (its whole
text lies inside a token that began in an earlier step, which only a
tokenizer with long merged tokens produces) has no token to carry its
reward, so it is merged into the step that owns that token: the merged
step scores the lowest PRM score of its parts and takes the worst label
(wrong, then filler, then unknown, then correct), so no verdict is lost.
The label counts in `metrics` are of the text's steps.
"""

import dataclasses

import numpy as np

from experiments.tasks import base
from experiments.tasks import prm

__all__ = [
    "CheckedSteps", "make_score", "retry_prefix",
]

# Which label a merged step takes: the first of these among its parts.
_SEVERITY = (base.WRONG, base.FILLER, base.UNKNOWN, base.CORRECT)


@dataclasses.dataclass
class CheckedSteps:
  """The steps of one response's text as the task's checker found them.

  Attributes:
    token_steps: int[T_resp] the step of each response token; −1 on
      observation tokens.
    prefixes: per step, the number of tokens before its text begins (the
      retry prefix that holds nothing of it).
    texts: per step, its text (keys the noisy PRM).
    labels, reasons: per step, the checker's label and reason ("" unless
      wrong); the last step's include the answer check.
    vacuous: per step, a true identity on its own text (hackable PRM).
    step_only_labels: the labels before the answer check, which the
      hackable PRM scores like a learned PRM that never checks the final
      answer; None: `labels`.
  """
  token_steps: np.ndarray
  prefixes: list
  texts: list
  labels: list
  reasons: list
  vacuous: list
  step_only_labels: list | None = None


def _owners(token_steps: np.ndarray, num_steps: int) -> np.ndarray:
  """int[S]: the merged step of each step of the text."""
  owned = np.zeros(num_steps, bool)
  owned[token_steps[token_steps >= 0]] = True
  if not owned.any():
    return np.arange(num_steps)
  owned[0] = True  # leading steps without a token join the first owned one
  return np.cumsum(owned) - 1


def make_score(config: prm.PrmConfig, problem: base.Problem,
               ids: np.ndarray, steps: CheckedSteps, *, outcome: float,
               answer: str | None, answered: bool, has_eos: bool,
               rewards: np.ndarray | None = None,
               metrics: dict | None = None,
               extra: dict | None = None) -> base.Score:
  """Assembles a `Score` from the checked steps of one response.

  Args:
    config: the PRM and its reward values.
    problem: the problem.
    ids: int[T_resp] the response ids.
    steps: the checked steps of the text.
    outcome: the outcome reward.
    answer: the parsed answer text, None when absent.
    answered: the response holds a well-formed answer.
    has_eos: the response ends with EOS.
    rewards: optional float32[S] step rewards that replace the PRM's.
    metrics: task-specific metrics to add.
    extra: task-specific extras to add.

  Returns:
    The score; extra holds "step_errors" (reason per step of the text),
    "step_spans" (token range of each step), "answer", "first_wrong_step"
    (step index, −1 if none) and "first_wrong_token" (the retry prefix's
    length: the tokens before the first wrong step's text, −1 if none).
  """
  num = len(steps.labels)
  token_steps = np.asarray(steps.token_steps, np.int64)
  if rewards is None:
    seen = steps.labels
    if config.prm == "hackable" and steps.step_only_labels is not None:
      seen = steps.step_only_labels
    rewards = prm.step_rewards(
        config, np.asarray(seen, np.int8), np.asarray(steps.vacuous, bool),
        problem.text, steps.texts if config.prm == "noisy" else None)
  rewards = np.asarray(rewards, np.float32)
  owner = _owners(token_steps, num)
  merged = int(owner[-1]) + 1
  merged_rewards = np.full(merged, np.inf, np.float32)
  np.minimum.at(merged_rewards, owner, rewards)
  severity = [_SEVERITY.index(label) for label in steps.labels]
  merged_labels = [_SEVERITY[min(s for s, o in zip(severity, owner)
                                 if o == k)] for k in range(merged)]
  step_ids = np.where(token_steps >= 0, owner[np.maximum(token_steps, 0)],
                      -1).astype(np.int32)
  labels = list(steps.labels)
  first = labels.index(base.WRONG) if base.WRONG in labels else -1
  spans = []
  for k in range(merged):
    where = np.flatnonzero(step_ids == k)
    spans.append((int(where[0]), int(where[-1]) + 1) if where.size
                 else (0, 0))
  all_metrics = {
      "num_steps": float(num),
      "correct_steps": float(labels.count(base.CORRECT)),
      "wrong_steps": float(labels.count(base.WRONG)),
      "filler_steps": float(labels.count(base.FILLER)),
      "answered": float(answered),
      "has_eos": float(has_eos),
      "response_len": float(ids.shape[0]),
  }
  all_metrics.update(metrics or {})
  all_extra = {
      "step_errors": list(steps.reasons),
      "step_spans": spans,
      "answer": answer,
      "first_wrong_step": int(owner[first]) if first >= 0 else -1,
      "first_wrong_token": int(steps.prefixes[first]) if first >= 0 else -1,
  }
  all_extra.update(extra or {})
  return base.Score(outcome=outcome, step_ids=step_ids,
                    step_rewards=merged_rewards, step_labels=merged_labels,
                    metrics=all_metrics, extra=all_extra)


def retry_prefix(response_ids, score: base.Score) -> list[int] | None:
  """The response before its first wrong step (R3L), None without one."""
  first = score.extra.get("first_wrong_token", -1)
  if first < 0:
    return None
  return [int(t) for t in np.asarray(response_ids)[:first]]
