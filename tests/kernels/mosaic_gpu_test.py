"""The shared numerics inside a Mosaic GPU (Hopper) kernel.

There is no `pallas_mosaic_gpu` implementation yet (docs/kernels.md says
why): its values can only be checked on a Hopper GPU, because Mosaic GPU's
interpret mode in jax 0.10 cannot run such a kernel on a CPU. This file
holds the building block such an implementation needs, one tile kernel:
a wgmma logit tile [64, 128] accumulated over the hidden dimension, then
`_common.tile_partials` (forward statistics) and `_common.dz_tile` (logit
gradients) on the accumulator's register layout. On a CPU host the kernel
is lowered for CUDA with `jax.export`, which checks that the shared helpers
lower for Mosaic GPU; with a Hopper GPU its values are also checked.
"""

import functools

import jax
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu
import jax.numpy as jnp
import numpy as np
import pytest

from cajax_kernels import _common
from kernel_reference import make_data
from kernel_reference import ref_linear
from kernel_reference import ref_logits
from kernel_reference import to_f64

BLOCK_N, BLOCK_V = 64, 128  # One warpgroup's wgmma rows; one vocab tile.
SWIZZLE = 128  # Bytes: one swizzled SMEM row per depth step.
N_ROWS = 6  # labels, shift, log s, entropy, g_lp, g_h.


def _tile_kernel(h, w, rows, *, hi: int, temperature: float, layout: str):
  """Per-tile forward partials [tiles, N] (x4) and d logits [N, V].

  `rows` are f32[N] vectors: labels (bitcast int32), then the forward
  results and cotangents that `dz_tile` takes.
  """
  n, depth = h.shape
  vocab = w.shape[1] if layout == "dv" else w.shape[0]
  block_d = SWIZZLE // h.dtype.itemsize
  transforms = (plgpu.TilingTransform((8, block_d)),
                plgpu.SwizzleTransform(SWIZZLE))
  grid = (pl.cdiv(n, BLOCK_N), pl.cdiv(vocab, BLOCK_V))
  wgmma = plgpu.Layout.WGMMA

  def kernel(h_gmem, w_gmem, *refs):
    row_gmems, outs = refs[:N_ROWS], refs[N_ROWS:N_ROWS + 5]
    row_smem, dz_smem, stat_smem, barriers = refs[N_ROWS + 5:]
    i, j = lax.axis_index("rows"), lax.axis_index("tiles")
    row_slice = pl.ds(i * BLOCK_N, BLOCK_N)
    for r, row_gmem in enumerate(row_gmems):
      plgpu.copy_gmem_to_smem(row_gmem.at[row_slice], row_smem.at[r],
                              barriers.at[r])

    def logits(acc):
      def step(_, h_smem, w_smem):
        rhs = w_smem if layout == "dv" else plgpu.transpose_ref(w_smem, (1, 0))
        plgpu.wgmma(acc, h_smem, rhs)
        plgpu.wgmma_wait(0)

      if layout == "dv":
        w_spec = plgpu.BlockSpec((block_d, BLOCK_V), lambda k: (k, j),
                                 transforms=transforms)
      else:
        w_spec = plgpu.BlockSpec((BLOCK_V, block_d), lambda k: (j, k),
                                 transforms=transforms)
      plgpu.emit_pipeline(
          step, grid=(pl.cdiv(depth, block_d),), max_concurrent_steps=2,
          in_specs=[plgpu.BlockSpec((BLOCK_N, block_d), lambda k: (i, k),
                                    transforms=transforms), w_spec],
      )(h_gmem, w_gmem)
      return acc[...]

    raw = pl.run_scoped(logits, plgpu.ACC((BLOCK_N, BLOCK_V), jnp.float32))
    cols = j * BLOCK_V + plgpu.broadcasted_iota(
        jnp.int32, (BLOCK_N, BLOCK_V), 1, layout=wgmma)
    values = []
    for r in range(N_ROWS):
      plgpu.barrier_wait(barriers.at[r])
      values.append(plgpu.load(row_smem.at[r], (), layout=wgmma.reduce(1)))
    labels = lax.bitcast_convert_type(values[0], jnp.int32)
    partials = _common.tile_partials(raw, cols < hi, labels, cols,
                                     temperature, extra=False)
    dz = _common.dz_tile(raw, cols < hi, labels, cols, *values[1:],
                         temperature)
    for s, field in enumerate(partials[:4]):
      stat_smem.at[s][...] = field
    dz_smem[...] = dz.astype(dz_smem.dtype)
    plgpu.commit_smem()
    for s, out in enumerate(outs[:4]):
      plgpu.copy_smem_to_gmem(stat_smem.at[s], out.at[j, row_slice])
    plgpu.copy_smem_to_gmem(dz_smem,
                            outs[4].at[row_slice, pl.ds(j * BLOCK_V, BLOCK_V)])
    plgpu.wait_smem_to_gmem(0)

  stat = jax.ShapeDtypeStruct((grid[1], n), jnp.float32)
  return plgpu.kernel(
      kernel,
      out_type=[stat] * 4 + [jax.ShapeDtypeStruct((n, vocab), h.dtype)],
      scratch_types=[plgpu.SMEM((N_ROWS, BLOCK_N), jnp.float32),
                     plgpu.SMEM((BLOCK_N, BLOCK_V), h.dtype,
                                transforms=transforms),
                     plgpu.SMEM((4, BLOCK_N), jnp.float32),
                     plgpu.Barrier(num_barriers=N_ROWS)],
      grid=grid, grid_names=("rows", "tiles"))(h, w, *rows)


