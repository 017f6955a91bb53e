"""End-to-end tests of the RL training loop on the smoke config."""

import os

import numpy as np
import pytest

from experiments.configs import smoke
from experiments.rl import checkpoints
from experiments.rl import experiment
from experiments.rl import metrics
from experiments.rl import run_config
from experiments.rl import trainer

_TIMING = ("time", "time/")


def _records(workdir, prefix="train"):
  return metrics.read_jsonl(os.path.join(workdir, f"{prefix}_metrics.jsonl"))


def _comparable(record):
  return {k: v for k, v in record.items() if not k.startswith(_TIMING)}


def test_smoke_run_writes_metrics_checkpoints_and_events(tmp_path):
  config = smoke.get_config()
  out = trainer.train_and_evaluate(config, str(tmp_path))
  records = _records(tmp_path)
  assert [r["step"] for r in records] == [1, 2, 3]
  for key in ("rollout/reward_mean", "rollout/accuracy",
              "rollout/unscorable", "rollout/finished",
              "rollout/response_length", "rollout/advantage_mean",
              "rollout/advantage_std", "rollout/entropy",
              "rollout/mismatch_kl", "rollout/mismatch_max_ratio",
              "rollout/retries", "rollout/pass_at_group",
              "task/filler_steps", "update/entropy",
              "update/grad_norm", "update/clipfrac", "update/loss",
              "update/pg_loss", "time/tokens_per_second", "time/sample",
              "time/score", "time/estimate", "time/update", "samples_seen"):
    assert key in records[-1], key
    assert records[-1][key] is not None and np.isfinite(records[-1][key]), key
  # Nothing bare but the x axis; the rollout's token-mean entropy and the
  # update's aggregated one are both kept.
  for record in records:
    assert all("/" in k for k in record
               if k not in ("step", "time", "samples_seen")), record.keys()
  evals = _records(tmp_path, "eval")
  assert [r["step"] for r in evals] == [0, 3]
  assert {"eval/accuracy", "eval/reward_mean", "eval/response_length",
          "eval/task/filler_steps", "samples_seen"} <= evals[-1].keys()
  assert out["eval"]["eval/accuracy"] == evals[-1]["eval/accuracy"]
  warm = _records(tmp_path / "warm_start", "warm_start")
  assert {"warm_start/loss", "warm_start/grad_norm"} <= warm[-1].keys()
  assert os.listdir(tmp_path / "tensorboard" / "train")
  assert (tmp_path / "checkpoints" / "3").is_dir()
  assert (tmp_path / "warm_start" / "checkpoints").is_dir()
  # Sampler and trainer compute the same log-probs here (float32, CPU).
  assert abs(records[-1]["rollout/mismatch_kl"]) < 1e-4


def test_pass_at_group():
  # Groups of 3: (0, 1, 0) passes, (0, 0, 0) does not, (1, 1, NaN) does.
  outcome = np.array([0, 1, 0, 0, 0, 0, 1, 1, np.nan])
  assert trainer.pass_at_group(outcome, 3) == 2 / 3


def test_resume_equals_uninterrupted_run(tmp_path):
  config = smoke.get_config()
  config.rl.num_steps = 6
  config.eval_every = 100
  trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  config.stop_at_step = 3
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert [r["step"] for r in _records(tmp_path / "resumed")] == [1, 2, 3]
  config.stop_at_step = -1
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  straight = _records(tmp_path / "straight")
  resumed = _records(tmp_path / "resumed")
  assert [r["step"] for r in resumed] == list(range(1, 7))
  for a, b in zip(straight, resumed):
    a, b = _comparable(a), _comparable(b)
    assert a.keys() == b.keys()
    for k in a:
      if isinstance(a[k], float):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-6, err_msg=k)
      else:
        assert a[k] == b[k], k


