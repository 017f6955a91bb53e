"""Pallas kernels: run by the interpreter (tiny shapes) and lowered for CUDA.

Interpret mode checks values and VJPs against the float64 reference;
`jax.export` for platforms=["cuda"] on the CPU host runs the Pallas->Triton
lowering, which enforces Triton's rules (power-of-two shapes, dot operand
layouts) that the interpreter accepts silently.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cajax_kernels as kernels
from cajax_kernels import _triton
from kernel_reference import make_data
from kernel_reference import ref_linear
from kernel_reference import ref_logits
from kernel_reference import to_f64

TINY = kernels.BlockSizes(block_n=8, block_v=16, block_d=8, vocab_split=32,
                          vocab_chunk=48)
TOL = dict(rtol=3e-5, atol=3e-5)
TRITON = "__gpu$xla.gpu.triton"


def _vjp(f, primals, cotangents):
  out, vjp = jax.vjp(f, *primals)
  return out, vjp(cotangents)


@pytest.mark.parametrize("layout,temperature", [("dv", 0.7), ("vd", 1.3)])
def test_interpret_linear_matches_float64(layout, temperature):
  n, d, v, valid = 19, 20, 70, 66
  h, w, labels, g_lp, g_h = make_data(n, d, v, seed=20)
  labels = labels.at[1].set(valid - 1).at[2].set(valid).at[3].set(-1)
  w_in = w if layout == "dv" else w.T
  f = jax.jit(lambda h, w: kernels.linear_token_logprobs(  # pylint: disable=g-long-lambda
      h, w, labels, temperature, "interpret", valid_vocab_size=valid,
      block_sizes=TINY))
  (lp, ent), (dh, dw) = _vjp(f, (h, w_in), (g_lp, g_h))
  ref, dh0, dw0 = ref_linear(to_f64(h), to_f64(w), labels, temperature, valid,
                             g_lp, g_h)
  np.testing.assert_allclose(lp, ref["logprobs"], **TOL)
  np.testing.assert_allclose(ent, ref["entropy"], **TOL)
  np.testing.assert_allclose(dh, dh0, **TOL)
  np.testing.assert_allclose(dw, dw0 if layout == "dv" else dw0.T, **TOL)


def test_interpret_logits_extreme_and_bf16():
  rng = np.random.default_rng(21)
  x = rng.uniform(-1e4, 1e4, size=(11, 40))
  x[3] = 0.0
  x[3, 7] = 1e4  # Peaked row.
  labels = jnp.asarray(rng.integers(0, 40, 11)).at[0].set(39).at[3].set(7)
  g = jnp.asarray(rng.normal(size=(2, 11)), jnp.float32)
  for dtype in (jnp.float32, jnp.bfloat16):
    xd = jnp.asarray(x, dtype)
    f = jax.jit(lambda x: kernels.token_logprobs(  # pylint: disable=g-long-lambda
        x, labels, 0.7, "interpret", block_sizes=TINY))
    (lp, ent), (dx,) = _vjp(f, (xd,), (g[0], g[1]))
    ref, dx0 = ref_logits(to_f64(xd), labels, 0.7, None, g[0], g[1])
    assert dx.dtype == dtype
    np.testing.assert_allclose(lp, ref["logprobs"], rtol=2e-5, atol=0.3)
    np.testing.assert_allclose(ent, ref["entropy"], rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(to_f64(dx), dx0, rtol=1e-2, atol=1e-2)
    assert float(lp[3]) == 0.0 and abs(float(ent[3])) < 1e-6


def test_interpret_stats_match_float64():
  h, w, labels, _, _ = make_data(13, 9, 50, seed=22)
  labels = labels.at[5].set(-3)
  out = jax.jit(lambda h, w: kernels.linear_token_stats(  # pylint: disable=g-long-lambda
      h, w.T, labels, temperature=1.3, implementation="interpret",
      valid_vocab_size=45, block_sizes=TINY))(h, w)
  ref, _, _ = ref_linear(to_f64(h), to_f64(w), labels, 1.3, 45)
  for name in kernels.api._common.STAT_NAMES:  # pylint: disable=protected-access
    np.testing.assert_allclose(out[name], ref[name], **TOL, err_msg=name)
  logits = jnp.asarray(to_f64(h) @ to_f64(w), jnp.float32)
  out = kernels.token_stats(logits, labels, stats=("self_certainty",),
                            implementation="interpret", block_sizes=TINY)
  ref, _ = ref_logits(to_f64(logits), labels, 1.0)
  np.testing.assert_allclose(out["self_certainty"], ref["self_certainty"],
                             **TOL)


# ------------------------------------------------------- CUDA lowering ---


def _export_cuda(f, *specs):
  exported = jax.export.export(
      jax.jit(f), platforms=["cuda"],
      disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(TRITON)])(
          *specs)
  return exported.mlir_module()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_every_kernel_lowers_for_cuda(dtype):
  n, d, v = 100, 200, 1000  # No dimension a multiple of any block.
  spec = jax.ShapeDtypeStruct
  h, y = spec((n, d), dtype), spec((n,), jnp.int32)

  def lin_loss(h, w, y):
    lp, ent = kernels.linear_token_logprobs(
        h, w, y, 1.3, "pallas_triton", valid_vocab_size=990)
    return jnp.sum(lp) + 0.01 * jnp.sum(ent)

  def logits_loss(x, y):
    lp, ent = kernels.token_logprobs(x, y, 0.7, "pallas_triton")
    return jnp.sum(lp) + 0.01 * jnp.sum(ent)

  for w in (spec((d, v), dtype), spec((v, d), dtype)):
    # Forward kernel + dz kernel (inside the chunk loop).
    assert _export_cuda(jax.grad(lin_loss, (0, 1)), h, w, y).count(TRITON) == 2
    stats = lambda h, w, y: kernels.linear_token_stats(  # pylint: disable=g-long-lambda
        h, w, y, implementation="pallas_triton")
    assert _export_cuda(stats, h, w, y).count(TRITON) == 1
  x = spec((n, v), dtype)
  assert _export_cuda(jax.grad(logits_loss), x, y).count(TRITON) == 2


def test_cuda_lowering_rejects_non_power_of_two_tiles():
  """The check interpret mode cannot make: a (24,)-row tile fails to lower."""
  spec = jax.ShapeDtypeStruct
  bad = kernels.BlockSizes(block_n=24)  # Bypasses BlockSizes.validate.

  def f(h, w, y):
    return _triton.forward_partials(
        h, w, y, jnp.int32(64), vmax=64, layout="dv", temperature=1.0,
        precision=None, extra=False, blocks=bad, interpret=False).s

  with pytest.raises(ValueError, match="power of 2"):
    _export_cuda(f, spec((30, 32), jnp.float32), spec((32, 64), jnp.float32),
                 spec((30,), jnp.int32))
