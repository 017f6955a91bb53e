"""Designs the ablations promise: claims, seeds, warm starts, budgets."""

import collections
import json
import os

import pytest

from experiments.ablation import cost
from experiments.ablation import pipeline
from experiments.ablation import runner
from experiments.ablation import spec

# Wall-clock budgets on 2 cores (docs/ablations.md, "Sizes").
ALL_BUDGET_SECONDS = 2 * 3600
FIRST_COMMAND_BUDGET_SECONDS = 10 * 60


@pytest.mark.parametrize("name", pipeline.NAMES)
def test_every_arm_tests_a_claim(name):
  ablation = spec.load(name).get_ablation()
  used = {arm for c in ablation.claims for arm in (c.arm, c.baseline)}
  assert used == set(ablation.arms)


@pytest.mark.parametrize("name", pipeline.NAMES)
def test_default_size_has_8_seeds_over_3_initial_policies(name):
  ablation = spec.load(name).get_ablation()
  size = ablation.sizes["default"]
  assert any(c.primary for c in ablation.claims)
  assert size.seeds >= 8 and size.warm_starts >= 3
  assert size.overrides["eval_problems"] >= 1024
  warm, runs = runner.plan(name, "default", None, "/tmp/unused")
  assert len(warm) == size.warm_starts
  per_warm_start = collections.Counter(r.after.workdir for r in runs)
  # Seeds spread evenly: every warm start serves ⌊seeds/W⌋ or ⌈seeds/W⌉
  # seeds of every arm.
  counts = {c // len(ablation.arms) for c in per_warm_start.values()}
  assert counts <= {size.seeds // size.warm_starts,
                    -(-size.seeds // size.warm_starts)}
  # The arms of one seed share its warm start (paired comparisons).
  by_seed = collections.defaultdict(set)
  for r in runs:
    by_seed[r.config_arg.split(",")[1]].add(r.after.workdir)
  assert all(len(w) == 1 for w in by_seed.values())


def test_warm_start_key_ignores_scoring_and_keeps_the_seed():
  for name in pipeline.NAMES:
    ablation = spec.load(name).get_ablation()
    keys = {spec.warm_start_key(
        spec.build_config(ablation, f"{arm},0,default"), 0)
            for arm in ablation.arms}
    assert len(keys) == 1, name
    config = spec.build_config(ablation, f"{next(iter(ablation.arms))},0,"
                               "default")
    assert spec.warm_start_key(config, 0) != spec.warm_start_key(config, 1)


def test_budgets_by_the_cost_model():
  everything = pipeline.pooled(pipeline.plans(pipeline.NAMES, "default",
                                              None, "/tmp/unused"))
  assert cost.wall_seconds(everything, 2) <= ALL_BUDGET_SECONDS
  first = pipeline.pooled(pipeline.plans(["pure"], "default", None,
                                         "/tmp/unused"))
  assert cost.wall_seconds(first, 2) <= FIRST_COMMAND_BUDGET_SECONDS


def test_wall_seconds_replays_the_schedule():
  warm = runner.Run("w", "", "", "w", 0, seconds=10.0)
  other = runner.Run("v", "", "", "v", 0, seconds=4.0)
  runs = [warm, other] + [
      runner.Run(f"r{i}", "", "", f"r{i}", 1, after=warm, seconds=3.0)
      for i in range(3)]
  # Core 2: v (0-4) idles until w is done at 10; then r0, r1 side by side
  # (10-13) and r2 (13-16).
  assert cost.wall_seconds(runs, 2) == 16.0
  assert cost.wall_seconds(runs, 1) == 23.0


def test_num_evaluations():
  assert cost.num_evaluations(40, 40) == 2
  assert cost.num_evaluations(60, 20) == 4
  assert cost.num_evaluations(50, 20) == 4  # 0, 20, 40 and the end
  assert cost.num_evaluations(0, 20) == 0


def test_measure_and_calibrate(tmp_path):
  warm = runner.Run("w", "", "", str(tmp_path / "w"), 0)
  run = runner.Run("r", "", "", str(tmp_path / "r"), 2, after=warm)
  os.makedirs(warm.warm_start_dir)
  os.makedirs(run.workdir)
  with open(os.path.join(warm.warm_start_dir, "warm_start_metrics.jsonl"),
            "w") as f:
    f.write("{}\n" * 10)
  with open(warm.done_path, "w") as f:
    json.dump({"start": 100.0, "end": 130.0}, f)
  with open(os.path.join(run.workdir, "train_metrics.jsonl"), "w") as f:
    for _ in range(2):
      f.write(json.dumps({"time/sample": 2.0, "time/score": 1.0,
                          "time/estimate": 0.5, "time/update": 1.5}) + "\n")
  with open(os.path.join(run.workdir, "eval_metrics.jsonl"), "w") as f:
    f.write(json.dumps({"eval/seconds": 4.0}) + "\n")
  with open(run.done_path, "w") as f:
    json.dump({"start": 0.0, "end": 20.0}, f)
  measured = cost.measure([warm], [run])
  assert measured["core_seconds"] == {
      "warm_start": 30.0, "sampling": 6.0, "estimate": 1.0, "update": 3.0,
      "evaluation": 4.0, "overhead": 6.0}
  assert measured["dominant"] == "warm_start"
  timing = cost.calibrate(measured, "test")
  assert timing == cost.Timing(rl_step=5.0, evaluation=4.0,
                               warm_start_step=2.4, overhead=6.0,
                               machine="test")
  assert "warm start dominates" in cost.summary(measured)


@pytest.mark.parametrize("fields, match", [
    (dict(reduce="eval_auc"), "reads eval records"),
    (dict(metric="eval/accuracy"), "reads train records"),
    (dict(reduce="samples_to_target"), "target"),
    (dict(smallest_effect=0.0), "smallest_effect"),
    (dict(kind="equivalence"), "kind"),
    (dict(metric="accuracy"), "full key"),
])
def test_bad_claims_are_clear_errors(fields, match):
  with pytest.raises(ValueError, match=match):
    spec.Claim("c", "p", "a", "b", **fields)


def test_bad_ablations_are_clear_errors():
  base = spec.load("ucas").get_ablation()
  claim = spec.Claim("c", "p", "ucas", "nope")
  with pytest.raises(ValueError, match="both must be arms"):
    spec.Ablation(**{**base.__dict__, "claims": (claim,)})
  with pytest.raises(ValueError, match="version"):
    spec.Ablation(**{**base.__dict__, "version": 0})
  with pytest.raises(ValueError, match="correction"):
    spec.Ablation(**{**base.__dict__, "correction": "bonferroni"})
  with pytest.raises(ValueError, match="size 'huge'"):
    spec.build_config(base, "ucas,0,huge")
