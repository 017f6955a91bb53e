"""Checkpoints: logits and greedy tokens against transformers; save/load.

Tiny random Qwen2 and Llama checkpoints are written by transformers (CPU
torch) into temporary directories, once per module.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from experiments import generate as generate_lib
from experiments.models import hf
from experiments.models import sampler

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

_COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=48,
               num_hidden_layers=2, num_attention_heads=4)
_VARIANTS = {
    # Tied embeddings (Qwen2 always has q/k/v biases).
    "qwen2_tied": ("Qwen2", dict(num_key_value_heads=2,
                                 tie_word_embeddings=True, rope_theta=1e4)),
    # Untied head, multi-query, large theta.
    "qwen2_untied": ("Qwen2", dict(num_key_value_heads=1,
                                   tie_word_embeddings=False,
                                   rope_theta=1e6)),
    "llama3_scaled": ("Llama", dict(
        num_key_value_heads=2, head_dim=8, tie_word_embeddings=False,
        rms_norm_eps=1e-5, rope_parameters=dict(
            rope_type="llama3", rope_theta=5e5, factor=8.0,
            low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=16))),
    "llama_linear": ("Llama", dict(
        num_key_value_heads=4, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="linear", rope_theta=1e4,
                             factor=2.0))),
}


def _randomise(model, seed):
  """O(1) logits: transformers' 0.02 init would make any loader look right."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1 + 0.1 * noise if name.endswith("norm.weight") else
              0.25 * noise)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """{variant: (directory, torch model)}."""
  out = {}
  for i, (variant, (arch, kwargs)) in enumerate(sorted(_VARIANTS.items())):
    config = getattr(transformers, arch + "Config")(**_COMMON, **kwargs)
    model = getattr(transformers, arch + "ForCausalLM")(config).eval()
    _randomise(model, i)
    directory = tmp_path_factory.mktemp(variant)
    model.save_pretrained(directory)
    out[variant] = (directory, model)
  return out


def _batch(seed, batch=3, length=9):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, _COMMON["vocab_size"], (batch, length))
  valid = np.arange(length)[None] >= np.array([0, 3, 6])[:batch, None]
  positions = np.maximum(np.cumsum(valid, 1) - 1, 0)
  return tokens, positions, valid


@nnx.jit
def _logits(model, tokens, positions, valid):
  return model.logits(model(tokens, positions, valid)[0])


def _torch_logits(model, tokens, positions, valid):
  with torch.no_grad():
    return model(input_ids=torch.tensor(tokens),
                 attention_mask=torch.tensor(valid.astype(np.int64)),
                 position_ids=torch.tensor(positions)).logits.numpy()


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_logits_match_transformers(checkpoints, variant):
  directory, reference = checkpoints[variant]
  config, model = hf.load(directory)
  arch, kwargs = _VARIANTS[variant]
  assert config.qkv_bias == (arch == "Qwen2")
  assert config.tie_embeddings == kwargs["tie_word_embeddings"]
  assert (config.rope_scaling is None) == (arch == "Qwen2")
  tokens, positions, valid = _batch(1)
  got = np.asarray(_logits(model, tokens.astype(np.int32),
                           positions.astype(np.int32), valid))
  want = _torch_logits(reference, tokens, positions, valid)
  assert np.abs(want[valid]).max() > 1.0  # not a near-zero model
  np.testing.assert_allclose(got[valid], want[valid], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["qwen2_tied", "llama3_scaled"])
def test_greedy_generation_matches_transformers(checkpoints, variant):
  directory, reference = checkpoints[variant]
  _, model = hf.load(directory)
  tokens, _, valid = _batch(2)
  tokens = np.where(valid, tokens, 0)
  new = 8
  with torch.no_grad():
    want = reference.generate(
        input_ids=torch.tensor(tokens),
        attention_mask=torch.tensor(valid.astype(np.int64)),
        max_new_tokens=new, min_new_tokens=new, do_sample=False,
        pad_token_id=0, eos_token_id=None).numpy()[:, tokens.shape[1]:]
  out = sampler.sample(model, tokens.astype(np.int32), valid,
                       sampler.SamplingConfig(max_new_tokens=new,
                                              temperature=0.0),
                       jax.random.key(0), pad_id=0)
  np.testing.assert_array_equal(np.asarray(out.tokens), want)


