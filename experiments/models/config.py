"""Frozen configuration of the Qwen2 / Llama decoder, with named sizes.

  cfg = ModelConfig.from_name("toy", vocab_size=40)
  cfg = get("qwen2_5_1_5b", param_dtype="bfloat16", remat="full")

Every field is a plain Python value, so a config is hashable and can be a
static argument of `jax.jit`.
"""

import dataclasses

import cajax

__all__ = [
    "ModelConfig", "NAMES", "REMAT_POLICIES", "RopeScaling", "SIZES", "get",
]

_ROPE_KINDS = ("linear", "llama3")
_DTYPES = ("float32", "bfloat16", "float16")
# "none": keep every activation; "full": keep only each block's input and
# recompute the block in the backward pass; "dots_saveable": keep the outputs
# of matmuls without batch dimensions (the projections) and recompute the
# element-wise work and attention.
REMAT_POLICIES = ("none", "full", "dots_saveable")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling.

  kind "linear": every inverse frequency divided by `factor` (position
  interpolation). kind "llama3": wavelengths longer than
  original_max_position_embeddings / low_freq_factor are divided by
  `factor`, those shorter than ... / high_freq_factor are kept, and the band
  between is interpolated smoothly (the Llama 3.1 rule).
  """
  kind: str
  factor: float
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192

  def validate(self):
    if self.kind not in _ROPE_KINDS:
      raise ValueError(f"rope_scaling.kind must be one of {_ROPE_KINDS}, "
                       f"got {self.kind!r}")
    if not self.factor > 0:
      raise ValueError(f"rope_scaling.factor must be > 0, got {self.factor}")
    if self.kind == "llama3":
      if not 0 < self.low_freq_factor < self.high_freq_factor:
        raise ValueError(
            "rope_scaling needs 0 < low_freq_factor < high_freq_factor, got "
            f"{self.low_freq_factor}, {self.high_freq_factor}")
      if self.original_max_position_embeddings <= 0:
        raise ValueError(
            "rope_scaling.original_max_position_embeddings must be > 0, got "
            f"{self.original_max_position_embeddings}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a decoder-only transformer (Qwen2 / Llama family).

  Attributes:
    vocab_size: rows of the embedding table.
    hidden_size: model width D.
    num_layers: decoder blocks.
    num_heads: query heads.
    num_kv_heads: key/value heads (grouped-query attention); divides
      num_heads.
    head_dim: width of one head.
    intermediate_size: SwiGLU hidden width.
    rope_theta: RoPE base.
    rope_scaling: optional RopeScaling.
    rms_norm_eps: RMSNorm epsilon.
    tie_embeddings: logits use the embedding table (no separate lm_head).
    qkv_bias: q/k/v projections have biases (Qwen2).
    param_dtype: dtype parameters are stored in.
    dtype: compute dtype of matmuls (norms and softmax run in float32).
    remat: one of REMAT_POLICIES, applied per decoder block.
    max_position_embeddings: recorded in saved checkpoints; not used by the
      forward pass.
  """
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  intermediate_size: int
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = True
  qkv_bias: bool = False
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat: str = "none"
  max_position_embeddings: int = 32768

  def validate(self) -> "ModelConfig":
    """Raises ValueError naming the first bad field; returns self."""
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "intermediate_size",
                 "max_position_embeddings"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"ModelConfig.{name} must be a positive int, got "
                         f"{value!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig.num_kv_heads={self.num_kv_heads} must divide "
          f"num_heads={self.num_heads}")
    if self.head_dim % 2:
      raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got "
                       f"{self.head_dim}")
    if not self.rope_theta > 0:
      raise ValueError(f"ModelConfig.rope_theta must be > 0, got "
                       f"{self.rope_theta}")
    if not self.rms_norm_eps > 0:
      raise ValueError(f"ModelConfig.rms_norm_eps must be > 0, got "
                       f"{self.rms_norm_eps}")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f"ModelConfig.{name} must be one of {_DTYPES}, got "
                         f"{getattr(self, name)!r}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"ModelConfig.remat must be one of {REMAT_POLICIES}, "
                       f"got {self.remat!r}")
    if self.rope_scaling is not None:
      if not isinstance(self.rope_scaling, RopeScaling):
        raise ValueError("ModelConfig.rope_scaling must be a RopeScaling or "
                         f"None, got {self.rope_scaling!r}")
      self.rope_scaling.validate()
    return self

  @property
  def num_params(self) -> int:
    """Number of parameters (embedding counted once when tied)."""
    d, f, h = self.hidden_size, self.intermediate_size, self.head_dim
    q, kv = self.num_heads * h, self.num_kv_heads * h
    attn = d * q + 2 * d * kv + q * d + (q + 2 * kv) * self.qkv_bias
    block = attn + 3 * d * f + 2 * d
    head = 0 if self.tie_embeddings else d * self.vocab_size
    return self.vocab_size * d + self.num_layers * block + d + head

  def replace(self, **overrides) -> "ModelConfig":
    return dataclasses.replace(self, **overrides).validate()

  @classmethod
  def from_name(cls, name: str, **overrides) -> "ModelConfig":
    return get(name, **overrides)


