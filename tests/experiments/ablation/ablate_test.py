"""Every ablation's smoke size end to end: runs, evidence, verdicts, resume."""

import json
import os

import numpy as np
import pytest

import cajax
from experiments.ablation import pipeline
from experiments.ablation import reductions
from experiments.ablation import spec
from experiments.ablation import statistics


def _check_outputs(outdir, name, ablation):
  results = json.load(open(os.path.join(outdir, "results.json")))
  assert set(results["arms"]) == set(ablation.arms)
  assert len(results["claims"]) == len(ablation.claims)
  for claim in results["claims"]:
    assert claim["verdict"] in statistics.VERDICTS
  registered = json.load(open(os.path.join(outdir, "preregistration.json")))
  assert results["preregistration"]["hash"] == registered["hash"]
  assert results["environment"]["jaxlib"]
  images = [f"{name}_claim{i + 1}.png" for i in range(len(ablation.claims))]
  for png in images + [f"{name}_curves.png", f"{name}_advantages.png"]:
    assert os.path.getsize(os.path.join(outdir, png)) > 1000
  text = open(os.path.join(outdir, "report.md")).read()
  for claim in ablation.claims:
    assert claim.name in text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  # One folder for every ablation: runs with the same task share a warm start.
  return tmp_path_factory.mktemp("ablations")


@pytest.mark.parametrize("name", pipeline.NAMES)
def test_smoke_ablation_end_to_end(workdir, name):
  ablation = spec.load(name).get_ablation()
  judged = pipeline.run([name], size="smoke", seeds=None,
                        workdir=str(workdir), parallel=2, command="test",
                        show_progress=False)[name]
  assert [c["name"] for c in judged] == [c.name for c in ablation.claims]
  _check_outputs(spec.output_dir(str(workdir), ablation, "smoke"), name,
                 ablation)


def test_rerun_resumes_instead_of_recomputing(workdir):
  pipeline.run(["ucas"], size="smoke", seeds=None, workdir=str(workdir),
               parallel=2, command="test", show_progress=False)
  logs = sorted(workdir.rglob("*.log"))
  sizes = [p.stat().st_size for p in logs]
  pipeline.run(["ucas"], size="smoke", seeds=None, workdir=str(workdir),
               parallel=2, command="test", show_progress=False)
  assert [p.stat().st_size for p in sorted(workdir.rglob("*.log"))] == sizes


def test_bad_run_argument_is_a_clear_error():
  ablation = spec.load("pure").get_ablation()
  with pytest.raises(ValueError, match="arm 'nope'"):
    spec.build_config(ablation, "nope,0,default")
  with pytest.raises(ValueError, match="unknown ablation"):
    spec.load("chess")


def test_r3l_amplification_arm_changes_binary_outcome_advantages():
  # With 0/1 outcomes alpha alone never acts; the arms must differ anyway.
  ablation = spec.load("r3l").get_ablation()
  rewards = np.array([[0.0, 1.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]],
                     np.float32)
  rollouts = cajax.Rollouts(mask=np.ones((4, 2), bool), token_rewards=rewards,
                            group_ids=np.zeros(4, np.int32), num_groups=1)
  advantages = {
      arm: np.asarray(cajax.estimate("r3l", rollouts, **dict(
          spec.build_config(ablation, f"{arm},0,default")
          .rl.estimator_kwargs)).advantages)
      for arm in ("r3l", "no_amplify")}
  assert np.all(advantages["r3l"][[0, 2]] > advantages["no_amplify"][[0, 2]])
  np.testing.assert_array_equal(advantages["r3l"][[1, 3]],
                                advantages["no_amplify"][[1, 3]])


def test_claim_and_plot_metrics_are_full_keys():
  """Keys starting with eval/ come from the eval records, all others from
  the train records; every name is namespaced as the trainer writes it."""
  for name in pipeline.NAMES:
    ablation = spec.load(name).get_ablation()
    keys = [c.metric for c in ablation.claims] + list(
        ablation.plot_metrics)
    for key in keys:
      assert key.split("/")[0] in ("eval", "rollout", "task", "update"), (
          name, key)
  run = {"eval": [{"samples_seen": 0, "eval/accuracy": 0.5}],
         "train": [{"samples_seen": 8, "rollout/entropy": 1.5,
                    "update/entropy": 9.0, "eval/accuracy": 1.0}]}
  def points(key):
    x, y = reductions.series(run, key)
    return list(zip(x.tolist(), y.tolist()))
  assert points("rollout/entropy") == [(8, 1.5)]
  assert points("eval/accuracy") == [(0, 0.5)]
  assert points("task/filler_steps") == []
