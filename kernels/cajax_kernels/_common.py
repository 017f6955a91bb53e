"""Shared math and configuration for the log-prob / entropy kernels.

Every implementation (chunked XLA, Pallas-Triton and its interpreter, Pallas
Mosaic TPU) keeps the same per-row online statistics over a slice of the
vocabulary. With raw
logits x (float32 accumulation), c = 1/T, m = max_j x_j (raw units) and
d_j = (x_j − m)·c:

  s = Σ_j e^{d_j},  tu = Σ_j e^{d_j} d_j,  q = Σ_j e^{2 d_j},
  sz = Σ_j x_j,  zy = x_y (raw label logit).

Then log p_y = (zy − m)·c − log s, lse = m·c + log s, the entropy in
shifted (cancellation-free) form H = log s − tu/s, Σ p² = q/s² and the
self-certainty lse − c·sz/V. The shift is subtracted *before* scaling by
1/T: for a peaked row with |x| ~ 1e4, x·c − m·c would be evaluated with a
fused multiply-add by XLA and leave an error of one ulp of 1e4 (~1e-3) in
log p; (x − m)·c is exact for the maximum. The functions here are written
with plain `jax.numpy` so that the same code runs inside Pallas kernel
bodies and in XLA. Per-row vectors are [R] (XLA, Triton) or [R, 1] columns
(Mosaic TPU keeps every value 2-D); the results take the labels' shape.
"""

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
from jax import lax
import jax.numpy as jnp

# A finite stand-in for −inf: keeps (m_a − m_b)·s and exp() free of NaN.
NEG = -1e30

IMPLEMENTATIONS = ("xla", "pallas_triton", "interpret", "pallas_mosaic_tpu")
STAT_NAMES = ("logprobs", "entropy", "self_certainty", "sum_pi_squared",
              "label_logit")


class Partials(NamedTuple):
  """Per-row online statistics over a slice of the vocabulary.

  Fields are f32 (f64 when the inputs are f64, for gradient checks).

  `q` and `sz` are None when only log-probs and entropy are needed.
  """
  m: jax.Array
  s: jax.Array
  tu: jax.Array
  zy: jax.Array
  q: jax.Array | None = None
  sz: jax.Array | None = None


