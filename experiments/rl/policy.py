"""The trained module (decoder plus an optional value head) and its per-token
outputs on a padded batch of (prompt, response) pairs.

Layout: a row is its LEFT-padded prompt `[B, P]` followed by its
right-padded response `[B, T]`. Token j of the response is predicted from
position P − 1 + j, so the decoder runs over the first P + N − 1 tokens and
its hidden states at positions P − 1 … P + N − 2 give the response's
log-probs through the fused kernel, never through `[B·T, V]` logits.
Positions count valid tokens only (left padding does not shift them), as in
the sampler.
"""

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

import cajax_kernels

from experiments.models import decoder as decoder_lib

__all__ = [
    "Policy", "STATISTICS", "merge", "merged_decoder", "positions_of",
    "response_hidden", "split", "statistics_for", "token_outputs",
]

# THE list of per-token statistics the policy computes for an estimator, by
# `cajax.Rollouts` field name, mapped to the kernel's statistic names.
STATISTICS = {"logprobs": "logprobs", "entropy": "entropy",
              "self_certainty": "self_certainty",
              "sum_pi_squared": "sum_pi_squared",
              "token_logits": "label_logit"}


class Policy(nnx.Module):
  """A decoder and, for critic-based estimators, a scalar value head."""

  def __init__(self, decoder: decoder_lib.Decoder, *, value_head: bool,
               rngs: nnx.Rngs):
    self.decoder = decoder
    width = decoder.config.hidden_size
    self.value_head = (nnx.Linear(width, 1, rngs=rngs, dtype=jnp.float32)
                       if value_head else None)


def statistics_for(fields) -> tuple[str, ...]:
  """The statistics to compute for an estimator reading `fields`:
  `logprobs` and `entropy` (the update's old log-probs and the rollout
  metrics need them), and every other `STATISTICS` entry among `fields`."""
  return ("logprobs", "entropy") + tuple(
      s for s in STATISTICS if s in fields and s not in ("logprobs",
                                                         "entropy"))


def merge(graphdef, params: dict, rest) -> Policy:
  """The module from its graph, a pure dict of parameters and other state."""
  return nnx.merge(graphdef, params, rest)


def merged_decoder(graphdef, params: dict, rest) -> decoder_lib.Decoder:
  """The decoder of the module merged from its parts (for sampling)."""
  return merge(graphdef, params, rest).decoder


def split(policy: Policy):
  """(graphdef, pure dict of nnx.Param arrays, the rest of the state)."""
  graphdef, params, rest = nnx.split(policy, nnx.Param, ...)
  return graphdef, nnx.to_pure_dict(params), rest


def positions_of(valid: jax.Array) -> jax.Array:
  """0, 1, 2, … over the valid tokens of each row (padding repeats)."""
  return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)


def response_hidden(policy: Policy, prompt_tokens, prompt_valid,
                    response_tokens, response_valid) -> jax.Array:
  """Hidden states [B, T, D] that predict each response token."""
  tokens = jnp.concatenate([prompt_tokens, response_tokens], axis=1)[:, :-1]
  valid = jnp.concatenate([prompt_valid, response_valid], axis=1)[:, :-1]
  hidden, _ = policy.decoder(tokens, positions_of(valid), valid)
  return hidden[:, prompt_tokens.shape[1] - 1:]


def _without_banned(logprobs, entropy, hidden, weight, layout: str, labels,
                    banned: Sequence[int], temperature: float):
  """Log-probs and entropy of softmax(z/τ) renormalised without `banned`.

  The sampler never draws banned tokens (PAD, BOS, ...), so it samples from
  q = p / (1 − P_b) over the allowed tokens, with P_b the banned mass. With
  lse = z_y/T − log p_y and log p_b = z_b/T − lse (two small matmuls):
      log q_y = log p_y − log(1 − P_b)
      H(q)    = (H(p) + Σ_b p_b log p_b) / (1 − P_b) + log(1 − P_b).
  """
  ids = jnp.asarray(banned, jnp.int32)
  h = hidden.astype(jnp.float32)
  w = weight.astype(jnp.float32)
  w_banned = w[:, ids] if layout == "dv" else w[ids, :].T        # [D, K]
  w_label = w[:, labels].T if layout == "dv" else w[labels, :]   # [N, D]
  z_label = jnp.sum(h * w_label, axis=-1) / temperature
  lse = z_label - logprobs
  logp_banned = (h @ w_banned) / temperature - lse[:, None]
  p_banned = jnp.exp(logp_banned)
  log_keep = jnp.log1p(-jnp.minimum(jnp.sum(p_banned, axis=-1), 1 - 1e-6))
  entropy = ((entropy + jnp.sum(p_banned * logp_banned, axis=-1))
             / jnp.exp(log_keep) + log_keep)
  return logprobs - log_keep, entropy


def token_outputs(policy: Policy, prompt_tokens, prompt_valid,
                  response_tokens, response_valid, *, temperature: float,
                  stats: Sequence[str] = ("logprobs", "entropy"),
                  values: bool = False,
                  banned_tokens: Sequence[int] = ()) -> dict[str, jax.Array]:
  """Per-response-token statistics of the policy, each f32[B, T].

  Args:
    policy: the module.
    prompt_tokens, prompt_valid: int32 / bool [B, P], left-padded.
    response_tokens, response_valid: int32 / bool [B, T]; valid covers every
      token the model attends to (observations included).
    temperature: the sampling temperature (log-probs are of softmax(z/τ)).
    stats: Rollouts field names among `logprobs`, `entropy`,
      `self_certainty`, `sum_pi_squared`, `token_logits`. `logprobs` and
      `entropy` are differentiable; the others are forward-only.
    values: also return `values` from the value head.
    banned_tokens: ids the sampler can never draw; `logprobs` and `entropy`
      are of the distribution renormalised without them (what was sampled).

  Returns:
    dict of f32[B, T] arrays (0 where `response_valid` is False).
  """
  unknown = sorted(set(stats) - set(STATISTICS))
  if unknown:
    raise ValueError(f"stats {unknown} unknown; choose from "
                     f"{sorted(STATISTICS)}.")
  hidden = response_hidden(policy, prompt_tokens, prompt_valid,
                           response_tokens, response_valid)
  batch, length, width = hidden.shape
  flat = hidden.reshape(batch * length, width)
  labels = response_tokens.reshape(-1)
  weight, layout = policy.decoder.unembedding()
  out = {}
  if "logprobs" in stats or "entropy" in stats:
    logprobs, entropy = cajax_kernels.linear_token_logprobs(
        flat, weight, labels, temperature, weight_layout=layout)
    if banned_tokens:
      logprobs, entropy = _without_banned(logprobs, entropy, flat, weight,
                                          layout, labels, banned_tokens,
                                          temperature)
    out["logprobs"], out["entropy"] = logprobs, entropy
  extra = [s for s in stats if s not in ("logprobs", "entropy")]
  if extra:
    got = cajax_kernels.linear_token_stats(
        jax.lax.stop_gradient(flat), jax.lax.stop_gradient(weight), labels,
        stats=tuple(STATISTICS[s] for s in extra), temperature=temperature,
        weight_layout=layout)
    out.update({s: got[STATISTICS[s]] for s in extra})
  out = {k: jnp.where(response_valid, v.reshape(batch, length)
                      .astype(jnp.float32), 0.0)
         for k, v in out.items() if k in stats}
  if values:
    if policy.value_head is None:
      raise ValueError("values=True needs a policy built with value_head.")
    v = policy.value_head(hidden.astype(jnp.float32))[..., 0]
    out["values"] = jnp.where(response_valid, v, 0.0)
  return out
