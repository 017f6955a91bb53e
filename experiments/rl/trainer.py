"""The training program: warm start, then RL (sample → score → estimate →
update), with evaluation, checkpoints and metrics under one workdir.

    workdir/warm_start/   supervised warm start (skipped with init_checkpoint,
                          and from a pretrained model_path by default)
    workdir/checkpoints/  RL checkpoints (orbax), resumed automatically
    workdir/train_metrics.jsonl, eval_metrics.jsonl, tensorboard/
"""

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import cajax

from experiments.rl import checkpoints
from experiments.rl import experiment
from experiments.rl import implicit_prm
from experiments.rl import loop
from experiments.rl import mesh as mesh_lib
from experiments.rl import metrics as metrics_lib
from experiments.rl import policy as policy_lib
from experiments.rl import retries
from experiments.rl import rollouts as rollouts_lib
from experiments.rl import run_config
from experiments.rl import train_step
from experiments.rl import warm_start

__all__ = [
    "Credit", "RLStep", "initial_params", "initial_state", "optimizer",
    "pass_at_group", "run_warm_start", "train_and_evaluate",
]


def optimizer(config: run_config.Run, learning_rate: float):
  """The run's AdamW (`optimizer.*`) at `learning_rate`."""
  o = config.optimizer
  return train_step.make_optimizer(
      learning_rate, warmup_steps=o.warmup_steps, b1=o.b1, b2=o.b2,
      weight_decay=o.weight_decay, grad_clip=o.grad_clip)


def initial_state(exp: experiment.Experiment, tx,
                  params) -> train_step.TrainState:
  """A fresh train state on the experiment's mesh."""
  return mesh_lib.place_state(train_step.TrainState(
      params, jax.jit(tx.init)(params), jnp.zeros((), jnp.int32)), exp.mesh)


def _meta(config: run_config.Run) -> dict:
  return {"config": run_config.as_dict(config)}


