"""Per-token log-probs, entropy and softmax statistics without [N, V] memory.

Public entry points (all jit-able; static settings are Python arguments):

* `token_logprobs(logits, labels)`: from materialised logits [..., V].
* `linear_token_logprobs(hidden, weight, labels)`: fused `hidden @ weight`.
* `linear_token_stats(...)` / `token_stats(...)`: forward-only statistics.

Label convention: a label outside [0, valid_vocab_size) (e.g. -100 or -1 as
"ignore index") gives log-prob 0 and label logit 0, and the log-prob
contributes no gradient; the entropy and the other statistics of that row
are still computed (they do not depend on the label).
"""

import dataclasses
import functools
from typing import Any, Sequence

import jax
from jax import lax
import jax.numpy as jnp

from . import _common
from . import _mosaic_tpu
from . import _triton
from . import _xla

BlockSizes = _common.BlockSizes


@dataclasses.dataclass(frozen=True)
class _Config:
  """Static settings of one call (hashable: a custom_vjp nondiff arg)."""
  implementation: str
  temperature: float
  blocks: BlockSizes
  layout: str | None  # None: from logits; "dv": [D, V]; "vd": [V, D].
  vmax: int  # Static bound on the vocabulary columns visited.
  precision: Any = None
  axis_name: Any = None  # Vocab-parallel mesh axis, or None.
  # Multiplies incoming cotangents: shard_map(check_vma=False) hands each
  # shard 1/K of a replicated output's cotangent (see kernels.parallel).
  cotangent_scale: int = 1


# The entry points on materialised logits have no weight, hence no weight
# layout and no matmul precision.
_FROM_LOGITS = {"weight_layout": None, "precision": None}


def _pallas_backend(cfg: _Config):
  """(kernel module, its keyword arguments) of a Pallas implementation."""
  if cfg.implementation == "pallas_mosaic_tpu":
    return _mosaic_tpu, {"blocks": cfg.blocks}
  return _triton, {"blocks": cfg.blocks,
                   "interpret": cfg.implementation == "interpret"}


def _local_partials(cfg: _Config, x, w, labels, hi, extra: bool):
  if x.shape[0] == 0:  # N = 0: the empty result, without launching a kernel.
    return _common.empty_partials(0, extra, _common.acc_dtype(x))
  kw = dict(vmax=cfg.vmax, layout=cfg.layout, temperature=cfg.temperature,
            precision=cfg.precision, extra=extra)
  if cfg.implementation == "xla":
    return _xla.partials(x, w, labels, hi, chunk=cfg.blocks.vocab_chunk, **kw)
  backend, options = _pallas_backend(cfg)
  return backend.forward_partials(x, w, labels, hi, **kw, **options)


def _partials(cfg: _Config, x, w, labels, hi, extra: bool):
  """Partials over this call's vocabulary, merged across vocab shards."""
  p = _local_partials(cfg, x, w, labels, hi, extra)
  if cfg.axis_name is not None:
    p = _common.combine(
        p, functools.partial(lax.pmax, axis_name=cfg.axis_name),
        functools.partial(lax.psum, axis_name=cfg.axis_name), cfg.temperature)
  return p


