"""Smoke test of experiments.bench_advantages, bench_turns and timing."""

import jax.numpy as jnp
import pytest

import cajax
from cajax import testing
from experiments import bench_advantages
from experiments import bench_turns
from experiments import timing


def test_tiny_benchmark_and_table():
  names = ["reinforce_plus_plus", "grpo", "gae"]
  assert set(names) <= set(cajax.estimator_names())
  rows = bench_advantages.benchmark(names, [(8, 16)], rounds=1, repeats=1,
                                    group_size=4, num_steps=3)
  assert len(rows) == len(names)
  for name, shape, ms, floor_ms in rows:
    assert name in names and shape == "8x16"
    assert ms > 0.0 and floor_ms > 0.0
  table = bench_advantages.markdown_table(rows).splitlines()
  assert table[0] == "| estimator | shape (BxT) | ms | floor ms | ratio |"
  assert len(table) == 2 + len(names)


def test_floor_reads_every_input():
  adv, ret = bench_advantages.floor_pass(
      [jnp.ones((2, 3)), jnp.full((2,), 2.0), jnp.ones((2, 4))])
  assert adv.shape == (2, 3)
  assert bool(jnp.all(adv == 7.0)) and bool(jnp.all(ret == 14.0))


def test_parse_shape():
  assert timing.parse_shape("512x4096") == (512, 4096)
  assert timing.parse_shape("16X64x8") == (16, 64, 8)
  for bad in ("", "0x4", "ax4", "4x-1"):
    with pytest.raises(ValueError, match="shape"):
      timing.parse_shape(bad)


def test_median_ms_calls_and_waits():
  calls = []

  def fn(x):
    calls.append(x)
    return jnp.asarray(x)

  assert timing.median_ms(fn, 3, repeats=4) >= 0.0
  assert calls == [3] * 5  # one warm-up call, then the timed ones


def test_turn_pieces_agree_with_the_estimator():
  rollouts = testing.make_rollouts(batch=8, length=16, group_size=4,
                                   num_steps=3, seed=0)
  pieces = bench_turns.pieces(rollouts)
  num_turns = bench_advantages.static_options("matchtir", rollouts)[
      "num_turns"]
  want = cajax.estimate("matchtir", rollouts, num_turns=num_turns)
  fn, args = pieces["matchtir"]
  assert jnp.allclose(fn(*args), want.advantages)
  fn, args = pieces["prefix_count (chunked product)"]
  cumsum, cumsum_args = pieces["jnp.cumsum"]
  assert jnp.array_equal(fn(*args), cumsum(*cumsum_args))
