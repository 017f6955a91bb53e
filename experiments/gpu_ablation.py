r"""The PURE ablation's arms on a random Qwen2.5-0.5B-shaped checkpoint:
tokens/s, peak memory and step time on one GPU, next to the estimates.

  python -m experiments.gpu_ablation                       # on the GPU
  python -m experiments.gpu_ablation --estimate_only       # estimates only
  python -m experiments.gpu_ablation --size=tiny --steps=3 --vocab=600 \
      --eval_problems=8 --output=/tmp/gpu_ablation.md       # CPU dry run

Makes a random checkpoint of `--size` (bf16, written in HF format, with a
byte-level BPE tokenizer trained on the fly and a ChatML template; nothing
is downloaded), then trains `--steps` RL steps of the PURE ablation's
baseline arm (`grpo` when the ablation has one, else `pure_softmin`) and
of `sum_form`, each with the ablation's default size (8 groups of 8
responses, 96-token responses) through `--config.model_path`, as
`python -m experiments.ablate --ablation=pure --config.model_path=DIR`
would, with the one-GPU overrides of docs/ablations.md. It prints, per arm,
the median step time and tokens/s over the steps after the first
(compilation; the second arm reuses the first's compiled programs from
the persistent cache), the process's peak device memory so far, and the
`experiments.models.memory` estimates at 0.5B and 1.5B. A random model
rarely writes EOS, so its responses run to the budget: the measured step
is the full-length case.
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from experiments import compilation_cache
from experiments.ablation import spec
from experiments.models import config as config_lib
from experiments.models import memory
from experiments.models import random_checkpoint
from experiments.rl import experiment
from experiments.rl import metrics
from experiments.rl import trainer
from experiments.tasks import chain_problems

__all__ = [
    "MAX_TOKEN_LENGTH", "ONE_GPU", "QWEN_PADDING_ROWS", "arms", "define_flags",
    "estimates", "main", "run",
]

# The one-GPU settings of docs/ablations.md, on top of the ablation's.
ONE_GPU = {"model.overrides.param_dtype": "bfloat16",
           "model.overrides.dtype": "bfloat16",
           "model.overrides.remat": "full",
           "optimizer.learning_rate": 1e-6}
# Qwen2.5's tokenizer fills 151665 of its 151936 rows: the random
# checkpoint's does too (special filler tokens), so the loop bans as few ids.
QWEN_PADDING_ROWS = 151936 - 151665
# Tokens of a few characters, as a real BPE's, so prompts have a realistic
# length (the small corpus would otherwise merge whole sentences).
MAX_TOKEN_LENGTH = 6
_PHASES = ("sample", "score", "estimate", "update")
_GIB = 1024**3


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--size, --steps, --vocab, --eval_problems, --workdir, --output and
  --estimate_only."""
  flags.DEFINE_enum("size", "qwen2_5_0_5b", config_lib.NAMES,
                    "Shape of the random checkpoint.",
                    flag_values=flag_values)
  flags.DEFINE_integer("steps", 20, "RL steps per arm (the first compiles "
                       "and is left out of the medians).",
                       flag_values=flag_values)
  flags.DEFINE_integer("vocab", 2048, "Tokens of the BPE trained on the fly "
                       "(special filler tokens fill the model's other rows "
                       "but Qwen's 271 padding rows).",
                       flag_values=flag_values)
  flags.DEFINE_integer("eval_problems", 64, "Problems of the evaluations at "
                       "the first and last step.", flag_values=flag_values)
  flags.DEFINE_string("workdir", None, "Where the checkpoint and runs go "
                      "(default: a temporary folder, removed).",
                      flag_values=flag_values)
  flags.DEFINE_string("output", None, "Also write the report here.",
                      flag_values=flag_values)
  flags.DEFINE_bool("estimate_only", False, "Print the memory.py estimates "
                    "and exit.", flag_values=flag_values)


def arms(ablation) -> tuple[str, str]:
  """The baseline arm ("grpo" when there is one) and "sum_form"."""
  baseline = "grpo" if "grpo" in ablation.arms else "pure_softmin"
  return baseline, "sum_form"


def estimates(prompt_len: int = 128) -> str:
  """memory.py's step memory and roofline time at 0.5B and 1.5B, with the
  PURE default size and the one-GPU overrides (a markdown table)."""
  ablation = spec.load("pure").get_ablation()
  config = spec.build_config(ablation, "sum_form,0,default")
  rows = config.rl.num_groups * config.rl.group_size
  response = config.sampling.max_new_tokens
  lines = [f"Estimates for one H100 (80 GB): {rows} rows of {prompt_len} "
           f"prompt + {response} response tokens, bf16 parameters and "
           f"compute, float32 Adam, remat=full, one update per step.", "",
           "| model | params | train step memory (GiB) | KV cache (GiB) | "
           "roofline step time (s): sample / log-probs / update / total |",
           "|---|---|---|---|---|"]
  for size in ("qwen2_5_0_5b", "qwen2_5_1_5b"):
    model = config_lib.get(size, param_dtype="bfloat16", dtype="bfloat16",
                           remat="full")
    est = memory.estimate(model, batch=rows, seq_len=prompt_len + response,
                          sample_batch=rows, sample_len=prompt_len + response)
    time_ = memory.rl_step_seconds(model, rows, prompt_len, response)
    lines.append(
        f"| {size} | {model.num_params / 1e9:.2f}B | "
        f"{est.train_total / _GIB:.1f} | {est.kv_cache / _GIB:.2f} | "
        + " / ".join(f"{time_[k]:.3f}" for k in ("sample", "logprobs",
                                                  "update", "total")) + " |")
  return "\n".join(lines)