def _backward(cfg: _Config, x, w, labels, shift, log_s, entropy, g_lp, g_h,
              hi):
  """(dx, dw) of Σ g_lp·log p + Σ g_h·H (dw is None for logits)."""
  t, prec = cfg.temperature, cfg.precision
  rows = (labels, shift, log_s, entropy, g_lp, g_h, hi)
  if cfg.layout is None:
    if cfg.implementation == "xla":
      return _xla.logits_backward(x, *rows, temperature=t), None
    backend, options = _pallas_backend(cfg)
    return backend.logits_dz(x, *rows, temperature=t, **options), None
  size, _ = _xla.chunk_geometry(cfg.vmax, cfg.blocks.vocab_chunk)
  kw = dict(vmax=cfg.vmax, size=size, layout=cfg.layout, temperature=t,
            precision=prec)
  if cfg.implementation == "xla":
    dz_fn = _xla.xla_dz_fn(x, *rows, **kw)
  else:
    backend, options = _pallas_backend(cfg)
    dz_fn = backend.linear_dz_fn(x, w, *rows, **kw, **options)
  return _xla.linear_backward(x, w, dz_fn, vmax=cfg.vmax, size=size,
                              layout=cfg.layout, precision=prec)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _logprobs_entropy(cfg: _Config, x, w, labels, row_valid, hi):
  p = _partials(cfg, x, w, labels, hi, extra=False)
  lp, entropy, _ = _common.finalize(p, row_valid, cfg.temperature)
  return lp, entropy


def _logprobs_entropy_fwd(cfg: _Config, *primals):
  x, w, labels, row_valid, hi = jax.tree.map(lambda a: a.value, primals)
  p = _partials(cfg, x, w, labels, hi, extra=False)
  lp, entropy, log_s = _common.finalize(p, row_valid, cfg.temperature)
  return (lp, entropy), (x, w, labels, row_valid, hi, p.m, log_s, entropy)


def _logprobs_entropy_bwd(cfg: _Config, residuals, cotangents):
  x, w, labels, row_valid, hi, shift, log_s, entropy = residuals
  g_lp, g_h = (None if isinstance(g, jax.custom_derivatives.SymbolicZero)
               else g.astype(log_s.dtype) * cfg.cotangent_scale
               for g in cotangents)
  if g_lp is not None:
    g_lp = jnp.where(row_valid, g_lp, 0.0)
  if (g_lp is None and g_h is None) or x.shape[0] == 0:
    dx, dw = jnp.zeros_like(x), None if w is None else jnp.zeros_like(w)
  else:
    dx, dw = _backward(cfg, x, w, labels, shift, log_s, entropy, g_lp,
                       g_h, hi)
  return dx, dw, None, None, None


_logprobs_entropy.defvjp(_logprobs_entropy_fwd, _logprobs_entropy_bwd,
                         symbolic_zeros=True)


def _stats(cfg: _Config, x, w, labels, row_valid, hi, names, num_valid):
  extra = bool({"self_certainty", "sum_pi_squared"} & set(names))
  p = _partials(cfg, lax.stop_gradient(x),
                None if w is None else lax.stop_gradient(w), labels, hi, extra)
  lp, entropy, log_s = _common.finalize(p, row_valid, cfg.temperature)
  inv_t = 1.0 / cfg.temperature
  values = {"logprobs": lambda: lp, "entropy": lambda: entropy,
            "self_certainty": lambda: (p.m - p.sz / num_valid) * inv_t + log_s,
            "sum_pi_squared": lambda: p.q / (p.s * p.s),
            "label_logit": lambda: jnp.where(row_valid, p.zy, 0.0)}
  return {name: values[name]() for name in names}


# ----------------------------------------------------------------- checks ---


def _layout(weight, depth: int, weight_layout: str | None) -> str:
  if jnp.ndim(weight) != 2:
    raise ValueError(f"weight must have rank 2 ([D, V] or [V, D]), got shape "
                     f"{jnp.shape(weight)}.")
  rows, cols = jnp.shape(weight)
  if weight_layout is None:
    if rows == depth and cols == depth:
      raise ValueError(
          f"weight shape {(rows, cols)} is square: pass weight_layout='dv' "
          "([D, V], logits = hidden @ weight) or 'vd' ([V, D], tied "
          "embeddings).")
    if rows == depth:
      return "dv"
    if cols == depth:
      return "vd"
    raise ValueError(
        f"weight shape {(rows, cols)} does not match hidden size D={depth}: "
        "expected [D, V] or [V, D].")
  if weight_layout not in ("dv", "vd"):
    raise ValueError(
        f"weight_layout must be None, 'dv' or 'vd', got {weight_layout!r}.")
  if (rows if weight_layout == "dv" else cols) != depth:
    raise ValueError(
        f"weight shape {(rows, cols)} does not match hidden size D={depth} "
        f"for weight_layout={weight_layout!r}.")
  return weight_layout


