"""The Qwen2 / Llama decoder as a Flax NNX module, returning hidden states.

  model = create_model(get("toy", vocab_size=40), seed=0, mesh=None)
  hidden, _ = model(tokens, positions, valid)            # [B, T, D]
  weight, layout = model.unembedding()                   # for the kernels
  lp, ent = cajax_kernels.linear_token_logprobs(
      hidden.reshape(-1, D), weight, labels.reshape(-1), weight_layout=layout)

Parameter paths follow the Hugging Face module names (embed.embedding,
layers.{i}.self_attn.q_proj.kernel, ..., final_norm.scale, lm_head.kernel)
so the checkpoint table in hf.py stays one line per tensor.
"""

from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

from experiments.models.config import ModelConfig
from experiments.models.layers import Attention
from experiments.models.layers import FSDP
from experiments.models.layers import linear
from experiments.models.layers import MLP
from experiments.models.layers import RMSNorm

__all__ = [
    "Block", "Decoder", "KVCache", "create_model", "fsdp_mesh", "init_cache",
]

# jax.checkpoint policy of each `ModelConfig.remat` name ("none": no remat).
_CHECKPOINT_POLICY = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class KVCache(NamedTuple):
  """A fixed-size key/value cache (a pytree).

  Attributes:
    k, v: per-layer tuples of [B, S, num_kv_heads, head_dim].
    valid: bool[B, S]: the slot holds a real (non-padding) token.
    index: int32 scalar: the next slot to write.
  """
  k: tuple
  v: tuple
  valid: jax.Array
  index: jax.Array


def init_cache(config: ModelConfig, batch: int, max_len: int,
               dtype=None) -> KVCache:
  """An empty cache of max_len slots (dtype defaults to config.dtype)."""
  dtype = jnp.dtype(dtype or config.dtype)
  shape = (batch, max_len, config.num_kv_heads, config.head_dim)
  zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
  return KVCache(k=zeros, v=tuple(jnp.zeros(shape, dtype) for _ in zeros),
                 valid=jnp.zeros((batch, max_len), bool),
                 index=jnp.zeros((), jnp.int32))


