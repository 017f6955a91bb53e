r"""One GPU run: kernel checks, kernel timings, estimator timings, one table.

1. Correctness at small shapes: values and gradients of
   `linear_token_logprobs` ([D, V] and [V, D] weights), `token_logprobs` and
   `linear_token_stats` with the compiled kernels, against the "xla"
   implementation (matmuls at precision HIGHEST). Exits 1 on a mismatch.
2. Kernel timing at the Qwen2.5-7B head shape in bf16 (N=16384, D=3584,
   V=152064): forward and forward+backward of Σ log p + 0.01·Σ H for
   pallas_triton, xla and the naive materialised log_softmax, with ms,
   TFLOP/s (2NDV forward, 8NDV forward+backward with recomputation), XLA's
   compiled temporary memory per path and the ratio to one plain
   `hidden @ weight` matmul.
3. Every registered estimator, jitted, at B=512, T=4096 and B=64, T=32768,
   against the same-bytes elementwise floor of `experiments.bench_advantages`
   (interleaved rounds, each side's best round median).

Estimator rows take the shared benchmark flags of `experiments.timing`
(--shapes, --rounds, --repeats; --repeats also sets the kernel timings')
and --only. Steps 2 and 3 print one markdown table
(kernel rows compare with the matmul, estimator rows with the floor) and
the run's wall time, meant to take under 5 minutes on one H100-class GPU
(not yet measured: no GPU was available). Exits 1 if any path fails to
run.

Without a GPU it prints a message and exits 0. On a TPU,
`--force_platform=tpu --check_impl=pallas_mosaic_tpu
--time_implementations=pallas_mosaic_tpu,xla,naive` runs the same checks and
table for the Mosaic TPU kernels. Dry runs without a device:
`--force_platform=cpu --check_impl=interpret` with tiny shapes runs every
code path on CPU (the smoke test does that), and `--lower_platform=cuda`
(or `tpu`, with pallas_mosaic_tpu among the timed paths) lowers every timed
function with `jax.export` (no device needed).

  python -m experiments.gpu_check
  python -m experiments.gpu_check --shape=8192x4096x131072 --repeats=5
  python -m experiments.gpu_check --force_platform=cpu \
      --check_impl=interpret --shape=64x32x256 --check_shape=16x8x40 \
      --shapes=16x64 --rounds=1 --time_implementations=xla,naive
  python -m experiments.gpu_check --lower_platform=cuda
  python -m experiments.gpu_check --lower_platform=tpu \
      --time_implementations=pallas_mosaic_tpu,xla,naive
"""

import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import cajax
from cajax import testing
import cajax_kernels as kernels
from experiments import bench_advantages
from experiments import timing
from experiments.kernel_baselines import naive_logprobs

__all__ = [
    "HIGHEST", "correctness_checks", "define_flags", "estimator_rows",
    "kernel_rows", "logprob_fn", "lower_all", "main",
]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """This program's flags and the shared benchmark flags (--shapes: BxT of
  the estimator rows, empty for none; --rounds; --repeats, also of the
  kernel timings)."""
  timing.define_flags(shapes=["512x4096", "64x32768"], rounds=9, repeats=7,
                      flag_values=flag_values)
  flags.DEFINE_list("only", [], "estimator names (default: all).",
                    flag_values=flag_values)
  flags.DEFINE_string("shape", "16384x3584x152064",
                      "NxDxV of the timing run.", flag_values=flag_values)
  flags.DEFINE_string("force_platform", "", "run even without a GPU on this "
                      "platform (e.g. cpu, for a dry run).",
                      flag_values=flag_values)
  flags.DEFINE_string("check_impl", "pallas_triton",
                      "implementation under test.", flag_values=flag_values)
  flags.DEFINE_list("time_implementations", ["pallas_triton", "xla", "naive"],
                    "paths to time ('naive' = materialised log_softmax).",
                    flag_values=flag_values)
  flags.DEFINE_string("check_shape", "300x136x5000",
                      "NxDxV of the correctness checks.",
                      flag_values=flag_values)
  flags.DEFINE_bool("skip_timing", False, "only run checks.",
                    flag_values=flag_values)
  flags.DEFINE_string("lower_platform", "",
                      "only lower every timed function for this platform "
                      "with jax.export (e.g. cuda; no device needed) and "
                      "report.", flag_values=flag_values)

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


