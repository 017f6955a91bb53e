"""Per-step counts, sums, maxima and last tokens without scatters.

The steps of a row are *ordered*: along the row, the step ids of its kept
tokens never decrease (each step is one contiguous run of kept tokens, steps
come in id order, ids may skip values: empty steps). Under that layout the
tokens of step k are exactly the kept tokens with id ≤ k minus those with
id ≤ k − 1, so every per-step reduction follows from a search over the
row, never from a scatter (XLA:CPU applies scatter updates one at a time,
and TPUs serialise them too).

The search is two-level. The row is cut into chunks of c tokens; one pass
over `[B, T]` reduces each chunk to its kept-token count, the largest kept
id, the position of its last kept token and the chunk totals of the value
arrays. With CM_j the running maximum of the chunk ids, the chunks that
hold step k lie between a(k) = #{j : CM_j < k} and b(k) = #{j : CM_j ≤ k}:
chunks strictly between them hold only step k (their totals count whole)
and the one or two boundary chunks a(k), b(k) are read back, c tokens each,
and filtered by id == k. The work beyond the pass is
O(S·(T/c + c)) per row, below one pass while S·(T/c + 2c) ≤ T (c ≈ √(T/2)
balances the two terms); callers keep a scatter for more steps.
"""

import math
from typing import NamedTuple, Sequence

import jax
from jax.experimental import checkify
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from cajax import _checks
from cajax import groups

__all__ = [
    "StepTotals", "at_positions", "check_order", "chunk_size", "fits",
    "scatter_totals", "step_totals", "totals",
]


class StepTotals(NamedTuple):
  """Per-step reductions over the kept tokens, each `[B, S]`.

  Attributes:
    count: int32 number of kept tokens of the step.
    last: int32 position of its last kept token, −1 for an empty step.
    sums: tuple of f32 Σ of each `sums` input over the step (0 if empty).
    maxima: tuple of f32 max of each `maxima` input over the step (−inf if
      empty).
  """
  count: jax.Array
  last: jax.Array
  sums: tuple
  maxima: tuple


def chunk_size(length: int) -> int:
  """Chunk c ≈ √(T/2), a power of two in [8, 256]."""
  return int(min(256, max(8, 1 << round(math.log2(max(length / 2, 1)) / 2))))


