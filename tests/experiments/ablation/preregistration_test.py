"""The pre-registration hash: written before runs, enforced after."""

import dataclasses
import json
import os
import re

import pytest

from experiments.ablation import pipeline
from experiments.ablation import preregistration
from experiments.ablation import runner
from experiments.ablation import spec


def _changed(ablation, **claim_fields):
  first = dataclasses.replace(ablation.claims[0], **claim_fields)
  return dataclasses.replace(ablation, claims=(first,) + ablation.claims[1:])


def test_register_then_resume_then_refuse_a_changed_plan(tmp_path):
  ablation = spec.load("ucas").get_ablation()
  plan = preregistration.plan(ablation, "default", 8)
  stored = preregistration.register(str(tmp_path), plan, [], "--flag")
  assert stored["hash"] == preregistration.digest(plan)
  assert stored["environment"]["xla_flags"] == "--flag"
  for key in ("cpu", "jax", "jaxlib", "cores"):
    assert stored["environment"][key]
  assert re.fullmatch(r"([0-9a-f]{40}(\+dirty)?|unknown)", stored["commit"])
  text = (tmp_path / preregistration.FILE).read_text()
  # The same plan resumes and leaves the file alone.
  assert preregistration.register(str(tmp_path), plan, [], "") == stored
  assert (tmp_path / preregistration.FILE).read_text() == text
  changed = preregistration.plan(
      _changed(ablation, smallest_effect=0.03), "default", 8)
  with pytest.raises(preregistration.PreregistrationError,
                     match=r"claims\[0\]\.smallest_effect: 0\.02 -> 0\.03"):
    preregistration.check(str(tmp_path), changed)
  # More seeds after seeing results is a change of plan too.
  with pytest.raises(preregistration.PreregistrationError, match="seeds"):
    preregistration.register(str(tmp_path), preregistration.plan(
        ablation, "default", 16), [], "")


def test_runs_without_a_registration_get_none(tmp_path):
  run = tmp_path / "grpo" / "seed0"
  run.mkdir(parents=True)
  (run / "train_metrics.jsonl").write_text("{}\n")
  plan = preregistration.plan(spec.load("ucas").get_ablation(), "smoke", 1)
  with pytest.raises(preregistration.PreregistrationError,
                     match="started before any pre-registration"):
    preregistration.register(str(tmp_path), plan, [str(run)], "")
  with pytest.raises(preregistration.PreregistrationError, match="missing"):
    preregistration.check(str(tmp_path), plan)


def test_a_changed_claim_stops_the_runner_and_the_report(tmp_path,
                                                         monkeypatch):
  module = spec.load("ucas")
  ablation = module.get_ablation()
  warm, runs = runner.plan("ucas", "smoke", None, str(tmp_path))
  outdir = spec.output_dir(str(tmp_path), ablation, "smoke")
  preregistration.register(outdir, preregistration.plan(ablation, "smoke", 1),
                           [r.workdir for r in runs], "")
  monkeypatch.setattr(module, "get_ablation",
                      lambda: _changed(ablation, metric="rollout/accuracy"))
  with pytest.raises(preregistration.PreregistrationError,
                     match=r"claims\[0\]\.metric"):
    pipeline.run(["ucas"], size="smoke", seeds=None, workdir=str(tmp_path),
                 parallel=1, command="test", show_progress=False)
  assert not os.path.exists(tmp_path / "warm_starts")  # nothing trained
  with pytest.raises(preregistration.PreregistrationError, match="version"):
    pipeline.evidence("ucas", warm, runs, size="smoke",
                      workdir=str(tmp_path), command="test")
  # A new version is a new registration in a folder of its own.
  version = ablation.version + 1
  bumped = dataclasses.replace(_changed(ablation, metric="rollout/accuracy"),
                               version=version)
  monkeypatch.setattr(module, "get_ablation", lambda: bumped)
  new_dir = spec.output_dir(str(tmp_path), bumped, "smoke")
  assert new_dir != outdir and f"ucas-v{version}" in new_dir
  _, new_runs = runner.plan("ucas", "smoke", None, str(tmp_path))
  assert all(r.workdir.startswith(new_dir) for r in new_runs)
  stored = preregistration.register(
      new_dir, preregistration.plan(bumped, "smoke", 1),
      [r.workdir for r in new_runs], "")
  assert json.loads((tmp_path / f"ucas-v{version}" / "smoke"
                     / preregistration.FILE)
                    .read_text())["hash"] == stored["hash"]