@pytest.mark.parametrize("key,value,message", [
    ("rl.estimator", "gpro", r"^rl.estimator: unknown estimator 'gpro' "
     r"\(did you mean 'grpo'\?\)"),
    ("rl.policy_loss", "ppo", r"^rl.policy_loss: unknown policy loss 'ppo'"),
    ("rl.aggregation", "mean", r"^rl.aggregation: unknown aggregation mode "
     r"'mean'"),
    ("rl.kl_kind", "k4", r"^rl.kl_kind: unknown KL kind 'k4'"),
    ("rl.reward_source", "step", r"^rl.reward_source: unknown reward source "
     r"'step' \(did you mean 'steps'\?\)"),
    ("task.name", "chess", "chess"),
])
def test_unknown_names_fail_before_compiling(tmp_path, key, value, message):
  config = smoke.get_config()
  section, field = key.split(".")
  config[section][field] = value
  with pytest.raises(ValueError, match=message):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def test_estimator_kwargs_and_critic_are_checked(tmp_path):
  config = smoke.get_config()
  config.rl.estimator_kwargs = {"epsilon": 1e-6}
  with pytest.raises(ValueError, match=r"^rl.estimator_kwargs: estimator "
                     r"'grpo' got unexpected keyword 'epsilon' \(did you "
                     r"mean 'eps'\?\)"):
    trainer.train_and_evaluate(config, str(tmp_path))
  config = smoke.get_config()
  config.rl.estimator = "gae"
  with pytest.raises(ValueError, match="value_coef"):
    trainer.train_and_evaluate(config, str(tmp_path))
  for estimator, message in (("gdpo", r"reward_components"),
                             ("capo", r"critique_flags")):
    config = smoke.get_config()
    config.rl.estimator = estimator
    with pytest.raises(ValueError, match=f"^rl.estimator='{estimator}'.*does "
                       f"not run in this loop.*{message}"):
      trainer.train_and_evaluate(config, str(tmp_path))
  config = smoke.get_config()
  config.rl.policy_loss_kwargs = {"clip_low": "0.2"}
  with pytest.raises(ValueError, match=r"^rl.policy_loss_kwargs: clip_low "
                     r"must be a static finite number in \[0, 1\), got "
                     r"'0.2'"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def _set(path, value):
  def change(config):
    *parents, leaf = path.split(".")
    for parent in parents:
      config = config[parent]
    if value is _DELETE:
      del config[leaf]
    else:
      config[leaf] = value
  return change


_DELETE = object()


@pytest.mark.parametrize("change,message", [
    (_set("rl.samples_per_prompt", 3),
     r"^`rl.samples_per_prompt` was renamed to `rl.group_size`"),
    (_set("rl.token_rewards", "steps"),
     r"^`rl.token_rewards` was renamed to `rl.reward_source`"),
    (_set("log_every", 1), r"^`log_every` was removed"),
    (_set("rl.num_stepz", 3),
     r"^`rl.num_stepz` is not a key of this config \(did you mean "
     r"'num_steps'\?\); add it in get_config\(\) or choose one of: "
     r"aggregation, "),
    (_set("eval_temprature", 0.0),
     r"^`eval_temprature` is not a key of this config \(did you mean "
     r"'eval_temperature'\?\)"),
    (_set("rl.kl_kind", _DELETE),
     r"^`rl.kl_kind` is missing from this config; add it in get_config"),
    (_set("rl.num_steps", 2.5), r"^`rl.num_steps` must be an int, got 2.5"),
    (_set("rl.kl_coef", "0.1"), r"^`rl.kl_coef` must be a number, got '0.1'"),
    (_set("rl.mask_retry_prefix", 1),
     r"^`rl.mask_retry_prefix` must be a bool \(True or False\), got 1"),
    (_set("rl.estimator_kwargs", 3),
     r"^`rl.estimator_kwargs` must be a mapping"),
    (_set("sampling.top_p", 0.0),
     r"^`sampling.top_p` must be in \(0, 1\], got 0.0"),
    (_set("rl.num_mini_batches", 3),
     r"^rl.num_groups x rl.group_size = 8 rows must split"),
])
def test_config_errors_name_the_key_in_one_line(change, message):
  config = smoke.get_config().to_dict()
  change(config)
  with pytest.raises(ValueError, match=message) as error:
    run_config.validate(config)
  assert "\n" not in str(error.value)


def test_reference_policy_survives_the_donated_update(tmp_path):
  # The reference policy once shared the donated parameters' buffers: the
  # second RL step with a KL term failed ("Buffer has been deleted").
  config = smoke.get_config()
  config.warm_start.steps = 0
  config.rl.num_steps = 2
  config.rl.kl_coef = 0.1
  config.rl.entropy_coef = 0.1  # moves a fresh policy (its rewards are 0)
  config.eval_every = 100
  trainer.train_and_evaluate(config, str(tmp_path))
  records = _records(tmp_path)
  assert [r["step"] for r in records] == [1, 2]
  assert records[0]["rollout/kl_to_ref"] == 0.0  # the policy is the reference
  assert records[1]["rollout/kl_to_ref"] > 0.0
  assert all(np.isfinite(r["update/kl"]) for r in records)


def test_corrupt_checkpoint_is_reported_and_left_alone(tmp_path):
  config = smoke.get_config()
  config.rl.num_steps = 1
  trainer.train_and_evaluate(config, str(tmp_path))
  step_dir = tmp_path / "checkpoints" / "1"
  for path in step_dir.rglob("*"):
    if path.is_file() and path.suffix != ".json":
      path.write_bytes(b"garbage")
  before = sorted((p.name, p.read_bytes()) for p in step_dir.rglob("*")
                  if p.is_file())
  config.rl.num_steps = 2
  with pytest.raises(checkpoints.CheckpointError, match="left as it is"):
    trainer.train_and_evaluate(config, str(tmp_path))
  after = sorted((p.name, p.read_bytes()) for p in step_dir.rglob("*")
                 if p.is_file())
  assert before == after


def test_missing_init_checkpoint_is_a_clear_error(tmp_path):
  config = smoke.get_config()
  config.init_checkpoint = str(tmp_path / "nowhere")
  with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))


def test_unscorable_rows_are_counted_and_never_nan(tmp_path, monkeypatch):
  config = smoke.get_config()
  config.rl.num_steps = 1
  exp = experiment.Experiment(config)
  score = exp.task.score
  calls = []

  def flaky(problem, ids, obs=None):
    s = score(problem, ids, obs)
    calls.append(1)
    if len(calls) % 3 == 1:
      s.outcome = float("nan")
    return s

  monkeypatch.setattr(experiment, "Experiment", lambda c: exp)
  monkeypatch.setattr(exp.task, "score", flaky)
  trainer.train_and_evaluate(config, str(tmp_path))
  record = _records(tmp_path)[-1]
  assert record["rollout/unscorable"] > 0
  for k in ("update/loss", "update/pg_loss", "update/grad_norm",
            "rollout/advantage_mean"):
    assert np.isfinite(record[k]), k
