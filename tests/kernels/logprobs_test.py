"""Tests of kernels.token_logprobs / linear_token_logprobs / *_stats (XLA path).

Values and VJPs (random cotangents on log-prob and entropy) are compared to
an independent float64 NumPy reference written with explicit row loops;
gradients are also checked against float64 finite differences.
"""

import functools

import hypothesis
from hypothesis import strategies as st
import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

import cajax_kernels as kernels
from kernel_reference import make_data
from kernel_reference import ref_linear
from kernel_reference import ref_logits
from kernel_reference import to_f64

SMALL = kernels.BlockSizes(vocab_chunk=128)


TOL = dict(rtol=2e-5, atol=2e-5)


# ---------------------------------------------------- fused linear (XLA) ---


@functools.lru_cache(maxsize=None)
def _linear_vjp(temperature, layout, valid, implementation="xla",
                blocks=SMALL):
  """A jitted (values, grads) function, cached so each config compiles once."""

  def run(h, w, labels, g_lp, g_h):
    f = lambda h, w: kernels.linear_token_logprobs(  # pylint: disable=g-long-lambda
        h, w, labels, temperature, implementation, weight_layout=layout,
        valid_vocab_size=valid, block_sizes=blocks)
    out, vjp = jax.vjp(f, h, w)
    return out, vjp((g_lp, g_h))

  return jax.jit(run)


@pytest.mark.parametrize("n,d,v,temperature", [
    (1, 3, 5, 0.7), (37, 20, 300, 1.0), (16, 8, 128, 1.3), (37, 20, 300, 0.7)])
def test_linear_values_and_vjp_match_float64(n, d, v, temperature):
  h, w, labels, g_lp, g_h = make_data(n, d, v, seed=n + v)
  (lp, ent), (dh, dw) = _linear_vjp(temperature, "dv", None)(
      h, w, labels, g_lp, g_h)
  ref, dh0, dw0 = ref_linear(to_f64(h), to_f64(w), labels, temperature, None,
                             g_lp, g_h)
  np.testing.assert_allclose(lp, ref["logprobs"], **TOL)
  np.testing.assert_allclose(ent, ref["entropy"], **TOL)
  np.testing.assert_allclose(dh, dh0, **TOL)
  np.testing.assert_allclose(dw, dw0, **TOL)
  assert lp.dtype == ent.dtype == jnp.float32


def test_linear_tied_layout_and_padded_vocab():
  n, d, v, valid = 29, 12, 260, 250
  h, w, labels, g_lp, g_h = make_data(n, d, v, seed=3)
  labels = labels.at[1].set(valid - 1).at[2].set(valid).at[3].set(-100)
  (lp, ent), (dh, dwt) = _linear_vjp(1.3, "vd", valid)(
      h, w.T, labels, g_lp, g_h)
  ref, dh0, dw0 = ref_linear(to_f64(h), to_f64(w), labels, 1.3, valid, g_lp, g_h)
  np.testing.assert_allclose(lp, ref["logprobs"], **TOL)
  np.testing.assert_allclose(ent, ref["entropy"], **TOL)
  np.testing.assert_allclose(dh, dh0, **TOL)
  np.testing.assert_allclose(dwt, dw0.T, **TOL)
  # Ignored labels (>= valid, < 0): log-prob 0; padded rows: zero gradient.
  assert lp[2] == 0 and lp[3] == 0
  np.testing.assert_array_equal(np.asarray(dwt[valid:]), 0.0)


def test_ignored_label_gets_no_logprob_gradient():
  h, w, labels, _, _ = make_data(4, 5, 9, seed=4)
  labels = labels.at[2].set(-1)

  def one_row(hh):
    lp, _ = kernels.linear_token_logprobs(hh, w, labels, implementation="xla")
    return lp[2]

  np.testing.assert_array_equal(np.asarray(jax.grad(one_row)(h)), 0.0)


