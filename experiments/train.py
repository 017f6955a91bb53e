r"""Trains a language-model policy with RL (flags only; see experiments/rl).

  python -m experiments.train --config=experiments/configs/chain_arith.py \
      --workdir=/tmp/chain [--config.rl.estimator=pure ...]
  python -m experiments.train --config=experiments/configs/chain_arith.py \
      --workdir=/tmp/ucas --config.rl.estimator=ucas \
      --config.rl.estimator_kwargs.certainty=negative_entropy

Re-running with the same --workdir resumes from its last checkpoint.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import compilation_cache
from experiments.rl import run_config
from experiments.rl import trainer
from experiments.tasks import base as task_base

__all__ = ["define_flags", "main"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--config and --workdir (defined only when run as a program)."""
  # Unlocked and accepting new keys, so estimator and loss settings can be
  # set in the dotted form (--config.rl.estimator_kwargs.certainty=...);
  # run_config.validate names any key the config does not have, in one line.
  config_flags.DEFINE_config_file(
      "config", None, "A get_config() file (experiments/configs/*.py).",
      lock_config=False, accept_new_attributes=True, flag_values=flag_values)
  flags.DEFINE_string("workdir", None,
                      "Run directory: checkpoints, metrics, TensorBoard.",
                      flag_values=flag_values)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO.
    logging.set_verbosity(logging.WARNING)
  try:
    config = run_config.validate(flags.FLAGS.config)
  except ValueError as e:
    raise app.UsageError(f"--config: {e}") from None
  compilation_cache.enable()
  try:
    trainer.train_and_evaluate(config, flags.FLAGS.workdir)
  except task_base.ConfigKeyError as e:  # raised building the task
    raise app.UsageError(f"--config: {e}") from None


if __name__ == "__main__":
  define_flags()
  app.run(main)