# TMA copies need every array dimension to be a multiple of its SMEM tiling
# (8 rows; 64 bf16 columns), so N, D and V are aligned here; V's tail past
# `hi` is masked as valid_vocab_size masks it.
N, D, V, HI = 104, 192, 320, 290
TEMPERATURE = 0.7


def _kernel_fn(layout: str):
  return jax.jit(functools.partial(_tile_kernel, hi=HI,
                                   temperature=TEMPERATURE, layout=layout))


@pytest.mark.parametrize("layout", ["dv", "vd"])
def test_shared_numerics_lower_in_a_mosaic_gpu_kernel(layout):
  spec = jax.ShapeDtypeStruct
  w_shape = (D, V) if layout == "dv" else (V, D)
  exported = jax.export.export(_kernel_fn(layout), platforms=["cuda"])(
      spec((N, D), jnp.bfloat16), spec(w_shape, jnp.bfloat16),
      [spec((N,), jnp.float32)] * N_ROWS)
  assert "mosaic_gpu" in exported.mlir_module()


def _hopper() -> bool:
  gpus = [d for d in jax.devices() if d.platform == "gpu"]
  return bool(gpus) and float(getattr(gpus[0], "compute_capability",
                                      "0")) >= 9.0


@pytest.mark.skipif(
    not _hopper(),
    reason="needs a Hopper-class GPU: Mosaic GPU interpret mode (jax 0.10) "
    "cannot run this kernel on a CPU (docs/kernels.md, Mosaic GPU)")
@pytest.mark.parametrize("layout", ["dv", "vd"])
def test_tile_kernel_matches_float64_on_hopper(layout):
  h, w, labels, g_lp, g_h = make_data(N, D, V, seed=40, dtype=jnp.bfloat16)
  labels = labels.at[1].set(HI - 1).at[2].set(HI).at[3].set(-1)
  ref, _, _ = ref_linear(to_f64(h), to_f64(w), labels, TEMPERATURE, HI,
                         g_lp, g_h)
  z = to_f64(h) @ to_f64(w)
  shift = np.max(z[:, :HI], axis=1)
  lse = shift / TEMPERATURE + np.log(np.sum(
      np.exp((z[:, :HI] - shift[:, None]) / TEMPERATURE), axis=1))
  log_s = lse - shift / TEMPERATURE
  g_lp = jnp.where(labels >= 0, g_lp, 0.0)
  rows = [lax.bitcast_convert_type(labels, jnp.float32)] + [
      jnp.asarray(r, jnp.float32) for r in (shift, log_s, ref["entropy"],
                                            g_lp, g_h)]
  *partials, dz = _kernel_fn(layout)(h, w if layout == "dv" else w.T, rows)
  merged = _common.combine_stacked(_common.Partials(*partials), TEMPERATURE)
  lp, entropy, _ = _common.finalize(
      merged, _common.label_valid(labels, HI), TEMPERATURE)
  np.testing.assert_allclose(lp, ref["logprobs"], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(entropy, ref["entropy"], rtol=1e-4, atol=1e-4)
  _, dz0 = ref_logits(z, labels, TEMPERATURE, HI, g_lp, g_h)
  np.testing.assert_allclose(to_f64(dz), dz0, rtol=2e-2, atol=2e-2)
