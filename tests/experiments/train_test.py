"""experiments.train's flags: dotted estimator and loss settings, and config
errors in one line (subprocesses: each defines its flags once)."""

import os
import pathlib
import subprocess
import sys

import pytest

_REPO = pathlib.Path(__file__).resolve().parents[2]
_PARSE = """
import sys
from absl import flags
from experiments import train
from experiments.rl import run_config
train.define_flags()
flags.FLAGS(sys.argv)
rl = run_config.validate(flags.FLAGS.config).rl
print(rl.resolved.name, rl.resolved.fields, rl.loss.name,
      dict(rl.loss.settings)["clip_cov_ratio"])
"""


def _python(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(_REPO), str(_REPO / "kernels")]))
  return subprocess.run([sys.executable, *args], cwd=_REPO, env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)


def test_estimator_and_loss_settings_in_the_dotted_form(tmp_path):
  result = _python(
      "-c", _PARSE, "--config=experiments/configs/smoke.py",
      f"--workdir={tmp_path}", "--config.rl.estimator=ucas",
      "--config.rl.estimator_kwargs.certainty=negative_entropy",
      "--config.rl.policy_loss=clip_cov",
      "--config.rl.policy_loss_kwargs.clip_cov_ratio=0.5")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split("\n")[-2] == (
      "ucas ('token_rewards', 'entropy', 'token_logits', 'group_ids') "
      "clip_cov 0.5")


@pytest.mark.parametrize("override,message", [
    ("--config.rl.num_stepz=3",
     "--config: `rl.num_stepz` is not a key of this config (did you mean "
     "'num_steps'?); add it in get_config() or choose one of: "),
    ("--config.task.process_rewards=1",
     "--config: `task.process_rewards` is not a key of the chain_arith "
     "task's config (ChainConfig); choose from: "),
])
def test_an_unknown_key_is_one_readable_line(tmp_path, override, message):
  result = _python("-m", "experiments.train",
                   "--config=experiments/configs/smoke.py",
                   f"--workdir={tmp_path}", override)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert message in result.stderr, result.stderr[-3000:]
  assert not list(tmp_path.iterdir())
