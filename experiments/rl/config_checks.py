"""Checks that need more than one config section, before anything compiles.

The estimator is traced abstractly (`jax.eval_shape`, which compiles
nothing) on a tiny batch made by the one batch builder, with the statistics
the trainer would give it, so settings that do not fit the estimator, or an
estimator this loop cannot feed, fail here with the config key named.
"""

import jax
import jax.numpy as jnp
import numpy as np

from experiments.rl import policy as policy_lib
from experiments.rl import rollouts as rollouts_lib

__all__ = ["check_estimator_runs"]


def _tiny_batch(rl):
  """(responses, scores, group ids, statistics) of 2 groups of 2 rows."""
  rows, length, steps = 4, 6, 3
  zeros = np.zeros((rows, length), np.float32)
  valid = np.ones((rows, length), bool)
  responses = rollouts_lib.Responses(
      prompt_tokens=np.zeros((rows, 1), np.int32),
      prompt_valid=np.ones((rows, 1), bool), tokens=zeros.astype(np.int32),
      valid=valid, observation=~valid, sampler_logprobs=zeros,
      finished=np.ones(rows, bool))
  arrays = dict(token_rewards=zeros, step_token_rewards=zeros,
                step_ids=np.zeros((rows, length), np.int32),
                step_rewards=np.zeros((rows, steps), np.float32),
                step_mask=np.ones((rows, steps), bool))
  scored = rollouts_lib.Scored(np.zeros(rows, np.float32), arrays, [], {})
  statistics = {s: jnp.zeros((rows, length), jnp.float32)
                for s in policy_lib.statistics_for(rl.resolved.fields)}
  if rl.value_coef > 0:
    statistics["values"] = jnp.zeros((rows, length), jnp.float32)
  if rl.needs_reference:
    statistics["ref_logprobs"] = jnp.zeros((rows, length), jnp.float32)
  return responses, scored, np.array([0, 0, 1, 1], np.int32), statistics


def check_estimator_runs(rl) -> None:
  """Raises ValueError (naming the config keys) unless the resolved
  estimator of `rl` (a `run_config.RL`) traces on a batch as the trainer
  builds it."""
  responses, scored, group_ids, statistics = _tiny_batch(rl)
  try:
    rollouts = rollouts_lib.build_batch(
        rl.resolved, responses, scored, group_ids, 2, statistics=statistics,
        reward_source=rl.reward_source,
        verifiable_fraction=rl.verifiable_fraction,
        baseline_scores=np.zeros(4, np.float32))
    jax.eval_shape(rl.resolved.function, rollouts)
  except (TypeError, ValueError) as e:
    raise ValueError(
        f"rl.estimator={rl.estimator!r} with rl.estimator_kwargs="
        f"{dict(rl.estimator_kwargs)} does not run in this loop: {e}") from None
