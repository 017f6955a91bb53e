"""Pallas Mosaic TPU kernels: VMEM tiles pipelined by BlockSpecs.

A TPU TensorCore runs a Pallas grid sequentially. Before each step the
pipeline copies the blocks that step reads from HBM into VMEM (double
buffered, so the next step's copy overlaps this step's compute), and it
writes an output block back to HBM when the block's index changes. Both
kernels are built on that:

* forward: grid (vocab splits, token blocks, vocab tiles, depth steps). The
  output block of a (split, token block), its rows' online statistics as
  [block_n, 1] columns, stays in VMEM while the split's vocabulary tiles
  stream through, so the online log-sum-exp updates the output block in
  place. The splits' partials are merged in XLA
  (`_common.combine_stacked`), as on Triton. On the fused linear path a
  vocabulary tile is the sum over depth steps of [block_n, block_d] x
  [block_d, block_v] products, accumulated in f32 in a VMEM scratch tile.
* dz: grid (token blocks, vocab tiles, depth steps) over one chunk of
  columns: it recomputes the logit tile and writes its gradient. The
  fused-linear backward runs it once per vocabulary chunk and leaves the
  two matmuls to XLA (`_xla.linear_backward`).

The column window (first column, first and last counted column) is
scalar-prefetched into SMEM; the forward's index maps read it to stop
fetching tiles past the valid vocabulary. A block along an axis shorter
than the block size is the whole axis (Mosaic accepts a block equal to the
array dimension). A partial last block reads unspecified values past the
array's end (NaN under TPU interpret mode), so every tile is masked by its
global column and depth index before a reduction or a dot. Rows past N are
computed on such values but never written back.

`forward_partials`, `logits_dz` and `linear_dz_fn` mirror `_triton`'s.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

from . import _common

_MIB = 2**20
# The smallest default scoped-VMEM limit among TPU generations (v4, v5e).
_DEFAULT_SCOPED_VMEM = 16 * _MIB
# An [R, 1] f32 column occupies a full 128-lane row per sublane in VMEM.
_LANES = 128
# f32 [block_n, block_v] temporaries alive in the epilogue (logits, exp,
# masks), counted by `vmem_bytes`.
_EPILOGUE_TILES = 4


def _pallas_modules():
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top
  return pl, pltpu


def _iota(shape, axis: int):
  return lax.broadcasted_iota(jnp.int32, shape, axis)


def vmem_bytes(*, block_n: int, block_v: int, block_d: int, x_bytes: int,
               w_bytes: int, out_bytes: int, n_columns: int,
               accumulate: bool) -> int:
  """Estimated VMEM of one kernel: pipeline buffers, scratch, temporaries.

  Args:
    block_n, block_v, block_d: the kernel's block shape (block_d 0 on the
      from-logits path, whose x block is [block_n, block_v]).
    x_bytes, w_bytes: item sizes of the logits or hidden and of the weight.
    out_bytes: item size of a [block_n, block_v] output block (0: none).
    n_columns: [block_n, 1] input and output columns (labels, statistics).
    accumulate: the f32 [block_n, block_v] depth accumulator is allocated.

  Returns:
    Bytes; every pipelined block counts twice (double buffering).
  """
  if block_d:
    blocks = block_n * block_d * x_bytes + block_d * block_v * w_bytes
  else:
    blocks = block_n * block_v * x_bytes
  blocks += block_n * block_v * out_bytes + n_columns * block_n * _LANES * 4
  tile = block_n * block_v * 4
  return 2 * blocks + tile * (_EPILOGUE_TILES + int(accumulate))


def _product(h, w, k, *, layout: str, depth: int, acc, precision):
  """f32 product of depth step k: h [bm, bd] with w [bd, bv] or [bv, bd]."""
  bd = h.shape[1]
  if depth % bd:
    # The last depth block reads past D: zero both operands there (its
    # values are unspecified, and 0 · NaN is NaN).
    d0 = k * bd
    h = jnp.where(d0 + _iota((1, bd), 1) < depth, h, 0)
    w_depth = _iota((bd, 1), 0) if layout == "dv" else _iota((1, bd), 1)
    w = jnp.where(d0 + w_depth < depth, w, 0)
  mm = jnp.promote_types(h.dtype, w.dtype)
  contract = (0,) if layout == "dv" else (1,)
  return lax.dot_general(h.astype(mm), w.astype(mm),
                         (((1,), contract), ((), ())), precision=precision,
                         preferred_element_type=acc)


def _with_logits(finish, x_ref, w_ref, acc_ref, k, *, n_depth: int, acc,
                 **product_kw):
  """Calls finish(raw logits [bm, bv], f32) once the tile is complete.

  From logits (`w_ref` None) the tile is the block itself. On the fused
  linear path, depth step k adds its product to the f32 VMEM accumulator;
  the last step passes the completed sum to `finish`.
  """
  pl, _ = _pallas_modules()
  if w_ref is None:
    finish(x_ref[...].astype(acc))
    return
  product = _product(x_ref[...], w_ref[...], k, acc=acc, **product_kw)
  if n_depth == 1:
    finish(product)
    return

  @pl.when(k == 0)
  def _first():
    acc_ref[...] = product

  @pl.when((k > 0) & (k < n_depth - 1))
  def _middle():
    acc_ref[...] += product

  @pl.when(k == n_depth - 1)
  def _last():
    finish(acc_ref[...] + product)


def _present(partials: _common.Partials):
  return [f for f in partials if f is not None]


def _split_refs(refs, *, linear: bool, n_rows: int, n_out: int):
  """(x, w or None, row inputs, outputs, accumulator or None) of a kernel."""
  x_ref, w_ref = refs[0], refs[1] if linear else None
  refs = refs[1 + int(linear):]
  scratch = refs[n_rows + n_out:]
  return (x_ref, w_ref, refs[:n_rows], refs[n_rows:n_rows + n_out],
          scratch[0] if scratch else None)


def _forward_kernel(meta_ref, *refs, linear: bool, n_out: int, tiles: int,
                    bv: int, n_depth: int, temperature: float, extra: bool,
                    **logits_kw):
  pl, _ = _pallas_modules()
  x_ref, w_ref, (y_ref,), out_refs, acc_ref = _split_refs(
      refs, linear=linear, n_rows=1, n_out=n_out)
  j = pl.program_id(2)
  k = pl.program_id(3) if linear else 0
  c0 = (pl.program_id(0) * tiles + j) * bv
  hi = meta_ref[0]

  @pl.when((j == 0) & (k == 0))
  def _init():
    empty = _common.empty_partials(out_refs[0].shape, extra,
                                   out_refs[0].dtype)
    for ref, value in zip(out_refs, _present(empty)):
      ref[...] = value

  def finish(raw):
    cols = c0 + _iota((1, bv), 1)
    tile = _common.tile_partials(raw, cols < hi, y_ref[...], cols,
                                 temperature, extra)
    old = _common.Partials(*(ref[...] for ref in out_refs))
    merged = _common.merge_two(old, tile, temperature)
    for ref, value in zip(out_refs, _present(merged)):
      ref[...] = value

  @pl.when(c0 < hi)
  def _live_tile():
    _with_logits(finish, x_ref, w_ref, acc_ref, k, n_depth=n_depth,
                 **logits_kw)


def _dz_kernel(meta_ref, *refs, linear: bool, has_lp: bool, has_h: bool,
               bv: int, n_depth: int, temperature: float, **logits_kw):
  pl, _ = _pallas_modules()
  x_ref, w_ref, row_refs, (out_ref,), acc_ref = _split_refs(
      refs, linear=linear, n_rows=4 + int(has_lp) + int(has_h), n_out=1)
  j = pl.program_id(1)
  k = pl.program_id(2) if linear else 0
  c0, lo, hi = meta_ref[0], meta_ref[1], meta_ref[2]

  def finish(raw):
    cols = c0 + j * bv + _iota((1, bv), 1)
    rows = [ref[...] for ref in row_refs]
    g_lp = rows[4] if has_lp else None
    g_h = rows[-1] if has_h else None
    dz = _common.dz_tile(raw, (cols >= lo) & (cols < hi), rows[0], cols,
                         *rows[1:4], g_lp, g_h, temperature)
    out_ref[...] = dz.astype(out_ref.dtype)

  _with_logits(finish, x_ref, w_ref, acc_ref, k, n_depth=n_depth, **logits_kw)


def _call(kernel, *, out_shape, grid, in_specs, out_specs, meta, inputs,
          scratch, name: str, vmem: int, cost):
  """`pallas_call` with `meta` scalar-prefetched into SMEM."""
  pl, pltpu = _pallas_modules()
  inputs, out_shape = _common.varying_call([meta, *inputs], out_shape)
  # The first two axes (splits or rows, then rows or tiles) own disjoint
  # output blocks; the rest reduce into a resident block.
  semantics = ("parallel", "parallel") + ("arbitrary",) * (len(grid) - 2)
  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=1, grid=grid, in_specs=in_specs,
      out_specs=out_specs, scratch_shapes=scratch)
  return pl.pallas_call(
      kernel, out_shape=out_shape, grid_spec=grid_spec, name=name,
      cost_estimate=cost,
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=semantics,
          vmem_limit_bytes=None if vmem <= _DEFAULT_SCOPED_VMEM else vmem),
  )(*inputs)


def _vspec(shape, index_map):
  pl, pltpu = _pallas_modules()
  return pl.BlockSpec(shape, index_map, memory_space=pltpu.VMEM)


def _geometry(x, w, layout, blocks: _common.BlockSizes):
  """Static block shape (bm, bv, bd or 0 from logits) and depth steps."""
  bm = min(x.shape[0], blocks.block_n)
  if w is None:
    return bm, min(x.shape[1], blocks.block_v), 0, 1
  vocab = w.shape[1 if layout == "dv" else 0]
  bd = min(x.shape[1], blocks.block_d)
  return (bm, min(vocab, blocks.block_v), bd,
          _common.cdiv(x.shape[1], bd))


def _operand_specs(layout, bm: int, bv: int, bd: int, x_map, w_map):
  """BlockSpecs of x and, on the fused linear path, of w.

  `w_map` gives the weight block's (vocabulary, depth) indices, which the
  [D, V] layout swaps.
  """
  if layout is None:
    return [_vspec((bm, bv), x_map)]
  if layout == "dv":
    w_spec = _vspec((bd, bv), lambda *grid: w_map(*grid)[::-1])
  else:
    w_spec = _vspec((bv, bd), w_map)
  return [_vspec((bm, bd), x_map), w_spec]


def _scratch(linear: bool, n_depth: int, bm: int, bv: int, acc):
  _, pltpu = _pallas_modules()
  return [pltpu.VMEM((bm, bv), acc)] if linear and n_depth > 1 else []


def _column(v):
  return jnp.reshape(v, (-1, 1))


def forward_partials(x, w, labels, hi, *, vmax: int, layout: str | None,
                     temperature: float, precision, extra: bool,
                     blocks: _common.BlockSizes) -> _common.Partials:
  """Mosaic TPU version of `_xla.partials` (same arguments and result)."""
  n = x.shape[0]
  acc = _common.acc_dtype(x)
  bm, bv, bd, n_depth = _geometry(x, w, layout, blocks)
  tiles, n_splits = _common.split_geometry(vmax, blocks.vocab_split, bv)
  linear = w is not None
  n_out = 6 if extra else 4

  def tile(s, j, meta):
    # Tiles past the valid vocabulary repeat the last valid one, which the
    # pipeline then does not fetch again; the kernel skips them.
    # lax.div, not //: the operands are >= 0, and Mosaic lowers // through
    # sign(), which needs the TPU generation at lowering time.
    last = lax.div(jnp.maximum(meta[0] - 1, 0), bv)
    return jnp.minimum(s * tiles + j, last)

  # Index maps of (row block, vocabulary tile, depth block) per operand.
  if linear:
    grid = (n_splits, _common.cdiv(n, bm), tiles, n_depth)
    x_map = lambda s, i, j, k, meta: (i, k)
    w_map = lambda s, i, j, k, meta: (tile(s, j, meta), k)
  else:
    grid = (n_splits, _common.cdiv(n, bm), tiles)
    x_map = lambda s, i, j, meta: (i, tile(s, j, meta))
    w_map = None
  row_map = lambda s, i, *rest: (i, 0)
  out_map = lambda s, i, *rest: (s, i, 0)
  kernel = functools.partial(
      _forward_kernel, linear=linear, n_out=n_out, tiles=tiles, bv=bv,
      n_depth=n_depth, temperature=temperature, extra=extra, acc=acc,
      layout=layout, depth=x.shape[1], precision=precision)
  vmem = vmem_bytes(
      block_n=bm, block_v=bv, block_d=bd, x_bytes=x.dtype.itemsize,
      w_bytes=w.dtype.itemsize if linear else 0, out_bytes=0,
      n_columns=1 + n_out, accumulate=linear and n_depth > 1)
  outs = _call(
      kernel,
      out_shape=[jax.ShapeDtypeStruct((n_splits, n, 1), acc)] * n_out,
      grid=grid,
      in_specs=_operand_specs(layout, bm, bv, bd, x_map, w_map)
      + [_vspec((bm, 1), row_map)],
      out_specs=[_vspec((None, bm, 1), out_map)] * n_out,
      meta=_common.make_meta(jnp.minimum(hi, vmax)),
      inputs=[x] + ([w] if linear else []) + [_column(labels)],
      scratch=_scratch(linear, n_depth, bm, bv, acc),
      name="token_stats_fwd_tpu", vmem=vmem,
      cost=_cost(n, vmax, x.shape[1] if linear else 0, x, w))
  partials = _common.Partials(*(o[:, :, 0] for o in outs))
  return _common.combine_stacked(partials, temperature)


def _cost(n: int, vocab: int, depth: int, x, w):
  """Scheduling hint for XLA: matmul FLOPs, exps, HBM bytes read."""
  pl, _ = _pallas_modules()
  flops = 2 * n * vocab * depth + 8 * n * vocab
  read = x.size * x.dtype.itemsize + (0 if w is None else
                                      w.size * w.dtype.itemsize)
  return pl.CostEstimate(flops=flops, transcendentals=n * vocab,
                         bytes_accessed=read)


def _dz(x, w, rows, meta, *, width: int, layout: str | None,
        temperature: float, precision, out_dtype,
        blocks: _common.BlockSizes):
  """Logit gradients of columns [c0, c0 + width) as [N, width] `out_dtype`.

  `w` is the chunk's weight slice ([D, width] or [width, D]) or None
  (logits [N, width]); `rows` = (labels, shift, log_s, entropy, g_lp, g_h),
  g_* None for a symbolic zero; `meta` = (c0, lo, hi): global columns < lo
  or >= hi get 0.
  """
  n = x.shape[0]
  acc = _common.acc_dtype(x)
  bm, bv, bd, n_depth = _geometry(x, w, layout, blocks)
  linear = w is not None
  labels, shift, log_s, entropy, g_lp, g_h = rows
  columns = [_column(labels.astype(jnp.int32))] + [
      _column(v) for v in (shift, log_s, entropy, g_lp, g_h) if v is not None]
  if linear:
    grid = (_common.cdiv(n, bm), _common.cdiv(width, bv), n_depth)
    x_map = lambda i, j, k, meta: (i, k)
    w_map = lambda i, j, k, meta: (j, k)
  else:
    grid = (_common.cdiv(n, bm), _common.cdiv(width, bv))
    x_map = lambda i, j, meta: (i, j)
    w_map = None
  row_map = lambda i, *rest: (i, 0)
  kernel = functools.partial(
      _dz_kernel, linear=linear, has_lp=g_lp is not None,
      has_h=g_h is not None, bv=bv, n_depth=n_depth, temperature=temperature,
      acc=acc, layout=layout, depth=x.shape[1], precision=precision)
  vmem = vmem_bytes(
      block_n=bm, block_v=bv, block_d=bd, x_bytes=x.dtype.itemsize,
      w_bytes=w.dtype.itemsize if linear else 0,
      out_bytes=jnp.dtype(out_dtype).itemsize, n_columns=len(columns),
      accumulate=linear and n_depth > 1)
  return _call(
      kernel, out_shape=jax.ShapeDtypeStruct((n, width), out_dtype),
      grid=grid,
      in_specs=_operand_specs(layout, bm, bv, bd, x_map, w_map)
      + [_vspec((bm, 1), row_map)] * len(columns),
      out_specs=_vspec((bm, bv), lambda i, j, *rest: (i, j)),
      meta=meta, inputs=[x] + ([w] if linear else []) + columns,
      scratch=_scratch(linear, n_depth, bm, bv, acc),
      name="token_stats_dz_tpu", vmem=vmem,
      cost=_cost(n, width, x.shape[1] if linear else 0, x, w))


def logits_dz(x, labels, shift, log_s, entropy, g_lp, g_h, hi, *,
              temperature: float, blocks: _common.BlockSizes):
  """d logits [N, V] in the logits dtype (columns >= hi get 0)."""
  return _dz(x, None, (labels, shift, log_s, entropy, g_lp, g_h),
             _common.make_meta(0, 0, hi), width=x.shape[1], layout=None,
             temperature=temperature, precision=None, out_dtype=x.dtype,
             blocks=blocks)


def linear_dz_fn(h, w, labels, shift, log_s, entropy, g_lp, g_h, hi, *,
                 vmax: int, size: int, **kwargs):
  """Returns dz(c, wc) -> [N, size] for chunk c of the fused-linear backward.

  The kernel reads the chunk's weight slice `wc`, whose first column is
  c0 = min(c·size, vmax − size): the clamped last chunk re-reads columns of
  the one before, and those (global ids < c·size) get 0.
  """
  rows = (labels, shift, log_s, entropy, g_lp, g_h)

  def chunk_dz(c, wc):
    c0 = jnp.minimum(c * size, vmax - size)
    meta = _common.make_meta(c0, c * size, jnp.minimum(hi, c0 + size))
    return _dz(h, wc, rows, meta, width=size,
               out_dtype=jnp.result_type(h, w), **kwargs)

  return chunk_dz
