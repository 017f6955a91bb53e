"""Smoke test of experiments.bench_advantages on tiny shapes."""

from absl.testing import absltest
import jax.numpy as jnp

import cajax
from experiments import bench_advantages


class BenchAdvantagesSmokeTest(absltest.TestCase):

  def test_tiny_benchmark_and_table(self):
    names = ["reinforce_plus_plus", "grpo", "gae"]
    self.assertContainsSubset(names, cajax.estimator_names())
    rows = bench_advantages.benchmark(names, [(8, 16)], rounds=1, repeats=1,
                                      group_size=4, num_steps=3)
    self.assertLen(rows, len(names))
    for name, shape, ms, floor_ms in rows:
      self.assertIn(name, names)
      self.assertEqual(shape, "8x16")
      self.assertGreater(ms, 0.0)
      self.assertGreater(floor_ms, 0.0)
    table = bench_advantages.markdown_table(rows).splitlines()
    self.assertEqual(table[0], "| estimator | shape (BxT) | ms | floor ms | "
                     "ratio |")
    self.assertLen(table, 2 + len(names))

  def test_floor_reads_every_input(self):
    adv, ret = bench_advantages.floor_pass(
        [jnp.ones((2, 3)), jnp.full((2,), 2.0), jnp.ones((2, 4))])
    self.assertEqual(adv.shape, (2, 3))
    self.assertTrue(bool(jnp.all(adv == 7.0)) and bool(jnp.all(ret == 14.0)))

  def test_parse_shape(self):
    self.assertEqual(bench_advantages.parse_shape("512x4096"), (512, 4096))


if __name__ == "__main__":
  absltest.main()
