"""iStar's implicit PRM in the trainer: rewards from the PRM before its
update, exact reductions to RLOO, checkpoint and resume; and the first
step's layout check. Smoke config without a warm start; outcomes are a
deterministic coin of the response so that groups hold both outcomes."""

import os

import jax
import numpy as np
import pytest

import cajax
from experiments.ablation import spec
from experiments.configs import smoke
from experiments.rl import checkpoints
from experiments.rl import experiment
from experiments.rl import implicit_prm
from experiments.rl import metrics
from experiments.rl import policy
from experiments.rl import rollouts
from experiments.rl import trainer
from experiments.tasks import base
from experiments.tasks import chain_arith


def _coin(score):
  """`score` with the outcome replaced by the parity of the response's
  token sum (a fresh policy never solves a problem)."""
  def scored(self, problem, ids, observation=None):
    out = score(self, problem, ids, observation)
    out.outcome = float(int(np.sum(ids)) % 2)
    return out
  return scored


@pytest.fixture(autouse=True)
def coin_outcomes(monkeypatch):
  monkeypatch.setattr(chain_arith.ChainArithTask, "score",
                      _coin(chain_arith.ChainArithTask.score))


def _config(overrides: dict):
  config = smoke.get_config()
  config.warm_start.steps = 0
  spec.apply(config, overrides)
  return config


def _rl_step(overrides: dict):
  """(RLStep, its fresh train state) of the smoke config with `overrides`."""
  exp = experiment.Experiment(_config(overrides))
  graphdef, params, rest = exp.new_policy(value_head=False)
  tx = trainer.optimizer(exp.config, exp.config.optimizer.learning_rate)
  step = trainer.RLStep(exp, graphdef, rest, None, tx, start_params=params)
  return step, trainer.initial_state(exp, tx, params)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _run(overrides: dict, steps: int):
  """Per step: (advantages × mask, params after the update, record)."""
  rl_step, state = _rl_step(overrides)
  seen = []
  original = rl_step.credit

  def credit(*args, **kwargs):
    c = original(*args, **kwargs)
    seen.append(np.asarray(c.estimate.advantages)
                * np.asarray(c.rollouts.mask))
    return c

  rl_step.credit = credit
  out = []
  for step in range(steps):
    state, record = rl_step(step, state)
    out.append((seen[-1], _leaves(state.params), record))
  return out


def _same(a, b) -> bool:
  adv_a, params_a, _ = a
  adv_b, params_b, _ = b
  return np.array_equal(adv_a, adv_b) and all(
      np.array_equal(x, y) for x, y in zip(params_a, params_b))


_ISTAR = {"rl.estimator": "istar"}
_RLOO = {"rl.estimator": "rloo"}


def test_rewards_come_from_the_prm_before_its_update():
  rl_step, state = _rl_step(_ISTAR)
  exp, rl = rl_step.exp, rl_step.exp.config.rl
  problems = [p for p in exp.task.sample_problems(
      np.random.default_rng(3), rl.num_groups) for _ in range(rl.group_size)]
  responses = rollouts.generate(
      exp.task, policy.merged_decoder(rl_step.graphdef, state.params,
                                      rl_step.rest),
      problems, sampling=exp.sampling, key=jax.random.key(1))
  scored = rollouts.score_batch(exp.task, problems, responses,
                                exp.task.max_steps)
  key = jax.random.key(2)
  first = rl_step.credit(state.params, problems, responses, scored, key)
  assert first.metrics["update/prm_pairs"] > 0
  assert first.metrics["update/prm_grad_norm"] > 0
  # π_φ = π_old before the PRM's first update: exactly zero step rewards.
  assert np.all(np.asarray(first.estimate.info["step_rewards"]) == 0)
  updated_once = rl_step.prm.logprobs(first.seq)
  second = rl_step.credit(state.params, problems, responses, scored, key)
  rewards = np.asarray(second.estimate.info["step_rewards"])
  valid = np.asarray(second.estimate.info["step_valid"])
  assert np.abs(rewards[valid]).max() > 0
  # (A fresh policy's steps are all wrong: no label spread to rank.)
  assert "rollout/prm_label_correlation" in second.metrics
  # They are β Σ_step (log π_φ − log π_old) with the once-updated PRM,
  # max-abs normalised.
  want, _ = cajax.istar_step_rewards(
      updated_once, first.stats["logprobs"],
      first.rollouts.mask, first.rollouts.step_ids,
      num_steps=rewards.shape[1], beta=rl.implicit_prm.beta)
  np.testing.assert_allclose(rewards, want, rtol=1e-6, atol=1e-7)
  assert 0.0 <= second.metrics["update/prm_pair_accuracy"] <= 1.0