def _check_float(x, name: str):
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(f"{name} must be floating point, got dtype "
                     f"{jnp.result_type(x)} (shape {jnp.shape(x)}).")


def _check_mosaic_precision(precision):
  """Mosaic TPU lowers only the DEFAULT and HIGHEST matmul precisions."""
  values = precision if isinstance(precision, (tuple, list)) else (precision,)
  allowed = {None, lax.Precision.DEFAULT, lax.Precision.HIGHEST}
  try:
    values = {v if v is None else lax.Precision(v) for v in values}
    ok = len(values) == 1 and values <= allowed
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(
        "precision must be None, lax.Precision.DEFAULT or "
        "lax.Precision.HIGHEST (one for both operands) for "
        f"implementation='pallas_mosaic_tpu', got {precision!r}.")


def _prepare(x, x_name: str, labels, weight, *, temperature, implementation,
             weight_layout, valid_vocab_size, block_sizes, precision):
  """Validates and flattens; returns (cfg, x2d, labels1d, row_valid, hi)."""
  _check_float(x, x_name)
  if jnp.ndim(x) < 2:
    raise ValueError(f"{x_name} must have rank >= 2, got shape "
                     f"{jnp.shape(x)}.")
  if jnp.shape(labels) != jnp.shape(x)[:-1]:
    raise ValueError(f"labels must have shape {jnp.shape(x)[:-1]} (to match "
                     f"{x_name} {jnp.shape(x)}), got {jnp.shape(labels)}.")
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise ValueError(f"labels must be integers, got dtype "
                     f"{jnp.result_type(labels)}.")
  if isinstance(temperature, jax.Array) or not float(temperature) > 0:
    raise ValueError(f"temperature must be a positive Python float, got "
                     f"{temperature!r}.")
  implementation = _common.resolve_implementation(implementation)
  if implementation == "pallas_mosaic_tpu":
    _check_mosaic_precision(precision)
  blocks = block_sizes or BlockSizes.default(implementation)
  blocks.validate(implementation)
  layout = None
  if weight is None:
    vocab = jnp.shape(x)[-1]
  else:
    _check_float(weight, "weight")
    layout = _layout(weight, jnp.shape(x)[-1], weight_layout)
    vocab = jnp.shape(weight)[1 if layout == "dv" else 0]
  valid = vocab if valid_vocab_size is None else int(valid_vocab_size)
  if not 1 <= valid <= vocab:
    owner = x_name if weight is None else "weight"
    raise ValueError(f"valid_vocab_size must be in [1, {vocab}] (the "
                     f"vocabulary size of {owner}), got {valid_vocab_size}.")
  cfg = _Config(implementation, float(temperature), blocks, layout, valid,
                precision)
  x2d = jnp.reshape(x, (-1, jnp.shape(x)[-1]))
  labels1d = jnp.reshape(labels, (-1,)).astype(jnp.int32)
  row_valid = _common.label_valid(labels1d, valid)
  return cfg, x2d, labels1d, row_valid, jnp.asarray(valid, jnp.int32)


def _check_stat_names(stats: Sequence[str]) -> tuple[str, ...]:
  names = (stats,) if isinstance(stats, str) else tuple(stats)
  unknown = [s for s in names if s not in _common.STAT_NAMES]
  if unknown or not names:
    raise ValueError(f"stats must be a non-empty subset of "
                     f"{_common.STAT_NAMES}, got {stats!r}.")
  return names


