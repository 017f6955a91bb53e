"""experiments.plot_run draws train keys per step and eval keys as points."""

import json

from experiments import plot_run


def test_plot_reads_train_and_eval_keys(tmp_path):
  train = [{"step": s, "rollout/reward_mean": 0.1 * s,
            "rollout/entropy": 2.0 - 0.1 * s} for s in range(1, 6)]
  evals = [{"step": s, "eval/accuracy": 0.2 * s} for s in (0, 5)]
  for name, records in (("train", train), ("eval", evals)):
    (tmp_path / f"{name}_metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records))
  out = tmp_path / "run.png"
  plot_run.plot(str(tmp_path), str(out), ["rollout/reward_mean",
                                          "rollout/entropy", "eval/accuracy"],
                window=2)
  assert out.stat().st_size > 1000
