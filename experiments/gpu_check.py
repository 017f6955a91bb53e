r"""On-device check of the compiled Pallas-Triton kernels, then timings.

1. Correctness at small shapes: values and gradients of
   `linear_token_logprobs` ([D, V] and [V, D] weights), `token_logprobs` and
   `linear_token_stats` with the compiled kernels, against the "xla"
   implementation (matmuls at precision HIGHEST). Exits 1 on a mismatch.
2. Timing at the Qwen2.5-7B head shape in bf16 (N=16384, D=3584, V=152064):
   forward and forward+backward of Σ log p + 0.01·Σ H for pallas_triton, xla
   and the naive materialised log_softmax, with ms, TFLOP/s (2NDV forward,
   8NDV forward+backward with recomputation), XLA's compiled temporary
   memory per path and the ratio to one plain `hidden @ weight` matmul.

Without a GPU it prints a message and exits 0; `--force_platform=cpu` runs
the same code paths on CPU with --check_impl=interpret at tiny shapes (the
smoke test does that).

  python -m experiments.gpu_check
  python -m experiments.gpu_check --shape=8192x4096x131072 --repeats=5
"""

import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import cajax_kernels as kernels
from experiments.kernel_baselines import naive_logprobs
from experiments.kernel_baselines import parse_shape

_SHAPE = flags.DEFINE_string("shape", "16384x3584x152064",
                             "NxDxV of the timing run.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed repeats (median).")
_FORCE = flags.DEFINE_string(
    "force_platform", "",
    "run even without a GPU on this platform (e.g. cpu, for a dry run).")
_CHECK_IMPL = flags.DEFINE_string(
    "check_impl", "pallas_triton", "implementation under test.")
_TIME_IMPLS = flags.DEFINE_list(
    "time_implementations", ["pallas_triton", "xla", "naive"],
    "paths to time ('naive' = materialised log_softmax).")
_CHECK_SHAPE = flags.DEFINE_string("check_shape", "300x136x5000",
                                   "NxDxV of the correctness checks.")
_SKIP_TIMING = flags.DEFINE_bool("skip_timing", False, "only run checks.")

HIGHEST = jax.lax.Precision.HIGHEST


def logprob_fn(path: str, **kwargs):
  if path == "naive":
    return naive_logprobs
  return lambda h, w, y: kernels.linear_token_logprobs(
      h, w, y, implementation=path, **kwargs)


def _close(name, got, want, tol) -> bool:
  got = np.asarray(jnp.asarray(got, jnp.float32))
  want = np.asarray(jnp.asarray(want, jnp.float32))
  err = float(np.max(np.abs(got - want) / (tol + tol * np.abs(want))))
  ok = bool(np.all(np.isfinite(got))) and err <= 1.0
  print(f"  {'ok ' if ok else 'FAIL'} {name}: max scaled error {err:.3g}")
  return ok


