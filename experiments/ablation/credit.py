"""Every arm's per-token credit on one shared batch.

The batch: `rl.num_groups` problems (at least `MIN_GROUPS`, so that a
smoke size's tiny batch still holds the cases where arms differ), each
repeated `rl.group_size` times,
answered by the task's own demonstrations at the warm start's rates of
wrong and filler steps (`warm_start.wrong_rate`, `warm_start.filler_rate`),
so that every group mixes right and wrong responses whatever the policy
has learned. Each arm then runs exactly what its trainer runs between
scoring and the update (`trainer.RLStep.credit`): its own scoring settings,
its R3L retries (sampled by the policy) and loss mask, its statistics and
estimator; an arm with an implicit PRM gets one PRM update first, so that
its implicit rewards are not 0. An arm's credit is advantage × loss mask.

The heat map draws one response of it (`heatmap.py`), and the runner calls
`check_distinct` before an ablation's arms train: two arms with identical
credit on this batch would be one arm under two names.
"""

import dataclasses
import itertools

import jax
import numpy as np

from experiments.ablation import spec
from experiments.rl import checkpoints
from experiments.rl import experiment
from experiments.rl import rollouts as rollouts_lib
from experiments.rl import trainer

__all__ = [
    "ArmCredit", "MIN_GROUPS", "arm_credit", "check_distinct", "demonstrations",
    "identical_pairs",
]


MIN_GROUPS = 8


def _experiment(ablation, arm: str, size: str,
                overrides: dict | None = None) -> experiment.Experiment:
  config = spec.build_config(ablation, f"{arm},0,{size}", overrides)
  config.rl.num_groups = max(config.rl.num_groups, MIN_GROUPS)
  return experiment.Experiment(config)


@dataclasses.dataclass
class ArmCredit:
  """One arm's view of the shared batch."""
  credit: np.ndarray        # f32[B, T] advantage × loss mask
  tokens: np.ndarray        # int32[B, T] (retried rows differ per arm)
  valid: np.ndarray         # bool[B, T]
  scored: rollouts_lib.Scored
  retried: list             # rows this arm's retries replaced


def demonstrations(exp: experiment.Experiment, problems,
                   rng: np.random.Generator) -> rollouts_lib.Responses:
  """The task's demonstrations of `problems` as sampled responses."""
  task, budget = exp.task, exp.config.sampling.max_new_tokens
  ws = exp.config.warm_start
  rows = len(problems)
  prompt_tokens, prompt_valid = rollouts_lib.left_pad(
      [p.prompt_ids for p in problems], task.max_prompt_len,
      task.tokenizer.pad_id)
  tokens = np.full((rows, budget), task.tokenizer.pad_id, np.int32)
  valid = np.zeros((rows, budget), bool)
  observation = np.zeros((rows, budget), bool)
  for row, problem in enumerate(problems):
    ids = task.demonstration(problem, rng, wrong_rate=ws.wrong_rate,
                             filler_rate=ws.filler_rate)[:budget]
    tokens[row, :len(ids)], valid[row, :len(ids)] = ids, True
    observation[row, :len(ids)] = task.observation_mask(problem, ids)
  finished = np.asarray([t[v][-1] == task.tokenizer.eos_id if v.any()
                         else False for t, v in zip(tokens, valid)])
  return rollouts_lib.Responses(prompt_tokens, prompt_valid, tokens, valid,
                                observation, np.zeros((rows, budget),
                                                      np.float32), finished)


def _arm(ablation, arm: str, size: str, init_checkpoint: str | None,
         problems, responses, key, overrides: dict | None) -> ArmCredit:
  exp = _experiment(ablation, arm, size, overrides)
  rl = exp.config.rl
  graphdef, params, rest = exp.new_policy(value_head=rl.value_coef > 0)
  if init_checkpoint:
    params = {**params, "decoder": checkpoints.restore_params(
        init_checkpoint + "/checkpoints",
        {"decoder": params["decoder"]})["decoder"]}
  tx = trainer.optimizer(exp.config, exp.config.optimizer.learning_rate)
  step = trainer.RLStep(exp, graphdef, rest,
                        params if rl.needs_reference else None, tx,
                        start_params=params)
  scored = rollouts_lib.score_batch(exp.task, problems, responses,
                                    exp.task.max_steps)
  c = step.credit(params, problems, responses, scored, key)
  if step.prm is not None:  # the same batch, after one PRM update
    c = step.credit(params, problems, responses, scored, key)
  return ArmCredit(np.asarray(c.estimate.advantages)
                   * np.asarray(c.rollouts.mask),
                   c.responses.tokens, c.responses.valid, c.scored,
                   c.retried)


def arm_credit(ablation, size: str, init_checkpoint: str | None = None,
               seed: int = 12345,
               overrides: dict | None = None) -> dict[str, ArmCredit]:
  """{arm: its credit on the shared batch (see the module docstring)}.

  Args:
    ablation: a `spec.Ablation`.
    size: the size whose arms' configs are used.
    init_checkpoint: a warm start's folder (its params give the policy's
      statistics and sample the retries); None: the fresh policy.
    seed: the batch's problems, demonstrations and sampling key.
    overrides: the runs' command-line overrides (`spec.build_config`).
  """
  arms = list(ablation.arms)
  exp = _experiment(ablation, arms[0], size, overrides)
  rl, rng = exp.config.rl, np.random.default_rng(seed)
  problems = [p for p in exp.task.sample_problems(rng, rl.num_groups)
              for _ in range(rl.group_size)]
  responses = demonstrations(exp, problems, rng)
  key = jax.random.key(seed)
  return {arm: _arm(ablation, arm, size, init_checkpoint, problems,
                    responses, key, overrides) for arm in arms}


def identical_pairs(credit: dict[str, ArmCredit]) -> list[tuple[str, str]]:
  """Pairs of arms whose credit is identical, element by element."""
  return [(a, b) for a, b in itertools.combinations(credit, 2)
          if np.array_equal(credit[a].credit, credit[b].credit)]


def check_distinct(ablation, size: str, init_checkpoint: str | None = None,
                   overrides: dict | None = None) -> dict[str, ArmCredit]:
  """Every arm's credit on the shared batch (`arm_credit`), after checking
  that no two are identical.

  Raises:
    ValueError: naming every pair of arms of `ablation` whose credit is
      identical (one arm under two names).
  """
  credit = arm_credit(ablation, size, init_checkpoint,
                      overrides=overrides)
  pairs = identical_pairs(credit)
  if pairs:
    raise ValueError(
        f"ablation {ablation.name!r} ({size}): arms " + ", ".join(
            f"{a!r} and {b!r}" for a, b in pairs) + " give identical "
        "advantages × loss mask on the shared batch, so each pair is one "
        "method under two names; make them differ or drop one.")
  return credit
