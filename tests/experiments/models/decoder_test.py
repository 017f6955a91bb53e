"""Decoder: float64 NumPy reference forward, KV cache, padding, remat, mesh."""

import math
import os
import pathlib
import subprocess
import sys
import textwrap

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cajax_kernels
from experiments.models import config as config_lib
from experiments.models import decoder as decoder_lib
from experiments.models import layers
from experiments.models.config import RopeScaling


@nnx.jit
def _forward(model, tokens, positions, valid, cache=None):
  """The decoder under one jit (eager mode compiles every op separately)."""
  return model(jnp.asarray(tokens), jnp.asarray(positions),
               jnp.asarray(valid), cache)


def _model(seed=0, **overrides):
  """A tiny Decoder built eagerly: its init ops are compiled once per shape
  and reused by every variant (create_model would compile a fresh init)."""
  return decoder_lib.Decoder(config_lib.get("tiny", **overrides),
                             rngs=nnx.Rngs(seed))


def _params(model):
  """{path string: float64 array} of every parameter."""
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  return {".".join(map(str, k)): np.asarray(v[...], np.float64)
          for k, v in flat}


def _ref_inv_freq(cfg):
  """Per-pair inverse frequencies, written as the piecewise Llama 3.1 rule."""
  out = []
  for i in range(cfg.head_dim // 2):
    f = cfg.rope_theta ** (-2.0 * i / cfg.head_dim)
    s = cfg.rope_scaling
    if s is not None and s.kind == "linear":
      f /= s.factor
    elif s is not None:
      wavelength = 2 * math.pi / f
      low = s.original_max_position_embeddings / s.low_freq_factor
      high = s.original_max_position_embeddings / s.high_freq_factor
      if wavelength > low:
        f /= s.factor
      elif wavelength >= high:
        a = ((s.original_max_position_embeddings / wavelength
              - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor))
        f = (1 - a) * f / s.factor + a * f
    out.append(f)
  return np.array(out)


def _rms(x, scale, eps):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * scale


def _rope(x, pos, inv):
  """x[T, heads, H]: pairs (i, i + H/2) rotated by pos · inv_i."""
  half = x.shape[-1] // 2
  out = np.empty_like(x)
  for i in range(half):
    ang = (pos * inv[i])[:, None]
    a, b = x[..., i], x[..., i + half]
    out[..., i] = a * np.cos(ang) - b * np.sin(ang)
    out[..., i + half] = b * np.cos(ang) + a * np.sin(ang)
  return out


def _ref_forward(p, cfg, tokens, positions, valid):
  """float64 hidden states of one row at a time, explicit head loops."""
  n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  inv, eps = _ref_inv_freq(cfg), cfg.rms_norm_eps
  outs = []
  for row, pos, val in zip(tokens, positions, valid):
    t = len(row)
    x = p["embed.embedding"][row]
    for i in range(cfg.num_layers):
      pre = f"layers.{i}."
      lin = lambda y, name: y @ p[pre + name + ".kernel"] + (  # noqa: E731
          p.get(pre + name + ".bias", 0.0))
      y = _rms(x, p[pre + "input_layernorm.scale"], eps)
      q = _rope(lin(y, "self_attn.q_proj").reshape(t, n, h), pos, inv)
      kk = _rope(lin(y, "self_attn.k_proj").reshape(t, k, h), pos, inv)
      v = lin(y, "self_attn.v_proj").reshape(t, k, h)
      att = np.zeros((t, n, h))
      for head in range(n):
        g = head // (n // k)
        s = q[:, head] @ kk[:, g].T / math.sqrt(h)
        allowed = np.tril(np.ones((t, t), bool)) & val[None, :]
        s = np.where(allowed, s, -1e300)  # padding queries: uniform
        w = np.exp(s - s.max(-1, keepdims=True))
        att[:, head] = (w / w.sum(-1, keepdims=True)) @ v[:, g]
      x = x + lin(att.reshape(t, n * h), "self_attn.o_proj")
      y = _rms(x, p[pre + "post_attention_layernorm.scale"], eps)
      gate = lin(y, "mlp.gate_proj")
      x = x + lin(gate / (1 + np.exp(-gate)) * lin(y, "mlp.up_proj"),
                  "mlp.down_proj")
    outs.append(_rms(x, p["final_norm.scale"], eps))
  return np.stack(outs)


def _batch(rng, vocab, lengths, t):
  """Left-padded rows of the given valid lengths; positions from cumsum."""
  tokens = rng.integers(0, vocab, (len(lengths), t))
  valid = np.arange(t)[None, :] >= (t - np.asarray(lengths))[:, None]
  positions = np.maximum(np.cumsum(valid, 1) - 1, 0)
  return tokens.astype(np.int32), positions.astype(np.int32), valid


_VARIANTS = {
    "tied": {},
    "untied_bias": dict(tie_embeddings=False, qkv_bias=True),
    "llama3": dict(rope_theta=500000.0, rope_scaling=RopeScaling(
        "llama3", 8.0, 1.0, 4.0, original_max_position_embeddings=64)),
    "linear": dict(num_kv_heads=4, rope_scaling=RopeScaling("linear", 2.0)),
}


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_matches_float64_reference(variant):
  cfg = config_lib.get("tiny", **_VARIANTS[variant])
  model = decoder_lib.Decoder(cfg, rngs=nnx.Rngs(1))
  if cfg.qkv_bias:  # zero-initialised: give the biases values to test
    for layer in model.layers:
      for proj in ("q_proj", "k_proj", "v_proj"):
        bias = getattr(layer.self_attn, proj).bias
        bias[...] = jax.random.normal(jax.random.key(7), bias.shape)
  tokens, positions, valid = _batch(np.random.default_rng(0), cfg.vocab_size,
                                    [7, 4, 1], 7)
  hidden, cache = _forward(model, tokens, positions, valid)
  assert cache is None and hidden.shape == (3, 7, cfg.hidden_size)
  want = _ref_forward(_params(model), cfg, tokens, positions, valid)
  np.testing.assert_allclose(np.asarray(hidden)[valid], want[valid],
                             atol=2e-5, rtol=1e-4)
  n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == cfg.num_params


def test_inverse_frequencies_match_piecewise_rule():
  for variant in ("llama3", "linear", "tied"):
    cfg = config_lib.get("tiny", head_dim=32, **_VARIANTS[variant])
    got = layers.rope_inverse_frequencies(cfg.head_dim, cfg.rope_theta,
                                   cfg.rope_scaling)
    np.testing.assert_allclose(got, _ref_inv_freq(cfg), rtol=1e-6)


def test_cache_chunks_match_full_forward():
  cfg = config_lib.get("tiny", tie_embeddings=False)
  model = decoder_lib.Decoder(cfg, rngs=nnx.Rngs(2))
  tokens, positions, valid = _batch(np.random.default_rng(1), cfg.vocab_size,
                                    [9, 5, 2], 9)
  full, _ = _forward(model, tokens, positions, valid)
  cache = decoder_lib.init_cache(cfg, 3, 12)
  pieces = []
  for lo, hi in ((0, 3), (3, 4), (4, 5), (5, 6), (6, 9)):  # prefill, steps
    h, cache = _forward(model, tokens[:, lo:hi], positions[:, lo:hi],
                        valid[:, lo:hi], cache)
    pieces.append(h)
  assert int(cache.index) == 9
  np.testing.assert_array_equal(np.asarray(cache.valid[:, :9]), valid)
  assert not np.asarray(cache.valid[:, 9:]).any()
  got = model.logits(jnp.concatenate(pieces, 1))
  np.testing.assert_allclose(np.asarray(got)[valid],
                             np.asarray(model.logits(full))[valid],
                             atol=1e-5, rtol=1e-5)


def test_padding_inside_a_row_is_invisible():
  """Left-padded prompt + right-padded response == the unpadded sequence."""
  cfg = config_lib.get("tiny")
  model = decoder_lib.Decoder(cfg, rngs=nnx.Rngs(3))
  seq = np.array([5, 9, 2, 7, 1], np.int32)
  padded = np.array([0, 0, 5, 9, 2, 7, 1, 0, 0], np.int32)
  valid = padded > 0
  pos = np.maximum(np.cumsum(valid) - 1, 0)
  # Padding tokens carry arbitrary ids; they must not matter.
  noisy = np.where(valid, padded, 13)
  a, _ = _forward(model, seq[None], jnp.arange(5)[None],
                  jnp.ones((1, 5), bool))
  b, _ = _forward(model, noisy[None], pos[None], valid[None])
  np.testing.assert_allclose(np.asarray(b)[0, valid], np.asarray(a)[0],
                             atol=1e-5)


def test_remat_policies_give_the_same_gradients():
  tokens, positions, valid = _batch(np.random.default_rng(2), 48, [6, 3], 6)

  def grads(remat):
    model = _model(4, remat=remat)

    def loss(m):
      return jnp.sum(m.logits(m(tokens, positions, valid)[0]) ** 2 * valid[
          ..., None])
    return jax.tree.leaves(nnx.jit(nnx.grad(loss))(model))

  base = grads("none")
  for remat in ("full", "dots_saveable"):
    for g, b in zip(grads(remat), base):
      np.testing.assert_allclose(g, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tied", [True, False])
def test_unembedding_feeds_the_fused_kernel(tied):
  cfg = config_lib.get("tiny", tie_embeddings=tied)
  model = decoder_lib.Decoder(cfg, rngs=nnx.Rngs(5))
  weight, layout = model.unembedding()
  assert layout == ("vd" if tied else "dv")
  assert weight.shape == ((cfg.vocab_size, cfg.hidden_size) if tied else
                          (cfg.hidden_size, cfg.vocab_size))
  tokens, positions, valid = _batch(np.random.default_rng(3), cfg.vocab_size,
                                    [5, 5], 5)
  hidden, _ = _forward(model, tokens, positions, valid)
  hidden2d = hidden.reshape(-1, cfg.hidden_size)
  labels = jnp.asarray(tokens.reshape(-1))
  lp, _ = cajax_kernels.linear_token_logprobs(hidden2d, weight, labels,
                                              weight_layout=layout)
  logits = np.asarray(model.logits(hidden2d), np.float64)
  want = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - logits.max(-1, keepdims=True)
  np.testing.assert_allclose(
      lp, want[np.arange(len(labels)), tokens.reshape(-1)], atol=1e-5)


def test_bfloat16_params_and_compute():
  cfg = config_lib.get("tiny", param_dtype="bfloat16", dtype="bfloat16")
  model = decoder_lib.Decoder(cfg, rngs=nnx.Rngs(6))
  assert all(x.dtype == jnp.bfloat16
             for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  tokens, positions, valid = _batch(np.random.default_rng(4), 48, [4], 4)
  hidden, _ = _forward(model, tokens, positions, valid)
  assert hidden.dtype == jnp.bfloat16
  assert model.logits(hidden).dtype == jnp.float32


def test_bad_configs_and_inputs():
  with pytest.raises(ValueError, match="num_kv_heads=3 must divide"):
    config_lib.get("tiny", num_kv_heads=3)
  with pytest.raises(ValueError, match="remat must be one of"):
    config_lib.get("tiny", remat="some")
  with pytest.raises(ValueError, match="rope_scaling.kind must be one of"):
    config_lib.get("tiny", rope_scaling=RopeScaling("yarn", 2.0))
  with pytest.raises(ValueError, match="unknown model size"):
    config_lib.get("huge")
  with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\)"):
    config_lib.get("tiny", hiden_size=3)
  model = _model()
  tokens = jnp.zeros((2, 3), jnp.int32)
  with pytest.raises(ValueError, match="valid must have the shape"):
    model(tokens, tokens, jnp.ones((2, 4), bool))
  with pytest.raises(ValueError, match="tokens must be int"):
    model(tokens.astype(jnp.float32), tokens, jnp.ones((2, 3), bool))


def test_named_sizes_parameter_counts():
  # Published sizes: Qwen2.5-1.5B 1.54B, Qwen2.5-7B 7.62B, Llama-3.2-1B 1.24B.
  assert round(config_lib.get("qwen2_5_1_5b").num_params / 1e9, 2) == 1.54
  assert round(config_lib.get("qwen2_5_7b").num_params / 1e9, 2) == 7.62
  assert round(config_lib.get("llama3_2_1b").num_params / 1e9, 2) == 1.24
  assert 90_000 < config_lib.get("toy").num_params < 110_000


_MESH_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from experiments.models import config as config_lib, decoder as dec
    cfg = config_lib.get("tiny", tie_embeddings=False)
    mesh = dec.fsdp_mesh(data=2, fsdp=4)
    model = dec.create_model(cfg, seed=0, mesh=mesh)
    kernel = model.layers[0].self_attn.q_proj.kernel[...]
    want = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
    assert kernel.sharding.is_equivalent_to(want, 2), kernel.sharding
    assert len(kernel.addressable_shards) == 8
    assert kernel.addressable_shards[0].data.shape == (8, 32)
    ref = dec.create_model(cfg, seed=0)
    for a, b in zip(jax.tree.leaves(nnx.state(model)),
                    jax.tree.leaves(nnx.state(ref))):  # same init, any mesh
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tok = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)
    pos = tok % 6
    valid = jnp.ones((2, 6), bool)
    with jax.set_mesh(mesh):
      got = nnx.jit(lambda m: m(tok, pos, valid)[0])(model)
    np.testing.assert_allclose(got, ref(tok, pos, valid)[0], atol=1e-5)
    # A checkpoint loads straight onto the same shardings, bit-exact.
    import tempfile
    from experiments.models import hf
    out = hf.save(model, cfg, tempfile.mkdtemp() + "/ckpt")
    _, loaded = hf.load(out, mesh=mesh)
    for a, b in zip(jax.tree.leaves(nnx.state(loaded)),
                    jax.tree.leaves(nnx.state(model))):
      assert a.sharding.is_equivalent_to(b.sharding, a.ndim), a.sharding
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    print("MESH_OK")
""")


def test_create_model_shards_over_fsdp_in_a_subprocess():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  root = pathlib.Path(__file__).resolve().parents[3]
  proc = subprocess.run([sys.executable, "-c", _MESH_SCRIPT], cwd=root,
                        env=env, capture_output=True, text=True, timeout=1200)
  assert "MESH_OK" in proc.stdout, proc.stderr[-3000:]
  with pytest.raises(ValueError, match="axis named 'fsdp'"):
    decoder_lib.create_model(
        config_lib.get("tiny"), 0,
        jax.make_mesh((1,), ("x",),
                      axis_types=(jax.sharding.AxisType.Auto,)))