def fits(length: int, num_steps: int) -> bool:
  """True when the search costs less than one pass over a `[B, T]` row."""
  c = chunk_size(length)
  return num_steps * (-(-length // c) + 2 * c) <= length


def _chunks(x, chunk: int, fill):
  """[B, T] -> [B, n, c], T padded up to n·c with `fill`."""
  batch, length = x.shape
  blocks = -(-length // chunk)
  if blocks * chunk != length:
    x = jnp.pad(x, ((0, 0), (0, blocks * chunk - length)),
                constant_values=fill)
  return x.reshape(batch, blocks, chunk)


def _read_chunks(x, index):
  """x [B, n, c] at chunk index [B, S] (clamped) -> [B, S, c]."""
  index = jnp.minimum(index, x.shape[1] - 1)
  return jnp.take_along_axis(x, index[:, :, None], axis=1)


def _chunk_reduce(operands, inits, ops):
  """One fused pass reducing each [B, n, c] operand over its chunk axis.

  A variadic `lax.reduce` runs as one XLA loop that computes its operands
  on the fly; single-operand sums and maxima go to a library reduction on
  XLA:CPU that reads a materialised input, one pass each (measured ~3x
  slower for these three).
  """
  def combine(a, b):
    return tuple(op(x, y) for op, x, y in zip(ops, a, b))
  return jax.lax.reduce(tuple(operands), tuple(inits), combine, (2,))


def step_totals(step_ids: ArrayLike, kept: ArrayLike, num_steps: int,
                sums: Sequence[ArrayLike] = (),
                maxima: Sequence[ArrayLike] = ()) -> StepTotals:
  """Counts, last positions, sums and maxima of ordered steps.

  Args:
    step_ids: int32[B, T] step of each token; only `kept` tokens are read,
      and their ids must lie in [0, num_steps) and never decrease along a
      row (not checked here: callers run `check_order`).
    kept: bool[B, T] tokens that belong to their step.
    num_steps: static S.
    sums: f32[B, T] arrays to sum per step (read at kept tokens only).
    maxima: f32[B, T] arrays to maximise per step (kept tokens only).

  Returns:
    `StepTotals` of `[B, S]` arrays.
  """
  _, length = kept.shape
  chunk = chunk_size(length)
  padded = -(-length // chunk) * chunk
  # key = id·T' + position: its chunk maximum gives both the largest id and
  # (ids never decrease) the position of the chunk's last kept token.
  positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32),
                               kept.shape)
  key = jnp.where(kept, step_ids * padded + positions, -1)
  ids = _chunks(jnp.where(kept, step_ids, -1), chunk, -1)
  keep = ids >= 0
  positions = _chunks(positions, chunk, -1)
  sum_in = [_chunks(jnp.where(kept, x, 0.0), chunk, 0.0) for x in sums]
  max_in = [_chunks(jnp.where(kept, x, -jnp.inf), chunk, -jnp.inf)
            for x in maxima]
  chunk_key, chunk_count, *chunk_values = (
      _chunk_reduce(
      [_chunks(key, chunk, -1), keep.astype(jnp.int32)] + sum_in + max_in,
      [jnp.int32(-1), jnp.int32(0)] + [jnp.float32(0.0)] * len(sum_in)
      + [jnp.float32(-jnp.inf)] * len(max_in),
      [jnp.maximum, jnp.add] + [jnp.add] * len(sum_in)
      + [jnp.maximum] * len(max_in)))
  chunk_sums = chunk_values[:len(sum_in)]
  chunk_maxima = chunk_values[len(sum_in):]
  chunk_id = jnp.where(chunk_key >= 0, chunk_key // padded, -1)
  chunk_last = jnp.where(chunk_key >= 0, chunk_key % padded, -1)

  # Chunk range of step k: a(k) = first chunk holding an id ≥ k, b(k) =
  # first chunk holding an id > k (n when none); step k's tokens lie in
  # chunks a..b, and the chunks strictly between hold nothing else.
  blocks = ids.shape[1]
  steps = jnp.arange(num_steps, dtype=jnp.int32)[None, :, None]
  order = jnp.arange(blocks, dtype=jnp.int32)[None, None, :]
  first = jnp.min(jnp.where(chunk_id[:, None, :] >= steps, order, blocks),
                  axis=2)
  last_chunk = jnp.min(jnp.where(chunk_id[:, None, :] > steps, order,
                                 blocks), axis=2)
  interior = (order > first[:, :, None]) & (order < last_chunk[:, :, None])

  def boundary(index, also):
    """Chunk `index` and the [B, S, c] mask of step k's tokens in it."""
    sel = (_read_chunks(ids, index) == steps) & (
        index < blocks)[:, :, None] & also[:, :, None]
    return index, sel

  heads = boundary(first, jnp.ones(first.shape, bool))
  tails = boundary(last_chunk, last_chunk != first)
  def reduce(chunk_values, token_values, op, empty):
    whole = op(jnp.where(interior, chunk_values[:, None, :], empty), axis=2)
    parts = [op(jnp.where(sel, _read_chunks(token_values, index), empty),
                axis=2) for index, sel in (heads, tails)]
    return op(jnp.stack([whole] + parts), axis=0)

  count = reduce(chunk_count, keep.astype(jnp.int32), jnp.sum, 0)
  last = reduce(chunk_last, positions, jnp.max, -1)
  return StepTotals(
      count=count, last=jnp.where(count > 0, last, -1),
      sums=tuple(reduce(c, x, jnp.sum, 0.0)
                 for c, x in zip(chunk_sums, sum_in)),
      maxima=tuple(reduce(c, x, jnp.max, -jnp.inf)
                   for c, x in zip(chunk_maxima, max_in)))


def scatter_totals(step_ids: ArrayLike, kept: ArrayLike, num_steps: int,
                   sums: Sequence[ArrayLike] = (),
                   maxima: Sequence[ArrayLike] = ()) -> StepTotals:
  """`step_totals` for steps in any order, by scatters into `[B·S]`.

  The reference form, and the faster one when S is too large for the
  search (`fits`). Counts and sums travel as the columns of one scatter-add,
  the maxima as one scatter-max, the last positions as another.
  """
  batch, length = kept.shape
  flat = groups.flat_segment_ids(step_ids, kept, num_steps).reshape(-1)

  def scatter(columns, init, op):
    updates = jnp.stack([c.reshape(-1) for c in columns], axis=-1)
    start = jnp.full((batch * num_steps, len(columns)), init, updates.dtype)
    out = getattr(start.at[flat], op)(updates, mode="drop")
    return [out[:, i].reshape(batch, num_steps) for i in range(len(columns))]

  count, *step_sums = scatter(
      [kept.astype(jnp.float32)] + [jnp.where(kept, x, 0.0) for x in sums],
      0.0, "add")
  step_maxima = scatter([jnp.where(kept, x, -jnp.inf) for x in maxima],
                        -jnp.inf, "max") if maxima else []
  positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32),
                               kept.shape)
  last, = scatter([jnp.where(kept, positions, -1)], -1, "max")
  return StepTotals(count=count.astype(jnp.int32), last=last,
                    sums=tuple(step_sums), maxima=tuple(step_maxima))


def totals(step_ids: ArrayLike, kept: ArrayLike, num_steps: int,
           sums: Sequence[ArrayLike] = (), maxima: Sequence[ArrayLike] = (),
           ordered: bool = True) -> StepTotals:
  """`step_totals` when the steps are ordered and few enough, else
  `scatter_totals` (same arguments and result)."""
  if ordered and fits(kept.shape[1], num_steps):
    return step_totals(step_ids, kept, num_steps, sums, maxima)
  return scatter_totals(step_ids, kept, num_steps, sums, maxima)


def _decreasing(step_ids, kept):
  """bool[B, T]: kept tokens whose id is below an earlier kept token's."""
  xp = np if isinstance(step_ids, np.ndarray) else jnp
  ids = xp.where(kept, step_ids, -1)
  if xp is np:
    running = np.maximum.accumulate(ids, axis=1)
  else:
    running = jax.lax.cummax(ids, axis=1)
  earlier = xp.pad(running[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  return kept & (ids < earlier)


def check_order(step_ids: ArrayLike, kept: ArrayLike,
                name: str = "step_ids") -> None:
  """Checks the steps are ordered: kept ids never decrease along a row.

  That is the layout `step_totals` searches, and the one in which step ids
  are the steps' order in time (each step one contiguous run of kept
  tokens, steps in id order, ids may skip values). Concrete ids are checked
  now. Traced ids (inside `jax.jit`) are checked only when the caller's
  function runs under `jax.experimental.checkify.checkify`
  (`cajax.checkify_estimate`): the check needs a running maximum along the
  row, which costs about 20 passes on XLA:CPU (docs/performance.md), more
  than the estimators that rely on the order; without checkify an
  unordered row gives undefined (finite) results, which may reach other
  rows through group statistics.

  Args:
    step_ids: int[B, T] step of each token.
    kept: bool[B, T] tokens that belong to their step.
    name: the caller's name for `step_ids`, for the message.

  Raises:
    ValueError: concrete ids that decrease, naming the rows.
  """
  if _checks.is_traced(step_ids) or _checks.is_traced(kept):
    rows = jnp.any(_decreasing(step_ids, kept), axis=1)
    checkify.debug_check(
        ~jnp.any(rows), f"{name} must not decrease along a row (steps in "
        f"time order, each one contiguous run of valid tokens); row {{row}} "
        f"decreases (out of jit this raises a ValueError).",
        row=jnp.argmax(rows))
    return
  rows = np.flatnonzero(np.any(_decreasing(
      np.asarray(step_ids), np.asarray(kept)), axis=1))
  if rows.size:
    raise ValueError(
        f"{name} must not decrease along a row: number the steps of each "
        f"row 0, 1, 2, ... in the order they occur, each step one "
        f"contiguous run of valid tokens (masked tokens and tokens with id "
        f"-1 may sit inside a step); rows {rows[:8].tolist()} decrease.")


def at_positions(step_values: ArrayLike, positions: ArrayLike,
                 length: int) -> jax.Array:
  """`[B, T]` array with `step_values[b, k]` at token `positions[b, k]`.

  Every other token holds 0. A position of −1 writes nothing. One scatter
  of S updates per row: cheap, unlike a scatter of every token.

  Args:
    step_values: f32[B, S] values.
    positions: int32[B, S] distinct token positions in [0, T), or −1.
    length: static T.

  Returns:
    f32[B, T].
  """
  batch, num_steps = positions.shape
  flat = jnp.where(positions >= 0,
                   jnp.arange(batch)[:, None] * length + positions,
                   batch * length).reshape(-1)
  out = jnp.zeros((batch * length,), step_values.dtype)
  values = jnp.broadcast_to(step_values, (batch, num_steps)).reshape(-1)
  return out.at[flat].set(values, mode="drop").reshape(batch, length)