def test_bf16_linear_close_to_float64_of_bf16_values():
  h, w, labels, g_lp, g_h = make_data(33, 24, 200, seed=5, dtype=jnp.bfloat16)
  (lp, ent), (dh, dw) = _linear_vjp(1.0, None, None)(h, w, labels, g_lp, g_h)
  ref, dh0, dw0 = ref_linear(to_f64(h), to_f64(w), labels, 1.0, None, g_lp, g_h)
  assert lp.dtype == jnp.float32 and dh.dtype == dw.dtype == jnp.bfloat16
  np.testing.assert_allclose(lp, ref["logprobs"], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ent, ref["entropy"], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(to_f64(dh), dh0, rtol=1e-2, atol=1e-2)
  np.testing.assert_allclose(to_f64(dw), dw0, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype,layout", [
    (jnp.float32, "dv"), (jnp.float32, "vd"), (jnp.bfloat16, "dv"),
    (jnp.bfloat16, "vd")])
def test_linear_backward_row_blocks_and_clamped_chunks(dtype, layout):
  # N = 37 rows in blocks of 8 (last block clamped) and V = 45 columns in
  # chunks of 8 (last chunk clamped, written before the chunk it overlaps).
  h, w, labels, g_lp, g_h = make_data(37, 6, 45, seed=21, dtype=dtype)
  blocks = kernels.BlockSizes(vocab_chunk=8)
  weight = w if layout == "dv" else w.T
  (lp, _), (dh, dw) = _linear_vjp(0.9, layout, None, blocks=blocks)(
      h, weight, labels, g_lp, g_h)
  ref, dh0, dw0 = ref_linear(to_f64(h), to_f64(w), labels, 0.9, None, g_lp, g_h)
  tol = TOL if dtype == jnp.float32 else dict(rtol=1e-2, atol=1e-2)
  assert dh.dtype == dw.dtype == dtype
  np.testing.assert_allclose(lp, ref["logprobs"], **TOL)
  np.testing.assert_allclose(to_f64(dh), dh0, **tol)
  np.testing.assert_allclose(to_f64(dw), dw0 if layout == "dv" else dw0.T,
                             **tol)


def test_leading_batch_dims_and_jit_matches_eager():
  h, w, labels, _, _ = make_data(12, 6, 40, seed=6)
  f = functools.partial(kernels.linear_token_logprobs, implementation="xla",
                        block_sizes=SMALL)
  lp, ent = f(h.reshape(3, 4, 6), w, labels.reshape(3, 4))
  lp_j, ent_j = jax.jit(f)(h, w, labels)
  assert lp.shape == ent.shape == (3, 4)
  np.testing.assert_allclose(lp.reshape(-1), lp_j, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ent.reshape(-1), ent_j, rtol=1e-6, atol=1e-6)


def test_unused_entropy_is_a_symbolic_zero():
  h, w, labels, g_lp, _ = make_data(9, 4, 30, seed=7)
  loss = lambda h, w: jnp.sum(g_lp * kernels.linear_token_logprobs(  # pylint: disable=g-long-lambda
      h, w, labels, implementation="xla")[0])
  jaxpr = str(jax.make_jaxpr(jax.grad(loss, (0, 1)))(h, w))
  both = lambda h, w: sum(jnp.sum(g_lp * x) for x in  # pylint: disable=g-long-lambda
                         kernels.linear_token_logprobs(
                             h, w, labels, implementation="xla"))
  jaxpr_both = str(jax.make_jaxpr(jax.grad(both, (0, 1)))(h, w))
  # The entropy term (p · (log p + H)) adds multiplies only when used.
  assert jaxpr.count(" mul ") < jaxpr_both.count(" mul ")
  _, dh0, dw0 = ref_linear(to_f64(h), to_f64(w), labels, 1.0, None, g_lp,
                           np.zeros(9))
  dh, dw = jax.grad(loss, (0, 1))(h, w)
  np.testing.assert_allclose(dh, dh0, **TOL)
  np.testing.assert_allclose(dw, dw0, **TOL)


