"""Seconds-long end-to-end run of the whole loop (used by the tests)."""

from experiments.configs import chain_arith

__all__ = ["get_config"]


def get_config():
  c = chain_arith.get_config()
  c.task.min_ops, c.task.max_ops = 1, 2
  c.model.name = "tiny"
  c.sampling.max_new_tokens = c.task.max_response_len = 24
  c.warm_start.steps = 4
  c.warm_start.batch_size = 8
  c.rl.num_steps = 3
  c.rl.num_groups = 4
  c.rl.group_size = 2
  c.eval_every = 3
  c.eval_problems = 8
  c.checkpoint_every = 1
  c.show_progress = False
  return c
