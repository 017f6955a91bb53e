"""Hugging Face-format checkpoints (Qwen2, Llama) in and out of the Decoder.

  config, model = load("/ckpt/Qwen2.5-Math-1.5B", mesh=mesh, dtype="bfloat16")
  save(model, config, "/out/step_1000", tokenizer_dir="/ckpt/Qwen2.5-Math-1.5B")

A checkpoint is a directory with `config.json` and `*.safetensors` files
(with or without `model.safetensors.index.json`). Only safetensors are read,
never pickled `.bin` files. Each parameter is built with
`jax.make_array_from_callback`: every device reads just its own shard from
the memory-mapped file (transposed on the host when the table says so), so
no full host copy per device is made.
"""

import contextlib
import hashlib
import json
import pathlib
import shutil

from flax import nnx
import jax
from jax.experimental import multihost_utils
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from experiments.models import hf_config
from experiments.models.config import ModelConfig
from experiments.models.decoder import Decoder

__all__ = [
    "INDEX_FILE", "TABLE", "TOKENIZER_FILES", "checkpoint_identity", "load",
    "save", "tensor_table",
]

# THE table: checkpoint tensor name -> NNX parameter path, and whether the
# tensor is transposed (torch Linear stores [out, in]; the Decoder [in, out]).
# "{i}" runs over layers. A row applies when the model has that parameter
# (lm_head only when untied, biases only with qkv_bias).
TABLE = (
    ("model.embed_tokens.weight", "embed.embedding", False),
    ("model.norm.weight", "final_norm.scale", False),
    ("lm_head.weight", "lm_head.kernel", True),
    ("model.layers.{i}.input_layernorm.weight",
     "layers.{i}.input_layernorm.scale", False),
    ("model.layers.{i}.post_attention_layernorm.weight",
     "layers.{i}.post_attention_layernorm.scale", False),
    ("model.layers.{i}.self_attn.q_proj.weight",
     "layers.{i}.self_attn.q_proj.kernel", True),
    ("model.layers.{i}.self_attn.k_proj.weight",
     "layers.{i}.self_attn.k_proj.kernel", True),
    ("model.layers.{i}.self_attn.v_proj.weight",
     "layers.{i}.self_attn.v_proj.kernel", True),
    ("model.layers.{i}.self_attn.o_proj.weight",
     "layers.{i}.self_attn.o_proj.kernel", True),
    ("model.layers.{i}.self_attn.q_proj.bias",
     "layers.{i}.self_attn.q_proj.bias", False),
    ("model.layers.{i}.self_attn.k_proj.bias",
     "layers.{i}.self_attn.k_proj.bias", False),
    ("model.layers.{i}.self_attn.v_proj.bias",
     "layers.{i}.self_attn.v_proj.bias", False),
    ("model.layers.{i}.mlp.gate_proj.weight",
     "layers.{i}.mlp.gate_proj.kernel", True),
    ("model.layers.{i}.mlp.up_proj.weight",
     "layers.{i}.mlp.up_proj.kernel", True),
    ("model.layers.{i}.mlp.down_proj.weight",
     "layers.{i}.mlp.down_proj.kernel", True),
)
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "generation_config.json",
                   "vocab.json", "merges.txt", "tokenizer.model")


def _path_key(path) -> str:
  return ".".join(str(p) for p in path)


def tensor_table(config: ModelConfig, param_paths) -> dict:
  """{checkpoint name: (NNX path string, transpose)} for this model.

  Args:
    config: the model's config (number of layers).
    param_paths: the model's parameter paths (strings "a.b.0.c").

  Raises:
    RuntimeError: a model parameter no table row covers (a bug).
  """
  paths = set(param_paths)
  table = {}
  for name, target, transpose in TABLE:
    layers = range(config.num_layers) if "{i}" in name else [None]
    for i in layers:
      target_i = target.format(i=i)
      if target_i in paths:
        table[name.format(i=i)] = (target_i, transpose)
  uncovered = paths - {t for t, _ in table.values()}
  if uncovered:
    raise RuntimeError(f"no checkpoint name for parameters {sorted(uncovered)}")
  return table


