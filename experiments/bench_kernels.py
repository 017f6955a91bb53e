r"""Memory and CPU-time benchmark of the fused log-prob / entropy kernels.

For the gradient of  Σ log p + 0.01·Σ H  w.r.t. (hidden, weight), reports
XLA's compiled temporary bytes (`memory_analysis().temp_size_in_bytes`,
compiled from `jax.ShapeDtypeStruct`s, so nothing is allocated) for the
naive log_softmax path and for each implementation that compiles on this
backend, as a fraction of one float32 [N, V] logits tensor. Then times
forward+backward at a small shape (median of repeats, side by side).

  python -m experiments.bench_kernels
  python -m experiments.bench_kernels --shapes=16384x3584x152064 --repeats=3
"""

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import cajax_kernels as kernels
from experiments.kernel_baselines import naive_logprobs
from experiments.timing import median_ms
from experiments.timing import parse_shape

__all__ = [
    "define_flags", "loss_fn", "main", "memory_table", "paths", "specs",
    "temp_bytes", "time_table",
]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Shapes, dtype, implementations, repeats and output file."""
  flags.DEFINE_list("shapes", ["16384x3584x152064", "2048x1024x32768"],
                    "NxDxV shapes for the memory table (Qwen2.5-7B head "
                    "first).", flag_values=flag_values)
  flags.DEFINE_string("time_shape", "512x256x8192",
                      "NxDxV shape for the CPU timing.",
                      flag_values=flag_values)
  flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"],
                    "dtype of hidden and weight.", flag_values=flag_values)
  flags.DEFINE_list("implementations", ["xla", "interpret"],
                    "kernel implementations to measure.",
                    flag_values=flag_values)
  flags.DEFINE_list("time_implementations", ["xla"],
                    "implementations to time (interpret is slow).",
                    flag_values=flag_values)
  flags.DEFINE_integer("repeats", 5, "timing repeats.", flag_values=flag_values)
  flags.DEFINE_integer("vocab_chunk", 0,
                       "override BlockSizes.vocab_chunk (0: default).",
                       flag_values=flag_values)
  flags.DEFINE_string("out", "", "also write the markdown here.",
                      flag_values=flag_values)


def loss_fn(implementation: str | None, vocab_chunk: int = 0):
  """Σ log p + 0.01·Σ H for one path (None: naive); `vocab_chunk` > 0
  overrides the kernel's vocabulary tile."""

  def loss(hidden, weight, labels):
    if implementation is None:
      lp, ent = naive_logprobs(hidden, weight, labels)
    else:
      blocks = None
      if vocab_chunk:
        blocks = kernels.BlockSizes.default(implementation)
        blocks = type(blocks)(**{**blocks.__dict__,
                                 "vocab_chunk": vocab_chunk})
      lp, ent = kernels.linear_token_logprobs(
          hidden, weight, labels, implementation=implementation,
          block_sizes=blocks)
    return jnp.sum(lp) + 0.01 * jnp.sum(ent)

  return jax.value_and_grad(loss, argnums=(0, 1))


def specs(n: int, d: int, v: int, dtype):
  return (jax.ShapeDtypeStruct((n, d), dtype),
          jax.ShapeDtypeStruct((d, v), dtype),
          jax.ShapeDtypeStruct((n,), jnp.int32))


def temp_bytes(implementation, shape, dtype,
               vocab_chunk: int = 0) -> int | str:
  try:
    compiled = jax.jit(loss_fn(implementation, vocab_chunk)).lower(
        *specs(*shape, dtype)).compile()
  except Exception as e:  # pylint: disable=broad-except
    return f"does not compile ({type(e).__name__})"
  return compiled.memory_analysis().temp_size_in_bytes


def paths(impls):
  return [("naive log_softmax", None)] + [(i, i) for i in impls]


def memory_table(dtype, shapes, impls, vocab_chunk: int = 0) -> list[str]:
  rows = ["| shape N×D×V | path | temp bytes | / fp32 [N,V] logits |",
          "|---|---|---|---|"]
  for text in shapes:
    shape = parse_shape(text)
    logits_bytes = shape[0] * shape[2] * 4
    for name, impl in paths(impls):
      got = temp_bytes(impl, shape, dtype, vocab_chunk)
      if isinstance(got, str):
        rows.append(f"| {text} | {name} | {got} | |")
      else:
        rows.append(f"| {text} | {name} | {got / 2**20:,.1f} MiB | "
                    f"{100 * got / logits_bytes:.2f}% |")
      print(rows[-1], flush=True)
  return rows


def time_table(dtype, time_shape: str, impls, repeats: int,
               vocab_chunk: int = 0) -> list[str]:
  n, d, v = parse_shape(time_shape)
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(n, d)), dtype)
  weight = jnp.asarray(rng.normal(size=(d, v)) / np.sqrt(d), dtype)
  labels = jnp.asarray(rng.integers(0, v, n), jnp.int32)
  rows = [f"| path ({time_shape}, fwd+bwd) | median ms | vs naive |",
          "|---|---|---|"]
  base = None
  for name, impl in paths(impls):
    ms = median_ms(jax.jit(loss_fn(impl, vocab_chunk)), hidden, weight,
                   labels, repeats=repeats)
    base = ms if base is None else base
    rows.append(f"| {name} | {ms:.1f} | {ms / base:.2f}× |")
    print(rows[-1], flush=True)
  return rows


def main(argv):
  del argv
  f = flags.FLAGS
  dtype = jnp.dtype(f.dtype)
  print(f"backend: {jax.default_backend()}, dtype {dtype.name}, "
        f"loss = sum(logp) + 0.01*sum(entropy), grad w.r.t. hidden and "
        f"weight")
  text = "\n".join(
      memory_table(dtype, f.shapes, f.implementations, f.vocab_chunk) + [""]
      + time_table(dtype, f.time_shape, f.time_implementations, f.repeats,
                   f.vocab_chunk)) + "\n"
  print("\n" + text)
  if f.out:
    with open(f.out, "w") as out:
      out.write(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
