r"""Trains a language-model policy with RL (flags only; see experiments/rl).

  python -m experiments.train --config=experiments/configs/chain_arith.py \
      --workdir=/tmp/chain [--config.rl.estimator=pure ...]

Re-running with the same --workdir resumes from its last checkpoint.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from experiments.rl import run_config
from experiments.rl import train

# Unlocked, accepting new keys: estimator and loss settings are set in the
# dotted form (--config.rl.estimator_kwargs.certainty=negative_entropy), and
# run_config.validate names any key the config does not have, in one line.
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A get_config() file (experiments/configs/*.py).",
    lock_config=False, accept_new_attributes=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, metrics, TensorBoard.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO.
    logging.set_verbosity(logging.WARNING)
  # Compiled steps are reused by later runs (resumes, ablation arms).
  jax.config.update("jax_compilation_cache_dir", os.environ.get(
      "JAX_COMPILATION_CACHE_DIR",
      os.path.expanduser("~/.cache/cajax/jax")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  try:
    config = run_config.validate(_CONFIG.value)
  except ValueError as e:
    raise app.UsageError(f"--config: {e}") from None
  train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
