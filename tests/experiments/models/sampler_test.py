"""Sampler: cache vs full forward, greedy, bans, top-k/top-p, log-probs, stops.

Every check compares with an independent float64 NumPy computation on
logits from a full (cache-free) forward over the same prefix.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.models import config as config_lib
from experiments.models import decoder as decoder_lib
from experiments.models import sampler as sampler_lib
from experiments.models.sampler import SamplingConfig

_PAD = 0
_PROMPTS = np.array([[0, 0, 5, 6, 7, 8],
                     [1, 2, 3, 4, 5, 6],
                     [0, 0, 0, 0, 0, 9],
                     [0, 4, 4, 4, 4, 4]], np.int32)


@pytest.fixture(scope="module")
def model():
  return decoder_lib.Decoder(config_lib.get("tiny", tie_embeddings=False),
                             rngs=nnx.Rngs(0))


@nnx.jit
def _full_logits(model, tokens, valid):
  positions = jnp.maximum(jnp.cumsum(valid, 1) - 1, 0)
  return model.logits(model(tokens, positions, valid)[0])


def _teacher_forced_logits(model, prompts, out):
  """float64 [B, N, V]: logits before each response token, no cache."""
  tokens = np.concatenate([prompts, np.asarray(out.tokens)], 1)
  valid = np.concatenate([prompts != _PAD, np.asarray(out.mask)], 1)
  logits = np.asarray(_full_logits(model, tokens, valid), np.float64)
  p = prompts.shape[1]
  return logits[:, p - 1:-1]


def _ref_log_probs(logits, cfg: SamplingConfig):
  """float64 log-probs of the sampling distribution of one row [V]."""
  z = logits.copy()
  z[list(cfg.banned_tokens)] = -np.inf
  if cfg.temperature == 0:
    return z - np.logaddexp.reduce(z)
  z = z / cfg.temperature
  if cfg.top_k:
    z[np.argsort(-z)[cfg.top_k:]] = -np.inf
  if cfg.top_p < 1:
    order = np.argsort(-z)
    probs = np.exp(z[order] - np.logaddexp.reduce(z))
    kept, mass = 0, 0.0
    while mass < cfg.top_p:  # smallest prefix reaching the mass
      mass += probs[kept]
      kept += 1
    z[order[kept:]] = -np.inf
  return z - np.logaddexp.reduce(z)


def _check_structure(out, cfg: SamplingConfig):
  tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
  for row in range(len(tokens)):
    hits = [j for j, t in enumerate(tokens[row]) if t in cfg.stop_tokens]
    if hits:
      end = hits[0] + 1
      assert out.stopped[row] and out.stop_token[row] == tokens[row, hits[0]]
    else:
      end = tokens.shape[1]
      assert not out.stopped[row] and out.stop_token[row] == -1
    np.testing.assert_array_equal(mask[row], np.arange(tokens.shape[1]) < end)
    assert (tokens[row, end:] == _PAD).all()
    assert (np.asarray(out.logprobs)[row, end:] == 0).all()
    assert not np.isin(tokens[row, :end], cfg.banned_tokens).any()


def test_greedy_is_deterministic_and_matches_full_forward_argmax(model):
  cfg = SamplingConfig(max_new_tokens=7, temperature=0.0,
                       banned_tokens=(_PAD,))
  # A stop token that the greedy path of row 0 reaches at step 2.
  free = sampler_lib.sample(model, _PROMPTS, _PROMPTS != _PAD, cfg,
                            jax.random.key(0), _PAD)
  stop = int(free.tokens[0, 2])
  cfg = SamplingConfig(max_new_tokens=7, temperature=0.0, stop_tokens=(stop,),
                       banned_tokens=(_PAD,))
  a = sampler_lib.sample(model, _PROMPTS, _PROMPTS != _PAD, cfg,
                         jax.random.key(1), _PAD)
  b = sampler_lib.sample(model, _PROMPTS, _PROMPTS != _PAD, cfg,
                         jax.random.key(2), _PAD)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  _check_structure(a, cfg)
  assert a.stopped[0] and a.mask[0].sum() <= 3
  # Row by row: each token is the argmax of a full forward over its prefix.
  logits = _teacher_forced_logits(model, _PROMPTS, a)
  for row in range(len(_PROMPTS)):
    for j in np.flatnonzero(np.asarray(a.mask[row])):
      want = _ref_log_probs(logits[row, j], cfg)
      assert a.tokens[row, j] == np.argmax(want)
      np.testing.assert_allclose(a.logprobs[row, j], want.max(), atol=1e-5)


_STOCHASTIC = SamplingConfig(max_new_tokens=10, temperature=0.7, top_k=12,
                             top_p=0.8, stop_tokens=(3, 11, 17, 29),
                             banned_tokens=(_PAD, 1, 2))


def test_stochastic_sampling_log_probs_and_support(model):
  cfg = _STOCHASTIC
  prompts = np.tile(_PROMPTS, (3, 1))
  out = sampler_lib.sample(model, prompts, prompts != _PAD, cfg,
                           jax.random.key(3), _PAD)
  _check_structure(out, cfg)
  assert out.stopped.any() and not out.stopped.all()
  logits = _teacher_forced_logits(model, prompts, out)
  for row in range(len(prompts)):
    for j in np.flatnonzero(np.asarray(out.mask[row])):
      want = _ref_log_probs(logits[row, j], cfg)
      token = int(out.tokens[row, j])
      assert np.isfinite(want[token])  # inside top-k ∩ top-p, not banned
      np.testing.assert_allclose(out.logprobs[row, j], want[token], atol=1e-5)
  # Same keys without the cache: same tokens, same log-probs.
  slow = sampler_lib.sample_without_cache(model, prompts, prompts != _PAD, cfg,
                                          jax.random.key(3), _PAD)
  np.testing.assert_array_equal(slow.tokens, out.tokens)
  np.testing.assert_array_equal(slow.mask, out.mask)
  np.testing.assert_allclose(slow.logprobs, out.logprobs, atol=1e-5)


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.5, 5, 1.0), (1.3, 0, 0.6), (0.9, 7, 0.5), (0.0, 3, 0.5)])
def test_sampling_logits_support_matches_reference(temperature, top_k, top_p):
  cfg = SamplingConfig(max_new_tokens=1, temperature=temperature, top_k=top_k,
                       top_p=top_p, banned_tokens=(2, 5))
  logits = np.random.default_rng(0).normal(size=(6, 20)) * 3
  got = jax.nn.log_softmax(
      sampler_lib.sampling_logits(jnp.asarray(logits, jnp.float32), cfg))
  for row in range(6):
    want = _ref_log_probs(logits[row], cfg)
    np.testing.assert_array_equal(np.isfinite(got[row]), np.isfinite(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(np.asarray(got[row])[finite], want[finite],
                               atol=1e-5)


def test_empirical_frequencies_follow_the_filtered_distribution():
  cfg = SamplingConfig(max_new_tokens=1, temperature=0.8, top_k=4, top_p=0.9,
                       banned_tokens=(1,))
  logits = jnp.asarray([[2.0, 3.0, 1.5, 1.0, 0.5, -1.0]], jnp.float32)
  keys = jax.random.split(jax.random.key(5), 4000)
  tokens, _ = jax.vmap(lambda k: sampler_lib._choose(logits, k, cfg))(keys)
  freq = np.bincount(np.asarray(tokens[:, 0]), minlength=6) / len(keys)
  want = np.exp(_ref_log_probs(np.asarray(logits[0], np.float64), cfg))
  np.testing.assert_allclose(freq, want, atol=0.03)
  assert freq[1] == 0 and freq[4] == 0 and freq[5] == 0


def test_bad_sampling_configs(model):
  valid = _PROMPTS != _PAD
  cases = [
      (dict(max_new_tokens=0), "max_new_tokens must be a positive int"),
      (dict(max_new_tokens=2, temperature=-1.0), "temperature must be >= 0"),
      (dict(max_new_tokens=2, top_p=0.0), r"top_p must be in \(0, 1\]"),
      (dict(max_new_tokens=2, top_k=-2), "top_k must be an int >= 0"),
      (dict(max_new_tokens=2, stop_tokens=(99,)), r"stop_tokens must be .*48"),
      (dict(max_new_tokens=2, stop_tokens=(4,), banned_tokens=(4,)),
       r"stop tokens \[4\] are also banned"),
  ]
  for kwargs, match in cases:
    with pytest.raises(ValueError, match=match):
      sampler_lib.sample(model, _PROMPTS, valid, SamplingConfig(**kwargs),
                         jax.random.key(0), _PAD)
  cfg = SamplingConfig(max_new_tokens=2)
  with pytest.raises(ValueError, match="prompt_valid must be bool"):
    sampler_lib.sample(model, _PROMPTS, valid.astype(np.int32), cfg,
                       jax.random.key(0), _PAD)
  with pytest.raises(ValueError, match="prompt_tokens must be int"):
    sampler_lib.sample(model, _PROMPTS[0], valid[0], cfg, jax.random.key(0),
                       _PAD)