def test_float64_finite_differences():
  rng = np.random.default_rng(8)
  with jax.enable_x64(True):
    h = jnp.asarray(rng.normal(size=(5, 4)))
    w = jnp.asarray(rng.normal(size=(4, 11)))
    logits = jnp.asarray(rng.normal(size=(5, 11)) * 3)
    labels = jnp.asarray([0, 10, 3, -1, 7])
    c = jnp.asarray(rng.normal(size=(2, 5)))
    blocks = kernels.BlockSizes(vocab_chunk=4)

    @jax.jit
    def lin(h, w):
      lp, ent = kernels.linear_token_logprobs(
          h, w, labels, 0.7, "xla", block_sizes=blocks)
      return jnp.sum(c[0] * lp) + jnp.sum(c[1] * ent)

    @jax.jit
    def from_logits(x):
      lp, ent = kernels.token_logprobs(x, labels, 1.3, "xla",
                                       block_sizes=blocks)
      return jnp.sum(c[0] * lp) + jnp.sum(c[1] * ent)

    assert lin(h, w).dtype == jnp.float64
    jtu.check_grads(lin, (h, w), order=1, modes=["rev"], atol=1e-7,
                    rtol=1e-7)
    jtu.check_grads(from_logits, (logits,), order=1, modes=["rev"],
                    atol=1e-7, rtol=1e-7)


# ----------------------------------------------------- from logits (XLA) ---


@functools.lru_cache(maxsize=None)
def _logits_vjp(temperature, valid, implementation="xla", blocks=SMALL):

  def run(x, labels, g_lp, g_h):
    f = lambda x: kernels.token_logprobs(  # pylint: disable=g-long-lambda
        x, labels, temperature, implementation, valid_vocab_size=valid,
        block_sizes=blocks)
    out, vjp = jax.vjp(f, x)
    return out, vjp((g_lp, g_h))[0]

  return jax.jit(run)


def _logits_case(kind, n=24, v=300, seed=9):
  rng = np.random.default_rng(seed)
  if kind == "normal":
    x = rng.normal(size=(n, v)) * 2
  elif kind == "uniform":
    x = np.full((n, v), 0.25)
  elif kind == "peaked":
    x = np.zeros((n, v))
    x[np.arange(n), rng.integers(0, v, n)] = 1e4
  else:  # "huge": |z| up to 1e4 everywhere.
    x = rng.uniform(-1e4, 1e4, size=(n, v))
  labels = rng.integers(0, v, n)
  labels[:2] = (0, v - 1)
  g = rng.normal(size=(2, n))
  return (jnp.asarray(x, jnp.float32), jnp.asarray(labels, jnp.int32),
          jnp.asarray(g[0], jnp.float32), jnp.asarray(g[1], jnp.float32))


