"""The naive log-prob path the kernel benchmarks compare against.

Imports only jax, so `experiments.gpu_check` can use it on a bare GPU image.
"""

import jax
import jax.numpy as jnp

__all__ = ["naive_logprobs"]


def naive_logprobs(hidden, weight, labels):
  """Materialised float32 logits, log_softmax, gather and entropy.

  Args:
    hidden: [N, D] hidden states.
    weight: [D, V] unembedding.
    labels: int[N] token ids.

  Returns:
    (log-probs f32[N], entropy f32[N]).
  """
  logits = jnp.dot(hidden, weight, preferred_element_type=jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  lp = jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
  return lp, -jnp.sum(jnp.exp(logp) * logp, axis=-1)
