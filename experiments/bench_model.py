r"""Time one training forward+backward of the decoder with fused log-probs.

Random weights of a named size; loss = −mean log p(next token) through
`cajax_kernels.linear_token_logprobs` on the decoder's hidden states (never
[N, V] logits); gradients w.r.t. every parameter. The optimizer update is
not included. Prints compile time, the median step time, tokens per second,
XLA's compiled memory (arguments, outputs, temporaries) and, on GPU/TPU,
the device's peak bytes in use.

  python -m experiments.bench_model --size=qwen2_5_1_5b --seq_len=4096 \
      --dtype=bfloat16 --remat=full
  python -m experiments.bench_model --size=tiny --seq_len=64   # CPU smoke
"""

import statistics
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp

import cajax_kernels as kernels
from experiments.models import config as config_lib
from experiments.models import decoder as decoder_lib

__all__ = ["benchmark", "define_flags", "main"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS):
  """Registers the flags (only when run as a program, so importing this
  module beside other benchmarks never defines a flag twice)."""
  flags.DEFINE_enum("size", "tiny", config_lib.NAMES, "model size",
                    flag_values=flag_values)
  flags.DEFINE_integer("seq_len", 4096, "tokens per sequence",
                       flag_values=flag_values)
  flags.DEFINE_integer("batch", 1, "sequences per step",
                       flag_values=flag_values)
  flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"],
                    "parameter and compute dtype", flag_values=flag_values)
  flags.DEFINE_enum("remat", "full", config_lib.REMAT_POLICIES,
                    "per-block rematerialisation", flag_values=flag_values)
  flags.DEFINE_integer("steps", 3, "timed steps (median)",
                       flag_values=flag_values)
  flags.DEFINE_string("implementation", None,
                      "kernel implementation (default: best available)",
                      flag_values=flag_values)


def _loss_fn(graphdef, implementation):
  def loss(params, tokens):
    model = nnx.merge(graphdef, params)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    valid = jnp.ones(inputs.shape, bool)
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    hidden, _ = model(inputs, positions, valid)
    weight, layout = model.unembedding()
    logp, _ = kernels.linear_token_logprobs(
        hidden.reshape(-1, hidden.shape[-1]), weight, labels.reshape(-1),
        implementation=implementation, weight_layout=layout)
    return -jnp.mean(logp)
  return loss


def benchmark(size: str, seq_len: int, batch: int = 1,
              dtype: str = "bfloat16", remat: str = "full", steps: int = 3,
              implementation: str | None = None, seed: int = 0) -> dict:
  """Compiles and times the step; returns the measurements."""
  config = config_lib.get(size, param_dtype=dtype, dtype=dtype, remat=remat)
  model = decoder_lib.create_model(config, seed=seed)
  graphdef, params = nnx.split(model)
  del model
  tokens = jax.random.randint(jax.random.key(seed + 1), (batch, seq_len + 1),
                              0, config.vocab_size, jnp.int32)
  step = jax.jit(jax.value_and_grad(_loss_fn(graphdef, implementation)))
  start = time.perf_counter()
  compiled = step.lower(params, tokens).compile()
  compile_s = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  loss, grads = compiled(params, tokens)  # warm-up
  jax.block_until_ready(grads)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    loss, grads = compiled(params, tokens)
    jax.block_until_ready(grads)
    times.append(time.perf_counter() - start)
  del grads
  stats = jax.devices()[0].memory_stats() or {}
  median = statistics.median(times)
  return {
      "size": size, "params": config.num_params, "seq_len": seq_len,
      "batch": batch, "dtype": dtype, "remat": remat,
      "device": jax.devices()[0].device_kind,
      "loss": float(loss), "compile_s": compile_s, "step_s": median,
      "tokens_per_s": batch * seq_len / median,
      "compiled_gib": (analysis.argument_size_in_bytes +
                       analysis.output_size_in_bytes +
                       analysis.temp_size_in_bytes) / 1024**3,
      "temp_gib": analysis.temp_size_in_bytes / 1024**3,
      "peak_gib": stats.get("peak_bytes_in_use", float("nan")) / 1024**3,
  }


def main(argv):
  del argv
  f = flags.FLAGS
  r = benchmark(f.size, f.seq_len, f.batch, f.dtype, f.remat, f.steps,
                f.implementation)
  print(f"{r['size']} ({r['params']:,} params), {r['batch']} x "
        f"{r['seq_len']} tokens, {r['dtype']}, remat={r['remat']} on "
        f"{r['device']}")
  print(f"loss {r['loss']:.4f}, compile "
        f"{r['compile_s']:.1f} s, step {r['step_s'] * 1e3:.1f} ms, "
        f"{r['tokens_per_s']:.0f} tokens/s")
  print(f"compiled memory {r['compiled_gib']:.3f} GiB (temporaries "
        f"{r['temp_gib']:.3f} GiB), device peak {r['peak_gib']:.3f} GiB")


if __name__ == "__main__":
  define_flags()
  app.run(main)