@pytest.mark.parametrize("kind", ["normal", "uniform", "peaked", "huge"])
@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_logits_values_and_vjp_match_float64(kind, temperature):
  x, labels, g_lp, g_h = _logits_case(kind)
  (lp, ent), dx = _logits_vjp(temperature, None)(x, labels, g_lp, g_h)
  ref, dx0 = ref_logits(to_f64(x), labels, temperature, None, g_lp, g_h)
  scale = float(np.max(np.abs(ref["logprobs"]))) + 1.0
  for got in (lp, ent, dx):
    assert np.all(np.isfinite(got))
  np.testing.assert_allclose(lp, ref["logprobs"], rtol=2e-5, atol=2e-5 * scale)
  np.testing.assert_allclose(ent, ref["entropy"], rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(dx, dx0, rtol=2e-5, atol=2e-5)
  if kind == "uniform":
    np.testing.assert_allclose(ent, np.log(300), rtol=1e-6)
  if kind == "peaked":
    np.testing.assert_allclose(ent, 0.0, atol=1e-6)


def test_bf16_logits_and_small_vocab():
  x, labels, g_lp, g_h = _logits_case("normal", n=10, v=7)
  x = x.astype(jnp.bfloat16)
  (lp, ent), dx = _logits_vjp(1.0, None)(x, labels, g_lp, g_h)
  ref, dx0 = ref_logits(to_f64(x), labels, 1.0, None, g_lp, g_h)
  assert dx.dtype == jnp.bfloat16
  np.testing.assert_allclose(lp, ref["logprobs"], **TOL)
  np.testing.assert_allclose(ent, ref["entropy"], **TOL)
  np.testing.assert_allclose(to_f64(dx), dx0, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------ stats ---


@pytest.mark.parametrize("temperature,valid", [(1.0, None), (0.7, 190)])
def test_linear_stats_match_float64(temperature, valid):
  h, w, labels, _, _ = make_data(21, 10, 200, seed=10)
  labels = labels.at[4].set(-5)
  out = jax.jit(lambda h, w, y: kernels.linear_token_stats(  # pylint: disable=g-long-lambda
      h, w, y, temperature=temperature, implementation="xla",
      valid_vocab_size=valid, block_sizes=SMALL))(h, w, labels)
  ref, _, _ = ref_linear(to_f64(h), to_f64(w), labels, temperature, valid)
  assert set(out) == set(ref)
  for name, value in out.items():
    np.testing.assert_allclose(value, ref[name], rtol=3e-5, atol=3e-5,
                               err_msg=name)


def test_stats_subset_from_logits_and_no_gradient():
  x, labels, _, _ = _logits_case("normal", n=6, v=50)
  out = kernels.token_stats(x, labels, stats=("sum_pi_squared",),
                            implementation="xla")
  ref, _ = ref_logits(to_f64(x), labels, 1.0)
  assert list(out) == ["sum_pi_squared"]
  np.testing.assert_allclose(out["sum_pi_squared"], ref["sum_pi_squared"],
                             **TOL)
  grad = jax.grad(lambda x: jnp.sum(kernels.token_stats(  # pylint: disable=g-long-lambda
      x, labels, stats="entropy", implementation="xla")["entropy"]))(x)
  np.testing.assert_array_equal(np.asarray(grad), 0.0)


@hypothesis.settings(max_examples=4)
@hypothesis.given(perm_seed=st.integers(0, 2**16), pad=st.integers(1, 9))
def test_property_vocab_permutation_and_padding_invariance(perm_seed, pad):
  """Permuting the vocabulary (with labels) and appending masked padding
  rows changes neither log-probs nor entropy."""
  h, w, labels, _, _ = make_data(7, 5, 30, seed=11)
  perm = np.random.default_rng(perm_seed).permutation(30)
  inverse = np.argsort(perm)
  w2 = jnp.concatenate([w[:, perm], jnp.full((5, pad), 50.0)], axis=1)
  lp, ent = kernels.linear_token_logprobs(h, w, labels, implementation="xla",
                                          block_sizes=SMALL)
  lp2, ent2 = kernels.linear_token_logprobs(
      h, w2, jnp.asarray(inverse)[labels], implementation="xla",
      valid_vocab_size=30, block_sizes=kernels.BlockSizes(vocab_chunk=8))
  np.testing.assert_allclose(lp2, lp, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ent2, ent, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- errors ---


def test_bad_inputs_raise_value_error():
  h, w, labels, _, _ = make_data(4, 3, 6, seed=12)
  cases = [
      lambda: kernels.linear_token_logprobs(h, w, labels[:3]),
      lambda: kernels.linear_token_logprobs(h, w, labels.astype(jnp.float32)),
      lambda: kernels.linear_token_logprobs(h, w[:2], labels),
      lambda: kernels.linear_token_logprobs(h, jnp.ones((3, 3)), labels),
      lambda: kernels.linear_token_logprobs(h, w, labels, temperature=0.0),
      lambda: kernels.linear_token_logprobs(h, w, labels, valid_vocab_size=7),
      lambda: kernels.linear_token_logprobs(h, w, labels,
                                            implementation="cuda"),
      lambda: kernels.token_logprobs(jnp.ones((4, 6), jnp.int32), labels),
      lambda: kernels.token_logprobs(
          h, labels[:4], implementation="interpret",
          block_sizes=kernels.BlockSizes(block_n=24)),
      lambda: kernels.linear_token_stats(h, w, labels, stats=("nope",)),
  ]
  for case in cases:
    with pytest.raises(ValueError):
      case()


def test_default_implementation_on_cpu_is_xla():
  assert kernels.api._common.default_implementation() == "xla"  # pylint: disable=protected-access
