"""Hugging Face `config.json` <-> ModelConfig for the qwen2 and llama types.

Reads both spellings transformers has used: `torch_dtype` / `dtype`, and
`rope_theta` + `rope_scaling` (with `type` or `rope_type`) / the newer
`rope_parameters` dictionary.
"""

import json
import pathlib

from experiments.models.config import ModelConfig
from experiments.models.config import RopeScaling

__all__ = ["MODEL_TYPES", "TOKEN_ID_KEYS", "from_hf", "read_json", "to_hf"]

MODEL_TYPES = ("qwen2", "llama")
_ROPE_TYPES = ("default", "linear", "llama3")
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16",
           "torch.float32": "float32", "torch.bfloat16": "bfloat16",
           "torch.float16": "float16"}
TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def read_json(path: pathlib.Path) -> dict:
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist")
  with open(path) as f:
    return json.load(f)


def _require(d: dict, key: str, source: str):
  if d.get(key) is None:
    raise ValueError(f"{source}: required key {key!r} is missing")
  return d[key]


def _rope(d: dict, source: str) -> tuple[float, RopeScaling | None]:
  params = dict(d.get("rope_scaling") or {})
  params.update(d.get("rope_parameters") or {})
  theta = float(params.get("rope_theta", d.get("rope_theta", 10000.0)))
  kind = params.get("rope_type", params.get("type", "default"))
  if kind not in _ROPE_TYPES:
    raise ValueError(f"{source}: RoPE scaling type {kind!r} is not supported "
                     f"(supported: {', '.join(_ROPE_TYPES)})")
  if kind == "default":
    return theta, None
  factor = float(_require(params, "factor", source + " rope scaling"))
  if kind == "linear":
    return theta, RopeScaling(kind="linear", factor=factor)
  keys = ("low_freq_factor", "high_freq_factor",
          "original_max_position_embeddings")
  low, high, old = (_require(params, k, source + " rope scaling")
                    for k in keys)
  return theta, RopeScaling(kind="llama3", factor=factor,
                            low_freq_factor=float(low),
                            high_freq_factor=float(high),
                            original_max_position_embeddings=int(old))


def from_hf(d: dict, source: str = "config.json", **overrides) -> ModelConfig:
  """ModelConfig from a parsed config.json.

  Args:
    d: the parsed config.json.
    source: named in error messages.
    **overrides: ModelConfig fields to replace (e.g. param_dtype, remat).
      The compute dtype defaults to the parameter dtype.

  Returns:
    A validated ModelConfig.

  Raises:
    ValueError: unsupported model_type, activation, sliding window, biases,
      RoPE type or dtype; a missing required key.
  """
  model_type = d.get("model_type")
  if model_type not in MODEL_TYPES:
    raise ValueError(f"{source}: model_type {model_type!r} is not supported "
                     f"(supported: {', '.join(MODEL_TYPES)})")
  if d.get("hidden_act", "silu") != "silu":
    raise ValueError(f"{source}: hidden_act {d['hidden_act']!r} is not "
                     "supported (only 'silu')")
  if d.get("use_sliding_window"):
    raise ValueError(f"{source}: use_sliding_window=true is not supported")
  if d.get("mlp_bias") or (model_type == "llama" and d.get("attention_bias")):
    raise ValueError(f"{source}: llama attention_bias/mlp_bias are not "
                     "supported")
  heads = int(_require(d, "num_attention_heads", source))
  hidden = int(_require(d, "hidden_size", source))
  raw_dtype = str(d.get("dtype") or d.get("torch_dtype") or "float32")
  if raw_dtype not in _DTYPES:
    raise ValueError(f"{source}: dtype {raw_dtype!r} is not supported "
                     f"(supported: {sorted(set(_DTYPES.values()))})")
  theta, scaling = _rope(d, source)
  fields = dict(
      vocab_size=int(_require(d, "vocab_size", source)),
      hidden_size=hidden,
      num_layers=int(_require(d, "num_hidden_layers", source)),
      num_heads=heads,
      num_kv_heads=int(d.get("num_key_value_heads") or heads),
      head_dim=int(d.get("head_dim") or hidden // heads),
      intermediate_size=int(_require(d, "intermediate_size", source)),
      rope_theta=theta, rope_scaling=scaling,
      rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(d.get("tie_word_embeddings", False)),
      qkv_bias=model_type == "qwen2",
      param_dtype=_DTYPES[raw_dtype],
      max_position_embeddings=int(d.get("max_position_embeddings", 32768)))
  fields.update(overrides)
  if "dtype" not in overrides:
    fields["dtype"] = fields["param_dtype"]
  return ModelConfig(**fields).validate()


def to_hf(config: ModelConfig, token_ids: dict | None = None) -> dict:
  """config.json contents for `config` (qwen2 when it has q/k/v biases,
  llama otherwise; both spellings of dtype and RoPE for older readers)."""
  model_type = "qwen2" if config.qkv_bias else "llama"
  rope = {"rope_type": "default", "rope_theta": config.rope_theta}
  if config.rope_scaling is not None:
    s = config.rope_scaling
    rope.update(rope_type=s.kind, factor=s.factor)
    if s.kind == "llama3":
      rope.update(low_freq_factor=s.low_freq_factor,
                  high_freq_factor=s.high_freq_factor,
                  original_max_position_embeddings=(
                      s.original_max_position_embeddings))
  d = {
      "architectures": [("Qwen2" if config.qkv_bias else "Llama") +
                        "ForCausalLM"],
      "model_type": model_type,
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim,
      "intermediate_size": config.intermediate_size,
      "hidden_act": "silu",
      "rms_norm_eps": config.rms_norm_eps,
      "tie_word_embeddings": config.tie_embeddings,
      "max_position_embeddings": config.max_position_embeddings,
      "rope_theta": config.rope_theta,
      "rope_scaling": None if config.rope_scaling is None else {
          k: v for k, v in rope.items() if k != "rope_theta"},
      "rope_parameters": rope,
      "dtype": config.param_dtype,
      "torch_dtype": config.param_dtype,
  }
  if model_type == "llama":
    d.update(attention_bias=False, mlp_bias=False)
  d.update({k: v for k, v in (token_ids or {}).items() if k in TOKEN_ID_KEYS})
  return d
