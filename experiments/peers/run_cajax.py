r"""One `bench_peers` worker: the cajax trainer's RL step.

  python -m experiments.peers.run_cajax --work='{"num_groups": 16}'

Runs `experiments.rl.trainer.RLStep`, the step `python -m experiments.train`
runs, from the chain_arith config with no warm start and no evaluation:
KV-cache sampling, host scoring, the `grpo` estimator, and one jitted
update (PPO-clip `vanilla` loss with epsilon 0.2, token-mean aggregation,
AdamW with weight decay 0 and gradient clipping at 1). Two things differ
from a training run, to give every system the same work: the task is
wrapped so that step s uses `work.problems(work, s)` and scores rows with
`work.rewards` (random 0/1), and the sampler has no stop token, so every
row samples exactly `new_tokens`.
"""

import dataclasses
import time

from absl import app
from absl import flags
import jax
import numpy as np

import cajax
from experiments.configs import chain_arith
from experiments.models import config as model_config_lib
from experiments.models import decoder
from experiments.models import hf
from experiments.peers import work as work_lib
from experiments.rl import experiment
from experiments.rl import trainer
from experiments.tasks import base

__all__ = [
    "WorkTask", "config_for", "define_flags", "main", "model_config",
    "write_checkpoint",
]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--work (the work as JSON) and --write_checkpoint."""
  flags.DEFINE_string("work", "{}", "A work_lib.Work as JSON.",
                      flag_values=flag_values)
  flags.DEFINE_string(
      "write_checkpoint", None,
      "Only write the work's random decoder here (Hugging Face format).",
      flag_values=flag_values)


def model_config(work: work_lib.Work):
  """The cajax `ModelConfig` of the work's decoder (tied, q/k/v biases)."""
  return model_config_lib.ModelConfig(
      **work.shape(), tie_embeddings=True, qkv_bias=True,
      param_dtype=work.dtype, dtype=work.dtype).validate()


def write_checkpoint(work: work_lib.Work, path: str) -> str:
  """Writes the decoder cajax starts from (seed `work.seed`) to `path` in
  Hugging Face format, for the other systems to load."""
  config = model_config(work)
  hf.save(decoder.create_model(config, work.seed), config, path)
  return path


class WorkTask:
  """The chain_arith task with the benchmark's prompts and random rewards.

  `sample_problems` starts the next step (its problems and rewards);
  `score` gives the rows their rewards in order (again from the first row
  when the batch is scored again).
  """

  def __init__(self, task, work: work_lib.Work):
    self._task, self._work = task, work
    self._step, self._rewards, self._row = -1, np.zeros(1), 0

  def __getattr__(self, name):
    return getattr(self._task, name)

  def sample_problems(self, rng, n, split="train"):
    del rng, split
    self._step += 1
    problems = work_lib.problems(self._work, self._step)[:n]
    self._rewards = work_lib.rewards(self._work, self._step,
                                     n * self._work.group_size)
    self._row = 0
    return problems

  def score(self, problem, response_ids, observation_mask=None):
    del problem, observation_mask
    reward = self._rewards[self._row % len(self._rewards)]
    self._row += 1
    return base.Score(outcome=float(reward),
                      step_ids=np.zeros(len(response_ids), np.int32),
                      step_rewards=np.zeros(1), step_labels=np.zeros(1))


def config_for(work: work_lib.Work):
  """The training config of the work (chain_arith, GRPO, no warm start)."""
  config = chain_arith.get_config()
  config.seed = work.seed
  config.warm_start.steps = 0
  config.rl.num_groups = work.num_groups
  config.rl.group_size = work.group_size
  config.rl.num_steps = work.warmup + work.steps
  config.rl.estimator = "grpo"
  config.rl.policy_loss = "vanilla"
  config.rl.aggregation = "token-mean"
  config.sampling.max_new_tokens = work.new_tokens
  config.task.max_response_len = work.new_tokens
  config.optimizer.learning_rate = work_lib.LEARNING_RATE
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip = 1.0
  config.show_progress = False
  return config


def _length(record: dict) -> float:
  """The mean response length of a train record (before and after the
  metric keys took their `rollout/` namespace)."""
  return record.get("rollout/response_length", record.get("response_length"))


def main(argv):
  del argv
  work = work_lib.Work.from_json(flags.FLAGS.work)
  if flags.FLAGS.write_checkpoint:
    write_checkpoint(work, flags.FLAGS.write_checkpoint)
    return

  build = time.perf_counter()
  exp = experiment.Experiment(config_for(work))
  exp.model_config = model_config(work)
  exp.task = WorkTask(exp.task, work)
  exp.sampling = dataclasses.replace(exp.sampling, stop_tokens=())
  config = exp.config
  graphdef, params, rest = exp.new_policy(value_head=False)
  tx = trainer.optimizer(config, config.optimizer.learning_rate)
  state = trainer.initial_state(exp, tx, params)
  rl_step = trainer.RLStep(exp, graphdef, rest, None, tx)
  first, steps = None, []
  for step in range(work.warmup + work.steps):
    start = time.perf_counter()
    state, record = rl_step(step, state)
    jax.block_until_ready(state)
    end = time.perf_counter()
    first = first or end - build
    if step >= work.warmup:
      steps.append(dict(step_s=end - start, sample_s=record["time/sample"],
                        tokens=int(round(_length(record) * work.rows))))
  work_lib.emit("cajax", getattr(cajax, "__version__", "0.1.0"), work,
                first_step_s=first, steps=steps,
                device=jax.devices()[0].device_kind,
                device_peak_mb=work_lib.device_peak_mb(jax.devices()[0]))


if __name__ == "__main__":
  define_flags()
  app.run(main)
