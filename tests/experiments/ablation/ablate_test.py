"""Every ablation's smoke size end to end: runs, evidence, verdicts, resume."""

import json
import os

import numpy as np
import pytest

import cajax
from experiments.ablation import pipeline
from experiments.ablation import report
from experiments.ablation import spec


def _check_outputs(outdir, name, ablation):
  results = json.load(open(os.path.join(outdir, "results.json")))
  assert set(results["arms"]) == set(ablation.arms)
  assert len(results["claims"]) == len(ablation.claims)
  for claim in results["claims"]:
    assert claim["verdict"] in ("reproduced", "not reproduced",
                                "inconclusive")
  for png in (f"{name}_curves.png", f"{name}_advantages.png"):
    assert os.path.getsize(os.path.join(outdir, png)) > 1000
  text = open(os.path.join(outdir, "report.md")).read()
  for claim in ablation.claims:
    assert claim["name"] in text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  # One folder for every ablation: runs with the same task share a warm start.
  return tmp_path_factory.mktemp("ablations")


@pytest.mark.parametrize("name", pipeline.NAMES)
def test_smoke_ablation_end_to_end(workdir, name):
  ablation = spec.load(name).get_ablation()
  judged = pipeline.run([name], size="smoke", seeds=1, workdir=str(workdir),
                        parallel=2, command="test",
                        show_progress=False)[name]
  assert [c["name"] for c in judged] == [c["name"] for c in ablation.claims]
  _check_outputs(workdir / name / "smoke", name, ablation)


def test_rerun_resumes_instead_of_recomputing(workdir):
  pipeline.run(["ucas"], size="smoke", seeds=1, workdir=str(workdir),
               parallel=2, command="test", show_progress=False)
  logs = sorted(workdir.rglob("*.log"))
  sizes = [p.stat().st_size for p in logs]
  pipeline.run(["ucas"], size="smoke", seeds=1, workdir=str(workdir),
               parallel=2, command="test", show_progress=False)
  assert [p.stat().st_size for p in sorted(workdir.rglob("*.log"))] == sizes


def test_verdict_rule():
  assert report.verdict([0.2, 0.3, 0.25])["verdict"] == "reproduced"
  assert report.verdict([-0.2, -0.3, -0.25])["verdict"] == "not reproduced"
  assert report.verdict([0.5, -0.4, 0.1])["verdict"] == "inconclusive"
  assert report.verdict([0.5])["verdict"] == "inconclusive"
  # Seeds that agree exactly give a zero-width interval: not evidence.
  assert report.verdict([0.03, 0.03])["verdict"] == "inconclusive"
  assert report.verdict([1 / 256] * 3)["verdict"] == "inconclusive"


def test_samples_to_target_is_censored_at_the_budget():
  run = {"eval": [{"samples_seen": s, "eval/accuracy": a}
                  for s, a in ((0, 0.1), (64, 0.4), (128, 0.45))],
         "train": [{"samples_seen": 64, "eval/accuracy": 1.0}]}
  claim = {"metric": "eval/accuracy", "reduce": "samples_to_target",
           "target": 0.5}
  assert report.reduce_metric(run, claim) == 129
  claim["target"] = 0.4
  assert report.reduce_metric(run, claim) == 64


def test_bad_run_argument_is_a_clear_error():
  ablation = spec.load("pure").get_ablation()
  with pytest.raises(ValueError, match="arm 'nope'"):
    spec.build_config(ablation, "nope,0,default")
  with pytest.raises(ValueError, match="unknown ablation"):
    spec.load("chess")


def test_arms_differing_only_in_scoring_share_a_warm_start():
  for name in pipeline.NAMES:
    ablation = spec.load(name).get_ablation()
    keys = {spec.warm_start_key(spec.build_config(ablation, f"{arm},0,default"))
            for arm in ablation.arms}
    assert len(keys) == 1, name


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
    keys = [c["metric"] for c in ablation.claims] + list(
        ablation.plot_metrics)
    for key in keys:
      assert key.split("/")[0] in ("eval", "rollout", "task", "update"), (
          name, key)
  run = {"eval": [{"samples_seen": 0, "eval/accuracy": 0.5}],
         "train": [{"samples_seen": 8, "rollout/entropy": 1.5,
                    "update/entropy": 9.0, "eval/accuracy": 1.0}]}
  assert report.series(run, "rollout/entropy") == [(8, 1.5)]
  assert report.series(run, "eval/accuracy") == [(0, 0.5)]
  assert report.series(run, "task/filler_steps") == []
