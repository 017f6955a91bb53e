"""Every ablation on an HF-format checkpoint (`--config.model_path`): a tiny
random Qwen2 with a BPE tokenizer and a chat template, smoke size."""

import json
import pathlib
import shutil

import pytest

from experiments import ablate
from experiments.ablation import pipeline
from experiments.ablation import preregistration
from experiments.ablation import runner
from experiments.ablation import spec
from experiments.models import hf
from experiments.rl import warm_start


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tmp_path_factory.mktemp("checkpoint_ablations")


@pytest.mark.parametrize("name", pipeline.NAMES)
def test_smoke_ablation_on_a_checkpoint(workdir, tiny_checkpoint, name):
  overrides = {"model_path": str(tiny_checkpoint)}
  ablation = spec.load(name).get_ablation()
  warm, runs = runner.plan(name, "smoke", None, str(workdir), overrides)
  assert not warm  # a pretrained model starts RL directly
  assert all(r.extra_flags == (f"--config.model_path={tiny_checkpoint}",)
             for r in runs)
  judged = pipeline.run([name], size="smoke", seeds=None,
                        workdir=str(workdir), parallel=2, command="test",
                        show_progress=False, overrides=overrides)[name]
  assert [c["name"] for c in judged] == [c.name for c in ablation.claims]
  outdir = pathlib.Path(spec.output_dir(str(workdir), ablation, "smoke"))
  registered = json.loads((outdir / "preregistration.json").read_text())
  assert registered["plan"]["overrides"] == overrides
  assert registered["plan"]["model"] == hf.checkpoint_identity(
      tiny_checkpoint)
  for run in runs:
    records = [json.loads(line) for line in open(
        f"{run.workdir}/train_metrics.jsonl")]
    assert len(records) == 2
    # The checkpoint's tokenizer wrote the responses: the lines layout.
    assert "task/num_steps" in records[-1]
  assert not (workdir / "warm_starts").exists()


def test_warm_start_only_when_asked(tiny_checkpoint):
  config = spec.build_config(spec.load("pure").get_ablation(),
                             "sum_form,0,smoke",
                             {"model_path": str(tiny_checkpoint)})
  assert warm_start.steps(config) == 0
  config.warm_start.pretrained = True
  assert warm_start.steps(config) == config.warm_start.steps == 4
  warm, _ = runner.plan("pure", "smoke", None, "/tmp/unused", {
      "model_path": str(tiny_checkpoint), "warm_start.pretrained": True})
  assert len(warm) == 1
  assert warm[0].extra_flags == (
      f"--config.model_path={tiny_checkpoint}",
      "--config.warm_start.pretrained=true", "--config.rl.num_steps=0")


def test_registration_holds_the_model(tiny_checkpoint, tmp_path):
  ablation = spec.load("ucas").get_ablation()
  plain = preregistration.plan(ablation, "smoke", 1)
  assert "overrides" not in plain and "model" not in plain
  one = preregistration.plan(ablation, "smoke", 1,
                             {"model_path": str(tiny_checkpoint)})
  # A checkpoint changed in place is another model.
  copy = shutil.copytree(tiny_checkpoint, tmp_path / "copy")
  weights = sorted(copy.glob("*.safetensors"))[0]
  data = bytearray(weights.read_bytes())
  data[-1] ^= 1
  weights.write_bytes(bytes(data))
  moved = preregistration.plan(ablation, "smoke", 1,
                               {"model_path": str(tiny_checkpoint)})
  other = preregistration.plan(ablation, "smoke", 1, {"model_path": str(copy)})
  assert preregistration.digest(one) == preregistration.digest(moved)
  assert one["model"] != other["model"]
  preregistration.register(str(tmp_path / "out"), one, [], "")
  with pytest.raises(preregistration.PreregistrationError, match="model"):
    preregistration.check(str(tmp_path / "out"), other)


def test_override_flags_round_trip():
  flags = spec.override_flags({"model_path": "/m", "rl.num_steps": 20,
                               "warm_start.pretrained": False,
                               "optimizer.learning_rate": 1e-06})
  assert flags == ("--config.model_path=/m", "--config.rl.num_steps=20",
                   "--config.warm_start.pretrained=false",
                   "--config.optimizer.learning_rate=1e-06")
  with pytest.raises(ValueError, match="key by key"):
    spec.override_flags({"model.overrides": {"remat": "full"}})
  values = ablate.flags.FlagValues()
  ablate.define_flags(values)
  assert "config" in values
