r"""Where the time of an RL step goes, and what the KV cache buys.

Measures, in one process on the current backend:
  * sampling tokens/s of the KV-cache sampler and of re-running the whole
    prefix every step (same model, prompts and budget);
  * the RL step's wall time and its share per phase (sample, score,
    estimate, update), averaged over steps after the first (compilation).

  python -m experiments.bench_train
  python -m experiments.bench_train --config=experiments/configs/smoke.py \
      --steps=3 --output=/tmp/bench_train.md
"""

import dataclasses
import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from experiments.models import sampler as sampler_lib
from experiments.rl import metrics
from experiments.rl import policy as policy_lib
from experiments.rl import rollouts as rollouts_lib
from experiments.rl import experiment
from experiments.rl import trainer

__all__ = ["define_flags", "main"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--config, --steps and --output."""
  config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(__file__), "configs",
                             "chain_arith.py"), "Training config to time.",
      flag_values=flag_values)
  flags.DEFINE_integer("steps", 6, "RL steps to time (first is compilation "
                       "and is excluded).", flag_values=flag_values)
  flags.DEFINE_string("output", None, "Also write the table here.",
                      flag_values=flag_values)


_PHASES = ("sample", "score", "estimate", "update")


def _time_sampler(exp, graphdef, params, rest, use_cache: bool,
                  repeats: int = 3) -> float:
  """Sampled tokens per second over one RL batch of prompts."""
  rl = exp.config.rl
  problems = exp.task.sample_problems(np.random.default_rng(0),
                                      rl.num_groups)
  problems = [p for p in problems for _ in range(rl.group_size)]
  tokens, valid = rollouts_lib.left_pad([p.prompt_ids for p in problems],
                                        exp.task.max_prompt_len,
                                        exp.task.tokenizer.pad_id)
  decoder = policy_lib.merged_decoder(graphdef, params, rest)
  # A fixed budget: no stop tokens, so both paths decode every position.
  sampling = dataclasses.replace(exp.sampling, stop_tokens=())
  fn = sampler_lib.sample if use_cache else sampler_lib.sample_without_cache
  best = float("inf")
  for i in range(repeats + 1):
    start = time.perf_counter()
    out = fn(decoder, tokens, valid, sampling, jax.random.key(i),
             exp.task.tokenizer.pad_id)
    jax.block_until_ready(out)
    if i:  # The first call compiles.
      best = min(best, time.perf_counter() - start)
  return float(np.asarray(out.mask).sum()) / best


def main(argv):
  del argv
  config = flags.FLAGS.config
  config.warm_start.steps = 0
  config.rl.num_steps = flags.FLAGS.steps
  config.eval_every = 10**9
  config.show_progress = False
  exp = experiment.Experiment(config)
  graphdef, params, rest = exp.new_policy(value_head=config.rl.value_coef > 0)
  with_cache = _time_sampler(exp, graphdef, params, rest, True)
  without_cache = _time_sampler(exp, graphdef, params, rest, False)
  with tempfile.TemporaryDirectory() as workdir:
    trainer.train_and_evaluate(config, workdir)
    records = metrics.read_jsonl(os.path.join(workdir, "train_metrics.jsonl"))
  timed = records[1:] or records
  phase = {p: float(np.mean([r[f"time/{p}"] for r in timed]))
           for p in _PHASES}
  step_time = sum(phase.values())
  rows = [
      "| measure | value |", "|---|---|",
      f"| sampling, KV cache (tokens/s) | {with_cache:,.0f} |",
      f"| sampling, full prefix each token (tokens/s) | "
      f"{without_cache:,.0f} |",
      f"| KV-cache speed-up | {with_cache / without_cache:.1f}x |",
      f"| RL step (s) | {step_time:.3f} |",
  ] + [f"| share: {p} | {100 * phase[p] / step_time:.0f}% |" for p in _PHASES]
  header = (f"bench_train: {jax.devices()[0].device_kind}, "
            f"{config.rl.num_groups}x{config.rl.group_size} "
            f"rows, {config.sampling.max_new_tokens} new tokens, model "
            f"{config.model.name}, {len(timed)} timed steps")
  table = header + "\n\n" + "\n".join(rows) + "\n"
  print(table)
  if flags.FLAGS.output:
    with open(flags.FLAGS.output, "w", encoding="utf-8") as f:
      f.write(table)


if __name__ == "__main__":
  define_flags()
  app.run(main)
