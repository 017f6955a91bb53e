"""Building blocks of the Qwen2 / Llama decoder: RMSNorm, RoPE, GQA, SwiGLU.

Matrices are stored [in, out] and annotated for sharding over the mesh axis
FSDP on their model-width (hidden_size) dimension; norms and biases are
replicated. Norm statistics and attention softmax run in float32 whatever the
compute dtype.
"""

import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from experiments.models.config import ModelConfig
from experiments.models.config import RopeScaling

__all__ = [
    "Attention", "FSDP", "MLP", "RMSNorm", "apply_rope", "linear",
    "rope_inverse_frequencies",
]

FSDP = "fsdp"
# Added to masked attention scores: finite, so a query with no visible key
# (a padding row) gets a uniform softmax instead of NaN.
_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def _kernel_init(sharding):
  """Variance-preserving (fan-in) init, annotated with its sharding."""
  return nnx.with_partitioning(
      nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
      sharding)


def linear(in_features, out_features, config: ModelConfig, *, rngs, sharding,
           use_bias=False) -> nnx.Linear:
  """An [in, out] projection in the config's parameter and compute dtypes."""
  return nnx.Linear(
      in_features, out_features, use_bias=use_bias,
      dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype),
      kernel_init=_kernel_init(sharding),
      bias_init=nnx.initializers.zeros_init(), rngs=rngs)


class RMSNorm(nnx.Module):
  """y = x / sqrt(mean(x²) + eps) · scale (Zhang & Sennrich, arXiv 1910.07467).

  The statistic is taken in float32; the normalised value is cast back to
  the input dtype before the scale multiplies it.
  """

  def __init__(self, dim: int, eps: float, param_dtype):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((dim,), jnp.dtype(param_dtype)))

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    inv = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    scale = self.scale[...].astype(x.dtype)
    return (x32 * inv).astype(x.dtype) * scale.reshape((1,) * (x.ndim - 1) + (-1,))


def rope_inverse_frequencies(head_dim: int, theta: float,
                             scaling: RopeScaling | None) -> np.ndarray:
  """float32[head_dim / 2] inverse frequencies θ^(−2i/head_dim), scaled.

  RoFormer (Su et al., arXiv 2104.09864); linear scaling is position
  interpolation (Chen et al., arXiv 2306.15595); "llama3" is the Llama 3.1
  band rule (Grattafiori et al., arXiv 2407.21783).
  """
  exponents = np.arange(0, head_dim, 2, dtype=np.float32) / head_dim
  inv = (1.0 / np.power(np.float32(theta), exponents)).astype(np.float64)
  if scaling is None:
    pass
  elif scaling.kind == "linear":
    inv = inv / scaling.factor
  elif scaling.kind == "llama3":
    old = scaling.original_max_position_embeddings
    wavelength = 2 * math.pi / inv
    # Ramp is 0 at the low-frequency wavelength and 1 at the high one.
    ramp = ((old / wavelength - scaling.low_freq_factor) /
            (scaling.high_freq_factor - scaling.low_freq_factor))
    ramp = np.clip(ramp, 0.0, 1.0)
    inv = (1 - ramp) * inv / scaling.factor + ramp * inv
  else:
    raise ValueError(f"rope_scaling.kind {scaling.kind!r} is not supported")
  return inv.astype(np.float32)


def apply_rope(x, positions, inv_freq):
  """Rotate-half RoPE with split halves.

  Args:
    x: [B, T, heads, head_dim].
    positions: int[B, T].
    inv_freq: float32[head_dim / 2].

  Returns:
    x rotated: pair (x_i, x_{i + head_dim/2}) by angle position · inv_freq_i.
  """
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[
      None, None, :]
  cos = jnp.cos(angles)[:, :, None, :].astype(x.dtype)
  sin = jnp.sin(angles)[:, :, None, :].astype(x.dtype)
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Attention(nnx.Module):
  """Grouped-query attention (Ainslie et al., arXiv 2305.13245) with RoPE.

  Query head n reads key/value head n // (num_heads / num_kv_heads).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    d, h = config.hidden_size, config.head_dim
    self.num_heads, self.num_kv_heads, self.head_dim = (
        config.num_heads, config.num_kv_heads, h)
    # Static (hashable) settings; the frequencies become trace constants.
    self.rope = (h, config.rope_theta, config.rope_scaling)
    proj = dict(rngs=rngs, sharding=(FSDP, None), use_bias=config.qkv_bias)
    self.q_proj = linear(d, config.num_heads * h, config, **proj)
    self.k_proj = linear(d, config.num_kv_heads * h, config, **proj)
    self.v_proj = linear(d, config.num_kv_heads * h, config, **proj)
    self.o_proj = linear(config.num_heads * h, d, config, rngs=rngs,
                         sharding=(None, FSDP))

  def __call__(self, x, positions, mask, kv_cache=None, index=None):
    """Attention over the sequence, or over a cache updated in place.

    Args:
      x: [B, T, D].
      positions: int[B, T] RoPE positions.
      mask: bool[B, T, S]: query t may read key slot s (S = T without a
        cache, the cache length with one).
      kv_cache: None, or (k, v) each [B, S, num_kv_heads, head_dim]; the new
        keys and values are written at slots index .. index + T − 1.
      index: int32 scalar write offset (with kv_cache).

    Returns:
      ([B, T, D], the updated (k, v) or None).
    """
    b, t, d = x.shape
    flat = x.reshape(b * t, d)  # As in MLP: projections on [tokens, width].
    q = self.q_proj(flat).reshape(b, t, self.num_heads, self.head_dim)
    k = self.k_proj(flat).reshape(b, t, self.num_kv_heads, self.head_dim)
    v = self.v_proj(flat).reshape(b, t, self.num_kv_heads, self.head_dim)
    inv_freq = rope_inverse_frequencies(*self.rope)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    new_cache = None
    if kv_cache is not None:
      cache_k, cache_v = kv_cache
      start = (0, index, 0, 0)
      k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), start)
      v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), start)
      new_cache = (k, v)
      k, v = k.astype(q.dtype), v.astype(q.dtype)
    groups = self.num_heads // self.num_kv_heads
    q = q.reshape(b, t, self.num_kv_heads, groups, self.head_dim)
    scores = jnp.einsum("btkgh,bskh->bkgts", q, k,
                        preferred_element_type=jnp.float32)
    scores = scores * (self.head_dim ** -0.5)
    scores = jnp.where(mask[:, None, None], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    out = out.reshape(b * t, self.num_heads * self.head_dim)
    return self.o_proj(out).reshape(b, t, d), new_cache


class MLP(nnx.Module):
  """SwiGLU feed-forward: down(silu(gate x) · up x) (Shazeer, arXiv 2002.05202)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    d, f = config.hidden_size, config.intermediate_size
    self.gate_proj = linear(d, f, config, rngs=rngs, sharding=(FSDP, None))
    self.up_proj = linear(d, f, config, rngs=rngs, sharding=(FSDP, None))
    self.down_proj = linear(f, d, config, rngs=rngs, sharding=(None, FSDP))

  def __call__(self, x):
    # On [tokens, width]: XLA:CPU runs the backward of a projection of a
    # [B, T, D] activation several times slower (docs/performance.md).
    flat = x.reshape(-1, x.shape[-1])
    out = self.down_proj(jax.nn.silu(self.gate_proj(flat))
                         * self.up_proj(flat))
    return out.reshape(x.shape[:-1] + out.shape[-1:])