def _peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _measure(ablation, arm: str, overrides: dict, workdir: str) -> dict:
  config = spec.build_config(ablation, f"{arm},0,default", overrides)
  clock = time.perf_counter()
  trainer.train_and_evaluate(config, os.path.join(workdir, arm))
  wall = time.perf_counter() - clock
  records = metrics.read_jsonl(os.path.join(workdir, arm,
                                            "train_metrics.jsonl"))
  timed = records[1:] or records
  step = [sum(r[f"time/{p}"] for p in _PHASES) for r in timed]
  return {
      "arm": arm, "steps": len(records), "wall_seconds": wall,
      "step_seconds_median": float(np.median(step)),
      "first_step_seconds": sum(records[0][f"time/{p}"] for p in _PHASES),
      "tokens_per_second_median": float(np.median(
          [r["time/tokens_per_second"] for r in timed])),
      "phase_seconds_median": {p: float(np.median([r[f"time/{p}"]
                                                   for r in timed]))
                               for p in _PHASES},
      "response_length": float(np.mean(
          [r["rollout/response_length"] for r in timed])),
      "peak_gib_so_far": (None if _peak_bytes() is None
                          else _peak_bytes() / _GIB),
  }


def run(size: str, steps: int, vocab: int, eval_problems: int,
        workdir: str) -> str:
  """Makes the checkpoint, measures both arms; returns the report."""
  device = jax.devices()[0]
  clock = time.perf_counter()
  model = config_lib.get(size, param_dtype="bfloat16", dtype="bfloat16")
  model = model.replace(vocab_size=max(model.vocab_size,
                                       vocab + QWEN_PADDING_ROWS))
  directory = random_checkpoint.write(
      os.path.join(workdir, "checkpoint"), model,
      chain_problems.lines_texts(300) + random_checkpoint.word_problems(300),
      vocab_size=vocab, max_token_length=MAX_TOKEN_LENGTH,
      pad_to=model.vocab_size - QWEN_PADDING_ROWS)
  made = time.perf_counter() - clock
  ablation = spec.load("pure").get_ablation()
  overrides = {"model_path": str(directory), **ONE_GPU,
               "rl.num_steps": steps, "eval_every": steps,
               "eval_problems": eval_problems, "checkpoint_every": steps,
               "keep_checkpoints": 1}
  prompt_len = experiment.Experiment(spec.build_config(
      ablation, f"{arms(ablation)[0]},0,default",
      overrides)).task.max_prompt_len
  results = [_measure(ablation, arm, overrides, workdir)
             for arm in arms(ablation)]
  lines = [f"gpu_ablation: {device.platform} {device.device_kind}, "
           f"{jax.device_count()} device(s), jax {jax.__version__}; random "
           f"{size} ({model.num_params / 1e9:.2f}B) made in {made:.0f} s; "
           f"PURE default size, {steps} RL steps per arm, prompts padded "
           f"to {prompt_len} tokens", "",
           "| arm | step (s, median) | first step (s) | tokens/s | "
           "sample / score / estimate / update (s) | response tokens | "
           "peak memory so far (GiB) | run wall (s) |",
           "|---|---|---|---|---|---|---|---|"]
  for r in results:
    phases = " / ".join(f"{r['phase_seconds_median'][p]:.3f}"
                        for p in _PHASES)
    peak = ("n/a" if r["peak_gib_so_far"] is None
            else f"{r['peak_gib_so_far']:.1f}")
    lines.append(f"| {r['arm']} | {r['step_seconds_median']:.3f} | "
                 f"{r['first_step_seconds']:.1f} | "
                 f"{r['tokens_per_second_median']:,.0f} | {phases} | "
                 f"{r['response_length']:.0f} | {peak} | "
                 f"{r['wall_seconds']:.0f} |")
  lines += ["", estimates(prompt_len), "", "json: " + json.dumps(results)]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f["verbosity"].present:  # orbax logs every save at INFO.
    logging.set_verbosity(logging.WARNING)
  compilation_cache.enable()
  if f.estimate_only:
    report = estimates()
  elif f.workdir:
    report = run(f.size, f.steps, f.vocab, f.eval_problems, f.workdir)
  else:
    with tempfile.TemporaryDirectory() as workdir:
      report = run(f.size, f.steps, f.vocab, f.eval_problems, workdir)
  print(report, flush=True)
  if f.output:
    with open(f.output, "w", encoding="utf-8") as out:
      out.write(report + "\n")


if __name__ == "__main__":
  define_flags()
  app.run(main)
