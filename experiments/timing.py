"""What the benchmarks share: their common flags, shape parsing and the
timing loops.

`define_flags()` defines --shapes, --rounds, --repeats and --clock; each
benchmark main that takes them calls it from its own `define_flags()`, so
the flags exist exactly in the programs that say so. Imports only jax, absl
and the standard library, so `experiments.gpu_check` can use it on a bare
GPU image.
"""

import statistics
import time

from absl import flags
import jax

__all__ = ["CLOCKS", "define_flags", "median_ms", "parse_shape", "time_pair"]

# --clock names: elapsed time, or this process's CPU time (all its threads;
# steadier when other jobs share the cores).
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def define_flags(*, shapes: list[str], rounds: int, repeats: int,
                 flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the shared benchmark flags with these defaults."""
  flags.DEFINE_list("shapes", shapes, "BxT batch shapes (e.g. 512x4096).",
                    flag_values=flag_values)
  flags.DEFINE_integer("rounds", rounds,
                       "Interleaved rounds of (timed, reference) timings.",
                       flag_values=flag_values)
  flags.DEFINE_integer("repeats", repeats, "Timed runs per round.",
                       flag_values=flag_values)
  flags.DEFINE_enum("clock", "wall", list(CLOCKS),
                    "wall: elapsed time; process: CPU time of this process "
                    "(all its threads), steadier when other jobs share the "
                    "cores.", flag_values=flag_values)


def parse_shape(text: str) -> tuple[int, ...]:
  """Parses "AxBx..." (for example "512x4096" or "NxDxV") into integers."""
  try:
    shape = tuple(int(part) for part in text.lower().split("x"))
  except ValueError:
    shape = ()
  if not shape or min(shape) < 1:
    raise ValueError(f"shape must look like 512x4096 (positive integers "
                     f"joined by 'x'), got {text!r}.")
  return shape


def median_ms(fn, *args, repeats: int, clock=time.perf_counter) -> float:
  """Median time of `fn(*args)` in ms over `repeats` runs.

  One untimed call first compiles `fn` and warms caches; every call is
  waited for with `jax.block_until_ready`. `clock` is `time.perf_counter`
  (elapsed time) or `time.process_time` (this process's CPU time, steadier
  on shared machines).
  """
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = clock()
    jax.block_until_ready(fn(*args))
    times.append(clock() - start)
  return 1e3 * statistics.median(times)


def time_pair(fn, args, reference, reference_args, rounds: int,
              repeats: int, clock=time.perf_counter) -> tuple[float, float]:
  """ms of `fn` and `reference`: the best round's median, rounds interleaved.

  Each round times `repeats` calls of fn, then of the reference, and keeps
  each median; the reported time is the smallest round median of each.
  Shared machines have slow spells lasting whole rounds; the best round is
  the one least disturbed, and both sides get the same rule. `clock` is one
  of `CLOCKS` (`time.process_time`: other jobs on the same cores then cost
  little but cache misses).
  """
  medians = ([], [])
  for _ in range(rounds):
    medians[0].append(median_ms(fn, *args, repeats=repeats, clock=clock))
    medians[1].append(median_ms(reference, *reference_args, repeats=repeats,
                                clock=clock))
  return min(medians[0]), min(medians[1])
