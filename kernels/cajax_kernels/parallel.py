"""shard_map wrappers: data-parallel and vocab-parallel fused log-probs.

`pallas_call` is not partitioned by GSPMD, so sharded callers run the kernels
per shard inside `jax.shard_map`:

* data-parallel: tokens (hidden, labels) are split over `axis_name`, the
  weight is replicated; the weight gradient is summed over the axis by the
  transpose of `lax.pcast(..., to="varying")`.
* vocab-parallel: the weight's vocabulary dimension is split over
  `axis_name`. Each shard computes partial (max, Σe^{z−m},
  Σe^{z−m}(z−m), label logit) over its columns; one `pmax` and `psum`s merge them into the
  global lse and entropy. The backward is local (each shard's dz tile uses
  the global lse and H), and the hidden-state gradient is summed over the
  axis by the transpose of `pcast`.
"""

import dataclasses

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from . import _common
from . import api


def _check_vma(implementation: str) -> bool:
  # The Pallas interpreter of jax 0.10 fails the varying-axes check inside
  # shard_map ("dynamic_slice requires varying manual axes to match"), so
  # "interpret" runs with check_vma=False; the tests cover both settings.
  # Without the check, shard_map's transpose gives each shard 1/K of a
  # replicated output's cotangent and psums replicated inputs' cotangents.
  return implementation != "interpret"


def data_parallel_linear_token_logprobs(hidden, weight, labels, *, mesh,
                                        axis_name: str, **kwargs):
  """`linear_token_logprobs` with tokens sharded over `axis_name`.

  Args:
    hidden: float[N, D] with N divisible by the axis size.
    weight: float[D, V] or [V, D], replicated.
    labels: int[N].
    mesh: a `jax.sharding.Mesh` containing `axis_name`.
    axis_name: the data axis.
    **kwargs: forwarded to `linear_token_logprobs` (temperature,
      implementation, weight_layout, valid_vocab_size, ...).

  Returns:
    (logprobs, entropy), float32[N], sharded over `axis_name`.
  """

  def body(h, w, y):
    w = lax.pcast(w, axis_name, to="varying")
    return api.linear_token_logprobs(h, w, y, **kwargs)

  check_vma = _check_vma(
      _common.resolve_implementation(kwargs.get("implementation")))
  return jax.shard_map(body, mesh=mesh,
                       in_specs=(P(axis_name), P(), P(axis_name)),
                       out_specs=(P(axis_name), P(axis_name)),
                       check_vma=check_vma)(hidden, weight, labels)


def vocab_parallel_linear_token_logprobs(
    hidden, weight, labels, temperature: float = 1.0,
    implementation: str | None = None, *, mesh, axis_name: str,
    weight_layout: str | None = None, valid_vocab_size: int | None = None,
    block_sizes: api.BlockSizes | None = None, precision=None):
  """`linear_token_logprobs` with the vocabulary sharded over `axis_name`.

  Shard k holds vocabulary columns [k·V/K, (k+1)·V/K). Partial statistics
  (m, s, tu, z_y) merge across shards as M = pmax(m), a = e^{m − M},
  s = psum(a·s), tu = psum(a·(tu + (m − M)·s)), z_y = psum(z_y).

  Args:
    hidden: float[N, D], replicated over `axis_name`.
    weight: float[D, V] ("dv") or [V, D] ("vd"), V divisible by the axis
      size; sharded along V.
    labels: int[N] global vocabulary ids (ignored outside
      [0, valid_vocab_size)).
    temperature, implementation, weight_layout, valid_vocab_size,
      block_sizes, precision: as `linear_token_logprobs` (sizes global).
    mesh: a `jax.sharding.Mesh` containing `axis_name`.
    axis_name: the vocabulary (tensor-parallel) axis.

  Returns:
    (logprobs, entropy), float32[N], replicated; differentiable w.r.t.
    hidden and weight.

  Raises:
    ValueError: on bad shapes, dtypes or settings.
  """
  n_shards = mesh.shape[axis_name]
  cfg, x, y, row_valid, _ = api._prepare(  # pylint: disable=protected-access
      hidden, "hidden", labels, weight, temperature=temperature,
      implementation=implementation, weight_layout=weight_layout,
      valid_vocab_size=valid_vocab_size, block_sizes=block_sizes,
      precision=precision)
  vocab_axis = 1 if cfg.layout == "dv" else 0
  vocab = jnp.shape(weight)[vocab_axis]
  if vocab % n_shards:
    raise ValueError(f"weight vocabulary size {vocab} (shape "
                     f"{jnp.shape(weight)}) must be divisible by the "
                     f"{axis_name!r} axis size {n_shards}.")
  local = vocab // n_shards
  valid = cfg.vmax
  check_vma = _check_vma(cfg.implementation)
  cfg = dataclasses.replace(cfg, vmax=local, axis_name=axis_name,
                            cotangent_scale=1 if check_vma else n_shards)
  w_spec = P(None, axis_name) if cfg.layout == "dv" else P(axis_name, None)

  def body(h, w, y, row_valid):
    offset = lax.axis_index(axis_name) * local
    hi = jnp.clip(valid - offset, 0, local).astype(jnp.int32)
    mine = (y >= offset) & (y < offset + local)
    y_local = jnp.where(mine, y - offset, -1)
    h = lax.pcast(h, axis_name, to="varying")
    return api._logprobs_entropy(cfg, h, w, y_local, row_valid, hi)  # pylint: disable=protected-access

  lp, entropy = jax.shard_map(
      body, mesh=mesh, in_specs=(P(), w_spec, P(), P()),
      out_specs=(P(), P()), check_vma=check_vma)(
          x, weight, y, row_valid)
  shape = jnp.shape(labels)
  return lp.reshape(shape), entropy.reshape(shape)

