"""pytest configuration: strict numerics and a fixed hypothesis profile."""

import importlib.util
import os
import pathlib
import sys

# Compiled programs are reused across tests and test subprocesses (the
# training-loop tests build the same jitted steps many times).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.expanduser("~"), ".cache", "cajax", "jax-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import hypothesis  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# Test the kernels/ folder of this checkout under its installed name, even when
# the editable install points at another checkout (a git worktree).
_KERNELS = (pathlib.Path(__file__).resolve().parents[1] / "kernels"
            / "cajax_kernels")
_spec = importlib.util.spec_from_file_location(
    "cajax_kernels", _KERNELS / "__init__.py",
    submodule_search_locations=[str(_KERNELS)])
sys.modules["cajax_kernels"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sys.modules["cajax_kernels"])

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", False)

hypothesis.settings.register_profile(
    "ci", max_examples=int(os.environ.get("CAJAX_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("ci")


# The tiny checkpoint's vocabulary: large enough for merges across step ends.
TINY_VOCAB = 600


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
  """A tiny random Qwen2 checkpoint (HF format) with a byte-level BPE
  tokenizer trained on the fly on the chain tasks' lines layout (merges
  cross step ends: "=7\\n7", "]=0\\n[") and a ChatML chat template; made
  once per test session."""
  # pylint: disable=g-import-not-at-top
  from experiments.models import config as config_lib
  from experiments.models import random_checkpoint
  from experiments.tasks import chain_problems
  texts = (chain_problems.lines_texts(200)
           + random_checkpoint.word_problems(200))
  config = config_lib.get("tiny", vocab_size=TINY_VOCAB, qkv_bias=True)
  return random_checkpoint.write(tmp_path_factory.mktemp("tiny_qwen2"),
                                 config, texts, vocab_size=TINY_VOCAB)