def _params(model):
  return {k: np.asarray(v.get_value()) for k, v in
          nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _tensors(directory):
  out = {}
  for file in pathlib.Path(directory).glob("*.safetensors"):
    with safe_open(file, framework="numpy") as f:
      out.update({k: f.get_tensor(k) for k in f.keys()})
  return out


def test_save_load_round_trip_is_bit_exact(checkpoints, tmp_path):
  directory, reference = checkpoints["qwen2_untied"]
  config, model = hf.load(directory)
  (directory / "tokenizer.json").write_text("{}")  # copied verbatim
  out = hf.save(model, config, tmp_path / "out", tokenizer_dir=directory,
                max_shard_bytes=20_000)
  index = json.loads((out / hf.INDEX_FILE).read_text())
  assert len(set(index["weight_map"].values())) > 2  # several shards
  assert (out / "tokenizer.json").read_text() == "{}"
  config2, model2 = hf.load(out)
  assert config2 == config
  for (k, a), (k2, b) in zip(sorted(_params(model).items()),
                             sorted(_params(model2).items())):
    assert k == k2
    np.testing.assert_array_equal(a, b)
  original, saved = _tensors(directory), _tensors(out)
  assert sorted(original) == sorted(saved)
  for name, value in original.items():
    np.testing.assert_array_equal(saved[name], value)
  # Other tools read it: transformers gives the reference logits.
  reread = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  tokens, positions, valid = _batch(3)
  np.testing.assert_allclose(
      _torch_logits(reread, tokens, positions, valid)[valid],
      _torch_logits(reference, tokens, positions, valid)[valid], atol=1e-6)
  with pytest.raises(FileExistsError, match="already holds a checkpoint"):
    hf.save(model, config, out)


def test_bfloat16_load_and_round_trip(checkpoints, tmp_path):
  directory, _ = checkpoints["llama3_scaled"]
  config, model = hf.load(directory, dtype="bfloat16")
  assert config.param_dtype == config.dtype == "bfloat16"
  params = _params(model)
  assert all(v.dtype == jnp.bfloat16 for v in params.values())
  hf.save(model, config, tmp_path / "bf16")
  config2, model2 = hf.load(tmp_path / "bf16")
  assert config2 == config
  for k, v in _params(model2).items():
    np.testing.assert_array_equal(v.view(np.uint16), params[k].view(np.uint16))


def _copy(directory, tmp_path, name="bad"):
  target = tmp_path / name
  shutil.copytree(directory, target)
  return target


def _edit_config(directory, **changes):
  config = json.loads((directory / "config.json").read_text())
  config.update(changes)
  (directory / "config.json").write_text(json.dumps(config))


def _edit_tensors(directory, change):
  tensors = _tensors(directory)
  change(tensors)
  for file in directory.glob("*.safetensors"):
    file.unlink()
  save_file(tensors, directory / "model.safetensors")


def test_clear_errors(checkpoints, tmp_path):
  directory, _ = checkpoints["qwen2_tied"]
  with pytest.raises(FileNotFoundError, match="does not exist"):
    hf.load(tmp_path / "nowhere")
  bad = _copy(directory, tmp_path, "type")
  _edit_config(bad, model_type="gpt2")
  with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
    hf.load(bad)
  bad = _copy(directory, tmp_path, "yarn")
  _edit_config(bad, rope_parameters=dict(rope_type="yarn", factor=4.0,
                                         rope_theta=1e4))
  with pytest.raises(ValueError, match="RoPE scaling type 'yarn'"):
    hf.load(bad)
  bad = _copy(directory, tmp_path, "shape")
  _edit_tensors(bad, lambda t: t.update({
      "model.layers.1.self_attn.k_proj.weight": np.zeros((8, 32),
                                                         np.float32)}))
  with pytest.raises(ValueError, match=r"'model.layers.1.self_attn.k_proj."
                     r"weight' has shape \[8, 32\] but the config needs "
                     r"\[16, 32\]"):
    hf.load(bad)
  bad = _copy(directory, tmp_path, "missing")
  _edit_tensors(bad, lambda t: t.pop("model.norm.weight"))
  with pytest.raises(ValueError, match=r"lacks tensors \['model.norm.weight"):
    hf.load(bad)
  bad = _copy(directory, tmp_path, "extra")
  _edit_tensors(bad, lambda t: t.update(
      {"model.layers.2.mlp.up_proj.weight": np.zeros((48, 32), np.float32)}))
  with pytest.raises(ValueError, match="unexpected tensors"):
    hf.load(bad)
  bad = _copy(directory, tmp_path, "pickle")
  for file in bad.glob("*.safetensors"):
    file.rename(file.with_suffix(".bin"))
  with pytest.raises(FileNotFoundError, match="pickled .* are never read"):
    hf.load(bad)
  (bad / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    hf.load(bad)


def test_generate_command_line(checkpoints):
  directory, _ = checkpoints["llama_linear"]
  ids, text = generate_lib.generate(directory, prompt_ids=[3, 1, 4],
                                    max_new_tokens=5)
  assert text is None and len(ids) == 5
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  root = pathlib.Path(__file__).resolve().parents[3]
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.generate",
       f"--model_path={directory}", "--prompt_ids=3,1,4",
       "--max_new_tokens=5", "--temperature=0"],
      cwd=root, env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"ids: {','.join(map(str, ids))}" in proc.stdout.splitlines()
  with pytest.raises(ValueError, match="exactly one of prompt, prompt_ids"):
    generate_lib.generate(directory, max_new_tokens=2)
