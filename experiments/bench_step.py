r"""Where the time of cajax's RL step goes, piece by piece.

  python -m experiments.bench_step --num_groups=16 --group_size=8

On the work of `experiments.bench_peers` (its decoder, prompts, exactly
`new_tokens` tokens per row, random rewards), in one process: the whole
step and its phases, then each piece alone (median of `--repeats` calls
after one that compiles):

  * sampling: the KV-cache sampler, its per-token cost, and the cache
    update alone (the in-place write of one token's keys and values into
    every layer's cache, `new_tokens` times in a loop);
  * host: `rollouts.generate` around the sampler (device-to-host copies and
    the per-row loop), scoring, and building and placing the batch;
  * update: the loss's forward, forward and backward, the optimizer step,
    and the whole jitted update;
  * the fused log-prob kernel at the model's width against plain
    log-softmax logits, forward and forward+backward.

For the steadiest numbers pin it to one core with single-threaded XLA, as
bench_peers does: `taskset -c 1` and XLA_FLAGS set to
"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".
"""

import dataclasses
import functools
import os
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

import cajax_kernels

from experiments import timing
from experiments.models import decoder as decoder_lib
from experiments.models import sampler as sampler_lib
from experiments.peers import run_cajax
from experiments.peers import work as work_lib
from experiments.rl import experiment
from experiments.rl import policy as policy_lib
from experiments.rl import rollouts as rollouts_lib
from experiments.rl import trainer
from experiments.rl import train_step

__all__ = [
    "define_flags", "main",
]