def _is_power_of_two(x: int) -> bool:
  return x > 0 and (x & (x - 1)) == 0


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes of the kernels (static, hashable).

  Attributes:
    block_n: token rows per Pallas program (Mosaic TPU: a multiple of 8).
    block_v: vocabulary columns per Pallas tile (Mosaic TPU: a multiple of
      128, the lane width).
    block_d: hidden-dimension step of the in-kernel matmul (fused linear;
      Mosaic TPU: a multiple of 128).
    vocab_split: vocabulary columns reduced by one forward Pallas program
      (the forward grid is token blocks × vocab splits, merged in XLA);
      rounded up to a multiple of `block_v`.
    vocab_chunk: vocabulary columns per step of the chunked XLA loops and per
      backward dz tile: at most an [N, vocab_chunk] tile of logits (and of
      logit gradients) exists at any time in the fused linear path.
    num_warps: Triton warps per program.
    num_stages: Triton software-pipelining stages.
  """
  block_n: int = 64
  block_v: int = 128
  block_d: int = 64
  vocab_split: int = 8192
  vocab_chunk: int = 8192
  num_warps: int = 4
  num_stages: int = 3

  @classmethod
  def default(cls, implementation: str) -> "BlockSizes":
    """Returns the default block sizes for an implementation."""
    if implementation == "xla":
      return cls(vocab_chunk=1024)
    if implementation == "pallas_mosaic_tpu":
      # 5.25 MiB of VMEM for the bf16 forward, 8 MiB for the f32 dz
      # kernel (_mosaic_tpu.vmem_bytes): within the smallest default
      # scoped-VMEM limit (16 MiB).
      return cls(block_n=256, block_v=512, block_d=512)
    return cls()

  def validate(self, implementation: str) -> None:
    """Raises ValueError for sizes the implementation cannot lower."""
    for name in ("block_n", "block_v", "block_d", "vocab_split",
                 "vocab_chunk", "num_warps", "num_stages"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(
            f"block_sizes.{name} must be a positive int, got {value!r}.")
    if implementation in ("pallas_triton", "interpret"):
      for name in ("block_n", "block_v", "block_d"):
        value = getattr(self, name)
        if not _is_power_of_two(value):
          raise ValueError(
              f"block_sizes.{name} must be a power of two for Pallas "
              f"(Triton lowers only power-of-two tiles), got {value}.")
    if implementation == "pallas_triton":
      for name in ("block_n", "block_v", "block_d"):
        if getattr(self, name) < 16:
          raise ValueError(
              f"block_sizes.{name} must be >= 16 for Triton's tensor-core "
              f"dot, got {getattr(self, name)}.")
    if implementation == "pallas_mosaic_tpu":
      # A TPU vreg is 8 sublanes x 128 lanes; Mosaic tiles a block's last
      # two dimensions by it.
      for name, multiple in (("block_n", 8), ("block_v", 128),
                             ("block_d", 128)):
        if getattr(self, name) % multiple:
          raise ValueError(
              f"block_sizes.{name} must be a multiple of {multiple} for "
              f"Mosaic TPU, got {getattr(self, name)}.")


def cdiv(a: int, b: int) -> int:
  return -(-a // b)


def split_geometry(vmax: int, vocab_split: int, block_v: int):
  """(tiles per split, number of splits) of the forward grid over [0, vmax)."""
  tiles = cdiv(min(vocab_split, vmax), block_v)
  return tiles, cdiv(vmax, tiles * block_v)


def make_meta(*values):
  """int32[4] of dynamic scalars (zero-padded) for a kernel."""
  values = list(values) + [0] * (4 - len(values))
  return jnp.stack([jnp.asarray(v, jnp.int32) for v in values])


def acc_dtype(x):
  """Accumulation dtype: float32, or float64 for float64 inputs."""
  return jnp.promote_types(x.dtype, jnp.float32)


def varying_axes(x) -> frozenset:
  """Manual mesh axes `x` varies over inside shard_map (empty outside)."""
  aval = jax.typeof(x)
  vma = getattr(aval, "vma", None)  # Newer spelling.
  if vma is None:
    vma = getattr(getattr(aval, "manual_axis_type", None), "varying", ())
  return frozenset(vma)


def varying_call(inputs, out_shape):
  """(inputs, out_shape) of a `pallas_call` that also works in shard_map.

  Inputs vary over the union of their manual mesh axes, and so do the
  outputs (`pallas_call` does not infer them).
  """
  inputs = vary_like(list(inputs), *inputs)
  if not varying_axes(inputs[1]):
    return inputs, out_shape
  mat = jax.typeof(inputs[1]).manual_axis_type
  return inputs, jax.tree.map(
      lambda o: jax.ShapeDtypeStruct(o.shape, o.dtype, manual_axis_type=mat),
      out_shape)


def vary_like(tree, *refs):
  """Marks `tree` as varying over the manual mesh axes `refs` vary over.

  Inside `jax.shard_map`, a loop carry initialised with constants must have
  the same varying axes as the values the loop body produces.
  """
  axes = frozenset().union(
      *(varying_axes(r) for r in refs if r is not None))
  if not axes:
    return tree

  def cast(x):
    missing = tuple(sorted(axes - varying_axes(x)))
    return jax.lax.pcast(x, missing, to="varying") if missing else x

  return jax.tree.map(cast, tree)


def default_implementation() -> str:
  """"pallas_triton" on GPU, "pallas_mosaic_tpu" on TPU, else "xla"."""
  return {"gpu": "pallas_triton", "tpu": "pallas_mosaic_tpu"}.get(
      jax.default_backend(), "xla")


def resolve_implementation(implementation: str | None) -> str:
  if implementation is None:
    return default_implementation()
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"implementation must be None or one of {IMPLEMENTATIONS}, got "
        f"{implementation!r}.")
  return implementation


def _across(v, shape):
  """A per-row vector ([R] or [R, 1]) broadcast over a tile's columns.

  One explicit broadcast, never an [R] -> [R, 1] reshape: Mosaic GPU's
  register layouts have no [R, 1] shape.
  """
  return lax.broadcast_in_dim(v, shape, tuple(range(v.ndim)))


def _scaled_gap(x, m, temperature: float):
  """(x − m)/T clamped to >= NEG, so that e^gap · gap is never NaN."""
  return jnp.maximum((x - m) * (1.0 / temperature), NEG)


def tile_partials(raw, valid, labels, cols, temperature: float,
                  extra: bool) -> Partials:
  """Statistics of one [rows, cols] tile of raw logits.

  Args:
    raw: f32[R, C] un-tempered logits (garbage where not `valid`).
    valid: bool[R, C] or bool[1, C]; columns that belong to the softmax.
    labels: int[R] or int[R, 1] label ids (negative never matches).
    cols: int[1, C] global vocabulary ids of the tile columns.
    temperature: softmax temperature T.
    extra: also compute `q` and `sz`.

  Returns:
    Partials with f32 fields shaped like `labels` (m in raw units).
  """
  keep = labels.ndim == 2
  x = jnp.where(valid, raw, NEG)
  m = jnp.max(x, axis=1, keepdims=keep)
  d = jnp.where(valid, _scaled_gap(x, _across(m, raw.shape), temperature),
                0.0)
  e = jnp.where(valid, jnp.exp(d), 0.0)
  hit = valid & (cols == _across(labels, raw.shape))
  row_sum = functools.partial(jnp.sum, axis=1, keepdims=keep)
  zy = row_sum(jnp.where(hit, raw, 0.0))
  q = sz = None
  if extra:
    q = row_sum(e * e)
    sz = row_sum(jnp.where(valid, raw, 0.0))
  return Partials(m, row_sum(e), row_sum(e * d), zy, q, sz)


def _rebase(p: Partials, big_m, temperature: float) -> Partials:
  """Re-expresses partials relative to a larger max: a = e^{(m − M)/T}."""
  gap = _scaled_gap(p.m, big_m, temperature)
  a = jnp.exp(gap)
  return Partials(big_m, a * p.s, a * (p.tu + gap * p.s), p.zy,
                  None if p.q is None else a * a * p.q, p.sz)


def combine(p: Partials, reduce_max: Callable, reduce_sum: Callable,
            temperature: float) -> Partials:
  """Merges partial statistics with the given reductions.

  M = max m, g = (m − M)/T, a = e^g: s = Σ a·s, tu = Σ a·(tu + g·s),
  q = Σ a²·q, sz = Σ sz, zy = Σ zy. The reductions run over a stacked axis
  (vocab splits) or over devices (`lax.pmax` / `lax.psum`).
  """
  r = _rebase(p, reduce_max(p.m), temperature)
  return Partials(r.m, *(None if f is None else reduce_sum(f) for f in r[1:]))


def combine_stacked(p: Partials, temperature: float) -> Partials:
  """Merges partials stacked along axis 0 ([S, N] fields -> [N])."""
  merged = combine(p, lambda x: jnp.max(x, axis=0, keepdims=True),
                   lambda x: jnp.sum(x, axis=0, keepdims=True), temperature)
  return jax.tree.map(lambda x: x[0], merged)


def merge_two(a: Partials, b: Partials, temperature: float) -> Partials:
  """Merges two sets of [N] partials (elementwise; no stacking)."""
  big_m = jnp.maximum(a.m, b.m)
  ra, rb = _rebase(a, big_m, temperature), _rebase(b, big_m, temperature)
  return Partials(big_m, *(None if x is None else x + y
                           for x, y in zip(ra[1:], rb[1:])))


def empty_partials(n, extra: bool, dtype=jnp.float32) -> Partials:
  """The identity of `combine` for n rows (n: a row count or a shape)."""
  zeros = jnp.zeros(n, dtype)
  return Partials(jnp.full(n, NEG, dtype), zeros, zeros, zeros,
                  zeros if extra else None, zeros if extra else None)


def label_valid(labels, num_valid: int):
  """Rows whose label lies in [0, num_valid); other rows are ignored."""
  return (labels >= 0) & (labels < num_valid)


def finalize(p: Partials, row_valid, temperature: float):
  """Returns (logprobs, entropy, log s) from merged partials.

  Rows where `row_valid` is False (ignored labels) get log-prob 0; their
  entropy is still computed. lse = m/T + log s.
  """
  log_s = jnp.log(p.s)
  entropy = log_s - p.tu / p.s
  lp = jnp.where(row_valid, (p.zy - p.m) * (1.0 / temperature) - log_s, 0.0)
  return lp, entropy, log_s


def dz_tile(raw, valid, labels, cols, shift, log_s, entropy, g_lp, g_h,
            temperature: float):
  """Gradient of Σ g_lp·log p_y + Σ g_h·H w.r.t. one tile of raw logits.

  With p = softmax(x/T):  ∂log p_y/∂(x/T) = onehot − p and
  ∂H/∂(x/T) = −p·(log p + H), so

    d x = (g_lp·(onehot − p) − g_h·p·(log p + H)) / T,
    log p = (x − m)/T − log s.

  Args:
    raw: f32[R, C] un-tempered logits; valid: bool[R, C] or bool[1, C].
    labels: int[R] or int[R, 1] (rows with ignored labels must carry
      g_lp = 0 or a label that matches no column).
    cols: int[1, C] global vocabulary ids.
    shift, log_s, entropy: f32 per-row forward results (m in raw units,
      log s, H), shaped like `labels`.
    g_lp, g_h: f32 per-row cotangents, or None for a symbolic zero.
    temperature: T.

  Returns:
    f32[R, C], exactly 0 where not `valid`.
  """
  rows = functools.partial(_across, shape=raw.shape)
  logp = jnp.where(valid, _scaled_gap(raw, rows(shift), temperature)
                   - rows(log_s), NEG)
  p = jnp.where(valid, jnp.exp(logp), 0.0)
  dz = jnp.zeros_like(p)
  if g_lp is not None:
    onehot = (valid & (cols == rows(labels))).astype(p.dtype)
    dz = rows(g_lp) * (onehot - p)
  if g_h is not None:
    dz = dz - rows(g_h) * p * jnp.where(valid, logp + rows(entropy), 0.0)
  return dz * (1.0 / temperature)
