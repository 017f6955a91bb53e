"""Pallas-Triton kernels (whole-array refs, masked loads and stores).

JAX 0.11 deprecated Pallas's Triton backend; these kernels work with jax
0.10 and 0.11 (the range `pyproject.toml` allows) and stay while JAX ships
the backend.

Two kernels serve both the from-logits and the fused-linear paths:

* forward: grid (token blocks × vocab splits); each program loops over the
  `block_v` tiles of its split (for the linear path each tile is a K-loop of
  `dot`s over `block_d` columns of the hidden dimension) and writes partial
  statistics [S, N] that XLA merges (`_common.combine_stacked`).
* dz: grid (token blocks × vocab tiles) over one chunk of columns; it
  recomputes the tile and writes the logit gradient. The fused-linear
  backward runs it per vocab chunk and does the two matmuls in XLA
  (`_xla.linear_backward`).

`forward_partials`, `logits_dz` and `linear_dz_fn` are the interface that
`api` dispatches to (shared with `_mosaic_tpu`).

Every tile is masked by the global row / column index, so N, V and D need not
be multiples of the blocks. Dynamic scalars (chunk start, first counted
column, column limit) are passed in a small int32[4] `meta` array. The
Triton backend is selected explicitly with
`jax.experimental.pallas.triton.CompilerParams`; the module imports the
Pallas packages lazily so that `kernels` imports on any backend.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

from . import _common


def _pallas_modules():
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas import triton as pltriton  # pylint: disable=g-import-not-at-top
  return pl, pltriton


def _raw_block(x_ref, w_ref, r0, rmask, c0, cmask, *, bm, bv, bd, depth,
               layout, acc, precision):
  """Raw logits of rows [r0, r0+bm) × columns [c0, c0+bv) in `acc` dtype."""
  pl, pltriton = _pallas_modules()
  if w_ref is None:
    tile = pltriton.load(x_ref.at[pl.ds(r0, bm), pl.ds(c0, bv)],
                         mask=rmask[:, None] & cmask[None, :], other=0)
    return tile.astype(acc)
  mm = jnp.promote_types(x_ref.dtype, w_ref.dtype)

  def k_step(k, total):
    d0 = k * bd
    dmask = (d0 + jnp.arange(bd)) < depth
    hb = pltriton.load(x_ref.at[pl.ds(r0, bm), pl.ds(d0, bd)],
                       mask=rmask[:, None] & dmask[None, :], other=0)
    if layout == "dv":
      wb = pltriton.load(w_ref.at[pl.ds(d0, bd), pl.ds(c0, bv)],
                         mask=dmask[:, None] & cmask[None, :], other=0)
      contract = (0,)
    else:
      wb = pltriton.load(w_ref.at[pl.ds(c0, bv), pl.ds(d0, bd)],
                         mask=cmask[:, None] & dmask[None, :], other=0)
      contract = (1,)
    return total + lax.dot_general(
        hb.astype(mm), wb.astype(mm), (((1,), contract), ((), ())),
        precision=precision, preferred_element_type=acc)

  return lax.fori_loop(0, _common.cdiv(depth, bd), k_step,
                       jnp.zeros((bm, bv), acc))


def _split_refs(refs, linear: bool, n_rows_inputs: int):
  """(meta, x, w or None, row inputs, outputs) from a flat ref list."""
  meta, x = refs[0], refs[1]
  rest = refs[2:]
  w = None
  if linear:
    w, rest = rest[0], rest[1:]
  return meta, x, w, rest[:n_rows_inputs], rest[n_rows_inputs:]


def _forward_kernel(*refs, n_rows, depth, bm, bv, bd, tiles_per_split,
                    layout, acc, precision, temperature, extra):
  pl, pltriton = _pallas_modules()
  meta_ref, x_ref, w_ref, (y_ref,), out_refs = _split_refs(
      refs, layout is not None, 1)
  r0 = pl.program_id(0) * bm
  split = pl.program_id(1)
  rmask = (r0 + jnp.arange(bm)) < n_rows
  hi = meta_ref[0]
  labels = pltriton.load(y_ref.at[pl.ds(r0, bm)], mask=rmask, other=-1)

  def v_step(b, total):
    c0 = (split * tiles_per_split + b) * bv
    cols = c0 + jnp.arange(bv)
    cmask = cols < hi
    raw = _raw_block(x_ref, w_ref, r0, rmask, c0, cmask, bm=bm, bv=bv, bd=bd,
                     depth=depth, layout=layout, acc=acc, precision=precision)
    tile = _common.tile_partials(raw, cmask[None, :], labels, cols[None, :],
                                 temperature, extra)
    return _common.merge_two(total, tile, temperature)

  total = lax.fori_loop(0, tiles_per_split, v_step,
                        _common.empty_partials(bm, extra, acc))
  fields = [f for f in total if f is not None]
  for ref, value in zip(out_refs, fields):
    pltriton.store(ref.at[split, pl.ds(r0, bm)], value, mask=rmask)


def _dz_kernel(*refs, n_rows, depth, width, bm, bv, bd, layout, acc,
               precision, temperature, has_lp, has_h):
  pl, pltriton = _pallas_modules()
  n_in = 4 + int(has_lp) + int(has_h)
  meta_ref, x_ref, w_ref, row_refs, (out_ref,) = _split_refs(
      refs, layout is not None, n_in)
  c0, lo, hi = meta_ref[0], meta_ref[1], meta_ref[2]
  r0 = pl.program_id(0) * bm
  rmask = (r0 + jnp.arange(bm)) < n_rows
  local = pl.program_id(1) * bv + jnp.arange(bv)
  inside = local < width
  cols = c0 + local
  valid = inside & (cols >= lo) & (cols < hi)
  raw = _raw_block(x_ref, w_ref, r0, rmask, c0 + pl.program_id(1) * bv,
                   valid, bm=bm, bv=bv, bd=bd, depth=depth, layout=layout,
                   acc=acc, precision=precision)
  rows = [pltriton.load(ref.at[pl.ds(r0, bm)], mask=rmask, other=0)
          for ref in row_refs]
  labels, shift, log_s, entropy = rows[:4]
  g_lp = rows[4] if has_lp else None
  g_h = rows[-1] if has_h else None
  dz = _common.dz_tile(raw, valid[None, :], labels, cols[None, :], shift,
                       log_s, entropy, g_lp, g_h, temperature)
  pltriton.store(out_ref.at[pl.ds(r0, bm), pl.ds(pl.program_id(1) * bv, bv)],
                 dz.astype(out_ref.dtype),
                 mask=rmask[:, None] & inside[None, :])


def _call(kernel, out_shape, grid, blocks: _common.BlockSizes,
          interpret: bool, name: str, inputs):
  """Runs `pallas_call` on `inputs`; under shard_map, outputs vary like them."""
  pl, pltriton = _pallas_modules()
  inputs, out_shape = _common.varying_call(inputs, out_shape)
  return pl.pallas_call(
      kernel, out_shape=out_shape, grid=grid, interpret=interpret, name=name,
      compiler_params=pltriton.CompilerParams(
          num_warps=blocks.num_warps, num_stages=blocks.num_stages))(*inputs)


def _geometry(x, w):
  """(hidden size or 0 for logits, accumulation dtype)."""
  return 0 if w is None else x.shape[1], _common.acc_dtype(x)


def forward_partials(x, w, labels, hi, *, vmax: int, layout: str | None,
                     temperature: float, precision, extra: bool,
                     blocks: _common.BlockSizes, interpret: bool
                     ) -> _common.Partials:
  """Pallas version of `_xla.partials` (same arguments and result)."""
  n = x.shape[0]
  bm, bv = blocks.block_n, blocks.block_v
  depth, acc = _geometry(x, w)
  tiles, n_splits = _common.split_geometry(vmax, blocks.vocab_split, bv)
  kernel = functools.partial(
      _forward_kernel, n_rows=n, depth=depth, bm=bm, bv=bv,
      bd=blocks.block_d, tiles_per_split=tiles, layout=layout, acc=acc,
      precision=precision, temperature=temperature, extra=extra)
  n_out = 6 if extra else 4
  out_shape = [jax.ShapeDtypeStruct((n_splits, n), acc)] * n_out
  inputs = [_common.make_meta(jnp.minimum(hi, vmax)), x]
  inputs += [] if w is None else [w]
  outs = _call(kernel, out_shape, (_common.cdiv(n, bm), n_splits), blocks,
               interpret, "token_stats_fwd",
               inputs + [labels.astype(jnp.int32)])
  return _common.combine_stacked(_common.Partials(*outs), temperature)


def dz(x, w, labels, shift, log_s, entropy, g_lp, g_h, meta, *, width: int,
       layout: str | None, temperature: float, precision, out_dtype,
       blocks: _common.BlockSizes, interpret: bool):
  """Logit gradients of columns [c0, c0 + width) as [N, width] `out_dtype`.

  `meta` = (c0, lo, hi, 0): columns < lo or >= hi get 0.
  """
  n = x.shape[0]
  depth, acc = _geometry(x, w)
  kernel = functools.partial(
      _dz_kernel, n_rows=n, depth=depth, width=width, bm=blocks.block_n,
      bv=blocks.block_v, bd=blocks.block_d, layout=layout, acc=acc,
      precision=precision, temperature=temperature,
      has_lp=g_lp is not None, has_h=g_h is not None)
  rows = [labels.astype(jnp.int32), shift, log_s, entropy] + [
      g for g in (g_lp, g_h) if g is not None]
  inputs = [meta, x] + ([] if w is None else [w]) + rows
  grid = (_common.cdiv(n, blocks.block_n), _common.cdiv(width, blocks.block_v))
  return _call(kernel, jax.ShapeDtypeStruct((n, width), out_dtype), grid,
               blocks, interpret, "token_stats_dz", inputs)


def logits_dz(x, labels, shift, log_s, entropy, g_lp, g_h, hi, *,
              temperature: float, blocks: _common.BlockSizes,
              interpret: bool):
  """d logits [N, V] in the logits dtype (columns >= hi get 0)."""
  return dz(x, None, labels, shift, log_s, entropy, g_lp, g_h,
            _common.make_meta(0, 0, hi), width=x.shape[1], layout=None,
            temperature=temperature, precision=None, out_dtype=x.dtype,
            blocks=blocks, interpret=interpret)


def linear_dz_fn(h, w, labels, shift, log_s, entropy, g_lp, g_h, hi, *,
                 vmax: int, size: int, **kwargs):
  """Returns dz(c, wc) -> [N, size] for chunk c of the fused-linear backward.

  The kernel reads the chunk's columns from the whole weight, so the
  chunk's weight slice `wc` is unused.
  """

  def chunk_dz(c, wc):
    del wc
    c0 = jnp.minimum(c * size, vmax - size)
    return dz(h, w, labels, shift, log_s, entropy, g_lp, g_h,
              _common.make_meta(c0, c * size, hi), width=size,
              out_dtype=jnp.result_type(h, w), **kwargs)

  return chunk_dz
