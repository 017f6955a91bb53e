"""One RL step on 8 (fake CPU) devices equals the same step on one device."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

_REPO = pathlib.Path(__file__).resolve().parents[3]

_SCRIPT = """
import json, sys
import jax, numpy as np
from experiments.configs import smoke
from experiments.rl import trainer, checkpoints, experiment
data, fsdp, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
assert jax.device_count() == data * fsdp, jax.device_count()
config = smoke.get_config()
config.warm_start.steps = 0
config.rl.num_steps = 1
config.rl.num_groups, config.rl.group_size = 4, 2
config.mesh.data, config.mesh.fsdp = data, fsdp
trainer.train_and_evaluate(config, workdir)
exp = experiment.Experiment(config)
_, params, _ = exp.new_policy(value_head=False)
restored = checkpoints.restore_params(workdir + "/checkpoints", params)
leaves = jax.tree_util.tree_leaves_with_path(restored)
np.savez(workdir + "/params.npz", **{jax.tree_util.keystr(p): np.asarray(x)
                                     for p, x in leaves})
# The parameters really are sharded over fsdp on the 8-device mesh.
shardings = {str(x.sharding.spec) for _, x in leaves}
print(json.dumps(sorted(shardings)))
"""


def _run(devices: int, data: int, fsdp: int, workdir: pathlib.Path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = str(_REPO)
  out = subprocess.run(
      [sys.executable, "-c", _SCRIPT, str(data), str(fsdp), str(workdir)],
      cwd=_REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  specs = json.loads(out.stdout.strip().splitlines()[-1])
  records = [json.loads(line) for line in
             (workdir / "train_metrics.jsonl").read_text().splitlines()]
  return records[-1], dict(np.load(workdir / "params.npz")), specs


def test_eight_devices_match_one_device(tmp_path):
  one, p1, _ = _run(1, 1, 1, tmp_path / "one")
  eight, p8, specs = _run(8, 2, 4, tmp_path / "eight")
  assert any("fsdp" in s for s in specs), specs
  for key in ("update/loss", "update/pg_loss", "rollout/reward_mean",
              "rollout/advantage_std", "rollout/entropy", "update/entropy"):
    np.testing.assert_allclose(eight[key], one[key], rtol=1e-5, atol=1e-5,
                               err_msg=key)
  assert p1.keys() == p8.keys()
  for name in p1:
    np.testing.assert_allclose(p8[name], p1[name], rtol=1e-5, atol=1e-5,
                               err_msg=name)