class Block(nnx.Module):
  """Pre-norm block: x + attn(norm x), then + mlp(norm x)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    d, eps, pdt = config.hidden_size, config.rms_norm_eps, config.param_dtype
    self.input_layernorm = RMSNorm(d, eps, pdt)
    self.self_attn = Attention(config, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(d, eps, pdt)
    self.mlp = MLP(config, rngs=rngs)

  def __call__(self, x, positions, mask, kv_cache=None, index=None):
    h, kv_cache = self.self_attn(self.input_layernorm(x), positions, mask,
                                 kv_cache, index)
    x = x + h
    return x + self.mlp(self.post_attention_layernorm(x)), kv_cache


def _run_block(block, x, positions, mask, kv_cache, index):
  return block(x, positions, mask, kv_cache, index)


def _check_inputs(tokens, positions, valid):
  if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"tokens must be int[B, T], got {tokens.dtype}"
                     f"{list(tokens.shape)}")
  for name, arr in (("positions", positions), ("valid", valid)):
    if arr.shape != tokens.shape:
      raise ValueError(f"{name} must have the shape of tokens "
                       f"{tokens.shape}, got {arr.shape}")


class Decoder(nnx.Module):
  """Token embedding, num_layers pre-norm blocks, final RMSNorm."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    config.validate()
    self.config = config
    d = config.hidden_size
    # Sharding annotations are applied eagerly only when a mesh is active;
    # they stay in the metadata either way (nnx.get_partition_spec).
    eager = not jax.sharding.get_abstract_mesh().empty
    with nnx.use_eager_sharding(eager):
      self.embed = nnx.Embed(
          config.vocab_size, d, dtype=jnp.dtype(config.dtype),
          param_dtype=jnp.dtype(config.param_dtype),
          embedding_init=nnx.with_partitioning(
              nnx.initializers.normal(d ** -0.5), (None, FSDP)),
          rngs=rngs)
      self.layers = nnx.List(
          [Block(config, rngs=rngs) for _ in range(config.num_layers)])
      self.final_norm = RMSNorm(d, config.rms_norm_eps, config.param_dtype)
      if not config.tie_embeddings:
        self.lm_head = linear(d, config.vocab_size, config, rngs=rngs,
                              sharding=(FSDP, None))

  def __call__(self, tokens, positions, valid, cache: KVCache | None = None):
    """Hidden states after the final norm.

    Args:
      tokens: int32[B, T].
      positions: int32[B, T] RoPE positions (e.g. cumsum(valid) − 1 for a
        left-padded prompt).
      valid: bool[B, T]; invalid tokens are never attended to.
      cache: None (causal attention over this sequence) or a KVCache: the
        tokens are written at slots cache.index .. + T − 1 and attend to
        every valid slot up to their own.

    Returns:
      (hidden [B, T, D] in the compute dtype, the updated cache or None).
    """
    _check_inputs(tokens, positions, valid)
    t = tokens.shape[1]
    x = self.embed(tokens)
    if cache is None:
      mask = jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :]
      index, layer_caches = None, [None] * len(self.layers)
    else:
      slots = cache.valid.shape[1]
      index = cache.index
      key_valid = jax.lax.dynamic_update_slice(cache.valid, valid, (0, index))
      causal = (jnp.arange(slots)[None, :] <=
                index + jnp.arange(t)[:, None])
      mask = causal[None] & key_valid[:, None, :]
      layer_caches = list(zip(cache.k, cache.v))
    run = _run_block
    # Rematerialisation only pays off when a backward pass follows; the
    # cached (sampling) path never differentiates.
    if self.config.remat != "none" and cache is None:
      run = nnx.remat(_run_block, policy=_CHECKPOINT_POLICY[self.config.remat])
    new_caches = []
    for block, kv in zip(self.layers, layer_caches):
      x, kv = run(block, x, positions, mask, kv, index)
      new_caches.append(kv)
    hidden = self.final_norm(x)
    if cache is None:
      return hidden, None
    return hidden, KVCache(k=tuple(k for k, _ in new_caches),
                           v=tuple(v for _, v in new_caches),
                           valid=key_valid, index=index + t)

  def unembedding(self):
    """(weight in the compute dtype, layout) for the fused log-prob kernels.

    layout "vd": the tied [V, D] embedding table; "dv": the [D, V] lm_head.
    """
    dtype = jnp.dtype(self.config.dtype)
    if self.config.tie_embeddings:
      return self.embed.embedding[...].astype(dtype), "vd"
    return self.lm_head.kernel[...].astype(dtype), "dv"

  def logits(self, hidden):
    """float32[..., V] logits (sampling and tests; training uses kernels)."""
    weight, layout = self.unembedding()
    spec = "...d,vd->...v" if layout == "vd" else "...d,dv->...v"
    return jnp.einsum(spec, hidden, weight, preferred_element_type=jnp.float32)


def fsdp_mesh(data: int = 1, fsdp: int = 1, devices=None):
  """A ("data", "fsdp") mesh of these exact sizes with Auto axes (what
  create_model expects); experiments/rl/mesh.py's `make_mesh` resolves -1
  sizes from the device count and calls this."""
  devices = jax.devices() if devices is None else devices
  if data * fsdp != len(devices):
    raise ValueError(f"mesh data x fsdp = {data} x {fsdp} must equal the "
                     f"number of devices {len(devices)}")
  return jax.make_mesh((data, fsdp), ("data", FSDP),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2,
                       devices=devices)


def _check_mesh(config: ModelConfig, mesh):
  if FSDP not in mesh.axis_names:
    raise ValueError(f"mesh must have an axis named {FSDP!r}, got axes "
                     f"{mesh.axis_names}")
  if not mesh.are_all_axes_auto:
    raise ValueError("mesh axes must be jax.sharding.AxisType.Auto (use "
                     f"decoder.fsdp_mesh), got {mesh.axis_types}")
  size = mesh.shape[FSDP]
  if config.hidden_size % size:
    raise ValueError(f"hidden_size={config.hidden_size} must be divisible by "
                     f"the mesh's fsdp size {size}")


def create_model(config: ModelConfig, seed: int = 0,
                 mesh: jax.sharding.Mesh | None = None) -> Decoder:
  """A randomly initialised Decoder, sharded over `mesh` when given.

  Initialisation is one jitted function (run under the mesh when given), so
  each parameter is created directly in its shards, and the values do not
  depend on the mesh.
  """
  config.validate()

  @nnx.jit
  def init():
    return Decoder(config, rngs=nnx.Rngs(seed))

  if mesh is None:
    return init()
  _check_mesh(config, mesh)
  with jax.set_mesh(mesh):
    return init()
