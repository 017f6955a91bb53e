"""The work every system of `experiments.bench_peers` runs, and its record.

One RL step on a randomly initialised Qwen2-architecture decoder: the
chain_arith prompts, `num_groups` prompts x `group_size` samples, exactly
`new_tokens` sampled tokens per row at temperature 1 (the task's PAD, BOS
and prompt-end tokens are never sampled, and no token stops a row), a
random 0/1 reward per row, GRPO advantages, and one Adam step on the
clipped policy-gradient loss with no KL term (beta 0).

Each system's worker (`experiments.peers.run_cajax`, `run_tunix`,
`run_trl`) reads a `Work` from its `--work` flag (JSON), runs
`warmup + steps` RL steps, and prints one `RESULT <json>` line (`emit`).
This module imports only NumPy and the project's task code, so every
worker can use it whatever framework it drives.
"""

import dataclasses
import json
import os
import resource
import sys

import numpy as np

from experiments.tasks import base as task_base

__all__ = [
    "CLIP_EPSILON", "LEARNING_RATE", "MODELS", "RESULT_PREFIX", "TASK", "Work",
    "device_peak_mb", "emit", "peak_rss_mb", "problems", "prompt_texts",
    "rewards", "task",
]

# Decoder shapes by name. "toy" is the ~100k-parameter model of the CPU
# table; "qwen2_5_0_5b" has Qwen2.5-0.5B's shapes (the GPU variant).
MODELS = {
    "toy": dict(vocab_size=20, hidden_size=64, num_layers=2, num_heads=4,
                num_kv_heads=2, head_dim=16, intermediate_size=192,
                rope_theta=10000.0, rms_norm_eps=1e-6),
    "qwen2_5_0_5b": dict(vocab_size=151936, hidden_size=896, num_layers=24,
                         num_heads=14, num_kv_heads=2, head_dim=64,
                         intermediate_size=4864, rope_theta=1e6,
                         rms_norm_eps=1e-6),
}
# Every model: tied embeddings and q/k/v biases (Qwen2's layout).
TASK = dict(name="chain_arith", min_ops=2, max_ops=4, ops="+-*", modulus=10,
            prm="oracle", prm_noise=0.0, prm_seed=0, max_response_len=48)
LEARNING_RATE = 1e-6
CLIP_EPSILON = 0.2
RESULT_PREFIX = "RESULT "


@dataclasses.dataclass(frozen=True)
class Work:
  """What one worker process runs.

  Attributes:
    num_groups: prompts per step.
    group_size: samples per prompt (rows = num_groups * group_size).
    new_tokens: tokens sampled per row, exactly.
    model: a `MODELS` name.
    steps: timed steps (after the warm-up ones).
    warmup: untimed steps first (the first compiles).
    seed: seeds the model, the prompts and the rewards.
    dtype: "float32" or "bfloat16" for parameters and compute.
    checkpoint: a Hugging Face-format directory with the random weights
      every system starts from (`bench_peers` writes it).
  """
  num_groups: int = 16
  group_size: int = 8
  new_tokens: int = 48
  model: str = "toy"
  steps: int = 5
  warmup: int = 1
  seed: int = 0
  dtype: str = "float32"
  checkpoint: str = ""

  @property
  def rows(self) -> int:
    return self.num_groups * self.group_size

  def shape(self) -> dict:
    """The decoder's shapes (`MODELS[model]`)."""
    return dict(MODELS[self.model])

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, text: str) -> "Work":
    values = json.loads(text)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"Work: unknown keys {unknown} in {text!r}")
    work = cls(**values)
    if work.model not in MODELS:
      raise ValueError(f"Work.model must be one of {sorted(MODELS)}, got "
                       f"{work.model!r}")
    if work.group_size < 2 or work.num_groups < 1 or work.new_tokens < 1:
      raise ValueError(f"Work needs group_size >= 2, num_groups >= 1 and "
                       f"new_tokens >= 1, got {work}")
    return work


def task():
  """The chain_arith task (its tokenizer and prompts)."""
  return task_base.make_task(TASK)


def problems(work: Work, step: int) -> list:
  """The `num_groups` problems of `step` (the same for every system)."""
  rng = np.random.default_rng([work.seed, 1, step])
  return task().sample_problems(rng, work.num_groups)


def prompt_texts(work: Work, step: int) -> list[str]:
  """The problems' prompts as text (BOS left out: the tokenizers of the
  peers add it), one per group."""
  vocab = task().tokenizer
  return [vocab.decode(p.prompt_ids) for p in problems(work, step)]


def rewards(work: Work, step: int, rows: int) -> np.ndarray:
  """float32[rows] random 0/1 rewards of `step` (the same for every
  system)."""
  rng = np.random.default_rng([work.seed, 2, step])
  return rng.integers(0, 2, size=rows).astype(np.float32)


def peak_rss_mb() -> float:
  """This process's peak resident memory in MiB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_peak_mb(device) -> float | None:
  """A JAX device's peak allocated memory in MiB (None where the backend
  keeps no statistics, as on CPU)."""
  stats = device.memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


def emit(system: str, version: str, work: Work, first_step_s: float,
         steps: list[dict], **extra) -> None:
  """Prints the worker's result line.

  Args:
    system: "cajax", "tunix" or "trl".
    version: the system's version string.
    work: what was run.
    first_step_s: from building the model to the end of the first step
      (compilation included, imports excluded).
    steps: one dict per timed step: `step_s` (wall), `sample_s` (sampling),
      `tokens` (sampled tokens).
    **extra: other facts (the device, thread settings...).
  """
  record = dict(system=system, version=version, work=dataclasses.asdict(work),
                first_step_s=first_step_s, steps=steps,
                peak_rss_mb=peak_rss_mb(), pid=os.getpid(),
                affinity=sorted(os.sched_getaffinity(0)), **extra)
  sys.stdout.write(RESULT_PREFIX + json.dumps(record) + "\n")
  sys.stdout.flush()