def correctness_checks(impl: str, check_shape: str) -> bool:
  """Compiled kernels vs the xla implementation at NxDxV `check_shape`;
  True when all pass."""
  rng = np.random.default_rng(0)
  n, d, v = timing.parse_shape(check_shape)
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


def _temp_gib(f, *args) -> str:
  """XLA's compiled temporary bytes of `f` (per path, unlike the process-wide
  `peak_bytes_in_use`, which also holds earlier paths' peaks)."""
  analysis = f.lower(*args).compile().memory_analysis()
  if analysis is None:
    return "n/a"
  return f"{analysis.temp_size_in_bytes / 2**30:.2f}"


def _kernel_inputs(n: int, d: int, v: int):
  key = jax.random.key(0)
  h = jax.random.normal(key, (n, d), jnp.bfloat16)
  w = (jax.random.normal(jax.random.fold_in(key, 1), (d, v), jnp.float32)
       / np.sqrt(d)).astype(jnp.bfloat16)
  y = jax.random.randint(jax.random.fold_in(key, 2), (n,), 0, v, jnp.int32)
  return h, w, y


def _kernel_fns(path: str):
  """(pass name, jitted fn, FLOPs multiple of 2NDV) for one path."""

  def loss(h, w, y):
    lp, ent = logprob_fn(path)(h, w, y)
    return jnp.sum(lp) + 0.01 * jnp.sum(ent)

  return (("fwd", jax.jit(logprob_fn(path)), 1),
          ("fwd+bwd", jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), 4))


def kernel_rows(n: int, d: int, v: int, paths,
                repeats: int) -> tuple[list[str], bool]:
  """Table rows of the kernel timings; False if any path failed to run."""
  h, w, y = _kernel_inputs(n, d, v)
  flops = 2.0 * n * d * v
  matmul_ms = timing.median_ms(jax.jit(lambda h, w: h @ w), h, w,
                               repeats=repeats)
  shape = f"{n}x{d}x{v}"
  rows = [f"| hidden @ weight (bf16) | {shape} | | {matmul_ms:.3f} | | 1.00 "
          f"| {flops / matmul_ms / 1e9:.0f} TFLOP/s |"]
  ok = True
  for path in paths:
    for name, f, multiple in _kernel_fns(path):
      try:
        ms = timing.median_ms(f, h, w, y, repeats=repeats)
      except Exception as e:  # pylint: disable=broad-except
        rows.append(f"| {path} | {shape} | {name} | failed: "
                    f"{type(e).__name__}: {str(e)[:120]} | | | |")
        ok = False
        continue
      rows.append(
          f"| {path} | {shape} | {name} | {ms:.3f} | {matmul_ms:.3f} | "
          f"{ms / matmul_ms:.2f} | {multiple * flops / ms / 1e9:.0f} "
          f"TFLOP/s, temp {_temp_gib(f, h, w, y)} GiB |")
      print(f"  timed {path} {name}: {ms:.3f} ms", flush=True)
    jax.clear_caches()  # one path's executables at a time (performance.md)
  return rows, ok


def _rollouts(text: str):
  batch, length = timing.parse_shape(text)
  return testing.make_rollouts(
      batch=batch, length=length, group_size=min(8, batch), num_steps=16,
      seed=0)


def estimator_rows(shapes, names, rounds: int,
                   repeats: int) -> tuple[list[str], bool]:
  """Table rows of every estimator against its floor at each shape."""
  rows, ok = [], True
  for text in shapes:
    rollouts = _rollouts(text)
    for name in names:
      try:
        fn, floor, args, floor_args = bench_advantages.make_case(name,
                                                                 rollouts)
        ms, floor_ms = timing.time_pair(fn, args, floor, floor_args, rounds,
                                        repeats)
      except Exception as e:  # pylint: disable=broad-except
        rows.append(f"| {name} | {text} | advantages | failed: "
                    f"{type(e).__name__}: {str(e)[:120]} | | | |")
        ok = False
        continue
      rows.append(f"| {name} | {text} | advantages | {ms:.3f} | "
                  f"{floor_ms:.3f} | {ms / floor_ms:.2f} | vs floor |")
      print(f"  timed {name} {text}: {ms:.3f} ms, floor {floor_ms:.3f} ms",
            flush=True)
      # One case's executables at a time (memory maps, performance.md).
      jax.clear_caches()
  return rows, ok