def _tensor_files(path: pathlib.Path) -> dict:
  """{tensor name: safetensors file} from the index or every shard."""
  index = path / INDEX_FILE
  if index.is_file():
    weight_map = hf_config.read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index} has no 'weight_map' dictionary")
    missing = sorted({f for f in weight_map.values()
                      if not (path / f).is_file()})
    if missing:
      raise FileNotFoundError(f"{index} names missing files {missing}")
    return {name: path / f for name, f in weight_map.items()}
  files = sorted(path.glob("*.safetensors"))
  if not files:
    pickled = sorted(p.name for p in path.glob("*.bin"))
    raise FileNotFoundError(
        f"no *.safetensors files in {path}" + (
            f" (pickled {pickled} are never read; convert them to "
            "safetensors)" if pickled else ""))
  out = {}
  for file in files:
    with safe_open(file, framework="numpy") as f:
      out.update({name: file for name in f.keys()})
  return out


def checkpoint_identity(path, sample_bytes: int = 1 << 20) -> str:
  """A SHA-256 that tells checkpoints apart, cheap at any size.

  It covers config.json, the tokenizer files and, of every safetensors
  file, its name, size and first and last `sample_bytes` (weights differ
  throughout between checkpoints, so a sample tells them apart without
  reading gigabytes).
  """
  path = pathlib.Path(path)
  digest = hashlib.sha256()
  names = ["config.json", *TOKENIZER_FILES]
  names += sorted(p.name for p in path.glob("*.safetensors"))
  for name in names:
    file = path / name
    if not file.is_file():
      continue
    size = file.stat().st_size
    digest.update(f"{name}:{size}:".encode())
    with open(file, "rb") as f:
      if not name.endswith(".safetensors") or size <= 2 * sample_bytes:
        digest.update(f.read())
      else:
        digest.update(f.read(sample_bytes))
        f.seek(size - sample_bytes)
        digest.update(f.read(sample_bytes))
  return digest.hexdigest()


def _ignorable(name: str, config: ModelConfig) -> bool:
  # Old Llama exports store RoPE buffers; some tied exports also store a copy
  # of the embedding as lm_head (transformers ignores it too).
  return name.endswith("rotary_emb.inv_freq") or (
      config.tie_embeddings and name == "lm_head.weight")


def _check_names(table: dict, files: dict, config: ModelConfig, path):
  missing = sorted(set(table) - set(files))
  if missing:
    raise ValueError(f"checkpoint {path} lacks tensors {missing[:8]}"
                     + (f" and {len(missing) - 8} more" if len(missing) > 8
                        else ""))
  unexpected = sorted(n for n in set(files) - set(table)
                      if not _ignorable(n, config))
  if unexpected:
    raise ValueError(f"checkpoint {path} has unexpected tensors "
                     f"{unexpected[:8]} for a {config.num_layers}-layer "
                     f"model (tied={config.tie_embeddings}, "
                     f"qkv_bias={config.qkv_bias})")


def _read(handle, name: str, transpose: bool, target: jax.ShapeDtypeStruct):
  """One parameter, each device's shard read straight from the file."""
  piece = handle.get_slice(name)
  shape = tuple(piece.get_shape())
  want = tuple(target.shape[::-1] if transpose else target.shape)
  if shape != want:
    raise ValueError(f"tensor {name!r} has shape {list(shape)} but the config "
                     f"needs {list(want)}")

  def shard(index):
    block = piece[tuple(index[::-1] if transpose else index)]
    block = block.T if transpose else block
    return np.ascontiguousarray(block.astype(target.dtype))

  return jax.make_array_from_callback(target.shape, target.sharding, shard)


def _abstract_state(config: ModelConfig, mesh):
  """(graphdef, flat [(path, Param of ShapeDtypeStruct with sharding)])."""
  def build():
    return Decoder(config, rngs=nnx.Rngs(0))

  if mesh is None:
    graphdef, state = nnx.split(nnx.eval_shape(build))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    flat = [(p, v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype,
                                               sharding=device)))
            for p, v in nnx.to_flat_state(state)]
  else:
    graphdef, state = nnx.get_abstract_model(build, mesh)
    flat = list(nnx.to_flat_state(state))
  return graphdef, flat


