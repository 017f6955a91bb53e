"""Autoregressive sampling: jitted prefill + `lax.while_loop` decode.

  out = sample(model, prompt_tokens, prompt_valid,
               SamplingConfig(max_new_tokens=48, stop_tokens=(eos,),
                              banned_tokens=(pad, bos)), rng, pad_id=pad)

Prompts are LEFT-padded; each row's positions are cumsum(valid) − 1, so a
row's first real token is position 0 whatever its padding. The prompt fills a
fixed-size KV cache (prompt length + max_new_tokens slots) in one call, then
each decode step feeds one token per row. Rows stop independently at their
first stop token; the loop exits as soon as every row has stopped.

The sampling distribution at step t: logits with banned tokens set to −∞,
divided by the temperature, restricted to the top_k largest, then to the
smallest prefix (by descending probability) whose mass reaches top_p
(Holtzman et al., arXiv 1904.09751), renormalised. `logprobs` is log π of
the sampled token under exactly that distribution. With temperature 0 the
token is the argmax of the banned-masked logits and `logprobs` is its
log-softmax at temperature 1 (the model's own log-prob; top-k/top-p do not
apply).
"""

import dataclasses
import functools
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

from experiments.models.decoder import Decoder
from experiments.models.decoder import init_cache

__all__ = [
    "SampleOutput", "SamplingConfig", "sample", "sample_without_cache",
    "sampling_logits",
]


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Static sampling settings (hashable: one compilation per config).

  Attributes:
    max_new_tokens: response length N (the output's second dimension).
    temperature: > 0, or 0 for greedy decoding.
    top_k: keep the k most likely tokens (0: off).
    top_p: nucleus mass in (0, 1] (1: off).
    stop_tokens: a row stops after sampling any of these.
    banned_tokens: never sampled (logit −∞), e.g. PAD, BOS, separators.
  """
  max_new_tokens: int
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  stop_tokens: tuple[int, ...] = ()
  banned_tokens: tuple[int, ...] = ()

  def validate(self, vocab_size: int) -> "SamplingConfig":
    if not isinstance(self.max_new_tokens, int) or self.max_new_tokens <= 0:
      raise ValueError("SamplingConfig.max_new_tokens must be a positive int, "
                       f"got {self.max_new_tokens!r}")
    if not self.temperature >= 0:
      raise ValueError("SamplingConfig.temperature must be >= 0, got "
                       f"{self.temperature}")
    if not isinstance(self.top_k, int) or self.top_k < 0:
      raise ValueError(f"SamplingConfig.top_k must be an int >= 0, got "
                       f"{self.top_k!r}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got "
                       f"{self.top_p}")
    for name in ("stop_tokens", "banned_tokens"):
      ids = getattr(self, name)
      if not isinstance(ids, tuple) or any(
          not isinstance(i, int) or not 0 <= i < vocab_size for i in ids):
        raise ValueError(f"SamplingConfig.{name} must be a tuple of ints in "
                         f"[0, {vocab_size}), got {ids!r}")
    both = sorted(set(self.stop_tokens) & set(self.banned_tokens))
    if both:
      raise ValueError(f"SamplingConfig: stop tokens {both} are also banned, "
                       "so they could never be sampled")
    if len(set(self.banned_tokens)) >= vocab_size:
      raise ValueError("SamplingConfig.banned_tokens bans the whole "
                       f"vocabulary of {vocab_size}")
    return self


class SampleOutput(NamedTuple):
  """Sampled responses.

  Attributes:
    tokens: int32[B, T]; pad_id after the stop token.
    logprobs: float32[B, T] sampling log-probs (see the module docstring);
      0 on padding.
    mask: bool[B, T]: True up to and including the stop token (all True if
      the row never stopped).
    stopped: bool[B]: the row sampled a stop token.
    stop_token: int32[B]: the stop token sampled, −1 if none.
  """
  tokens: jax.Array
  logprobs: jax.Array
  mask: jax.Array
  stopped: jax.Array
  stop_token: jax.Array


def sampling_logits(logits, config: SamplingConfig):
  """float32[B, V] logits of the sampling distribution (−∞ off support).

  Banned tokens, then temperature, top-k and top-p, in that order. With
  temperature 0 only the ban is applied (greedy uses the argmax).
  """
  logits = logits.astype(jnp.float32)
  if config.banned_tokens:
    logits = logits.at[:, jnp.asarray(config.banned_tokens)].set(-jnp.inf)
  if config.temperature == 0:
    return logits
  z = logits / config.temperature
  if 0 < config.top_k < z.shape[-1]:
    kth = jax.lax.top_k(z, config.top_k)[0][:, -1:]
    z = jnp.where(z < kth, -jnp.inf, z)
  if config.top_p < 1:
    desc = -jnp.sort(-z, axis=-1)
    probs = jax.nn.softmax(desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # The kept prefix always includes the most likely token.
    kept = jnp.sum(mass_before < config.top_p, axis=-1, keepdims=True)
    threshold = jnp.take_along_axis(desc, kept - 1, axis=-1)
    z = jnp.where(z < threshold, -jnp.inf, z)
  return z


def _choose(logits, key, config: SamplingConfig):
  """(token int32[B], its sampling log-prob float32[B])."""
  z = sampling_logits(logits, config)
  if config.temperature == 0:
    token = jnp.argmax(z, axis=-1)
  else:
    token = jax.random.categorical(key, z, axis=-1)
  logp = jax.nn.log_softmax(z, axis=-1)
  token = token.astype(jnp.int32)
  return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def _decode(step_fn, model_state, first_logits, first_pos, rng,
            config: SamplingConfig, pad_id: int) -> SampleOutput:
  """The shared sampling loop.

  Args:
    step_fn: (model_state, token int32[B], position int32[B], alive bool[B],
      step) -> (logits float32[B, V], model_state): feeds the previous token.
    model_state: a KV cache or a token buffer.
    first_logits: float32[B, V] logits after the prompt.
    first_pos: int32[B] position of the first new token.
    rng: key; step t samples with fold_in(rng, t).
    config: SamplingConfig.
    pad_id: written after the stop token.
  """
  b, n = first_logits.shape[0], config.max_new_tokens
  stops = jnp.asarray(config.stop_tokens, jnp.int32)

  def record(carry, t, logits):
    tokens, logprobs, mask, done, stop_token = carry
    token, logp = _choose(logits, jax.random.fold_in(rng, t), config)
    token = jnp.where(done, pad_id, token)
    hit = ~done & jnp.isin(token, stops)
    return (tokens.at[:, t].set(token),
            logprobs.at[:, t].set(jnp.where(done, 0.0, logp)),
            mask.at[:, t].set(~done), done | hit,
            jnp.where(hit, token, stop_token)), token

  out = (jnp.full((b, n), pad_id, jnp.int32), jnp.zeros((b, n), jnp.float32),
         jnp.zeros((b, n), bool), jnp.zeros((b,), bool),
         jnp.full((b,), -1, jnp.int32))
  out, token = record(out, 0, first_logits)

  def cond(state):
    t, _, _, _, out = state
    return (t < n) & ~jnp.all(out[3])

  def body(state):
    t, token, pos, model_state, out = state
    logits, model_state = step_fn(model_state, token, pos, ~out[3], t)
    out, token = record(out, t, logits)
    return t + 1, token, pos + 1, model_state, out

  state = (jnp.int32(1), token, first_pos, model_state, out)
  *_, (tokens, logprobs, mask, done, stop_token) = jax.lax.while_loop(
      cond, body, state)
  return SampleOutput(tokens, logprobs, mask, done, stop_token)


def _cached_steps(model, prompt_tokens, positions, prompt_valid, new_tokens):
  """Prefill a fixed-size cache; each step feeds one token into it."""
  b, p = prompt_tokens.shape
  cache = init_cache(model.config, b, p + new_tokens)
  hidden, cache = model(prompt_tokens, positions, prompt_valid, cache)

  def step(cache, token, pos, alive, t):
    del t
    hidden, cache = model(token[:, None], pos[:, None], alive[:, None], cache)
    return model.logits(hidden[:, 0]), cache

  return hidden, cache, step


def _uncached_steps(model, prompt_tokens, positions, prompt_valid, new_tokens):
  """No cache: each step writes its token into padded buffers and re-runs the
  whole sequence."""
  p = prompt_tokens.shape[1]
  extra = ((0, 0), (0, new_tokens))
  buffers = (jnp.pad(prompt_tokens, extra), jnp.pad(positions, extra),
             jnp.pad(prompt_valid, extra))
  hidden, _ = model(prompt_tokens, positions, prompt_valid)

  def step(buffers, token, pos, alive, t):
    column = p + t - 1
    buffers = tuple(
        jax.lax.dynamic_update_slice(buf, new[:, None].astype(buf.dtype),
                                     (0, column))
        for buf, new in zip(buffers, (token, pos, alive)))
    hidden, _ = model(*buffers)
    last = jax.lax.dynamic_slice_in_dim(hidden, column, 1, axis=1)
    return model.logits(last[:, 0]), buffers

  return hidden, buffers, step


@functools.partial(jax.jit,
                   static_argnames=("graphdef", "config", "pad_id", "cached"))
def _sample_jit(graphdef, state, prompt_tokens, prompt_valid, rng, *, config,
                pad_id, cached):
  model = nnx.merge(graphdef, state)
  positions = jnp.maximum(
      jnp.cumsum(prompt_valid.astype(jnp.int32), axis=1) - 1, 0)
  steps = _cached_steps if cached else _uncached_steps
  hidden, model_state, step = steps(model, prompt_tokens, positions,
                                    prompt_valid, config.max_new_tokens)
  first_pos = jnp.sum(prompt_valid, axis=1, dtype=jnp.int32)
  return _decode(step, model_state, model.logits(hidden[:, -1]), first_pos,
                 rng, config, pad_id)


def _run(cached: bool, model: Decoder, prompt_tokens, prompt_valid,
         config: SamplingConfig, rng, pad_id: int) -> SampleOutput:
  config.validate(model.config.vocab_size)
  prompt_tokens = jnp.asarray(prompt_tokens)
  prompt_valid = jnp.asarray(prompt_valid)
  if (prompt_tokens.ndim != 2
      or not jnp.issubdtype(prompt_tokens.dtype, jnp.integer)):
    raise ValueError("prompt_tokens must be int[B, P], got "
                     f"{prompt_tokens.dtype}{list(prompt_tokens.shape)}")
  if prompt_valid.shape != prompt_tokens.shape or prompt_valid.dtype != bool:
    raise ValueError(f"prompt_valid must be bool{list(prompt_tokens.shape)}, "
                     f"got {prompt_valid.dtype}{list(prompt_valid.shape)}")
  graphdef, state = nnx.split(model)
  return _sample_jit(graphdef, state, prompt_tokens.astype(jnp.int32),
                     prompt_valid, rng, config=config, pad_id=int(pad_id),
                     cached=cached)


def sample(model: Decoder, prompt_tokens, prompt_valid,
           config: SamplingConfig, rng, pad_id: int) -> SampleOutput:
  """Samples max_new_tokens per row with a KV cache (see module docstring).

  Args:
    model: the Decoder (its parameters are traced arguments, not constants).
    prompt_tokens: int32[B, P], left-padded.
    prompt_valid: bool[B, P]; each row needs at least one valid token.
    config: SamplingConfig.
    rng: a PRNG key.
    pad_id: token written after a row's stop token.

  Returns:
    SampleOutput.
  """
  return _run(True, model, prompt_tokens, prompt_valid, config, rng,
              pad_id)


def sample_without_cache(model: Decoder, prompt_tokens, prompt_valid,
                         config: SamplingConfig, rng, pad_id: int
                         ) -> SampleOutput:
  """Same as `sample` (same keys, same outputs) but re-runs the whole prefix
  every step; for tests and the with/without-cache benchmark."""
  return _run(False, model, prompt_tokens, prompt_valid, config,
              rng, pad_id)
