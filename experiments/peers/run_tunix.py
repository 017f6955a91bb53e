r"""One `bench_peers` worker: GRPO with Tunix's own learner.

  python -m experiments.peers.run_tunix --work='{"num_groups": 16}'

Tunix's `GRPOLearner` on an `RLCluster` whose actor, reference-free, is
Tunix's own Qwen2 module with random weights, rolled out by its vanilla
(KV-cache) sampler on the same device and mesh, so the sampler and the
trainer share one copy of the weights. Settings: beta 0 (no reference
model, no KL), one iteration (no old-policy forward), epsilon 0.2,
token-mean loss aggregation, Adam. The reward function returns
`work.rewards` of the step. Two adjustments make the work that of the
other systems, and are the only places this worker reaches inside Tunix:
the vanilla rollout does not pass `forbidden_tokens` to its sampler, so a
thin proxy adds the task's banned tokens; and the stop token is BOS
(banned, hence never sampled), so every row samples exactly `new_tokens`.
"""

import time

from absl import app
from absl import flags
import numpy as np

from experiments.peers import work as work_lib

__all__ = [
    "define_flags", "main",
]



class _Tokenizer:
  """The task's character vocabulary in the shape Tunix's adapter expects
  (methods for the special ids; `encode` adds no BOS: the sampler does)."""

  def __init__(self, vocab):
    self._vocab = vocab

  def encode(self, text, **unused):
    return self._vocab.encode(text)

  def decode(self, ids, **unused):
    return self._vocab.decode(ids)

  def bos_id(self):
    return self._vocab.bos_id

  def eos_id(self):
    return self._vocab.eos_id

  def pad_id(self):
    return self._vocab.pad_id


class _BanningSampler:
  """Forwards to Tunix's sampler with the task's banned tokens."""

  def __init__(self, sampler, banned):
    self._sampler, self._banned = sampler, tuple(banned)

  def __call__(self, *args, **kwargs):
    kwargs["forbidden_tokens"] = self._banned
    return self._sampler(*args, **kwargs)

  def __getattr__(self, name):
    return getattr(self._sampler, name)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--work: the work as JSON."""
  flags.DEFINE_string("work", "{}", "A work_lib.Work as JSON.",
                      flag_values=flag_values)


def main(argv):
  del argv
  work = work_lib.Work.from_json(flags.FLAGS.work)
  import jax
  import jax.numpy as jnp
  from flax import nnx
  import optax
  import tunix
  from tunix.models.qwen2 import model as qwen2
  from tunix.models.qwen2 import params as qwen2_params
  from tunix.rl import rl_cluster as cluster_lib
  from tunix.rl.grpo import grpo_learner
  from tunix.rl.rollout import base_rollout

  build = time.perf_counter()
  task = work_lib.task()
  vocab = task.tokenizer
  shape = work.shape()
  dtype = jnp.dtype(work.dtype)
  config = qwen2.ModelConfig(
      num_layers=shape["num_layers"], vocab_size=shape["vocab_size"],
      embed_dim=shape["hidden_size"], hidden_dim=shape["intermediate_size"],
      num_heads=shape["num_heads"], head_dim=shape["head_dim"],
      num_kv_heads=shape["num_kv_heads"], rope_theta=int(shape["rope_theta"]),
      norm_eps=shape["rms_norm_eps"], use_tied_embedding=True, dtype=dtype,
      param_dtype=dtype)
  # Auto axes, as Tunix's own examples build them.
  mesh = jax.make_mesh((1, 1), ("fsdp", "tp"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  if work.checkpoint:  # The weights cajax starts from.
    model = qwen2_params.create_model_from_safe_tensors(
        work.checkpoint, config, mesh, dtype=dtype)
  else:
    with mesh:
      model = qwen2.Qwen2(config, rngs=nnx.Rngs(work.seed))
  total = work.warmup + work.steps + 1  # The last one only ends the last.
  cluster = cluster_lib.RLCluster(
      actor=model, tokenizer=_Tokenizer(vocab),
      cluster_config=cluster_lib.ClusterConfig(
          role_to_mesh={role: mesh for role in (
              cluster_lib.Role.ACTOR, cluster_lib.Role.REFERENCE,
              cluster_lib.Role.ROLLOUT)},
          rollout_engine="vanilla", offload_to_cpu=False,
          training_config=cluster_lib.RLTrainingConfig(
              actor_optimizer=optax.adam(work_lib.LEARNING_RATE),
              eval_every_n_steps=10**9, max_steps=total),
          rollout_config=base_rollout.RolloutConfig(
              max_tokens_to_generate=work.new_tokens,
              max_prompt_length=task.max_prompt_len,
              kv_cache_size=task.max_prompt_len + work.new_tokens,
              temperature=1.0, top_p=1.0, top_k=None,
              eos_tokens=[vocab.bos_id], data_type=dtype)))
  rollout = cluster.rollout
  rollout._sampler = _BanningSampler(
      rollout._sampler, task.banned_tokens)

  starts, sample_times, tokens = [], [], []
  generate = cluster.generate

  def timed_generate(*args, **kwargs):
    starts.append(time.perf_counter())
    out = generate(*args, **kwargs)
    sample_times.append(time.perf_counter() - starts[-1])
    tokens.append(sum(len(t) for t in out.tokens))
    return out

  cluster.generate = timed_generate
  step = iter(range(10**9))

  def reward(prompts, completions, **unused):
    return list(work_lib.rewards(work, next(step), len(completions)))

  learner = grpo_learner.GRPOLearner(
      rl_cluster=cluster,
      algo_config=grpo_learner.GRPOConfig(
          num_generations=work.group_size, num_iterations=1, beta=0.0,
          epsilon=work_lib.CLIP_EPSILON, loss_agg_mode="token-mean"),
      reward_fns=reward)
  data = [{"prompts": np.asarray(work_lib.prompt_texts(work, s))}
          for s in range(total)]
  learner.train(data)
  steps = [dict(step_s=starts[i + 1] - starts[i], sample_s=sample_times[i],
                tokens=tokens[i])
           for i in range(work.warmup, work.warmup + work.steps)]
  work_lib.emit("tunix", tunix.__version__ if hasattr(tunix, "__version__")
                else _version("google-tunix"), work,
                first_step_s=starts[1] - build, steps=steps,
                device=jax.devices()[0].device_kind,
                device_peak_mb=work_lib.device_peak_mb(jax.devices()[0]))


def _version(dist: str) -> str:
  from importlib import metadata
  return metadata.version(dist)


if __name__ == "__main__":
  define_flags()
  app.run(main)
