"""Smoke tests of experiments.bench_kernels and experiments.gpu_check on CPU."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(*args):
  # This checkout's kernels, not an installed copy.
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT / "kernels"))
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)


def test_gpu_check_without_gpu_exits_zero_with_message():
  result = _run("experiments.gpu_check")
  assert result.returncode == 0, result.stderr
  assert "No GPU found" in result.stdout


def test_gpu_check_cpu_dry_run_with_interpreted_kernels():
  result = _run("experiments.gpu_check", "--force_platform=cpu",
                "--check_impl=interpret", "--check_shape=12x16x40",
                "--shape=32x16x64", "--repeats=1",
                "--time_implementations=xla,naive,interpret",
                "--shapes=16x64", "--only=grpo,pure", "--rounds=1")
  assert result.returncode == 0, result.stdout + result.stderr
  assert "all correctness checks passed" in result.stdout
  assert "FAIL" not in result.stdout
  # One table: 3 paths x 2 passes, the matmul row, 2 estimator rows.
  assert result.stdout.count("| fwd+bwd |") == 3
  assert result.stdout.count("| 16x64 | advantages |") == 2
  assert sum(line.startswith("|---") for line in
             result.stdout.splitlines()) == 1


def test_gpu_check_lowers_for_cuda_without_a_device():
  result = _run("experiments.gpu_check", "--lower_platform=cuda",
                "--check_shape=12x16x40", "--shapes=16x64",
                "--only=grpo,pure,matchtir",
                "--time_implementations=pallas_triton,xla")
  assert result.returncode == 0, result.stdout + result.stderr
  assert "all lowered" in result.stdout
  assert result.stdout.count("  ok   lowered for cuda") == 4 + 6


def test_gpu_check_lowers_mosaic_tpu_for_tpu_without_a_device():
  result = _run("experiments.gpu_check", "--lower_platform=tpu",
                "--check_shape=12x16x40", "--shapes=",
                "--time_implementations=pallas_mosaic_tpu,xla")
  assert result.returncode == 0, result.stdout + result.stderr
  assert "all lowered" in result.stdout
  assert result.stdout.count("  ok   lowered for tpu: pallas_mosaic_tpu") == 2


def test_bench_kernels_reports_memory_fractions(tmp_path):
  out = tmp_path / "bench.md"
  result = _run("experiments.bench_kernels", "--shapes=64x32x512",
                "--implementations=xla,interpret", "--time_shape=32x16x128",
                "--repeats=1", f"--out={out}")
  assert result.returncode == 0, result.stdout + result.stderr
  text = out.read_text()
  for path in ("naive log_softmax", "| xla |", "| interpret |"):
    assert path in text
  assert "%" in text and "median ms" in text
  assert "does not compile" not in text