_SIZES = {
    # Unit tests: everything small but GQA, biases and untied head exercised
    # by overrides.
    "tiny": dict(vocab_size=48, hidden_size=32, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=8, intermediate_size=64),
    # CPU experiments: about 100k parameters for a vocabulary of ~32.
    "toy": dict(vocab_size=32, hidden_size=64, num_layers=2, num_heads=4,
                num_kv_heads=2, head_dim=16, intermediate_size=192),
    "qwen2_5_0_5b": dict(vocab_size=151936, hidden_size=896, num_layers=24,
                         num_heads=14, num_kv_heads=2, head_dim=64,
                         intermediate_size=4864, rope_theta=1e6,
                         tie_embeddings=True, qkv_bias=True),
    "qwen2_5_1_5b": dict(vocab_size=151936, hidden_size=1536, num_layers=28,
                         num_heads=12, num_kv_heads=2, head_dim=128,
                         intermediate_size=8960, rope_theta=1e6,
                         tie_embeddings=True, qkv_bias=True),
    # Same shapes as 1.5B; the Math variant uses rope_theta 1e4 and 4k
    # positions.
    "qwen2_5_math_1_5b": dict(vocab_size=151936, hidden_size=1536,
                              num_layers=28, num_heads=12, num_kv_heads=2,
                              head_dim=128, intermediate_size=8960,
                              rope_theta=1e4, tie_embeddings=True,
                              qkv_bias=True, max_position_embeddings=4096),
    "qwen2_5_7b": dict(vocab_size=152064, hidden_size=3584, num_layers=28,
                       num_heads=28, num_kv_heads=4, head_dim=128,
                       intermediate_size=18944, rope_theta=1e6,
                       tie_embeddings=False, qkv_bias=True),
    "llama3_2_1b": dict(vocab_size=128256, hidden_size=2048, num_layers=16,
                        num_heads=32, num_kv_heads=8, head_dim=64,
                        intermediate_size=8192, rope_theta=500000.0,
                        rms_norm_eps=1e-5, tie_embeddings=True,
                        max_position_embeddings=131072,
                        rope_scaling=RopeScaling(
                            kind="llama3", factor=32.0, low_freq_factor=1.0,
                            high_freq_factor=4.0,
                            original_max_position_embeddings=8192)),
}
SIZES = cajax.Registry("model size", _SIZES, how_to_add=(
    "Add one in experiments/models/config.py, or set model_path."))
NAMES = SIZES.names()


def get(name: str, **overrides) -> ModelConfig:
  """The named size with field overrides, validated.

  Args:
    name: one of NAMES.
    **overrides: ModelConfig fields to replace.

  Returns:
    A validated ModelConfig.
  """
  size = SIZES[name]
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown ModelConfig field(s) {unknown}; valid fields "
                     f"are {sorted(fields)}")
  return ModelConfig(**{**size, **overrides}).validate()
