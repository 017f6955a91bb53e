"""Mosaic TPU kernels: run in TPU interpret mode on CPU, lowered for TPU.

TPU interpret mode (`pltpu.force_tpu_interpret_mode`) runs the
`"pallas_mosaic_tpu"` kernels on the CPU while simulating HBM, VMEM and SMEM
and the pipeline's block copies. Uninitialised memory reads as NaN, so a
missing mask on a partial block shows up as NaN; grid points along
"parallel" axes run in a random order (`random_seed`), and one test runs
two simulated cores with the race detector. Values and VJPs are compared
with the float64 reference and with the "xla" implementation on the same
inputs. Shapes are odd on purpose: N, V and D are not multiples of the
blocks (block_n=8, block_v=128, block_d=128), or smaller than one block.

`jax.export(..., platforms=["tpu"])` runs the Pallas-to-Mosaic lowering on
the CPU host, which checks what interpret mode accepts silently (block
shapes against the (8, 128) tiling, ops Mosaic cannot lower). libtpu's
compilation (layouts, VMEM overflow) and speed need a TPU.
"""

import re

import jax
from jax.experimental.pallas import tpu as pltpu
import jax.numpy as jnp
import numpy as np
import pytest

import cajax_kernels as kernels
from cajax_kernels import _common
from cajax_kernels import _mosaic_tpu
from kernel_reference import make_data
from kernel_reference import ref_linear
from kernel_reference import ref_logits
from kernel_reference import to_f64

TPU = "pallas_mosaic_tpu"
TINY = kernels.BlockSizes(block_n=8, block_v=128, block_d=128,
                          vocab_split=256, vocab_chunk=200)
F32_TOL = dict(rtol=3e-5, atol=3e-5)
BF16_GRAD_TOL = dict(rtol=2e-2, atol=2e-2)
_TPU_DEFAULTS = dict(block_n=256, block_v=512, block_d=512)


def _interpret(**params):
  return pltpu.force_tpu_interpret_mode(
      pltpu.InterpretParams(random_seed=5, **params))


def _run_both(fn, primals, cotangents):
  """(values, grads) of `fn(implementation)` for TPU-interpret and xla."""
  out = {}
  for impl in (TPU, "xla"):
    with _interpret():
      values, vjp = jax.vjp(jax.jit(fn(impl)), *primals)
      out[impl] = jax.block_until_ready((values, vjp(cotangents)))
  return out[TPU], out["xla"]


@pytest.mark.parametrize("layout,dtype,temperature,shape,valid", [
    # N, D, V past whole blocks with tails; the last vocab chunk clamped.
    ("dv", jnp.float32, 0.7, (19, 200, 300), 290),
    # Every dimension smaller than its block: blocks are the whole axes.
    ("vd", jnp.bfloat16, 1.3, (5, 20, 70), None),
])
def test_linear_matches_float64_and_xla(layout, dtype, temperature, shape,
                                        valid):
  n, d, v = shape
  h, w, labels, g_lp, g_h = make_data(n, d, v, seed=n + v, dtype=dtype)
  vmax = valid or v
  labels = labels.at[1].set(vmax - 1).at[2].set(vmax).at[3].set(-1)
  weight = w if layout == "dv" else w.T

  def fn(impl):
    return lambda h, w: kernels.linear_token_logprobs(
        h, w, labels, temperature, impl, valid_vocab_size=valid,
        block_sizes=TINY if impl == TPU else None)

  ((lp, ent), (dh, dw)), (xla_values, xla_grads) = _run_both(
      fn, (h, weight), (g_lp, g_h))
  ref, dh0, dw0 = ref_linear(to_f64(h), to_f64(w), labels, temperature,
                             valid, g_lp, g_h)
  dw0 = dw0 if layout == "dv" else dw0.T
  grad_tol = F32_TOL if dtype == jnp.float32 else BF16_GRAD_TOL
  assert lp.dtype == ent.dtype == jnp.float32
  assert dh.dtype == dw.dtype == dtype
  np.testing.assert_allclose(lp, ref["logprobs"], **F32_TOL)
  np.testing.assert_allclose(ent, ref["entropy"], **F32_TOL)
  np.testing.assert_allclose(to_f64(dh), dh0, **grad_tol)
  np.testing.assert_allclose(to_f64(dw), dw0, **grad_tol)
  assert lp[2] == 0 and lp[3] == 0  # Ignored labels.
  for got, want in zip((lp, ent, dh, dw), (*xla_values, *xla_grads)):
    np.testing.assert_allclose(to_f64(got), to_f64(want), **grad_tol)
  if valid is not None:  # Padded vocabulary columns get exactly 0.
    np.testing.assert_array_equal(to_f64(dw)[:, valid:], 0.0)


