"""Every kernel entry point takes an empty batch (N = 0), forward and backward.

Each implementation (xla, the Pallas-Triton interpreter and Mosaic TPU in
TPU interpret mode) returns empty float32 results and zero gradients of the
inputs' shapes; the weight gradient of an empty batch is all zeros.
"""

import contextlib

import jax
from jax.experimental.pallas import tpu as pltpu
import jax.numpy as jnp
import numpy as np
import pytest

import cajax_kernels as kernels

D, V = 6, 40
IMPLEMENTATIONS = ["xla", "interpret", "pallas_mosaic_tpu"]


def _context(implementation: str):
  if implementation == "pallas_mosaic_tpu":
    return pltpu.force_tpu_interpret_mode()
  return contextlib.nullcontext()


def _inputs(batch_shape, dtype=jnp.float32):
  rng = np.random.default_rng(0)
  hidden = jnp.zeros(batch_shape + (D,), dtype)
  weight = jnp.asarray(rng.normal(size=(D, V)), dtype)
  logits = jnp.zeros(batch_shape + (V,), dtype)
  labels = jnp.zeros(batch_shape, jnp.int32)
  return hidden, weight, logits, labels


def _entry_points(implementation: str, labels):
  """name -> (fn of the differentiable inputs, those inputs' names)."""
  kw = dict(implementation=implementation)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",))
  return {
      "token_logprobs": (
          lambda x: kernels.token_logprobs(x, labels, 0.7, **kw), ("x",)),
      "linear_token_logprobs": (
          lambda h, w: kernels.linear_token_logprobs(h, w, labels, **kw),
          ("h", "w")),
      "linear_token_logprobs_vd": (
          lambda h, w: kernels.linear_token_logprobs(h, w.T, labels, **kw),
          ("h", "w")),
      "token_stats": (
          lambda x: tuple(kernels.token_stats(x, labels, **kw).values()),
          ("x",)),
      "linear_token_stats": (
          lambda h, w: tuple(kernels.linear_token_stats(
              h, w, labels, **kw).values()), ("h", "w")),
      "data_parallel": (
          lambda h, w: kernels.data_parallel_linear_token_logprobs(
              h, w, labels, mesh=mesh, axis_name="x", **kw), ("h", "w")),
      "vocab_parallel": (
          lambda h, w: kernels.vocab_parallel_linear_token_logprobs(
              h, w, labels, mesh=mesh, axis_name="x", **kw), ("h", "w")),
  }


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_empty_batch_forward_and_backward(implementation, dtype):
  hidden, weight, logits, labels = _inputs((0,), dtype)
  # The parallel wrappers take flat [N] tokens; the others any batch shape.
  values = {"h": hidden, "w": weight, "x": logits}
  entry_points = _entry_points(implementation, labels)
  for name, (fn, arg_names) in entry_points.items():
    primals = [values[a] for a in arg_names]
    with _context(implementation):
      outs, vjp = jax.vjp(jax.jit(fn), *primals)
      cotangents = jax.tree.map(jnp.ones_like, outs)
      grads = vjp(cotangents)
    for out in outs:
      assert out.shape == (0,) and out.dtype == jnp.float32, name
    for primal, grad in zip(primals, grads):
      assert grad.shape == primal.shape and grad.dtype == primal.dtype, name
      np.testing.assert_array_equal(np.asarray(grad, np.float32), 0.0,
                                    err_msg=name)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_empty_batch_with_leading_dims(implementation):
  hidden, weight, logits, labels = _inputs((3, 0))
  with _context(implementation):
    lp, ent = kernels.linear_token_logprobs(hidden, weight, labels,
                                            implementation=implementation)
    stats = kernels.token_stats(logits, labels,
                                implementation=implementation)
    dh, dw = jax.grad(
        lambda h, w: jnp.sum(kernels.linear_token_logprobs(
            h, w, labels, implementation=implementation)[0]),
        (0, 1))(hidden, weight)
  assert lp.shape == ent.shape == (3, 0)
  assert all(v.shape == (3, 0) for v in stats.values())
  assert dh.shape == (3, 0, D)
  np.testing.assert_array_equal(np.asarray(dw), 0.0)
