"""float64 NumPy reference of the kernels' statistics and gradients.

Written with explicit row loops, sharing no code with `cajax_kernels`; the
kernel tests compare every implementation against it.
"""

import jax.numpy as jnp
import numpy as np


def ref_row_stats(raw, label, temperature, valid):
  """float64 statistics and logit-gradient map of one row (explicit)."""
  z = np.asarray(raw[:valid], np.float64) / temperature
  m = max(z)
  e = np.array([np.exp(v - m) for v in z])
  s = sum(e)
  lse = m + np.log(s)
  p = e / s
  ent = lse - sum(p[j] * z[j] for j in range(valid))
  ok = 0 <= label < valid
  out = {
      "logprobs": z[label] - lse if ok else 0.0,
      "entropy": ent,
      "self_certainty": lse - sum(z) / valid,
      "sum_pi_squared": sum(p * p),
      "label_logit": float(raw[label]) if ok else 0.0,
  }

  def dz(g_lp, g_h):
    grad = np.zeros(len(raw))
    for j in range(valid):
      onehot = 1.0 if (ok and j == label) else 0.0
      g = (g_lp if ok else 0.0) * (onehot - p[j])
      g -= g_h * p[j] * (z[j] - lse + ent)
      grad[j] = g / temperature
    return grad

  return out, dz


def ref_logits(logits, labels, temperature, valid=None, g_lp=None, g_h=None):
  """Per-row stats [N] and d logits [N, V] of Σ g_lp·lp + Σ g_h·H."""
  logits = np.asarray(logits, np.float64)
  n, v = logits.shape
  valid = v if valid is None else valid
  stats = {k: np.zeros(n) for k in ("logprobs", "entropy", "self_certainty",
                                     "sum_pi_squared", "label_logit")}
  grad = np.zeros((n, v))
  for i in range(n):
    row, dz = ref_row_stats(logits[i], int(labels[i]), temperature, valid)
    for k in stats:
      stats[k][i] = row[k]
    if g_lp is not None:
      grad[i] = dz(float(g_lp[i]), float(g_h[i]))
  return stats, grad


def ref_linear(h, w_dv, labels, temperature, valid=None, g_lp=None, g_h=None):
  """Stats and (dh, dW[D, V]) for logits = h @ W, all float64."""
  h = np.asarray(h, np.float64)
  w_dv = np.asarray(w_dv, np.float64)
  stats, dz = ref_logits(h @ w_dv, labels, temperature, valid, g_lp, g_h)
  return stats, dz @ w_dv.T, h.T @ dz


def make_data(n, d, v, seed, dtype=jnp.float32, scale=1.0):
  """Random (hidden, weight [D, V], labels, g_lp, g_h) for N tokens."""
  rng = np.random.default_rng(seed)
  h = (rng.normal(size=(n, d)) * scale).astype(np.float32)
  w = (rng.normal(size=(d, v)) / np.sqrt(d)).astype(np.float32)
  labels = rng.integers(0, v, size=n).astype(np.int32)
  labels[0] = 0
  labels[-1] = v - 1
  g = rng.normal(size=(2, n)).astype(np.float32)
  return (jnp.asarray(h, dtype), jnp.asarray(w, dtype), jnp.asarray(labels),
          jnp.asarray(g[0]), jnp.asarray(g[1]))


def to_f64(x):
  """An array (bf16 included) as float64 NumPy."""
  return np.asarray(jnp.asarray(x, jnp.float32), np.float64)
