"""Turns the checked steps of an arithmetic-chain response into a `Score`."""

import numpy as np

from experiments.tasks import arith
from experiments.tasks import base
from experiments.tasks import prm

__all__ = ["make_score", "retry_prefix"]


def make_score(config: arith.ChainConfig, problem: base.Problem,
               ids: np.ndarray, spans, labels, reasons, vacuous,
               outcome: float, answer_text: str | None,
               observation_mask: np.ndarray | None = None,
               rewards: np.ndarray | None = None,
               metrics: dict | None = None,
               extra: dict | None = None,
               step_only_labels=None) -> base.Score:
  """Assembles a `Score` from the checked steps of one response.

  Args:
    config: the chain config (PRM and reward values).
    problem: the problem.
    ids: int[T_resp] the response ids.
    spans: (start, stop) token range of each step; together they cover the
      response.
    labels, reasons: the checker's label and reason per step; the last
      step's already include the answer check.
    vacuous: per step, a true identity on its own text (hackable PRM).
    outcome: the outcome reward.
    answer_text: the parsed answer text, None when absent.
    observation_mask: optional bool[T_resp]; observation tokens get step
      id −1 and are left out of the PRM's view of a step.
    rewards: optional float32[S] step rewards that replace the PRM's.
    metrics: task-specific metrics to add.
    extra: task-specific extras to add.
    step_only_labels: the labels before the answer check (default
      `labels`); the hackable PRM scores these, like a learned PRM that
      judges steps and never the final answer.

  Returns:
    The score; extra holds "step_errors" (reason per step, "" if not
    wrong), "step_spans", "answer", "first_wrong_step" (step index, −1 if
    none) and "first_wrong_token" (its first token index, −1 if none).
  """
  step_ids = np.full(ids.shape[0], -1, np.int32)
  for k, (start, stop) in enumerate(spans):
    step_ids[start:stop] = k
  if observation_mask is not None:
    step_ids[observation_mask] = -1
  if rewards is None:
    # Only the noisy PRM reads the step tokens (observations left out).
    step_tokens = [ids[start:stop][step_ids[start:stop] == k].tolist()
                   for k, (start, stop) in enumerate(spans)
                   ] if config.prm == "noisy" else None
    seen = labels
    if config.prm == "hackable" and step_only_labels is not None:
      seen = step_only_labels
    rewards = prm.step_rewards(config, np.asarray(seen, np.int8),
                               np.asarray(vacuous, bool),
                               problem.prompt_ids, step_tokens)
  labels = list(labels)
  first_wrong = labels.index(base.WRONG) if base.WRONG in labels else -1
  all_metrics = {
      "num_steps": float(len(labels)),
      "correct_steps": float(labels.count(base.CORRECT)),
      "wrong_steps": float(labels.count(base.WRONG)),
      "filler_steps": float(labels.count(base.FILLER)),
      "answered": float(answer_text is not None
                        and bool(arith.NUMBER_PATTERN.match(answer_text))),
      "has_eos": float(bool(ids.size) and ids[-1] == base.EOS_ID),
      "response_len": float(ids.shape[0]),
  }
  all_metrics.update(metrics or {})
  all_extra = {
      "step_errors": list(reasons),
      "step_spans": [tuple(span) for span in spans],
      "answer": answer_text,
      "first_wrong_step": first_wrong,
      "first_wrong_token": int(spans[first_wrong][0]) if first_wrong >= 0
                           else -1,
  }
  all_extra.update(extra or {})
  return base.Score(outcome=outcome, step_ids=step_ids, step_rewards=rewards,
                    step_labels=labels, metrics=all_metrics, extra=all_extra)


def retry_prefix(response_ids, score: base.Score) -> list[int] | None:
  """The response before its first wrong step (R3L), None without one."""
  first = score.extra.get("first_wrong_token", -1)
  if first < 0:
    return None
  return [int(t) for t in np.asarray(response_ids)[:first]]