def test_logits_extreme_values_and_temperature():
  rng = np.random.default_rng(31)
  n, v, valid = 11, 150, 140
  x = rng.uniform(-1e4, 1e4, size=(n, v))
  x[3] = 0.0
  x[3, 7] = 1e4  # Peaked row: entropy 0.
  x = jnp.asarray(x, jnp.float32)
  labels = jnp.asarray(rng.integers(0, valid, n)).at[0].set(valid - 1)
  labels = labels.at[3].set(7).at[4].set(-100)
  g = jnp.asarray(rng.normal(size=(2, n)), jnp.float32)

  def fn(impl):
    return lambda x: kernels.token_logprobs(
        x, labels, 0.7, impl, valid_vocab_size=valid,
        block_sizes=TINY if impl == TPU else None)

  ((lp, ent), (dx,)), (xla_values, xla_grads) = _run_both(
      fn, (x,), (g[0], g[1]))
  ref, dx0 = ref_logits(to_f64(x), labels, 0.7, valid, g[0], g[1])
  np.testing.assert_allclose(lp, ref["logprobs"], rtol=2e-5, atol=0.3)
  np.testing.assert_allclose(ent, ref["entropy"], rtol=2e-5, atol=1e-4)
  np.testing.assert_allclose(dx, dx0, rtol=1e-5, atol=1e-5)
  assert float(lp[3]) == 0.0 and abs(float(ent[3])) < 1e-6
  for got, want in zip((lp, ent, dx), (*xla_values, *xla_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _races_found() -> bool:
  """Whether the race detector flagged the last interpreted kernel."""
  # No public accessor in jax 0.10; jax's own tests read this module.
  from jax._src.pallas.mosaic.interpret import interpret_pallas_call  # pylint: disable=g-import-not-at-top
  return interpret_pallas_call.races.races_found


def test_bf16_entropy_gradient_on_two_cores_has_no_races():
  # Only the entropy is differentiated: the log-prob cotangent is a
  # symbolic zero and the dz kernel is built without it.
  rng = np.random.default_rng(33)
  n, v = 16, 200  # Two row blocks (one per core), two vocabulary tiles.
  logits = jnp.asarray(rng.normal(size=(n, v)) * 3, jnp.bfloat16)
  labels = jnp.asarray(rng.integers(0, v, n), jnp.int32)
  g_h = jnp.asarray(rng.normal(size=n), jnp.float32)

  def entropy_loss(impl):
    return lambda x: jnp.sum(g_h * kernels.token_logprobs(
        x, labels, 1.3, impl, block_sizes=TINY if impl == TPU else None)[1])

  with _interpret(num_cores_or_threads=2, detect_races=True):
    entropy = kernels.token_stats(logits, labels, ("entropy",), 1.3, TPU,
                                  block_sizes=TINY)["entropy"]
    assert not _races_found()  # The forward kernel.
    dx = jax.jit(jax.grad(entropy_loss(TPU)))(logits)
    assert not _races_found()  # The dz kernel (the last one run).
  ref, dx0 = ref_logits(to_f64(logits), labels, 1.3, None, np.zeros(n), g_h)
  dx_xla = jax.jit(jax.grad(entropy_loss("xla")))(logits)
  np.testing.assert_allclose(entropy, ref["entropy"], **F32_TOL)
  assert dx.dtype == jnp.bfloat16
  np.testing.assert_allclose(to_f64(dx), dx0, **BF16_GRAD_TOL)
  np.testing.assert_allclose(to_f64(dx), to_f64(dx_xla), **BF16_GRAD_TOL)


def test_stats_match_float64():
  h, w, labels, _, _ = make_data(13, 9, 150, seed=34)
  labels = labels.at[5].set(-3)
  with _interpret():
    out = jax.jit(lambda h, w: kernels.linear_token_stats(
        h, w.T, labels, temperature=1.3, implementation=TPU,
        valid_vocab_size=145, block_sizes=TINY))(h, w)
  ref, _, _ = ref_linear(to_f64(h), to_f64(w), labels, 1.3, 145)
  assert set(out) == set(_common.STAT_NAMES)
  for name in _common.STAT_NAMES:
    np.testing.assert_allclose(out[name], ref[name], **F32_TOL,
                               err_msg=name)
  logits = jnp.asarray(to_f64(h) @ to_f64(w), jnp.float32)
  with _interpret():
    out = kernels.token_stats(logits, labels, stats=("self_certainty",),
                              implementation=TPU, block_sizes=TINY)
  ref, _ = ref_logits(to_f64(logits), labels, 1.0)
  np.testing.assert_allclose(out["self_certainty"], ref["self_certainty"],
                             **F32_TOL)


def test_bad_settings_raise_value_error():
  h, w, labels, _, _ = make_data(4, 3, 6, seed=35)
  for bad in (dict(block_n=12), dict(block_v=100), dict(block_d=64)):
    with pytest.raises(ValueError, match="multiple of"):
      kernels.linear_token_logprobs(
          h, w, labels, implementation=TPU,
          block_sizes=kernels.BlockSizes(**{**_TPU_DEFAULTS, **bad}))
  for precision in (jax.lax.Precision.HIGH, "bogus",
                    (jax.lax.Precision.HIGHEST, jax.lax.Precision.DEFAULT)):
    with pytest.raises(ValueError, match="precision"):
      kernels.linear_token_logprobs(h, w, labels, implementation=TPU,
                                    precision=precision)


def test_tpu_backend_defaults_to_mosaic(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert _common.default_implementation() == TPU
  assert kernels.BlockSizes.default(TPU) == kernels.BlockSizes(
      **_TPU_DEFAULTS)


# ------------------------------------------------------------ TPU lowering ---


def _export_tpu(f, *specs) -> str:
  return jax.export.export(jax.jit(f), platforms=["tpu"])(*specs).mlir_module()


def _scoped_vmem(module: str) -> list[int]:
  """VMEM limits the kernels request beyond the compiler's default."""
  sizes = []
  for config in re.findall(r'backend_config = "(\{\\22custom_call[^"]*)"',
                           module):
    text = config.replace("\\22", '"')
    sizes += [int(s) for s in re.findall(r'"size": (\d+)', text)]
  return sizes


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_every_kernel_lowers_for_tpu(dtype):
  n, d, v = 300, 700, 5000  # No dimension a multiple of a default block.
  spec = jax.ShapeDtypeStruct
  h, y = spec((n, d), dtype), spec((n,), jnp.int32)

  # Mosaic lowers DEFAULT and HIGHEST (the f32 case) matmul precision.
  precision = "highest" if dtype == jnp.float32 else None

  def lin_loss(h, w, y):
    lp, ent = kernels.linear_token_logprobs(h, w, y, 1.3, TPU,
                                            valid_vocab_size=4990,
                                            precision=precision)
    return jnp.sum(lp) + 0.01 * jnp.sum(ent)

  def logits_loss(x, y):
    lp, ent = kernels.token_logprobs(x, y, 0.7, TPU)
    return jnp.sum(lp) + 0.01 * jnp.sum(ent)

  calls = "tpu_custom_call"
  for w in (spec((d, v), dtype), spec((v, d), dtype)):
    # Forward kernel + dz kernel (inside the chunk loop).
    module = _export_tpu(jax.grad(lin_loss, (0, 1)), h, w, y)
    assert module.count(calls) == 2
    assert not _scoped_vmem(module)  # Defaults fit the default VMEM limit.
    stats = lambda h, w, y: kernels.linear_token_stats(  # pylint: disable=g-long-lambda
        h, w, y, implementation=TPU)
    assert _export_tpu(stats, h, w, y).count(calls) == 1
  assert _export_tpu(jax.grad(logits_loss), spec((n, v), dtype),
                     y).count(calls) == 2


def test_large_blocks_request_their_vmem_estimate():
  spec = jax.ShapeDtypeStruct
  blocks = kernels.BlockSizes(block_n=1024, block_v=2048, block_d=512)
  module = _export_tpu(
      lambda h, w, y: kernels.linear_token_logprobs(
          h, w, y, implementation=TPU, block_sizes=blocks),
      spec((4096, 4096), jnp.bfloat16), spec((4096, 32768), jnp.bfloat16),
      spec((4096,), jnp.int32))
  want = _mosaic_tpu.vmem_bytes(
      block_n=1024, block_v=2048, block_d=512, x_bytes=2, w_bytes=2,
      out_bytes=0, n_columns=5, accumulate=True)
  assert want > 16 * 2**20
  assert _scoped_vmem(module) == [want]


def test_mosaic_rejects_unaligned_block_at_lowering():
  """What interpret mode cannot check: a 100-column tile fails to lower."""
  bad = kernels.BlockSizes(block_n=8, block_v=100)  # Bypasses validate.

  def f(x, y):
    return _mosaic_tpu.forward_partials(
        x, None, y, jnp.int32(300), vmax=300, layout=None, temperature=1.0,
        precision=None, extra=False, blocks=bad).s

  spec = jax.ShapeDtypeStruct
  with pytest.raises(ValueError, match="divisible by 8 and 128"):
    _export_tpu(f, spec((16, 300), jnp.float32), spec((16,), jnp.int32))

