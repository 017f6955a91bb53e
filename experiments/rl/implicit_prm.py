"""iStar's implicit process reward model, trained online beside the policy.

"Agentic Reinforcement Learning with Implicit Step Rewards" (Liu et al.,
arXiv 2509.19199). The PRM π_φ is a second decoder with the policy's graph,
starting from the policy's starting parameters (the warm start). At every
RL step, on that step's batch:

1. forward: log π_φ of the sampled tokens, through the SAME jitted
   statistics function that gives the policy's old log-probs log π_old, so
   that π_φ = π_old gives step rewards that are exactly 0;
2. those log-probs go to `cajax.istar`, whose step reward is
   β Σ_{t∈step} (log π_φ − log π_old): the rewards of the advantage come
   from the PRM before its own update, the authors' order;
3. one AdamW step of π_φ on `cajax.istar_prm_dpo_loss` (trajectory DPO
   against π_old, over every (success, failure) pair of each group).

β is `rl.implicit_prm.beta` (also bound into the estimator); the PRM's
learning rate and gradient clip are `rl.implicit_prm.*`. Its parameters and
optimizer state are checkpointed with the policy's (`loop.run`'s
companions), so a resumed run continues the same PRM.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats as scipy_stats

import cajax

from experiments.rl import mesh as mesh_lib
from experiments.rl import policy as policy_lib
from experiments.rl import train_step
from experiments.tasks import base as task_base

__all__ = [
    "ImplicitPRM", "label_correlation",
]

# Checker labels as a correctness order for the rank correlation: a wrong
# step below a vacuous (filler) one below a correct one; UNKNOWN is left out.
_LABEL_ORDER = {task_base.WRONG: -1.0, task_base.FILLER: 0.0,
                task_base.CORRECT: 1.0}


def _dpo_update(graphdef, tx, sampling, beta: float, state, rest, seq: dict,
                old_logprobs, rollouts: cajax.Rollouts):
  """One AdamW step of the PRM on the trajectory-DPO loss."""
  num_steps = rollouts.step_mask.shape[1]

  def loss_fn(params):
    out = policy_lib.token_outputs(
        policy_lib.merge(graphdef, params, rest), seq["prompt_tokens"],
        seq["prompt_valid"], seq["response_tokens"], seq["response_valid"],
        temperature=sampling.temperature, stats=("logprobs",),
        banned_tokens=sampling.banned_tokens)
    return cajax.istar_prm_dpo_loss(
        out["logprobs"], jax.lax.stop_gradient(old_logprobs),
        rollouts.token_rewards, rollouts.mask, rollouts.step_ids,
        rollouts.group_ids, rollouts.num_groups, num_steps=num_steps,
        beta=beta, return_metrics=True)

  (loss, pairs), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return (train_step.TrainState(params, opt_state, state.step + 1),
          {"prm_loss": loss, "prm_pair_accuracy": pairs["pair_accuracy"],
           "prm_pairs": pairs["num_pairs"],
           "prm_grad_norm": optax.tree.norm(grads)})


class ImplicitPRM:
  """The PRM's train state and its two operations (see the module doc).

  `state` is a `train_step.TrainState`; `loop.run` checkpoints and restores
  it with the policy's (as a companion).
  """

  def __init__(self, exp, graphdef, rest, params, token_fn):
    """Args:
      exp: the `experiment.Experiment` (config, mesh, sampler settings).
      graphdef, rest: the policy's graph and non-parameter state.
      params: the policy's STARTING parameters (the PRM's initialisation).
      token_fn: the trainer's jitted statistics function (its `logprobs`
        are the policy's old log-probs).
    """
    settings, o = exp.config.rl.implicit_prm, exp.config.optimizer
    tx = train_step.make_optimizer(
        settings.learning_rate, b1=o.b1, b2=o.b2, weight_decay=0.0,
        grad_clip=settings.grad_clip)
    self.rest, self.token_fn = rest, token_fn
    # Its own buffers: the policy's update donates (frees) the policy's.
    params = jax.tree.map(jnp.copy, params)
    self.state = mesh_lib.place_state(train_step.TrainState(
        params, jax.jit(tx.init)(params), jnp.zeros((), jnp.int32)),
                                      exp.mesh)
    self._update = jax.jit(
        functools.partial(_dpo_update, graphdef, tx, exp.sampling,
                          settings.beta), donate_argnums=(0,))

  def logprobs(self, seq: dict) -> jax.Array:
    """log π_φ of the batch's tokens, f32[B, T] (`seq`: the four
    prompt/response arrays of `token_fn`)."""
    return self.token_fn(self.state.params, self.rest, *seq.values())[
        "logprobs"]

  def step(self, seq: dict, old_logprobs,
           rollouts: cajax.Rollouts) -> tuple[jax.Array, dict]:
    """log π_φ before the update, then one DPO step; returns those
    log-probs and the update's metrics (`prm_loss`, `prm_pair_accuracy`,
    `prm_pairs`, `prm_grad_norm`)."""
    before = self.logprobs(seq)
    self.state, metrics = self._update(self.state, self.rest, seq,
                                       old_logprobs, rollouts)
    return before, metrics


def label_correlation(step_rewards, step_valid, step_labels,
                      step_mask) -> float:
  """Spearman's rank correlation, over the batch's valid steps, between
  implicit step rewards and the checker's labels (wrong < filler <
  correct); NaN with fewer than 3 such steps or no spread in either.

  Args:
    step_rewards, step_valid: f32[B, S], bool[B, S] from `cajax.istar`'s
      info (a positive rescaling leaves the ranks alone).
    step_labels, step_mask: int[B, S], bool[B, S] from the task's scores.
  """
  labels = np.asarray(step_labels)
  order = np.full(labels.shape, np.nan)
  for label, value in _LABEL_ORDER.items():
    order[labels == label] = value
  keep = (np.asarray(step_valid, bool) & np.asarray(step_mask, bool)
          & np.isfinite(order))
  x, y = np.asarray(step_rewards, np.float64)[keep], order[keep]
  if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return float("nan")
  return float(scipy_stats.spearmanr(x, y).statistic)