def run_warm_start(exp: experiment.Experiment, workdir: str) -> dict:
  """Supervised warm start into `workdir/warm_start`; returns its params."""
  config, ws = exp.config, exp.config.warm_start
  graphdef, params, rest = exp.new_policy(value_head=False)
  tx = optimizer(config, ws.learning_rate)
  state = initial_state(exp, tx, params)
  update = train_step.jit_sft_update(graphdef, tx,
                                     exp.sampling.banned_tokens)

  def step_fn(step, state):
    batch = warm_start.demonstration_batch(
        exp.task, experiment.np_rng(config, experiment.WARM_DATA, step),
        ws.batch_size,
        config.sampling.max_new_tokens, wrong_rate=ws.wrong_rate,
        filler_rate=ws.filler_rate)
    state, m = update(state, rest, mesh_lib.put_batch(batch, exp.mesh))
    return state, {f"warm_start/{k}": float(v) for k, v in m.items()}

  state, _ = loop.run(
      os.path.join(workdir, "warm_start"), state, num_steps=ws.steps,
      step_fn=step_fn, meta=_meta(config),
      checkpoint_every=max(ws.steps // 4, 1), keep=1,
      description="warm start", prefix="warm_start",
      show_progress=config.show_progress,
      summary_keys=("warm_start/loss",))
  return state.params


def initial_params(exp: experiment.Experiment, workdir: str,
                   params: dict) -> dict:
  """The RL starting point: init_checkpoint's params, or the warm start's.

  Only the decoder's parameters are taken; a value head starts fresh.
  """
  config = exp.config
  if config.init_checkpoint:
    source = os.path.join(config.init_checkpoint, "checkpoints")
    decoder = checkpoints.restore_params(
        source, {"decoder": params["decoder"]})["decoder"]
  elif warm_start.steps(config) > 0:
    decoder = run_warm_start(exp, workdir)["decoder"]
  else:
    return params
  return {**params, "decoder": decoder}


@dataclasses.dataclass
class Credit:
  """A scored batch turned into per-token credit (`RLStep.credit`)."""
  responses: rollouts_lib.Responses  # with R3L retries written in
  scored: rollouts_lib.Scored
  retried: list                      # rows replaced by retries
  seq: dict                          # the batch's token arrays, on device
  stats: dict                        # the policy's statistics (old log-probs)
  rollouts: cajax.Rollouts
  estimate: cajax.EstimatorOutput
  metrics: dict                      # `rollout/` and `update/` extras


class RLStep:
  """One RL step: sample, score, estimate, update (a `loop.run` step)."""

  def __init__(self, exp: experiment.Experiment, graphdef, rest, ref_params,
               tx, start_params=None):
    """Args:
      exp: the experiment.
      graphdef, rest: the policy's graph and non-parameter state.
      ref_params: the frozen reference policy's parameters, or None.
      tx: the policy's optimizer.
      start_params: the policy's starting parameters, which an implicit PRM
        starts from (needed when `rl.uses_implicit_prm`).
    """
    self.exp, self.rest, self.ref_params = exp, rest, ref_params
    rl = exp.config.rl
    self.graphdef = graphdef
    self.critic = rl.value_coef > 0
    self.token_fn = train_step.jit_token_outputs(
        graphdef, temperature=exp.sampling.temperature,
        stats=policy_lib.statistics_for(rl.resolved.fields),
        values=self.critic, banned_tokens=exp.sampling.banned_tokens)
    self.ref_fn = (train_step.jit_token_outputs(
        graphdef, temperature=exp.sampling.temperature, stats=("logprobs",),
        values=False, banned_tokens=exp.sampling.banned_tokens)
                   if ref_params is not None else None)
    self.estimate = jax.jit(rl.resolved.function)
    # No separate forward for the old log-probs where the update can take
    # them from its own (one optimizer step; the estimator reads none).
    self.own_old_logprobs = train_step.takes_own_old_logprobs(rl)
    self.update = train_step.jit_update(
        rl, exp.sampling, graphdef, tx,
        own_old_logprobs=self.own_old_logprobs)
    self.prm = None
    if rl.uses_implicit_prm:
      if start_params is None:
        raise ValueError(f"rl.estimator={rl.estimator!r} trains an implicit "
                         f"PRM: pass start_params.")
      self.prm = implicit_prm.ImplicitPRM(exp, graphdef, rest, start_params,
                                          self.token_fn)
    self.checked = False

  def _decoder(self, params):
    return policy_lib.merged_decoder(self.graphdef, params, self.rest)

  def _sample(self, params, problems, key, sampling):
    return rollouts_lib.generate(self.exp.task, self._decoder(params),
                                 problems, sampling=sampling, key=key)

  def credit(self, params, problems, responses, scored, key,
             lap=lambda name: None) -> Credit:
    """Everything between scoring and the update: R3L retries, ReMax's
    greedy baseline, the policy's statistics, the batch, the implicit
    PRM's step, and the estimator. The first call also checks the batch's
    layout against the estimator's settings.

    Args:
      params: the policy's parameters (before the update).
      problems: B problems, G consecutive rows per group.
      responses, scored: the sampled responses and their scores.
      key: this step's PRNG key.
      lap: called with "score" once the scores are final (timing).
    """
    exp, rl = self.exp, self.exp.config.rl
    group_ids = np.repeat(np.arange(rl.num_groups, dtype=np.int32),
                          rl.group_size)
    retried = []
    if rl.retry_samples > 0:
      responses, retried = retries.retry(
          exp.task, problems, responses, scored,
          group_size=rl.group_size, retry_samples=rl.retry_samples,
          freeze_prefix=rl.mask_retry_prefix,
          generate=lambda ps, pre: rollouts_lib.generate(
              exp.task, self._decoder(params), ps, sampling=exp.sampling,
              key=jax.random.fold_in(key, 2), prefixes=pre))
      if retried:
        scored = rollouts_lib.score_batch(exp.task, problems, responses,
                                          exp.task.max_steps)
    baseline = None
    if "baseline_scores" in rl.resolved.fields:
      greedy = self._sample(params, problems, key,
                            dataclasses.replace(exp.sampling,
                                                temperature=0.0))
      baseline = rollouts_lib.score_batch(exp.task, problems, greedy,
                                          exp.task.max_steps).outcome
    lap("score")
    put = functools.partial(mesh_lib.put_batch, mesh=exp.mesh)
    seq = put(dict(prompt_tokens=responses.prompt_tokens,
                   prompt_valid=responses.prompt_valid,
                   response_tokens=responses.tokens,
                   response_valid=responses.valid))
    stats = ({} if self.own_old_logprobs
             else self.token_fn(params, self.rest, *seq.values()))
    if self.ref_fn is not None:
      stats["ref_logprobs"] = self.ref_fn(self.ref_params, self.rest,
                                          *seq.values())["logprobs"]
    host = rollouts_lib.build_batch(
        rl.resolved, responses, scored, group_ids, rl.num_groups,
        statistics=stats, reward_source=rl.reward_source,
        verifiable_fraction=rl.verifiable_fraction,
        baseline_scores=baseline)
    if not self.checked:
      _check_layout(rl, host)
      self.checked = True
    rollouts = put(host)
    extra, metrics = {}, {
        "rollout/retries": len(retried),
        "rollout/retry_success": (float(np.mean(scored.outcome[retried]
                                                > 0.5))
                                  if retried else float("nan"))}
    if self.prm is not None:
      extra["prm_logprobs"], prm_metrics = self.prm.step(
          seq, stats["logprobs"], rollouts)
      metrics.update({f"update/{k}": float(v)
                      for k, v in prm_metrics.items()})
    est = self.estimate(rollouts, **extra)
    if self.prm is not None:
      metrics["rollout/prm_label_correlation"] = (
          implicit_prm.label_correlation(
              est.info["step_rewards"], est.info["step_valid"],
              scored.arrays["step_labels"], scored.arrays["step_mask"]))
    return Credit(responses, scored, retried, seq, stats, rollouts, est,
                  metrics)

  def __call__(self, step: int, state: train_step.TrainState):
    exp, rl = self.exp, self.exp.config.rl
    key = jax.random.fold_in(exp.key, step)
    times, clock = {}, time.perf_counter()

    def lap(name):
      nonlocal clock
      now = time.perf_counter()
      times[f"time/{name}"], clock = now - clock, now

    rng = experiment.np_rng(exp.config, experiment.TRAIN_DATA, step)
    prompts = exp.task.sample_problems(rng, rl.num_groups)
    problems = [p for p in prompts for _ in range(rl.group_size)]
    responses = self._sample(state.params, problems,
                             jax.random.fold_in(key, 0), exp.sampling)
    lap("sample")
    scored = rollouts_lib.score_batch(exp.task, problems, responses,
                                      exp.task.max_steps)
    c = self.credit(state.params, problems, responses, scored, key, lap)
    lap("estimate")
    zeros = jnp.zeros_like(c.estimate.advantages)
    batch = train_step.UpdateBatch(
        **c.seq, mask=c.rollouts.mask, advantages=c.estimate.advantages,
        returns=c.estimate.returns,
        old_logprobs=c.stats.get("logprobs", zeros),
        ref_logprobs=c.stats.get("ref_logprobs", zeros),
        old_values=c.stats.get("values", zeros),
        sampler_logprobs=mesh_lib.put_batch(c.responses.sampler_logprobs,
                                            exp.mesh))
    state, update_metrics, before = self.update(state, self.rest, batch,
                                                jax.random.fold_in(key, 1))
    # The update is dispatched asynchronously: without this wait its
    # compute lands after the lap, in no phase (it was read as overhead).
    jax.block_until_ready((state, update_metrics))
    stats = {**before, **c.stats}
    lap("update")
    times["time/tokens_per_second"] = (float(c.responses.valid.sum())
                                       / max(sum(times.values()), 1e-9))
    return state, {
        **experiment.outcome_metrics(c.scored, c.responses, "rollout"),
        "rollout/pass_at_group": pass_at_group(c.scored.outcome,
                                               rl.group_size),
        **_token_metrics(batch.mask, c.estimate.advantages, stats,
                         batch.sampler_logprobs, stats.get("ref_logprobs")),
        **c.metrics,
        **{f"update/{k}": float(v) for k, v in update_metrics.items()},
        **times, "samples_seen": (step + 1) * len(problems)}


def pass_at_group(outcome: np.ndarray, group_size: int) -> float:
  """Share of groups (G consecutive rows) with at least one correct
  response (outcome > 0.5): pass@G of the batch's prompts."""
  correct = np.asarray(outcome).reshape(-1, group_size) > 0.5
  return float(correct.any(axis=1).mean())


def _check_layout(rl: run_config.RL, rollouts: cajax.Rollouts) -> None:
  """Raises ValueError, naming the settings, when the first batch's layout
  defeats the estimator's settings (`cajax.validation.estimator_problems`:
  e.g. `pure` with mask_step_end=True on one-token steps, which zeroes
  almost every advantage)."""
  problems = cajax.validation.estimator_problems(
      rl.estimator, rollouts, **rl.resolved.settings)
  if problems:
    raise ValueError(
        f"rl.estimator={rl.estimator!r} with rl.estimator_kwargs="
        f"{dict(rl.estimator_kwargs)} cannot learn from this task's "
        f"batches (checked on the first one):\n  " + "\n  ".join(problems))


@jax.jit
def _token_metrics_jit(mask, advantages, entropy, trainer_lp, sampler_lp):
  m = mask.astype(jnp.float32)
  n = jnp.maximum(m.sum(), 1.0)
  adv_mean = (advantages * m).sum() / n
  log_ratio = jnp.where(mask, trainer_lp - sampler_lp, 0.0)
  return {
      "advantage_mean": adv_mean,
      "advantage_std": jnp.sqrt((jnp.square(advantages - adv_mean) * m).sum()
                                / n),
      "entropy": (entropy * m).sum() / n,
      # KL(sampler ‖ trainer) estimated on the sampled tokens, and the
      # largest trainer/sampler probability ratio.
      "mismatch_kl": -(log_ratio * m).sum() / n,
      "mismatch_max_ratio": jnp.max(jnp.where(mask, jnp.exp(log_ratio), 0.0)),
  }


def _token_metrics(mask, advantages, stats, sampler_lp, ref_lp) -> dict:
  """`rollout/` metrics of the sampled tokens, before the update (the
  entropy is a token mean, whatever the loss's aggregation)."""
  out = _token_metrics_jit(mask, advantages, stats["entropy"],
                           stats["logprobs"], sampler_lp)
  if ref_lp is not None:
    out["kl_to_ref"] = cajax.masked_mean(
        cajax.losses.kl_penalty("k3", stats["logprobs"], ref_lp, mask), mask)
  return {f"rollout/{k}": float(v) for k, v in out.items()}


class _Evaluations:
  """Evaluations written to `eval_metrics.jsonl` (opened at the first one,
  so a resumed run drops records past its checkpoint)."""

  def __init__(self, exp: experiment.Experiment, graphdef, rest,
               workdir: str):
    self.exp, self.graphdef, self.rest = exp, graphdef, rest
    self.workdir, self.writer, self.last = workdir, None, {}

  def run(self, step: int, params) -> None:
    config = self.exp.config
    if self.writer is None:
      self.writer = metrics_lib.MetricWriter(
          self.workdir, total_steps=config.rl.num_steps, initial_step=step,
          description="eval", prefix="eval", show_progress=False,
          drop_from=step)
    self.last = self.exp.evaluate(self.graphdef, params, self.rest,
                                  config.eval_problems, step)
    self.last["samples_seen"] = step * config.rl.batch_size
    self.writer.write(step, self.last)

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs (or resumes) the experiment of `config` in `workdir`.

  Args:
    config: a `get_config()` ConfigDict (validated here, before anything is
      built) or a `run_config.Run`.
    workdir: the run's folder.

  Returns:
    {"train": last train record, "eval": last evaluation record}.
  """
  exp = experiment.Experiment(config)
  config = exp.config
  os.makedirs(workdir, exist_ok=True)
  rl = config.rl
  graphdef, params, rest = exp.new_policy(value_head=rl.value_coef > 0)
  params = initial_params(exp, workdir, params)
  # A copy: the update donates the train state, params included, so the
  # frozen reference must not share their buffers.
  ref_params = (jax.tree.map(lambda x: x.copy(), params)
                if rl.needs_reference else None)
  tx = optimizer(config, config.optimizer.learning_rate)
  state = initial_state(exp, tx, params)
  rl_step = RLStep(exp, graphdef, rest, ref_params, tx, start_params=params)
  evals = _Evaluations(exp, graphdef, rest, workdir)

  def step_fn(step, state):
    if step == 0:
      evals.run(0, state.params)
    state, record = rl_step(step, state)
    if (step + 1) % config.eval_every == 0 or step + 1 == rl.num_steps:
      evals.run(step + 1, state.params)
    return state, record

  try:
    _, record = loop.run(
        workdir, state, num_steps=rl.num_steps, step_fn=step_fn,
        meta=_meta(config), checkpoint_every=config.checkpoint_every,
        keep=config.keep_checkpoints, stop_at_step=config.stop_at_step,
        description=f"rl {rl.estimator}", prefix="train",
        show_progress=config.show_progress,
        summary_keys=("rollout/reward_mean", "rollout/accuracy"),
        companions=({"implicit_prm": rl_step.prm} if rl_step.prm else None))
  finally:
    evals.close()
  return {"train": record, "eval": evals.last}
