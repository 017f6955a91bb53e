"""Per-device memory estimate of a training step and of the sampler's cache.

  python -m experiments.models.memory      # the BUILD.md table

Counts (bytes per device, FSDP over `fsdp` devices, per-device batch):
- parameters: num_params · |param_dtype| / fsdp; gradients the same.
- optimizer: Adam's two moments in float32, 8 bytes per parameter / fsdp
  (+ 4 for a float32 master copy when `master_fp32`).
- activations kept for the backward pass, per token and layer, in the
  compute dtype c (D width, F MLP width, Nq/Nkv query/kv heads of size H,
  T sequence length):
    none:           5D + 2·Nq·H + 2·Nkv·H + 4F values + Nq·T scores
                    (float32 scores and softmax in c: Nq·T·(4 + c) bytes)
    dots_saveable:  the projection outputs Nq·H + 2·Nkv·H + 2D + 2F
    full:           the block input D
  With remat, one block is recomputed at a time: its full ("none")
  activations are added once.
- head: the fused log-prob kernel keeps the final hidden states and their
  gradient [B·T, D], and one [B·T, vocab_chunk] float32 tile; never [B·T, V].
- KV cache (sampling): 2 · layers · batch · length · Nkv · H · |cache dtype|.

XLA's buffer reuse and fusion move the real peak; read these as the sizes to
plan with, not measurements.

`rl_step_seconds` adds a roofline time for one RL step (sampling, log-prob
passes, update): each phase takes at least the longer of its FLOPs at the
device's peak and its bytes at its memory bandwidth. It is a lower bound:
decoding one token at a time at a batch of 64 is bound by kernel launches,
not by FLOPs or bytes, so a measured step takes several times longer.
"""

import dataclasses

from experiments.models import config as config_lib
from experiments.models.config import ModelConfig

__all__ = [
    "H100_BANDWIDTH", "H100_PEAK_FLOPS", "MemoryEstimate", "default_rows",
    "estimate", "markdown_table", "rl_step_seconds",
]

_GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes per device."""
  params: int
  grads: int
  optimizer: int
  activations: int
  head: int
  kv_cache: int

  @property
  def train_total(self) -> int:
    return (self.params + self.grads + self.optimizer + self.activations +
            self.head)


def _bytes(dtype: str) -> int:
  return {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]


def _layer_bytes(config: ModelConfig, tokens: int, seq_len: int,
                 policy: str) -> int:
  """Activation bytes one block keeps for its backward pass."""
  d, f, h = config.hidden_size, config.intermediate_size, config.head_dim
  q, kv = config.num_heads * h, config.num_kv_heads * h
  c = _bytes(config.dtype)
  if policy == "full":
    return tokens * d * c
  if policy == "dots_saveable":
    return tokens * (q + 2 * kv + 2 * d + 2 * f) * c
  values = 5 * d + 2 * q + 2 * kv + 4 * f
  scores = config.num_heads * seq_len * (4 + c)
  return tokens * (values * c + scores)


def estimate(config: ModelConfig, batch: int, seq_len: int, *,
             fsdp: int = 1, sample_batch: int = 0, sample_len: int = 0,
             cache_dtype: str | None = None, master_fp32: bool = False,
             vocab_chunk: int = 1024) -> MemoryEstimate:
  """Per-device memory of one training step (and of a sampling KV cache).

  Args:
    config: the model (its param_dtype, dtype and remat are used).
    batch: sequences per device in the training step.
    seq_len: tokens per sequence.
    fsdp: devices the parameters and optimizer state are sharded over.
    sample_batch, sample_len: KV cache shape for sampling (0: none).
    cache_dtype: KV cache dtype (default: config.dtype).
    master_fp32: count a float32 master copy of bfloat16 parameters.
    vocab_chunk: the fused kernel's vocabulary tile.

  Returns:
    MemoryEstimate in bytes.
  """
  config.validate()
  for name, value in (("batch", batch), ("seq_len", seq_len),
                      ("fsdp", fsdp)):
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  n = config.num_params
  param = n * _bytes(config.param_dtype) // fsdp
  optimizer = n * (8 + 4 * master_fp32) // fsdp
  tokens = batch * seq_len
  kept = config.num_layers * _layer_bytes(config, tokens, seq_len,
                                          config.remat)
  if config.remat != "none":
    kept += _layer_bytes(config, tokens, seq_len, "none")
  head = (2 * tokens * config.hidden_size * _bytes(config.dtype) +
          tokens * min(vocab_chunk, config.vocab_size) * 4)
  cache = (2 * config.num_layers * sample_batch * sample_len *
           config.num_kv_heads * config.head_dim *
           _bytes(cache_dtype or config.dtype))
  return MemoryEstimate(params=param, grads=param, optimizer=optimizer,
                        activations=kept, head=head, kv_cache=cache)


# NVIDIA H100 SXM datasheet: dense bf16 tensor-core peak, HBM3 bandwidth.
H100_PEAK_FLOPS = 989e12
H100_BANDWIDTH = 3.35e12


def rl_step_seconds(config: ModelConfig, rows: int, prompt_len: int,
                    response_len: int, *, forward_passes: int = 1,
                    peak_flops: float = H100_PEAK_FLOPS,
                    bandwidth: float = H100_BANDWIDTH) -> dict:
  """Roofline lower bounds, in seconds, of one RL step's phases.

  N counts the parameters of the matrix products (the output head once,
  not the embedding lookup). Per phase:
    sample:   prefill, 2N FLOPs per prompt token; then per response token a
              decode step of 2N·rows FLOPs that reads the parameters and
              the KV cache so far once;
    logprobs: `forward_passes` forward passes over prompt and response
              (the old policy's; 2 with a reference policy), 2N per token;
    update:   forward and backward, 6N per token (8N with full remat).

  Args:
    config: the model (param_dtype, dtype and remat are used).
    rows: sequences per step (groups x group size).
    prompt_len, response_len: tokens per sequence.
    forward_passes: log-prob passes besides the update.
    peak_flops, bandwidth: the device's (default: an H100 SXM).

  Returns:
    {"sample", "logprobs", "update", "total"}: seconds.
  """
  config.validate()
  n = config.num_params - (0 if config.tie_embeddings else
                           config.vocab_size * config.hidden_size)
  tokens = rows * (prompt_len + response_len)
  param_bytes = config.num_params * _bytes(config.param_dtype)
  kv_per_token = (2 * config.num_layers * config.num_kv_heads
                  * config.head_dim * _bytes(config.dtype))
  prefill = max(2 * n * rows * prompt_len / peak_flops,
                param_bytes / bandwidth)
  decode = sum(max(2 * n * rows / peak_flops,
                   (param_bytes + kv_per_token * rows * (prompt_len + t))
                   / bandwidth) for t in range(response_len))
  backward = 8 if config.remat == "full" else 6
  out = {"sample": prefill + decode,
         "logprobs": forward_passes * 2 * n * tokens / peak_flops,
         "update": backward * n * tokens / peak_flops}
  out["total"] = sum(out.values())
  return out


def markdown_table(rows) -> str:
  """rows: [(label, MemoryEstimate)] -> a GiB table."""
  lines = ["| setting | params | grads | Adam (fp32) | activations | head | "
           "train total | KV cache |", "|---|---|---|---|---|---|---|---|"]
  for label, e in rows:
    cells = [e.params, e.grads, e.optimizer, e.activations, e.head,
             e.train_total, e.kv_cache]
    lines.append(f"| {label} | " + " | ".join(f"{c / _GIB:.2f}"
                                                for c in cells) + " |")
  return "\n".join(lines)


def default_rows():
  """The BUILD.md table: bf16 Qwen2.5 1.5B and 7B at 4096 tokens."""
  rows = []
  for size in ("qwen2_5_1_5b", "qwen2_5_7b"):
    for remat, fsdp in (("none", 1), ("full", 1), ("dots_saveable", 1),
                        ("full", 8)):
      config = config_lib.get(size, param_dtype="bfloat16", dtype="bfloat16",
                              remat=remat)
      rows.append((f"{size}, remat={remat}, fsdp={fsdp}",
                   estimate(config, batch=1, seq_len=4096, fsdp=fsdp,
                            sample_batch=64, sample_len=4096)))
  return rows


if __name__ == "__main__":
  print("GiB per device: bf16 parameters and compute, 1 x 4096 tokens per "
        "device; KV cache for 64 x 4096 tokens in bf16")
  print(markdown_table(default_rows()))
