r"""Benchmarks every registered estimator against a same-bytes elementwise floor.

For each estimator and shape, the jitted `cajax.estimate(name, rollouts,
**example_inputs)` is timed (best round median of repeated runs, `block_until_ready`)
next to a *floor*: a jitted function that reads the same input arrays and
writes the same `[B, T]` outputs (advantages, returns) with trivial
elementwise work. The ratio says how far an estimator is from a pure
memory pass over its own inputs and outputs. Both are measured in the same
process, interleaved, so machine noise hits them alike.

  python -m experiments.bench_advantages
  python -m experiments.bench_advantages --shapes=512x4096 --only=gae,grpo
  python -m experiments.bench_advantages --quick --output=/tmp/table.md
  python -m experiments.bench_advantages --clock=process  # busy machines
"""

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import cajax
from cajax import sequences
from cajax import testing
from experiments import timing

__all__ = [
    "QUICK_SHAPES", "benchmark", "define_flags", "floor_pass", "main",
    "make_case", "markdown_table", "static_options",
]

QUICK_SHAPES = ("16x64",)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The shared timing flags (experiments/timing.py) and this benchmark's."""
  timing.define_flags(shapes=["512x4096", "64x32768"], rounds=9, repeats=7,
                      flag_values=flag_values)
  flags.DEFINE_bool("quick", False,
                    "Smoke test: tiny shapes and few repeats.",
                    flag_values=flag_values)
  flags.DEFINE_list("only", [], "Estimator names (default: all).",
                    flag_values=flag_values)
  flags.DEFINE_integer("group_size", 8, "Rows per group.",
                       flag_values=flag_values)
  flags.DEFINE_integer("num_steps", 16, "Step axis size S.",
                       flag_values=flag_values)
  flags.DEFINE_string("output", None,
                      "Write the markdown table to this file.",
                      flag_values=flag_values)


def _is_array(value) -> bool:
  return isinstance(value, (np.ndarray, jax.Array))


def static_options(name: str, rollouts: cajax.Rollouts) -> dict:
  """Static options a caller sets from its own budget: matchtir's turn axis
  holds the batch's most turns (a tool-call budget + 1), not its ⌈T/2⌉
  default, which would make every turn statistic half a `[B, T]` pass."""
  if name != "matchtir":
    return {}
  _, turns = sequences.contiguous_runs(rollouts.mask)
  return dict(num_turns=max(1, int(jnp.max(turns))))


def make_case(name: str, rollouts: cajax.Rollouts, seed: int = 0):
  """Jitted estimator and floor for `name`, and their shared arguments."""
  kwargs = cajax.example_inputs(name, rollouts, np.random.default_rng(seed))
  arrays = {k: jnp.asarray(v) for k, v in kwargs.items() if _is_array(v)}
  static = {k: v for k, v in kwargs.items() if not _is_array(v)}
  static.update(static_options(name, rollouts))

  def run(rollouts, arrays):
    out = cajax.estimate(name, rollouts, **arrays, **static)
    return out.advantages, out.returns

  fields = ("mask",) + cajax.required_fields(name)
  inputs = [getattr(rollouts, f) for f in fields] + list(arrays.values())
  return jax.jit(run), jax.jit(floor_pass), (rollouts, arrays), (inputs,)


def floor_pass(inputs):
  """Reads every input once, writes two [B, T] outputs: the memory floor."""
  batch, length = inputs[0].shape
  total = jnp.zeros((batch, length), jnp.float32)
  for x in inputs:
    x = jnp.asarray(x).astype(jnp.float32)
    if x.shape == (batch, length):
      total = total + x
    elif x.ndim and x.shape[0] == batch:
      total = total + jnp.sum(x.reshape(batch, -1), axis=1, keepdims=True)
    else:
      total = total + jnp.sum(x)
  return total, total * 2.0


def benchmark(names, shapes, rounds: int, repeats: int, group_size: int,
              num_steps: int, clock=time.perf_counter
              ) -> list[tuple[str, str, float, float]]:
  """Rows (estimator, shape, ms, floor ms) for every name and shape."""
  rows = []
  for batch, length in shapes:
    rollouts = testing.make_rollouts(
        batch=batch, length=length, group_size=min(group_size, batch),
        num_steps=num_steps, seed=0)
    for name in names:
      fn, floor, args, floor_args = make_case(name, rollouts)
      ms, floor_ms = timing.time_pair(fn, args, floor, floor_args, rounds,
                                      repeats, clock)
      rows.append((name, f"{batch}x{length}", ms, floor_ms))
      print(f"{name:30s} {batch}x{length:<8d} {ms:9.3f} ms  floor "
            f"{floor_ms:7.3f} ms  ratio {ms / floor_ms:6.2f}", flush=True)
      # Frees this case's executables: each holds ~12 memory maps, and a
      # process may hold 65,530 (docs/performance.md).
      jax.clear_caches()
  return rows


def markdown_table(rows) -> str:
  lines = ["| estimator | shape (BxT) | ms | floor ms | ratio |",
           "|---|---|---:|---:|---:|"]
  for name, shape, ms, floor_ms in rows:
    lines.append(f"| {name} | {shape} | {ms:.3f} | {floor_ms:.3f} | "
                 f"{ms / floor_ms:.2f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  f = flags.FLAGS
  names = f.only or list(cajax.estimator_names())
  for name in names:
    cajax.registry.ESTIMATORS.check(name, "--only")
  shapes = [timing.parse_shape(s) for s in (QUICK_SHAPES if f.quick
                                            else f.shapes)]
  rounds, repeats = (1, 2) if f.quick else (f.rounds, f.repeats)
  rows = benchmark(names, shapes, rounds, repeats, f.group_size,
                   f.num_steps, timing.CLOCKS[f.clock])
  table = markdown_table(rows)
  print(f"\n{jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"jax {jax.__version__}, {f.clock} clock\n")
  print(table)
  if f.output:
    with open(f.output, "w") as out:
      out.write(table)


if __name__ == "__main__":
  define_flags()
  app.run(main)
