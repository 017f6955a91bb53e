"""The update's own old log-probs (one optimizer step) give the numbers of
the separate forward pass they replace, and a trainer step compiles nothing
after the first."""

import jax
import numpy as np
import pytest

from experiments.ablation import spec
from experiments.configs import smoke
from experiments.rl import experiment
from experiments.rl import trainer
from experiments.rl import train_step


def _experiment(overrides: dict) -> experiment.Experiment:
  config = smoke.get_config()
  config.warm_start.steps = 0
  spec.apply(config, overrides)
  return experiment.Experiment(config)


def _coin(exp):
  """Random 0/1 outcomes (a fresh policy scores 0), the same sequence for
  every trainer built after this call."""
  score, rng = exp.task.score, np.random.default_rng(0)

  def coin(problem, ids, observation=None):
    scored = score(problem, ids, observation)
    scored.outcome = float(rng.integers(0, 2))
    return scored

  return coin


def _step(exp, own: bool, steps: int = 1):
  """`steps` trainer steps from a fresh policy, with the old log-probs
  from the update (`own`) or from a separate forward."""
  rl = exp.config.rl
  graphdef, params, rest = exp.new_policy(value_head=False)
  tx = trainer.optimizer(exp.config, 1e-2)
  step = trainer.RLStep(exp, graphdef, rest, params if rl.needs_reference
                      else None, tx)
  assert step.own_old_logprobs
  if not own:
    step.own_old_logprobs = False
    step.update = train_step.jit_update(rl, exp.sampling, graphdef, tx)
  state, records = trainer.initial_state(exp, tx, params), []
  for i in range(steps):
    state, record = step(i, state)
    records.append(record)
  return jax.tree.map(np.asarray, state.params), records


@pytest.mark.parametrize("overrides", [
    {},
    # A sequence-level ratio, a truncated importance weight, a KL term to
    # a reference policy and micro-batches.
    {"rl.policy_loss": "gspo", "rl.tis_ratio_cap": 2.0, "rl.kl_coef": 0.1,
     "rl.num_micro_batches": 2, "rl.aggregation": "seq-mean-token-mean"},
], ids=["grpo", "gspo-tis-kl-micro"])
def test_own_old_logprobs_give_the_separate_forwards_numbers(overrides):
  results = []
  for own in (True, False):
    exp = _experiment(overrides)
    exp.task.score = _coin(exp)
    results.append(_step(exp, own))
  (own_params, [own]), (sep_params, [sep]) = results
  assert set(own) == set(sep)
  for key in sep:
    if key.startswith("time/") or key == "tokens_per_second":
      continue
    np.testing.assert_allclose(own[key], sep[key], rtol=1e-5, atol=1e-6,
                               err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7),
               own_params, sep_params)


@pytest.mark.parametrize("overrides, takes", [
    ({}, True),
    ({"rl.tis_ratio_cap": 2.0, "rl.num_micro_batches": 2}, True),
    ({"rl.ppo_epochs": 2}, False),
    ({"rl.num_mini_batches": 2}, False),
    # Estimators that read the trainer's statistics or values before the
    # update.
    ({"rl.estimator": "optimal_token_baseline"}, False),
    ({"rl.estimator": "gae", "rl.value_coef": 0.5}, False),
])
def test_takes_own_old_logprobs_only_for_one_optimizer_step(overrides, takes):
  assert train_step.takes_own_old_logprobs(
      _experiment(overrides).config.rl) is takes


def test_update_refuses_own_old_logprobs_over_several_steps():
  rl = _experiment({"rl.ppo_epochs": 2}).config.rl
  with pytest.raises(ValueError, match="rl.ppo_epochs = 1"):
    train_step.update(rl, None, None, None, None, None,
                      train_step.UpdateBatch(*[np.zeros((2, 2))] * 11),
                      jax.random.key(0), own_old_logprobs=True)


def test_trainer_steps_after_the_first_compile_nothing():
  compiles = []

  def listen(event, duration, **unused):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    exp = _experiment({})
    exp.task.score = _coin(exp)
    rl = exp.config.rl
    graphdef, params, rest = exp.new_policy(value_head=False)
    tx = trainer.optimizer(exp.config, 1e-2)
    step = trainer.RLStep(exp, graphdef, rest, None, tx)
    state = trainer.initial_state(exp, tx, params)
    state, _ = step(0, state)
    first = len(compiles)
    for i in range(1, 3):
      state, _ = step(i, state)
    assert first > 0 and len(compiles) == first, rl
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