def load(path, mesh: jax.sharding.Mesh | None = None, dtype: str | None = None,
         **overrides) -> tuple[ModelConfig, Decoder]:
  """Reads a Qwen2 / Llama checkpoint directory into a Decoder.

  Args:
    path: directory with config.json and *.safetensors.
    mesh: place each parameter on its ("fsdp") sharding over this mesh;
      None: the first device.
    dtype: parameter (and compute) dtype; None: config.json's dtype.
    **overrides: other ModelConfig fields (e.g. remat="full").

  Returns:
    (ModelConfig, Decoder).

  Raises:
    FileNotFoundError: no directory, config.json or safetensors file.
    ValueError: unsupported config; a missing, unexpected or mis-shaped
      tensor.
  """
  path = pathlib.Path(path)
  if not path.is_dir():
    raise FileNotFoundError(f"checkpoint directory {path} does not exist")
  if dtype is not None:
    overrides["param_dtype"] = dtype
  config = hf_config.from_hf(hf_config.read_json(path / "config.json"),
                             source=str(path / "config.json"), **overrides)
  files = _tensor_files(path)
  graphdef, flat = _abstract_state(config, mesh)
  table = tensor_table(config, [_path_key(p) for p, _ in flat])
  _check_names(table, files, config, path)
  by_path = {target: (name, transpose)
             for name, (target, transpose) in table.items()}
  loaded = []
  with contextlib.ExitStack() as stack:
    handles = {f: stack.enter_context(safe_open(f, framework="numpy"))
               for f in set(files[n] for n in table)}
    for p, var in flat:
      name, transpose = by_path[_path_key(p)]
      value = _read(handles[files[name]], name, transpose, var.get_value())
      loaded.append((p, var.replace(value)))
  return config, nnx.merge(graphdef, nnx.from_flat_state(loaded))


def _to_host(array: jax.Array) -> np.ndarray:
  if not array.is_fully_addressable:  # multi-host: every process gathers
    array = multihost_utils.process_allgather(array, tiled=True)
  return np.asarray(array)


def _shard_groups(table: dict, params: dict, max_shard_bytes: int):
  """Checkpoint names grouped, in table order, into shards under the limit."""
  groups, size = [[]], 0
  for name, (target, _) in table.items():
    nbytes = params[target].nbytes
    if groups[-1] and size + nbytes > max_shard_bytes:
      groups.append([])
      size = 0
    groups[-1].append(name)
    size += nbytes
  return groups


def save(model: Decoder, config: ModelConfig, path, tokenizer_dir=None,
         max_shard_bytes: int = 4 * 1024**3) -> pathlib.Path:
  """Writes config.json, safetensors shards with an index, tokenizer files.

  Args:
    model: the Decoder (any sharding; gathered one tensor at a time).
    config: its ModelConfig.
    path: output directory; must not already hold a checkpoint.
    tokenizer_dir: copy the tokenizer files found there, and take the
      bos/eos/pad ids from its config.json when present.
    max_shard_bytes: start a new shard file beyond this size.

  Returns:
    The output directory.
  """
  path = pathlib.Path(path)
  if (path / "config.json").exists() or list(path.glob("*.safetensors")):
    raise FileExistsError(f"{path} already holds a checkpoint; choose an "
                          "empty directory")
  if max_shard_bytes <= 0:
    raise ValueError(f"max_shard_bytes must be > 0, got {max_shard_bytes}")
  params = {_path_key(p): v.get_value()
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  table = tensor_table(config, params)
  groups = _shard_groups(table, params, max_shard_bytes)
  writer = jax.process_index() == 0
  token_ids = {}
  if tokenizer_dir is not None and (pathlib.Path(tokenizer_dir) /
                                    "config.json").is_file():
    token_ids = hf_config.read_json(pathlib.Path(tokenizer_dir) /
                                    "config.json")
  weight_map, total = {}, 0
  for k, names in enumerate(groups):
    file = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
    tensors = {}
    for name in names:
      target, transpose = table[name]
      host = _to_host(params[target])
      tensors[name] = np.ascontiguousarray(host.T if transpose else host)
      weight_map[name] = file
      total += host.nbytes
    if writer:
      path.mkdir(parents=True, exist_ok=True)
      save_file(tensors, path / file, metadata={"format": "pt"})
  if writer:
    with open(path / INDEX_FILE, "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
                f, indent=2)
    with open(path / "config.json", "w") as f:
      json.dump(hf_config.to_hf(config, token_ids), f, indent=2)
    for name in TOKENIZER_FILES if tokenizer_dir is not None else ():
      source = pathlib.Path(tokenizer_dir) / name
      if source.is_file():
        shutil.copyfile(source, path / name)
  return path