def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The work (--num_groups, --group_size, --new_tokens, --model) and the
  repetitions (--steps, --repeats)."""
  flags.DEFINE_integer("num_groups", 16, "Prompts per step.",
                       flag_values=flag_values)
  flags.DEFINE_integer("group_size", 8, "Samples per prompt.",
                       flag_values=flag_values)
  flags.DEFINE_integer("new_tokens", 48, "Tokens per row.",
                       flag_values=flag_values)
  flags.DEFINE_enum("model", "toy", list(work_lib.MODELS), "Decoder shapes.",
                    flag_values=flag_values)
  flags.DEFINE_integer("steps", 5, "Whole steps timed after one.",
                       flag_values=flag_values)
  flags.DEFINE_integer("repeats", 5, "Timed calls per piece.",
                       flag_values=flag_values)


def _cache_writes(cache, keys, values):
  """`len(keys)` one-token writes into every layer's cache (the sampler's
  per-step cache update, without the attention around it)."""
  def body(t, cache):
    k = tuple(jax.lax.dynamic_update_slice(c, keys[t], (0, t, 0, 0))
              for c in cache.k)
    v = tuple(jax.lax.dynamic_update_slice(c, values[t], (0, t, 0, 0))
              for c in cache.v)
    return cache._replace(k=k, v=v)
  return jax.lax.fori_loop(0, keys.shape[0], body, cache)


def _plain_logprobs(hidden, weight, labels):
  """Log-probs and entropies through materialised [N, V] logits."""
  logp = jax.nn.log_softmax(hidden @ weight.T, axis=-1)
  return (jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0],
          -jnp.sum(jnp.exp(logp) * logp, axis=-1))


def _sum_outputs(fn, hidden, weight, labels):
  return sum(x.sum() for x in fn(hidden, weight, labels))


def main(argv):
  del argv
  f = flags.FLAGS
  work = work_lib.Work(num_groups=f.num_groups, group_size=f.group_size,
                       new_tokens=f.new_tokens, model=f.model)
  exp = experiment.Experiment(run_cajax.config_for(work))
  exp.model_config = run_cajax.model_config(work)
  exp.task = run_cajax.WorkTask(exp.task, work)
  exp.sampling = dataclasses.replace(exp.sampling, stop_tokens=())
  rl = exp.config.rl
  graphdef, params, rest = exp.new_policy(value_head=False)
  tx = trainer.optimizer(exp.config, work_lib.LEARNING_RATE)
  state = trainer.initial_state(exp, tx, params)
  rl_step = trainer.RLStep(exp, graphdef, rest, None, tx)
  rows = []

  def add(name, ms):
    rows.append((name, ms))
    print(f"{name:55s} {ms:9.2f} ms", flush=True)

  phases, walls = {}, []
  for step in range(f.steps + 1):
    start = time.perf_counter()
    state, record = rl_step(step, state)
    jax.block_until_ready(state)
    if step:
      walls.append(time.perf_counter() - start)
      for k, v in record.items():
        if k.startswith("time/") and k != "time/tokens_per_second":
          phases.setdefault(k, []).append(v)
  add("whole step", 1e3 * statistics.median(walls))
  for k, v in phases.items():
    add(f"  phase {k}", 1e3 * statistics.median(v))
  repeats = f.repeats
  med = functools.partial(timing.median_ms, repeats=repeats)

  problems = [p for p in exp.task.sample_problems(None, work.num_groups)
              for _ in range(work.group_size)]
  decoder = policy_lib.merged_decoder(graphdef, state.params, rest)
  prompt_tokens, prompt_valid = rollouts_lib.left_pad(
      [p.prompt_ids for p in problems], exp.task.max_prompt_len,
      exp.task.tokenizer.pad_id)
  key, pad = jax.random.key(0), exp.task.tokenizer.pad_id
  sample_ms = med(lambda: sampler_lib.sample(
      decoder, prompt_tokens, prompt_valid, exp.sampling, key, pad))
  one = dataclasses.replace(exp.sampling, max_new_tokens=1)
  prefill_ms = med(lambda: sampler_lib.sample(
      decoder, prompt_tokens, prompt_valid, one, key, pad))
  add("sampler (KV cache), all tokens", sample_ms)
  add("  prefill and the first token", prefill_ms)
  add("  each further token", (sample_ms - prefill_ms)
      / max(work.new_tokens - 1, 1))
  config, b = exp.model_config, work.rows
  cache = decoder_lib.init_cache(config, b,
                                 exp.task.max_prompt_len + work.new_tokens)
  kv = jnp.ones((work.new_tokens, b, 1, config.num_kv_heads,
                 config.head_dim), cache.k[0].dtype)
  writes = jax.jit(_cache_writes, donate_argnums=(0,))
  holder = [cache]

  def write_once():
    holder[0] = writes(holder[0], kv, kv)
    return holder[0]

  add("  cache update alone, per token", med(write_once) / work.new_tokens)
  generate = functools.partial(rollouts_lib.generate, exp.task, decoder,
                               problems, sampling=exp.sampling, key=key)
  add("host: rollouts.generate minus the sampler",
      med(generate) - sample_ms)
  responses = generate()
  add("host: score_batch", med(lambda: rollouts_lib.score_batch(
      exp.task, problems, responses, exp.task.max_steps)))
  seq = {k: jnp.asarray(v) for k, v in dict(
      prompt_tokens=responses.prompt_tokens,
      prompt_valid=responses.prompt_valid, response_tokens=responses.tokens,
      response_valid=responses.valid).items()}
  shape = responses.tokens.shape
  zeros = jnp.zeros(shape, jnp.float32)
  batch = train_step.UpdateBatch(
      **seq, mask=jnp.asarray(responses.mask), advantages=zeros + 1.0,
      returns=zeros, old_logprobs=zeros, ref_logprobs=zeros,
      old_values=zeros, sampler_logprobs=jnp.asarray(
          responses.sampler_logprobs))
  own = rl_step.own_old_logprobs
  loss = functools.partial(train_step._loss_sums,  # The update's own loss.
                           rl, exp.sampling, graphdef, own)
  add("update: loss forward", med(jax.jit(
      lambda p: loss(p, rest, batch, None)[0]), state.params))
  grad = jax.jit(jax.grad(lambda p: loss(p, rest, batch, None)[0]))
  add("update: loss forward + backward", med(grad, state.params))
  grads = grad(state.params)
  add("update: optimizer step", med(jax.jit(tx.update), grads,
                                    state.opt_state, state.params))
  add("update: the jitted update (no donation)", med(jax.jit(
      functools.partial(train_step.update, rl, exp.sampling, graphdef, tx,
                        own_old_logprobs=own)), state, rest, batch, key))
  if not own:
    add("update: separate old log-prob forward", med(
        rl_step.token_fn, state.params, rest, *seq.values()))
  n, width = b * work.new_tokens, config.hidden_size
  hidden = jax.random.normal(key, (n, width))
  weight = 0.1 * jax.random.normal(key, (config.vocab_size, width))
  labels = jnp.asarray(responses.tokens.reshape(-1))
  fused = functools.partial(cajax_kernels.linear_token_logprobs,
                            weight_layout="vd")
  for name, fn in (("fused kernel", fused), ("plain logits", _plain_logprobs)):
    add(f"log-probs [{n}x{width}]x[{config.vocab_size}], {name}, forward",
        med(jax.jit(fn), hidden, weight, labels))
    add(f"log-probs, {name}, forward + backward", med(jax.jit(jax.grad(
        functools.partial(_sum_outputs, fn), argnums=(0, 1))), hidden,
        weight, labels))
  print(f"bench_step: {work.num_groups}x{work.group_size} rows, "
        f"{work.new_tokens} new tokens, model {work.model}, "
        f"{jax.devices()[0].device_kind}, affinity "
        f"{sorted(os.sched_getaffinity(0))}, load "
        f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
