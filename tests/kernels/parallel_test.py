"""Data- and vocab-parallel wrappers on 4 host CPU devices (subprocess).

Mosaic TPU runs in TPU interpret mode inside `shard_map` (with the
varying-axes check on).
"""

import os
import pathlib
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import contextlib
    import jax, jax.numpy as jnp, numpy as np
    from jax.experimental.pallas import tpu as pltpu
    import cajax_kernels as kernels
    from kernel_reference import make_data, to_f64, ref_linear

    assert jax.device_count() == 4
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("x",))
    n, d, v, valid = 12, 8, 40, 37
    h, w, labels, g_lp, g_h = make_data(n, d, v, seed=30)
    labels = labels.at[1].set(-1).at[2].set(valid - 1).at[3].set(38)
    ref, dh0, dw0 = ref_linear(to_f64(h), to_f64(w), labels, 0.7, valid, g_lp, g_h)
    blocks = kernels.BlockSizes(block_n=8, block_v=8, block_d=8,
                                vocab_split=8, vocab_chunk=6)
    # Mosaic tiles are (8, 128)-aligned; each shard's 10 columns are one.
    tpu_blocks = kernels.BlockSizes(block_n=8, block_v=128, block_d=128,
                                    vocab_chunk=6)
    common = dict(temperature=0.7, valid_vocab_size=valid)
    cases = [
        ("vp-xla-dv", "xla", False, "vocab"),
        ("vp-xla-vd", "xla", True, "vocab"),
        ("vp-interpret-vd", "interpret", True, "vocab"),
        ("vp-mosaic-tpu-vd", "pallas_mosaic_tpu", True, "vocab"),
        ("dp-xla", "xla", False, "data"),
        ("dp-interpret", "interpret", False, "data"),
    ]
    for name, impl, tied, kind in cases:
      if kind == "vocab":
        fn = kernels.vocab_parallel_linear_token_logprobs
      else:
        fn = kernels.data_parallel_linear_token_logprobs
      tpu = impl == "pallas_mosaic_tpu"
      f = jax.jit(lambda h, w: fn(h, w.T if tied else w, labels, mesh=mesh,
                                  axis_name="x", implementation=impl,
                                  block_sizes=tpu_blocks if tpu else blocks,
                                  **common))
      with (pltpu.force_tpu_interpret_mode() if tpu
            else contextlib.nullcontext()):
        (lp, ent), vjp = jax.vjp(f, h, w)
        dh, dw = vjp((g_lp, g_h))
      for got, want in [(lp, ref["logprobs"]), (ent, ref["entropy"]),
                        (dh, dh0), (dw, dw0)]:
        np.testing.assert_allclose(got, want, rtol=3e-5, atol=3e-5,
                                   err_msg=name)
      print("ok", name)
""")


def test_sharded_wrappers_match_float64_on_four_devices():
  root = pathlib.Path(__file__).resolve().parents[2]
  env = dict(os.environ,
             XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu",
             # This checkout's kernels, not an installed copy.
             PYTHONPATH=os.pathsep.join([str(root / "kernels"),
                                         str(root / "tests" / "kernels")]))
  result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.count("ok ") == 6