def correctness_checks(impl: str) -> bool:
  """Compiled kernels vs the xla implementation; True when all pass."""
  rng = np.random.default_rng(0)
  n, d, v = parse_shape(_CHECK_SHAPE.value)
  valid = v - min(10, v // 2)
  ok = True
  for dtype, tol in ((jnp.float32, 2e-4), (jnp.bfloat16, 2e-2)):
    h = jnp.asarray(rng.normal(size=(n, d)), dtype)
    w = jnp.asarray(rng.normal(size=(d, v)) / np.sqrt(d), dtype)
    y = jnp.asarray(rng.integers(0, valid, n), jnp.int32).at[0].set(-1)
    g = jnp.asarray(rng.normal(size=(2, n)), jnp.float32)
    for layout, weight in (("dv", w), ("vd", w.T)):
      outs = {}
      for path in (impl, "xla"):
        f = jax.jit(lambda h, w, path=path: kernels.linear_token_logprobs(  # pylint: disable=g-long-lambda
            h, w, y, 0.7, path, valid_vocab_size=valid, precision=HIGHEST))
        out, vjp = jax.vjp(f, h, weight)
        outs[path] = (*out, *vjp((g[0], g[1])))
      for name, a, b in zip(("logprobs", "entropy", "dhidden", "dweight"),
                            outs[impl], outs["xla"]):
        ok &= _close(f"linear {layout} {jnp.dtype(dtype).name} {name}", a, b,
                     tol)
    logits = jnp.asarray(rng.normal(size=(n, v)) * 3, dtype)
    outs = {}
    for path in (impl, "xla"):
      f = jax.jit(lambda x, path=path: kernels.token_logprobs(  # pylint: disable=g-long-lambda
          x, y, 1.3, path))
      out, vjp = jax.vjp(f, logits)
      outs[path] = (*out, *vjp((g[0], g[1])))
    for name, a, b in zip(("logprobs", "entropy", "dlogits"), outs[impl],
                          outs["xla"]):
      ok &= _close(f"logits {jnp.dtype(dtype).name} {name}", a, b, tol)
    stats = {path: jax.jit(lambda h, w, path=path: kernels.linear_token_stats(  # pylint: disable=g-long-lambda
        h, w, y, implementation=path, precision=HIGHEST))(h, w)
             for path in (impl, "xla")}
    for name in stats["xla"]:
      ok &= _close(f"stats {jnp.dtype(dtype).name} {name}", stats[impl][name],
                   stats["xla"][name], tol)
  return ok


def _median_ms(f, *args) -> float:
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def _temp_gib(f, *args) -> str:
  """XLA's compiled temporary bytes of `f` (per path, unlike the process-wide
  `peak_bytes_in_use`, which also holds earlier paths' peaks)."""
  analysis = f.lower(*args).compile().memory_analysis()
  if analysis is None:
    return "n/a"
  return f"{analysis.temp_size_in_bytes / 2**30:.2f}"


def timings(n: int, d: int, v: int, paths) -> bool:
  """Prints the timing table; False if any path failed to run."""
  rng = np.random.default_rng(1)
  key = jax.random.key(0)
  h = jax.random.normal(key, (n, d), jnp.bfloat16)
  w = (jax.random.normal(jax.random.fold_in(key, 1), (d, v), jnp.float32)
       / np.sqrt(d)).astype(jnp.bfloat16)
  y = jnp.asarray(rng.integers(0, v, n), jnp.int32)
  flops = 2.0 * n * d * v
  matmul_ms = _median_ms(jax.jit(lambda h, w: h @ w), h, w)
  print(f"\nbf16 N={n} D={d} V={v}; one hidden @ weight: {matmul_ms:.2f} ms "
        f"({flops / matmul_ms / 1e9:.0f} TFLOP/s)")
  print("| path | pass | ms | TFLOP/s | / matmul | temp memory GiB |")
  print("|---|---|---|---|---|---|")
  ok = True
  for path in paths:
    fwd = jax.jit(logprob_fn(path))

    def loss(h, w, y, path=path):
      lp, ent = logprob_fn(path)(h, w, y)
      return jnp.sum(lp) + 0.01 * jnp.sum(ent)

    both = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    for name, f, cost in (("fwd", fwd, flops), ("fwd+bwd", both, 4 * flops)):
      try:
        ms = _median_ms(f, h, w, y)
      except Exception as e:  # pylint: disable=broad-except
        print(f"| {path} | {name} | failed: {type(e).__name__}: "
              f"{str(e)[:200]} | | | |")
        ok = False
        continue
      print(f"| {path} | {name} | {ms:.2f} | {cost / ms / 1e9:.0f} | "
            f"{ms / matmul_ms:.2f} | {_temp_gib(f, h, w, y)} |", flush=True)
  return ok


def main(argv):
  del argv
  platform = _FORCE.value or "gpu"
  devices = [dev for dev in jax.devices() if dev.platform in (
      ("cuda", "rocm", "gpu") if platform == "gpu" else (platform,))]
  if not devices:
    print(f"No GPU found (devices: {jax.devices()}); nothing to check. "
          "Run on a CUDA machine, or pass --force_platform=cpu "
          "--check_impl=interpret for a dry run.")
    return 0
  print(f"device: {devices[0].device_kind} ({devices[0].platform}), jax "
        f"{jax.__version__}; checking implementation={_CHECK_IMPL.value}")
  if not correctness_checks(_CHECK_IMPL.value):
    print("CORRECTNESS FAILURE")
    sys.exit(1)
  print("all correctness checks passed")
  if not _SKIP_TIMING.value and not timings(*parse_shape(_SHAPE.value),
                                            _TIME_IMPLS.value):
    print("TIMING FAILURE")
    sys.exit(1)
  return 0


if __name__ == "__main__":
  app.run(main)
