"""Chunked pure-JAX (XLA) forward and backward passes.

The vocabulary is processed in chunks of C columns by `lax.fori_loop`. The
last chunk's start is clamped to vmax − C (no padded copy of the logits or of
the weight); the columns it re-reads are masked out of the statistics and
get a zero logit gradient, so every column counts exactly once.
"""

from jax import lax
import jax.numpy as jnp

from . import _common


def chunk_geometry(vmax: int, chunk: int):
  """Returns (chunk size, number of chunks) for vocabulary prefix [0, vmax)."""
  size = min(chunk, vmax)
  return size, -(-vmax // size)


def chunk_columns(c, vmax: int, size: int, hi):
  """Clamped start, global column ids int[1, C] and the counted-column mask."""
  c0 = jnp.minimum(c * size, vmax - size)
  cols = c0 + jnp.arange(size, dtype=jnp.int32)[None, :]
  valid = (cols >= c * size) & (cols < hi)
  return c0, cols, valid


def _is_half(dtype) -> bool:
  return jnp.dtype(dtype).itemsize == 2 and jnp.issubdtype(dtype, jnp.floating)


def _bits_to(x, dtype):
  """Same-width bitcast (uint16 <-> bf16/f16); identity when dtypes match."""
  return x if x.dtype == dtype else lax.bitcast_convert_type(x, dtype)


def slice_vocab(x, c0, size: int, axis: int):
  """`lax.dynamic_slice_in_dim` that keeps 16-bit float slices cheap.

  XLA:CPU slices a bf16 array inside a loop by upcasting the *whole* array
  to f32 first (hoisted out of the loop: a [D, V] or [N, V] f32 temporary).
  Slicing a same-width uint16 bitcast avoids that; tying the array to the
  loop-variant start with an optimization barrier keeps the bitcast inside
  the loop, where it is free (otherwise it is hoisted and copied).
  """
  if not _is_half(x.dtype):
    return lax.dynamic_slice_in_dim(x, c0, size, axis=axis)
  x, c0 = lax.optimization_barrier((x, c0))
  bits = lax.bitcast_convert_type(x, jnp.uint16)
  return _bits_to(lax.dynamic_slice_in_dim(bits, c0, size, axis=axis), x.dtype)


def weight_chunk(w, c0, size: int, layout: str):
  """Columns [c0, c0 + size) of the vocabulary: [D, C] ("dv") or [C, D]."""
  return slice_vocab(w, c0, size, 1 if layout == "dv" else 0)


def matmul_logits(h, wc, layout: str, precision):
  """Logits [N, C] (accumulated in acc_dtype) of hidden [N, D] and a chunk."""
  contract = (0,) if layout == "dv" else (1,)
  return lax.dot_general(h, wc, (((1,), contract), ((), ())),
                         precision=precision,
                         preferred_element_type=_common.acc_dtype(h))


def raw_tile(x, w, c0, size: int, layout: str | None, precision):
  """Raw logits of chunk c0: a slice of logits, or hidden @ weight."""
  if w is None:
    return slice_vocab(x, c0, size, 1).astype(_common.acc_dtype(x))
  return matmul_logits(x, weight_chunk(w, c0, size, layout), layout, precision)


def partials(x, w, labels, hi, *, vmax: int, chunk: int, layout: str | None,
             temperature: float, precision, extra: bool) -> _common.Partials:
  """Online statistics over vocabulary columns [0, min(hi, vmax)).

  Args:
    x: logits [N, V] (w is None) or hidden [N, D].
    w: None, or weight [D, V] ("dv") / [V, D] ("vd").
    labels: int32[N] (vocabulary ids local to this weight).
    hi: int32 scalar (may be traced): columns >= hi are excluded.
    vmax: static bound on the columns visited.
    chunk, layout, temperature, precision, extra: see the callers.

  Returns:
    Partials with f32[N] fields.
  """
  size, n_chunks = chunk_geometry(vmax, chunk)

  def body(c, acc):
    c0, cols, valid = chunk_columns(c, vmax, size, hi)
    raw = raw_tile(x, w, c0, size, layout, precision)
    tile = _common.tile_partials(raw, valid, labels, cols, temperature, extra)
    return _common.merge_two(acc, tile, temperature)

  init = _common.vary_like(
      _common.empty_partials(x.shape[0], extra, _common.acc_dtype(x)), x, w,
      labels, hi)
  return lax.fori_loop(0, n_chunks, body, init)


def logits_backward(logits, labels, shift, log_s, entropy, g_lp, g_h, hi, *,
                    temperature: float):
  """d logits [N, V] in the logits dtype, as one fused elementwise pass."""
  cols = jnp.arange(logits.shape[1], dtype=jnp.int32)[None, :]
  dz = _common.dz_tile(logits.astype(_common.acc_dtype(logits)), cols < hi,
                       labels, cols, shift, log_s, entropy, g_lp, g_h,
                       temperature)
  return dz.astype(logits.dtype)


def xla_dz_fn(h, labels, shift, log_s, entropy, g_lp, g_h, hi, *,
              vmax: int, size: int, layout: str, temperature: float,
              precision):
  """Returns dz(c, wc) -> [N, C] logit gradients of chunk c (XLA version).

  `wc` is the chunk's weight slice ([D, C] or [C, D]).
  """

  def dz(c, wc):
    _, cols, valid = chunk_columns(c, vmax, size, hi)
    raw = matmul_logits(h, wc, layout, precision)
    return _common.dz_tile(raw, valid, labels, cols, shift, log_s, entropy,
                           g_lp, g_h, temperature)

  return dz


def _add_rows_product(dh, dz, wc, *, rows: int, layout: str, precision):
  """dh + dz W_cᵀ, computed and added `rows` rows at a time, in place.

  Blocking keeps the matmul result an [R, D] tile instead of a second
  [N, D] f32 array beside the dh carry (XLA:CPU does not fuse the add into
  the dot). The last block's start is clamped to N − R; the rows it shares
  with the block before add 0.
  """
  n = dh.shape[0]
  rows = min(n, rows)
  w_contract = (1,) if layout == "dv" else (0,)

  def block(j, dh):
    r0 = jnp.minimum(j * rows, n - rows)
    product = lax.dot_general(
        slice_vocab(dz, r0, rows, 0), wc,
        (((1,), w_contract), ((), ())), precision=precision,
        preferred_element_type=dh.dtype)
    fresh = (r0 + jnp.arange(rows))[:, None] >= j * rows
    old = lax.dynamic_slice_in_dim(dh, r0, rows)
    return lax.dynamic_update_slice_in_dim(
        dh, old + jnp.where(fresh, product, 0.0), r0, axis=0)

  return lax.fori_loop(0, -(-n // rows), block, dh)


def _weight_chunk_grad(h, dz, *, layout: str, precision, acc):
  """dW_c = hᵀ dz_c in the weight's layout ([D, C] or [C, D]), f32.

  hᵀ dz contracts the leading axis of h. XLA:CPU runs 16-bit dots only when
  the left operand contracts its last axis; otherwise it upcasts both
  operands to f32, the whole [N, D] hidden included (a loop-invariant f32
  copy). On CPU, 16-bit inputs therefore go through a transposed dz tile:
  dW_cᵀ = dz_cᵀ h. Other backends contract the leading axis natively.
  """

  def native(h, dz):
    if layout == "dv":
      return lax.dot_general(h, dz, (((0,), (0,)), ((), ())),
                             precision=precision, preferred_element_type=acc)
    return lax.dot_general(dz, h, (((0,), (0,)), ((), ())),
                           precision=precision, preferred_element_type=acc)

  def transposed(h, dz):
    # The flattening makes the transpose a physical row-major copy (a bare
    # transpose is only a layout change, which the dot sees through); the
    # barriers keep XLA from folding the transposes back into the dot.
    dz_t = lax.optimization_barrier(dz.T.reshape(-1)).reshape(dz.shape[::-1])
    grad = lax.dot_general(dz_t, h, (((1,), (0,)), ((), ())),
                           precision=precision, preferred_element_type=acc)
    return lax.optimization_barrier(grad).T if layout == "dv" else grad

  if not _is_half(dz.dtype):
    return native(h, dz)
  return lax.platform_dependent(h, dz, cpu=transposed, default=native)


def linear_backward(h, w, dz_fn, *, vmax: int, size: int, layout: str,
                    precision):
  """(dh, dw) from per-chunk logit gradients, one [N, C] tile at a time.

  dh = Σ_c dz_c W_cᵀ accumulates in f32 (in blocks of C rows); dW_c =
  hᵀ dz_c is one full-N matmul per chunk (f32 accumulation) written over
  its columns of dW. The chunks run last to first: the clamped last chunk
  writes zeros over the columns it re-reads (their dz is 0) and the chunk
  before overwrites them with their real gradient, so dW is only ever
  written, never read back. That keeps the dynamic-update-slice in place, the loop
  carry being the dW output itself (a read-modify-write of a bf16 carry
  makes XLA:CPU keep a second W-sized buffer).

  Args:
    h: hidden [N, D]; w: weight; dz_fn: (c, weight chunk) -> [N, C] (any
      float dtype).
    vmax, size, layout, precision: chunk geometry and matmul settings.

  Returns:
    dh in h.dtype, dw in w.dtype.
  """
  n_chunks = -(-vmax // size)
  mm_dtype = jnp.result_type(h, w)
  acc = _common.acc_dtype(h)
  axis = 1 if layout == "dv" else 0

  def body(i, carry):
    dh, dw = carry
    c = n_chunks - 1 - i
    c0 = jnp.minimum(c * size, vmax - size)
    wc = weight_chunk(w, c0, size, layout)
    dz = dz_fn(c, wc).astype(mm_dtype)
    dh = _add_rows_product(dh, dz, wc, rows=size, layout=layout,
                           precision=precision)
    dwc = _weight_chunk_grad(h, dz, layout=layout, precision=precision,
                             acc=acc)
    return dh, lax.dynamic_update_slice_in_dim(dw, dwc.astype(w.dtype), c0,
                                               axis=axis)

  init = _common.vary_like((jnp.zeros(h.shape, acc), jnp.zeros_like(w)), h, w)
  dh, dw = lax.fori_loop(0, n_chunks, body, init)
  return dh.astype(h.dtype), dw
