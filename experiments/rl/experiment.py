"""What a run is built from: the task, mesh, model and sampler of a config.

Built once per run (and by the benchmarks and the ablation heat map), after
the config has been checked, before anything is compiled.
"""

import dataclasses
import pathlib
import time

from flax import nnx
import jax
import numpy as np

from experiments.models import config as model_config
from experiments.models import decoder as decoder_lib
from experiments.models import hf
from experiments.models import hf_config
from experiments.models import sampler as sampler_lib
from experiments.models import tokenizer as tokenizer_lib
from experiments.rl import mesh as mesh_lib
from experiments.rl import policy as policy_lib
from experiments.rl import rollouts as rollouts_lib
from experiments.rl import run_config
from experiments.tasks import base as task_base

__all__ = ["Experiment", "np_rng", "outcome_metrics"]

# Streams of the NumPy generator seeded by (seed, stream, step).
TRAIN_DATA, WARM_DATA, EVAL_DATA = 1, 2, 3


def np_rng(config, stream: int, step: int = 0) -> np.random.Generator:
  return np.random.default_rng([config.seed, stream, step])


class Experiment:
  """Everything built once from a config: task, mesh, model, jitted steps."""

  def __init__(self, config):
    """Args: config: a `get_config()` ConfigDict (validated here) or a
    `run_config.Run`."""
    config = run_config.validate(config)
    mesh_lib.initialize_distributed(config.distributed)
    self.config = config
    self.mesh = mesh_lib.make_mesh(config.mesh.data, config.mesh.fsdp)
    mesh_lib.check_divisible(config.rl.batch_size, self.mesh, "the RL batch")
    overrides = dict(config.model.overrides)
    if config.model_path:
      self.task = task_base.make_task(_checkpoint_task(config))
      self.model_config = hf_config.from_hf(
          hf_config.read_json(pathlib.Path(config.model_path)
                              / "config.json"), **overrides)
    else:
      self.task = task_base.make_task(config.task)
      self.model_config = model_config.get(
          config.model.name, vocab_size=self.task.tokenizer.vocab_size,
          **overrides)
    self.key = jax.random.key(config.seed)
    sc = config.sampling
    self.sampling = sampler_lib.SamplingConfig(
        max_new_tokens=sc.max_new_tokens, temperature=sc.temperature,
        top_k=sc.top_k, top_p=sc.top_p,
        stop_tokens=tuple(self.task.stop_tokens),
        banned_tokens=tuple(self.task.banned_tokens) + _padding_rows(
            self.task.tokenizer.vocab_size, self.model_config.vocab_size))

  def new_policy(self, value_head: bool):
    """(graphdef, params pure dict, rest) of a new policy: random, or the
    checkpoint of `model_path` placed straight onto the mesh."""
    if self.config.model_path:
      _, decoder = hf.load(self.config.model_path, self.mesh,
                           **dict(self.config.model.overrides))
    else:
      decoder = decoder_lib.create_model(self.model_config, self.config.seed,
                                         self.mesh)
    policy = policy_lib.Policy(decoder, value_head=value_head,
                               rngs=nnx.Rngs(self.config.seed + 1))
    graphdef, params, rest = policy_lib.split(policy)
    if value_head:  # Small: replicated on every device of the mesh.
      params["value_head"] = jax.device_put(params["value_head"],
                                            mesh_lib.replicated(self.mesh))
    return graphdef, params, rest

  def eval_problems(self, step: int, num_problems: int) -> list:
    """The held-out problems of the evaluation at `step`: fresh at every
    evaluation, the same for every run with this seed (paired arms)."""
    return self.task.sample_problems(np_rng(self.config, EVAL_DATA, step),
                                     num_problems, split="eval")

  def evaluate(self, graphdef, params, rest, num_problems: int,
               step: int = 0) -> dict:
    """Outcome and task metrics of the sampling policy on held-out problems.

    Problems (`eval_problems`) and the sampling key are fresh at each
    evaluation, so successive evaluations are independent samples rather
    than repeated passes over one set. Sampling runs in chunks of the RL
    batch's rows, a shape the trainer compiles anyway; the last chunk is
    padded with repeated problems whose responses are dropped.

    Returns:
      The metrics of `outcome_metrics` and "seconds", the evaluation's
      wall time.
    """
    clock = time.perf_counter()
    problems = self.eval_problems(step, num_problems)
    sampling = dataclasses.replace(
        self.sampling, temperature=self.config.eval_temperature)
    decoder = policy_lib.merged_decoder(graphdef, params, rest)
    key = jax.random.fold_in(jax.random.fold_in(self.key, 2**31 - 1), step)
    rows = self.config.rl.batch_size
    chunks = []
    for start in range(0, num_problems, rows):
      chunk = problems[start:start + rows]
      chunk += [problems[i % num_problems] for i in range(rows - len(chunk))]
      chunks.append(rollouts_lib.generate(
          self.task, decoder, chunk, sampling=sampling,
          key=jax.random.fold_in(key, start)))
    responses = rollouts_lib.Responses(**{
        f.name: (None if getattr(chunks[0], f.name) is None else
                 np.concatenate([getattr(c, f.name) for c in chunks])
                 [:num_problems])
        for f in dataclasses.fields(rollouts_lib.Responses)})
    scored = rollouts_lib.score_batch(self.task, problems, responses,
                                      self.task.max_steps)
    return {**outcome_metrics(scored, responses, "eval"),
            "eval/seconds": time.perf_counter() - clock}


def _padding_rows(tokenizer_size: int, model_size: int) -> tuple[int, ...]:
  """Ids the model has and the tokenizer does not (Qwen pads its 151665
  tokens to 151936 rows): banned, so no response holds one.

  Raises:
    ValueError: a tokenizer larger than the model's vocabulary.
  """
  if tokenizer_size > model_size:
    raise ValueError(f"the task's tokenizer has {tokenizer_size} tokens, "
                     f"more than the model's vocab_size={model_size}.")
  return tuple(range(tokenizer_size, model_size))


def _checkpoint_task(config) -> dict:
  """The task config with the checkpoint's tokenizer (and chat template)."""
  tokenizer = tokenizer_lib.Tokenizer(config.model_path)
  task = dict(config.task)
  task["tokenizer"] = tokenizer
  if task.pop("use_chat_template", True) and tokenizer.chat_template:
    task["chat_template"] = lambda question: tokenizer.apply_chat_template(
        [{"role": "user", "content": question}])
  return task


def outcome_metrics(scored, responses, where: str) -> dict:
  """Outcome metrics of a scored batch as `<where>/<name>`, and the task's
  own metrics as `task/<name>` ("rollout") or `eval/task/<name>` ("eval")."""
  scorable = np.isfinite(scored.outcome)
  outcome = scored.outcome[scorable]
  task = "task" if where == "rollout" else f"{where}/task"
  return {
      f"{where}/reward_mean": (float(outcome.mean()) if outcome.size
                               else float("nan")),
      f"{where}/accuracy": (float((outcome > 0.5).mean()) if outcome.size
                            else 0.0),
      f"{where}/unscorable": int((~scorable).sum()),
      f"{where}/finished": float(responses.finished.mean()),
      f"{where}/response_length": float(responses.valid.sum(1).mean()),
      **{f"{task}/{k}": v for k, v in scored.metrics.items()},
  }