def test_beta_zero_is_rloo_over_several_steps():
  istar = _run({**_ISTAR, "rl.implicit_prm.beta": 0.0}, 3)
  rloo = _run(_RLOO, 3)
  assert np.any(rloo[0][0] != 0)
  for a, b in zip(istar, rloo):
    assert _same(a, b)


def test_prm_learning_rate_zero_is_rloo_at_the_first_step_only():
  istar = _run({**_ISTAR, "rl.implicit_prm.learning_rate": 0.0}, 2)
  rloo = _run(_RLOO, 2)
  assert _same(istar[0], rloo[0])
  # Then the policy has moved and the PRM has not: the rewards are not 0.
  assert not np.array_equal(istar[1][0], rloo[1][0])


def test_prm_is_checkpointed_and_resumed_with_the_policy(tmp_path):
  config = _config({**_ISTAR, "rl.num_steps": 4, "eval_every": 100})
  trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  config.stop_at_step = 2
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert os.path.isdir(tmp_path / "resumed" / "checkpoints" / "2" /
                       "implicit_prm")
  config.stop_at_step = -1
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  straight, resumed = (
      metrics.read_jsonl(str(tmp_path / run / "train_metrics.jsonl"))
      for run in ("straight", "resumed"))
  assert [r["step"] for r in resumed] == [1, 2, 3, 4]
  assert any(r["update/prm_grad_norm"] > 0 for r in straight)
  for a, b in zip(straight, resumed):
    for key in a:
      if key.startswith(("update/prm", "rollout/")):
        if a[key] is None:  # NaN, e.g. no retries or no label spread
          assert b[key] is None, key
        else:
          np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6,
                                     err_msg=key)
  prm = [checkpoints.Checkpointer(
      str(tmp_path / run / "checkpoints"),
      extra_items=("implicit_prm",)) for run in ("straight", "resumed")]
  try:
    for item in prm:
      assert item.latest_step() == 4
  finally:
    for item in prm:
      item.close()


def test_beta_is_set_once():
  with pytest.raises(ValueError, match=r"rl.estimator_kwargs.beta.*"
                     r"rl.implicit_prm.beta"):
    experiment.Experiment(_config({**_ISTAR, "rl.estimator_kwargs":
                                   {"beta": 0.1}}))
  with pytest.raises(ValueError, match="rl.implicit_prm.learning_rate"):
    experiment.Experiment(_config({"rl.implicit_prm.learning_rate": -1.0}))


def test_label_correlation():
  rewards = np.array([[0.3, -0.2, 0.9, 5.0], [0.1, -1.0, 0.0, 0.0]])
  valid = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  labels = np.array([[base.CORRECT, base.WRONG, base.CORRECT, base.WRONG],
                     [base.FILLER, base.WRONG, base.UNKNOWN, base.UNKNOWN]])
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
  # Valid steps: rewards (0.3, −0.2, 0.9, 0.1, −1.0) against orders
  # (1, −1, 1, 0, −1): ranks (4, 2, 5, 3, 1) and (4.5, 1.5, 4.5, 3, 1.5).
  x, y = np.array([4, 2, 5, 3, 1.0]), np.array([4.5, 1.5, 4.5, 3, 1.5])
  want = np.corrcoef(x, y)[0, 1]
  got = implicit_prm.label_correlation(rewards, valid, labels, mask)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert np.isnan(implicit_prm.label_correlation(
      np.zeros((2, 4)), valid, labels, mask))


def test_one_token_steps_under_pure_are_flagged_naming_mask_step_end(
    monkeypatch):
  def one_token_steps(self, problem, ids, observation=None):
    n = len(ids)
    return base.Score(outcome=0.0, step_ids=np.arange(n),
                      step_rewards=np.ones(n), step_labels=[base.CORRECT] * n)

  monkeypatch.setattr(chain_arith.ChainArithTask, "score", one_token_steps)
  rl_step, state = _rl_step({"rl.estimator": "pure"})
  with pytest.raises(ValueError, match=r"(?s)rl.estimator='pure'.*"
                     r"first one.*mask_step_end=False"):
    rl_step(0, state)
  rl_step, state = _rl_step({"rl.estimator": "pure", "rl.estimator_kwargs":
                             {"mask_step_end": False}})
  _, record = rl_step(0, state)
  assert record["rollout/advantage_std"] > 0
