"""Shape parsing and the one timing loop shared by the benchmarks.

Imports only jax and the standard library, so `experiments.gpu_check` can use
it on a bare GPU image.
"""

import statistics
import time

import jax


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