def _logprobs_public(x, x_name: str, labels, weight, **settings):
  """Validates, flattens, runs the custom-VJP core and restores the shape."""
  cfg, x2d, y, row_valid, hi = _prepare(x, x_name, labels, weight, **settings)
  lp, entropy = _logprobs_entropy(cfg, x2d, weight, y, row_valid, hi)
  shape = jnp.shape(labels)
  return lp.reshape(shape), entropy.reshape(shape)


# ----------------------------------------------------------------- public ---


def token_logprobs(logits, labels, temperature: float = 1.0,
                   implementation: str | None = None, *,
                   valid_vocab_size: int | None = None,
                   block_sizes: BlockSizes | None = None):
  """Per-token log-prob of the label and entropy, from logits, in one pass.

  With z = logits / T (float32 accumulation for bf16/f16/f32 logits),
  log p_y = z_y − logsumexp(z) and H = logsumexp(z) − Σ_j p_j z_j, computed
  from online (max, Σe^{z−m}, Σe^{z−m}(z−m)) in the shifted,
  cancellation-free form H = log s − tu/s. The custom VJP's backward is one more streaming pass
  producing d logits in the logits dtype:
  d z = g_lp·(onehot − p) − g_H·p·(log p + H), divided by T.
  See "Cut Your Losses in Large-Vocabulary Language Models" (Wijmans et al.,
  arXiv 2411.09009).

  Args:
    logits: float[..., V] logits (bf16, f16, f32; f64 computes in f64).
    labels: int[...] label ids; outside [0, valid_vocab_size) is ignored
      (log-prob 0, no log-prob gradient).
    temperature: positive Python float T.
    implementation: None (best for the backend), "xla", "pallas_triton",
      "interpret" or "pallas_mosaic_tpu".
    valid_vocab_size: columns >= this (padded vocabulary) are excluded from
      the softmax; default V.
    block_sizes: BlockSizes; default `BlockSizes.default(implementation)`.

  Returns:
    (logprobs, entropy), each float32[...] (float64 for float64 logits).

  Raises:
    ValueError: on bad shapes, dtypes, temperature or settings.
  """
  return _logprobs_public(logits, "logits", labels, None,
                          temperature=temperature,
                          implementation=implementation,
                          valid_vocab_size=valid_vocab_size,
                          block_sizes=block_sizes, **_FROM_LOGITS)


def linear_token_logprobs(hidden, weight, labels, temperature: float = 1.0,
                          implementation: str | None = None, *,
                          weight_layout: str | None = None,
                          valid_vocab_size: int | None = None,
                          block_sizes: BlockSizes | None = None,
                          precision=None):
  """Per-token log-prob and entropy of softmax((hidden @ weight) / T), fused.

  Forward: token blocks × vocabulary splits, each keeping online statistics
  of its logit tiles, then a small merge; no [N, V] array is formed. Backward
  (custom VJP, symbolic zeros): per vocabulary chunk of `vocab_chunk`
  columns, recompute the logits, form dz = (g_lp·(onehot − p) −
  g_H·p·(log p + H))/T as an [N, vocab_chunk] tile in the matmul dtype, then
  dh += dz W_cᵀ (f32 accumulation) and dW_c = hᵀ dz. An unused entropy (or
  log-prob) cotangent is a symbolic zero and its term is compiled out.
  Cost: 2NDV FLOPs forward, 6NDV backward (recomputation).
  See "Cut Your Losses in Large-Vocabulary Language Models" (Wijmans et al.,
  arXiv 2411.09009).

  Args:
    hidden: float[..., D] final hidden states.
    weight: float[D, V] (logits = hidden @ weight) or [V, D] (tied
      embeddings, logits = hidden @ weightᵀ, never transposed in memory).
    labels: int[...] label ids; outside [0, valid_vocab_size) is ignored.
    temperature: positive Python float T.
    implementation: None, "xla", "pallas_triton", "interpret" or
      "pallas_mosaic_tpu".
    weight_layout: None (inferred from shapes; required when D == V), "dv"
      or "vd".
    valid_vocab_size: vocabulary rows >= this (padding) are excluded.
    block_sizes: BlockSizes (tiles, splits, `vocab_chunk`).
    precision: `lax.Precision` of the matmuls (None: backend default, which
      is TF32/bf16 for f32 inputs on GPU/TPU).

  Returns:
    (logprobs, entropy), each float32[...]; differentiable w.r.t. hidden and
    weight.

  Raises:
    ValueError: on bad shapes, dtypes, temperature or settings.
  """
  return _logprobs_public(
      hidden, "hidden", labels, weight, temperature=temperature,
      implementation=implementation, weight_layout=weight_layout,
      valid_vocab_size=valid_vocab_size, block_sizes=block_sizes,
      precision=precision)


