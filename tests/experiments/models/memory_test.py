"""Memory estimate: exact terms against real (abstract) arrays, by hand."""

from flax import nnx
import jax
import numpy as np
import pytest

from experiments.models import config as config_lib
from experiments.models import decoder as decoder_lib
from experiments.models import memory


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_params_and_cache_match_the_arrays(dtype):
  cfg = config_lib.get("tiny", param_dtype=dtype, dtype=dtype, qkv_bias=True,
                       tie_embeddings=False)
  model = nnx.eval_shape(lambda: decoder_lib.Decoder(cfg, rngs=nnx.Rngs(0)))
  nbytes = sum(x.size * x.dtype.itemsize
               for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  cache = jax.eval_shape(lambda: decoder_lib.init_cache(cfg, 3, 17))
  cache_bytes = sum(x.size * x.dtype.itemsize
                    for x in jax.tree.leaves((cache.k, cache.v)))
  est = memory.estimate(cfg, batch=2, seq_len=8, sample_batch=3,
                        sample_len=17)
  assert est.params == est.grads == nbytes
  assert est.optimizer == 8 * cfg.num_params
  assert est.kv_cache == cache_bytes


def test_activations_by_hand():
  # tiny: D=32, F=64, 4 query heads and 2 kv heads of 8, 2 layers, f32.
  cfg = config_lib.get("tiny")
  b, t = 2, 8
  per_layer_none = b * t * ((5 * 32 + 2 * 32 + 2 * 16 + 4 * 64) * 4 +
                            4 * t * (4 + 4))
  est = memory.estimate(cfg, batch=b, seq_len=t)
  assert est.activations == 2 * per_layer_none
  full = memory.estimate(cfg.replace(remat="full"), batch=b, seq_len=t)
  assert full.activations == 2 * b * t * 32 * 4 + per_layer_none
  dots = memory.estimate(cfg.replace(remat="dots_saveable"), batch=b,
                         seq_len=t)
  assert dots.activations == (2 * b * t * (32 + 32 + 64 + 128) * 4 +
                              per_layer_none)
  assert est.head == 2 * b * t * 32 * 4 + b * t * 48 * 4


def test_sharding_divides_state_and_table():
  cfg = config_lib.get("qwen2_5_1_5b", param_dtype="bfloat16",
                       dtype="bfloat16", remat="full")
  one = memory.estimate(cfg, batch=1, seq_len=4096)
  eight = memory.estimate(cfg, batch=1, seq_len=4096, fsdp=8)
  assert eight.optimizer == one.optimizer // 8
  assert eight.activations == one.activations
  assert one.params == 2 * cfg.num_params
  table = memory.markdown_table(memory.default_rows()).splitlines()
  assert len(table) == 2 + 8 and table[2].startswith("| qwen2_5_1_5b")
  with pytest.raises(ValueError, match="seq_len must be a positive int"):
    memory.estimate(cfg, batch=1, seq_len=0)
  assert np.isclose(one.optimizer / 1024**3, 11.5, atol=0.05)