def lower_all(platform: str, check_shape: str, paths, shapes,
              names) -> bool:
  """Lowers every timed function for `platform` with jax.export: the
  kernel paths at NxDxV `check_shape`, the estimators `names` at the first
  of the BxT `shapes`."""
  from jax import export  # pylint: disable=g-import-not-at-top
  # Pallas-Triton kernels are custom calls without serialisation
  # guarantees; lowering them is the check here, not shipping them.
  unchecked = [export.DisabledSafetyCheck.custom_call(
      "__gpu$xla.gpu.triton")]
  specs = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in
                _kernel_inputs(*timing.parse_shape(check_shape)))
  cases = [(f"{path} {name}", f, specs)
           for path in paths for name, f, _ in _kernel_fns(path)]
  for text in shapes[:1]:
    rollouts = _rollouts(text)
    for name in names:
      fn, floor, args, floor_args = bench_advantages.make_case(name, rollouts)
      cases += [(f"{name} {text}", fn, args),
                (f"{name} floor {text}", floor, floor_args)]
  ok = True
  for label, f, args in cases:
    try:
      export.export(f, platforms=[platform], disabled_checks=unchecked)(
          *args)
      print(f"  ok   lowered for {platform}: {label}")
    except Exception as e:  # pylint: disable=broad-except
      print(f"  FAIL lowering for {platform}: {label}: {type(e).__name__}: "
            f"{str(e)[:300]}")
      ok = False
  return ok


def main(argv):
  del argv
  f = flags.FLAGS
  start = time.perf_counter()
  names = f.only or list(cajax.estimator_names())
  if f.lower_platform:
    ok = lower_all(f.lower_platform, f.check_shape, f.time_implementations,
                   f.shapes, names)
    print("all lowered" if ok else "LOWERING FAILURE")
    sys.exit(0 if ok else 1)
  platform = f.force_platform or "gpu"
  devices = [dev for dev in jax.devices() if dev.platform in (
      ("cuda", "rocm", "gpu") if platform == "gpu" else (platform,))]
  if not devices:
    print(f"No GPU found (devices: {jax.devices()}); nothing to check. "
          "Run on a CUDA machine, pass --force_platform=tpu "
          "--check_impl=pallas_mosaic_tpu on a TPU, or --force_platform=cpu "
          "--check_impl=interpret for a dry run.")
    return 0
  print(f"device: {devices[0].device_kind} ({devices[0].platform}), jax "
        f"{jax.__version__}; checking implementation={f.check_impl}")
  if not correctness_checks(f.check_impl, f.check_shape):
    print("CORRECTNESS FAILURE")
    sys.exit(1)
  print("all correctness checks passed")
  if f.skip_timing:
    return 0
  kernels_rows, kernels_ok = kernel_rows(*timing.parse_shape(f.shape),
                                         f.time_implementations, f.repeats)
  estimators_rows, estimators_ok = estimator_rows(f.shapes, names, f.rounds,
                                                  f.repeats)
  print(f"\n{devices[0].device_kind}, jax {jax.__version__}; kernel rows: "
        f"bf16, ratio to one hidden @ weight; estimator rows: ratio to the "
        f"same-bytes floor ({f.rounds} rounds x {f.repeats} "
        f"repeats, best round median)\n")
  print("| path or estimator | shape | pass | ms | matmul or floor ms | "
        "ratio | notes |")
  print("|---|---|---|---:|---:|---:|---|")
  print("\n".join(kernels_rows + estimators_rows))
  print(f"\nwall time of this run: {time.perf_counter() - start:.0f} s")
  if not (kernels_ok and estimators_ok):
    print("TIMING FAILURE")
    sys.exit(1)
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
