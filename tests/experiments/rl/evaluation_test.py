"""Evaluations: held-out problems, fresh each time, batched."""

import numpy as np

from experiments.configs import smoke
from experiments.rl import experiment
from experiments.rl import rollouts
from experiments.rl import trainer
from experiments.tasks import arith
from experiments.tasks import splits


def test_training_never_sees_an_evaluation_problem(tmp_path, monkeypatch):
  drawn = {"train": set(), "eval": set()}
  sample = arith.ChainProblems.sample_problems

  def recording(self, rng, n, split="train"):
    problems = sample(self, rng, n, split)
    drawn[split].update(p.text for p in problems)
    return problems

  monkeypatch.setattr(arith.ChainProblems, "sample_problems", recording)
  config = smoke.get_config()
  config.eval_every = 1  # four evaluations of fresh problems
  config.eval_problems = 16
  trainer.train_and_evaluate(config, str(tmp_path))
  # Warm-start demonstrations, RL prompts and evaluations all drew.
  steps = config.warm_start.steps + config.rl.num_steps
  assert len(drawn["train"]) > steps
  assert len(drawn["eval"]) > config.eval_problems
  assert not drawn["train"] & drawn["eval"]
  assert {splits.split_of(t) for t in drawn["eval"]} == {"eval"}


def test_evaluations_are_fresh_per_step_and_shared_by_arms():
  config = smoke.get_config()
  exp = experiment.Experiment(config)
  first = [p.text for p in exp.eval_problems(0, 32)]
  assert first != [p.text for p in exp.eval_problems(3, 32)]
  config.rl.estimator = "rloo"  # another arm, the same seed
  other = experiment.Experiment(config)
  assert first == [p.text for p in other.eval_problems(0, 32)]


def test_evaluate_pads_the_last_chunk_and_drops_the_padding(monkeypatch):
  config = smoke.get_config()  # 8 rows per RL batch
  exp = experiment.Experiment(config)
  graphdef, params, rest = exp.new_policy(value_head=False)
  scored_rows = []
  score = rollouts.score_batch

  def counting(task, problems, responses, max_steps):
    scored_rows.append((len(problems), responses.tokens.shape[0]))
    return score(task, problems, responses, max_steps)

  monkeypatch.setattr(rollouts, "score_batch", counting)
  metrics = exp.evaluate(graphdef, params, rest, 11, step=2)
  assert scored_rows == [(11, 11)]
  assert 0.0 <= metrics["eval/accuracy"] <= 1.0
  assert metrics["eval/seconds"] > 0
  assert np.isfinite(metrics["eval/response_length"])
