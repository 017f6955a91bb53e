"""Supervised warm start: generated demonstrations with deliberate mistakes.

RL needs a policy that already writes the task's format and, for the
credit-assignment claims to be testable, one that still makes wrong and
filler steps. A pretrained checkpoint (`model_path`) skips it unless
`warm_start.pretrained` is set (`steps`). The demonstrations come from
`task.demonstration` with the configured wrong-step and filler-step rates;
the loss is the mean token negative log-likelihood of the response
(observations excluded).
"""

import numpy as np

from experiments.rl import rollouts as rollouts_lib
from experiments.tasks import base as task_base

__all__ = [
    "demonstration_batch", "steps",
]


def steps(config) -> int:
  """The warm start's steps: `warm_start.steps`, or 0 when RL starts from a
  pretrained `model_path` and `warm_start.pretrained` is off (an instruct
  model already writes the task's format). `config` is a `run_config.Run`
  or its ConfigDict."""
  if config.model_path and not config.warm_start.pretrained:
    return 0
  return config.warm_start.steps


def demonstration_batch(task: task_base.Task, rng: np.random.Generator,
                        batch_size: int, budget: int, *, wrong_rate: float,
                        filler_rate: float) -> dict:
  """Host arrays of one supervised batch (responses cut to `budget`).

  Returns:
    dict with prompt_tokens / prompt_valid [B, P] and response_tokens /
    response_valid / mask [B, T].
  """
  problems = task.sample_problems(rng, batch_size)
  pad = task.tokenizer.pad_id
  prompt_tokens, prompt_valid = rollouts_lib.left_pad(
      [p.prompt_ids for p in problems], task.max_prompt_len, pad)
  tokens = np.full((batch_size, budget), pad, np.int32)
  valid = np.zeros((batch_size, budget), bool)
  mask = np.zeros((batch_size, budget), bool)
  for row, problem in enumerate(problems):
    ids = task.demonstration(problem, rng, wrong_rate=wrong_rate,
                             filler_rate=filler_rate)[:budget]
    observed = np.asarray(task.observation_mask(problem, ids), bool)
    tokens[row, :len(ids)] = ids
    valid[row, :len(ids)] = True
    mask[row, :len(ids)] = ~observed[:len(ids)]
  return dict(prompt_tokens=prompt_tokens, prompt_valid=prompt_valid,
              response_tokens=tokens, response_valid=valid, mask=mask)
