"""Smoke test of experiments.bench_model on the tiny size (CPU)."""

import math

from experiments import bench_model
from experiments.models import config as config_lib


def test_tiny_train_step_benchmark():
  r = bench_model.benchmark("tiny", seq_len=16, batch=2, dtype="float32",
                            remat="full", steps=1)
  assert r["params"] == config_lib.get("tiny").num_params
  assert r["step_s"] > 0 and r["tokens_per_s"] == 2 * 16 / r["step_s"]
  # Random init: the loss is near log V, not 0 or NaN.
  assert abs(r["loss"] - math.log(48)) < 2.0
  assert r["compiled_gib"] > r["temp_gib"] >= 0