def linear_token_stats(hidden, weight, labels,
                       stats: Sequence[str] = _common.STAT_NAMES,
                       temperature: float = 1.0,
                       implementation: str | None = None, *,
                       weight_layout: str | None = None,
                       valid_vocab_size: int | None = None,
                       block_sizes: BlockSizes | None = None,
                       precision=None) -> dict[str, jax.Array]:
  """Forward-only softmax statistics of (hidden @ weight) / T in one pass.

  With z = logits / T over the V' = valid_vocab_size columns:
    logprobs = z_y − lse,  entropy = lse − Σ p z,
    self_certainty = lse − (1/V') Σ z  (= KL(U‖p) + log V'),
    sum_pi_squared = Σ p² = q/s²,  label_logit = raw logit of the label
    (before temperature).
  Gradients are not propagated (inputs pass through stop_gradient); use
  `linear_token_logprobs` to differentiate. See "Scalable Best-of-N Selection
  for Large Language Models via Self-Certainty" (Kang et al., arXiv
  2502.18581) for self-certainty.

  Args:
    hidden, weight, labels, temperature, implementation, weight_layout,
      valid_vocab_size, block_sizes, precision: as `linear_token_logprobs`.
    stats: names from ("logprobs", "entropy", "self_certainty",
      "sum_pi_squared", "label_logit").

  Returns:
    dict name -> float32[...] (ignored labels: logprobs and label_logit 0).

  Raises:
    ValueError: on unknown stat names or bad inputs.
  """
  return _forward_stats(
      hidden, "hidden", labels, weight, stats, temperature=temperature,
      implementation=implementation, weight_layout=weight_layout,
      valid_vocab_size=valid_vocab_size, block_sizes=block_sizes,
      precision=precision)


def token_stats(logits, labels, stats: Sequence[str] = _common.STAT_NAMES,
                temperature: float = 1.0, implementation: str | None = None,
                *, valid_vocab_size: int | None = None,
                block_sizes: BlockSizes | None = None
                ) -> dict[str, jax.Array]:
  """`linear_token_stats` from materialised logits [..., V] (forward-only).

  Args:
    logits, labels, temperature, implementation, valid_vocab_size,
      block_sizes: as `token_logprobs`.
    stats: names as in `linear_token_stats`.

  Returns:
    dict name -> float32[...].

  Raises:
    ValueError: on unknown stat names or bad inputs.
  """
  return _forward_stats(logits, "logits", labels, None, stats,
                        temperature=temperature,
                        implementation=implementation,
                        valid_vocab_size=valid_vocab_size,
                        block_sizes=block_sizes, **_FROM_LOGITS)


def _forward_stats(source, source_name: str, labels, weight, stats,
                   **prepare_kwargs) -> dict[str, jax.Array]:
  """Shared body of the two stats entry points (weight None: logits)."""
  names = _check_stat_names(stats)
  cfg, x, y, row_valid, hi = _prepare(source, source_name, labels, weight,
                                      **prepare_kwargs)
  out = _stats(cfg, x, weight, y, row_valid, hi, names, cfg.vmax)
  return {k: v.reshape(jnp.shape(labels)) for k, v in out.items()}
