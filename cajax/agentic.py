"""Credit assignment for multi-step and agentic rollouts: iStar, MatchTIR, R³L,
SLATE, and the trajectory-DPO loss of iStar's implicit process reward model.

Layout shared by every function here: one row of a `[B, T]` batch is one
trajectory (a whole multi-turn episode). Its trainable tokens are True in
`mask`; interior False tokens are tool or environment observations. A *turn*
is a maximal contiguous run of True tokens (`sequences.contiguous_runs`); a
*step* is the set of tokens sharing a `step_ids` value. Outputs are float32
and exactly 0 at masked tokens. A row whose reward (or another score input
at a valid entry) is not finite is unscorable: it gets advantage 0 and is
left out of every group statistic as if absent. So is a row whose group (or
sibling) id lies outside [0, num_groups) under jit (concrete ids raise).
Step ids must be ordered (`cajax.step_totals.check_order`).

Group statistics follow the verl conventions of the peers: unbiased std
(ddof=1) with eps added outside the square root, a singleton group passes its
raw value through (mean 0, std 1; RLOO unchanged), and a group whose values
are all equal gets exactly 0.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from cajax import _checks
from cajax import groups
from cajax import masking
from cajax import scoring
from cajax import sequences
from cajax import step_totals
from cajax import types
from cajax.token_rewards import implicit_sequence_reward
from cajax.token_rewards import implicit_token_reward

__all__ = [
    "istar", "istar_prm_dpo_loss", "istar_step_rewards", "matchtir", "r3l",
    "slate", "slate_step_reward", "turn_rewards",
]


def _flat_segments(values, segment_ids, num_segments: int, valid):
  """bool[N]: the segment of each entry has no two distinct valid values."""
  high = groups.group_max(values, segment_ids, num_segments, valid=valid)
  low = -groups.group_max(-values, segment_ids, num_segments, valid=valid)
  return (high == low)[segment_ids]


def _row_scores(token_rewards, mask, keep=None):
  """Σ_t of token rewards (restricted to `keep`) and scorability per row."""
  if keep is not None:
    token_rewards = jnp.where(
        keep, _checks.as_float_like(token_rewards, mask, "token_rewards"),
        0.0)
  return scoring.sequence_scores(token_rewards, mask)


# ----------------------------------------------------------------------------
# iStar (OPRL): implicit step rewards from a trajectory-DPO process model.
# ----------------------------------------------------------------------------

_STEP_BASELINES = ("first_row", "all_steps", "same_index")
_TRAJECTORY_SCORES = ("step_mean", "sum")


def _implicit_step_rewards(prm_logprobs, ref_logprobs, mask, step_ids,
                           num_steps: int, beta: float,
                           ref_name: str = "ref_logprobs"):
  """β Σ_{t∈step} (log π_φ − log π_ref) per step, and the valid-step mask.

  Rows with a non-finite log-prob at a valid token own no valid step (their
  rewards are 0), so they take part in no step statistic.
  """
  beta = _checks.check_number(beta, "beta")
  prm = _checks.as_float_like(prm_logprobs, mask, "prm_logprobs")
  ref = _checks.as_float_like(ref_logprobs, mask, ref_name)
  _checks.check_same_shape(step_ids, mask, "step_ids", "mask")
  mask = _checks.as_mask(mask)
  mask = mask & (scoring.finite_rows(prm, mask)
                 & scoring.finite_rows(ref, mask))[:, None]
  ids = _checks.as_int(step_ids, "step_ids")
  kept = mask & (ids >= 0) & (ids < num_steps)
  step_totals.check_order(ids, kept)
  # One step search gives the sums and the token counts together.
  totals = step_totals.totals(
      ids, kept, num_steps,
      sums=(implicit_token_reward(jnp.where(mask, prm, 0.0),
                                  jnp.where(mask, ref, 0.0), mask,
                                  beta=beta),))
  step_valid = totals.count > 0
  return jnp.where(step_valid, totals.sums[0], 0.0), step_valid


def istar_step_rewards(prm_logprobs: ArrayLike, old_logprobs: ArrayLike,
                       mask: ArrayLike, step_ids: ArrayLike, *, num_steps: int,
                       beta: float = 0.05, max_abs_normalize: bool = True,
                       eps: float = 1e-6):
  """Implicit step rewards of iStar, batch max-abs normalised.

  r_{b,s} = β Σ_{t: step_ids[b,t]=s, mask[b,t]} (log π_φ(y_t) − log π_old(y_t))
  r_{b,s} ← r_{b,s} / (max_{valid (b',s')} |r_{b',s'}| + eps)

  The repo (`istar_norm="batch_norm"`) divides by the batch max of
  |reverse_cumsum(rm_scores)|; with its one-row-per-step layout that is the
  batch max |r_step|, which is what is used here for multi-step rows. The
  statistic is batch-global: compute it on the full batch, not per
  micro-batch.

  See "Agentic Reinforcement Learning with Implicit Step Rewards" (Liu et al.,
  arXiv 2509.19199).

  Args:
    prm_logprobs: f[B, T] log π_φ of the sampled tokens under the implicit PRM.
    old_logprobs: f[B, T] log π_old of the sampled tokens (the repo's π_ref
      when `ref_path=null`).
    mask: bool[B, T] trainable tokens.
    step_ids: int[B, T] step of each token, −1 outside any step.
    num_steps: static S; ids ≥ S are ignored.
    beta: β (`beta_train`), default 0.05.
    max_abs_normalize: divide by the batch max |r| (default True; the
      repo's `istar_norm="batch_norm"`).
    eps: added to the max, default 1e-6.

  Returns:
    (step_rewards f32[B, S], step_valid bool[B, S]); steps without a valid
    token are invalid and hold 0, and so are all the steps of a row with a
    non-finite log-prob at a valid token (left out of the batch max).
  """
  _checks.check_batch(mask)
  _checks.check_positive_int(num_steps, "num_steps")
  eps = _checks.check_number(eps, "eps", low=0.0)
  rewards, step_valid = _implicit_step_rewards(
      prm_logprobs, old_logprobs, mask, step_ids, num_steps, beta,
      ref_name="old_logprobs")
  if _checks.check_bool(max_abs_normalize, "max_abs_normalize"):
    scale = jnp.max(jnp.where(step_valid, jnp.abs(rewards), 0.0))
    rewards = masking.safe_divide(rewards, scale + eps)
  return rewards, step_valid


def istar(token_rewards: ArrayLike, prm_logprobs: ArrayLike,
          old_logprobs: ArrayLike, mask: ArrayLike, step_ids: ArrayLike,
          group_ids: ArrayLike, num_groups: int, *, num_steps: int,
          beta: float = 0.05, step_weight: float = 1.0,
          step_baseline: str = "first_row", max_abs_normalize: bool = True,
          eps: float = 1e-6) -> types.EstimatorOutput:
  """iStar advantages: RLOO on episode rewards plus RLOO on implicit steps.

  A_E(b)   = n/(n−1) · (R(b) − mean_{b'∈g} R(b'))             (n rows of g)
  A_S(b,s) = n/(n−1) · (r(b,s) − mean_{P_g} r)                (n = |P_g|)
  A_{b,t}  = A_E(b) + w · A_S(b, step(t))   on mask; n = 1 leaves x as is.

  R(b) = Σ_t token_rewards[b, t] is the episode reward; r are the normalised
  implicit step rewards of `istar_step_rewards`. The step baseline population
  P_g is chosen by `step_baseline`:
    * "first_row" (repo-exact, `istar_rloo`): the first valid step of each
      row of g. The repo dedupes by trajectory and keeps the first row seen,
      so every step is compared with the mean *first-step* reward.
    * "all_steps": every valid step of every row of g (the paper's "all other
      steps in the same group"; leave-one-out over steps).
    * "same_index": the s-th steps of the rows of g that have one.

  Layout [GAP, documented choice]: the repo stores one step per batch row
  (verl-agent); here a row is a whole trajectory and steps are the segments
  of `step_ids`. Trainable tokens outside every step (step id −1) get A_E
  only. Rows without a valid step are outside the step baselines.

  See "Agentic Reinforcement Learning with Implicit Step Rewards" (Liu et al.,
  arXiv 2509.19199), formerly "Online Process Reward Learning for Agentic
  RL".

  Args:
    token_rewards: f[B, T]; the row sum is the episode reward (a non-finite
      sum, or a non-finite log-prob at a valid token, marks the row
      unscorable: it gets 0 and is left out of every baseline and of the
      step-reward normalisation).
    prm_logprobs: f[B, T] log π_φ of the sampled tokens under the implicit
      PRM (the registered adapter reads `Rollouts.logprobs`).
    old_logprobs: f[B, T] log π_old of the sampled tokens.
    mask: bool[B, T] trainable tokens.
    step_ids: int[B, T] step index per token, −1 outside any step. Steps
      are ordered: ids never decrease along a row, so the lowest valid id
      is the first step in time ("first_row"); concrete unordered ids raise
      a ValueError, traced ones are checked under checkify only.
    group_ids: int[B] environment group of each row, in [0, num_groups).
    num_groups: static G.
    num_steps: static S, the size of the step axis (ids ≥ S are ignored).
    beta: β of the implicit reward, default 0.05.
    step_weight: w (`step_advantage_w`), default 1.0.
    step_baseline: "first_row" (default), "all_steps" or "same_index".
    max_abs_normalize: batch max-abs normalisation of step rewards
      (default True).
    eps: added to the batch max, default 1e-6.

  Returns:
    `EstimatorOutput` (returns = advantages) with info `step_rewards`
    f32[B, S], `step_valid` bool[B, S], `episode_advantages` f32[B],
    `step_advantages` f32[B, S].

  Raises:
    ValueError: bad shapes, dtypes or options, or concrete unordered
      `step_ids`.

  Examples:
    Two two-step episodes of one environment; the implicit PRM's log-probs
    give the step rewards:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 0., 0., 1.], [0., 0., 0., 0.]])
    >>> prm_logprobs = jnp.array([[-1.0, -0.5, -1.0, -0.2],
    ...                           [-1.0, -2.0, -1.0, -1.0]])
    >>> old_logprobs = jnp.full((2, 4), -1.0)
    >>> mask = jnp.ones((2, 4), bool)
    >>> step_ids = jnp.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    >>> out = cajax.istar(token_rewards, prm_logprobs, old_logprobs, mask,
    ...                   step_ids, jnp.array([0, 0]), num_groups=1,
    ...                   num_steps=2)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 2.5  2.5  3.1  3.1]
     [-2.5 -2.5 -0.5 -0.5]]
  """
  _checks.check_choice(step_baseline, _STEP_BASELINES, "step_baseline")
  step_weight = _checks.check_number(step_weight, "step_weight")
  mask_b, group_ids, num_groups = groups.check_batch_groups(
      mask, group_ids, num_groups)
  prm = _checks.as_float_like(prm_logprobs, mask_b, "prm_logprobs")
  old = _checks.as_float_like(old_logprobs, mask_b, "old_logprobs")
  scores, scorable = _row_scores(token_rewards, mask)
  scorable = (scorable & scoring.finite_rows(prm, mask_b)
              & scoring.finite_rows(old, mask_b)
              & groups.in_range(group_ids, num_groups))
  mask_b = mask_b & scorable[:, None]
  step_rewards, step_valid = istar_step_rewards(
      prm, old, mask_b, step_ids, num_steps=num_steps, beta=beta,
      max_abs_normalize=max_abs_normalize, eps=eps)
  episode_adv = groups.group_normalize(scores, group_ids, num_groups,
                                       scorable, mode="rloo")
  step_valid = step_valid & scorable[:, None]
  population = None
  if step_baseline == "first_row":
    first = jnp.argmax(step_valid, axis=1)
    population = step_valid & (
        jnp.arange(num_steps, dtype=jnp.int32)[None, :] == first[:, None])
  step_adv = groups.group_normalize(
      step_rewards, group_ids, num_groups, step_valid, mode="rloo",
      population=population, by_position=step_baseline == "same_index")
  token_step_adv = sequences.steps_to_tokens(step_adv, step_ids)
  advantages = jnp.where(mask_b & scorable[:, None],
                         episode_adv[:, None] + step_weight * token_step_adv,
                         0.0)
  info = dict(step_rewards=step_rewards, step_valid=step_valid,
              episode_advantages=episode_adv, step_advantages=step_adv)
  return types.EstimatorOutput(advantages, advantages, info)


def istar_prm_dpo_loss(prm_logprobs: ArrayLike, ref_logprobs: ArrayLike,
                       token_rewards: ArrayLike, mask: ArrayLike,
                       step_ids: ArrayLike, group_ids: ArrayLike,
                       num_groups: int, *, num_steps: int, beta: float = 0.05,
                       success_threshold: float = 0.0,
                       trajectory_score: str = "step_mean",
                       return_metrics: bool = False):
  """Trajectory-DPO loss that trains iStar's implicit process reward model.

  Q(τ) = mean_{valid steps s of τ} β Σ_{t∈s} (log π_φ(y_t) − log π_ref(y_t))
  L    = mean_{(τ⁺, τ⁻)} −log σ(Q(τ⁺) − Q(τ⁻))

  over **all** (success, failure) pairs of rows in the same group (the repo's
  `loss_type=eto`; success means episode reward > `success_threshold`). With
  `trajectory_score="sum"` Q(τ) = β Σ_{t∈τ} (log π_φ − log π_ref), the paper's
  form β log π_φ(τ)/π_ref(τ). A batch without any pair gives 0. Rows with no
  valid step (or, for "sum", no valid token) and unscorable rows (NaN reward)
  take part in no pair. Differentiable in `prm_logprobs` (and in
  `ref_logprobs`; wrap it in `jax.lax.stop_gradient` if it is not constant).

  The step rewards fed to `istar` come from the same forward pass, before the
  PRM optimiser step (`update=after`).

  See "Agentic Reinforcement Learning with Implicit Step Rewards" (Liu et al.,
  arXiv 2509.19199).

  Args:
    prm_logprobs: f[B, T] log π_φ of the sampled tokens (trainable PRM).
    ref_logprobs: f[B, T] log π_ref (the old policy when `ref_path=null`).
    token_rewards: f[B, T]; the row sum is the episode reward.
    mask: bool[B, T] trainable tokens.
    step_ids: int[B, T] step index per token, −1 outside any step.
    group_ids: int[B] environment group, in [0, num_groups).
    num_groups: static G (shape check only; pairs compare ids directly).
    num_steps: static S.
    beta: β, default 0.05.
    success_threshold: a row is a success when its reward is above it
      (default 0.0, the repo's `> 0`).
    trajectory_score: "step_mean" (repo-exact, default) or "sum" (paper).
    return_metrics: also return the pairs' metrics.

  Returns:
    f32 scalar loss; with `return_metrics`, (loss, metrics) where metrics
    holds "pair_accuracy", the share of pairs with Q(τ⁺) > Q(τ⁻) (NaN
    without a pair), and "num_pairs".

  Raises:
    ValueError: bad shapes, dtypes or options, or concrete unordered
      `step_ids`.
  """
  _checks.check_choice(trajectory_score, _TRAJECTORY_SCORES,
                       "trajectory_score")
  return_metrics = _checks.check_bool(return_metrics, "return_metrics")
  mask_b, group_ids, num_groups = groups.check_batch_groups(
      mask, group_ids, num_groups)
  _checks.check_positive_int(num_steps, "num_steps")
  step_rewards, step_valid = _implicit_step_rewards(
      prm_logprobs, ref_logprobs, mask, step_ids, num_steps, beta)
  if trajectory_score == "step_mean":
    score = masking.masked_mean(step_rewards, step_valid, axis=1, eps=0.0)
    has_score = jnp.any(step_valid, axis=1)
  else:
    score = implicit_sequence_reward(
        prm_logprobs, ref_logprobs, mask_b, beta=beta)
    has_score = jnp.any(mask_b, axis=1)
  rewards, scorable = _row_scores(token_rewards, mask)
  usable = scorable & has_score & groups.in_range(group_ids, num_groups)
  success = usable & (rewards > success_threshold)
  failure = usable & ~(rewards > success_threshold)
  pairs = ((group_ids[:, None] == group_ids[None, :])
           & success[:, None] & failure[None, :])
  margin = score[:, None] - score[None, :]
  per_pair = jnp.where(pairs, jax.nn.softplus(-margin), 0.0)
  num_pairs = jnp.sum(pairs.astype(jnp.float32))
  loss = jnp.sum(per_pair) / jnp.maximum(num_pairs, 1.0)
  if not return_metrics:
    return loss
  ordered = jnp.sum((pairs & (margin > 0)).astype(jnp.float32))
  accuracy = jnp.where(num_pairs > 0,
                       ordered / jnp.maximum(num_pairs, 1.0), jnp.nan)
  return loss, {"pair_accuracy": jax.lax.stop_gradient(accuracy),
                "num_pairs": num_pairs}


def _default_num_steps(rollouts: types.Rollouts, num_steps):
  """S: given, else the step axis of `step_mask` / `step_rewards`, else T."""
  if num_steps is not None:
    return num_steps
  for steps in (rollouts.step_mask, rollouts.step_rewards):
    if steps is not None:
      return jnp.shape(steps)[1]
  return jnp.shape(rollouts.mask)[1]


def _istar_adapter(rollouts: types.Rollouts, *, prm_logprobs=None,
                   num_steps=None, **kwargs) -> types.EstimatorOutput:
  """`istar` on Rollouts: π_φ log-probs are `logprobs` unless given.

  `num_steps` defaults to the step axis S of `step_mask` (or
  `step_rewards`) when the rollouts carry one, else to T.
  """
  return istar(rollouts.token_rewards,
               rollouts.logprobs if prm_logprobs is None else prm_logprobs,
               rollouts.old_logprobs, rollouts.mask, rollouts.step_ids,
               rollouts.group_ids, rollouts.num_groups,
               num_steps=_default_num_steps(rollouts, num_steps), **kwargs)


# ----------------------------------------------------------------------------
# MatchTIR: turn rewards from tool-call matching, dual-level advantages.
# ----------------------------------------------------------------------------

_FUSE = ("mean", "sum")


def turn_rewards(token_rewards: ArrayLike, mask: ArrayLike, *,
                 num_turns: int | None = None):
  """Per-turn rewards read at the last token of each turn (run of `mask`).

  Args:
    token_rewards: f[B, T]; rewards elsewhere than turn ends are ignored.
    mask: bool[B, T]; turns are its maximal runs of True.
    num_turns: static K; default ⌈T/2⌉, the most runs T tokens can hold.
      Turns with index ≥ K are dropped. A bound on the real number of turns
      (the tool-call budget + 1) is much cheaper: every `[B, K]` statistic
      shrinks, and few enough turns are found by a search instead of a
      scatter of every token (`cajax.step_totals`).

  Returns:
    (rewards f32[B, K], turn_valid bool[B, K], turn_ids int32[B, T]).
  """
  _checks.check_batch(mask)
  rewards = _checks.as_float_like(token_rewards, mask, "token_rewards")
  length = mask.shape[1]
  num_turns = (length + 1) // 2 if num_turns is None else num_turns
  num_turns = _checks.check_positive_int(num_turns, "num_turns")
  turn_ids, count = sequences.contiguous_runs(mask)
  mask = _checks.as_mask(mask)
  # A turn (maximal run of mask) ends where the next token is masked, so
  # its reward is the sum over the turn of the rewards kept at ends only.
  # Turn ids never decrease along a row: the ordered step search applies.
  ends = mask & ~jnp.pad(mask[:, 1:], ((0, 0), (0, 1)))
  totals = step_totals.totals(
      turn_ids, ends & (turn_ids < num_turns), num_turns,
      sums=(jnp.where(ends, rewards, 0.0),))
  per_turn = totals.sums[0]
  turn_valid = jnp.arange(num_turns)[None, :] < count[:, None]
  return per_turn, turn_valid, turn_ids


def matchtir(token_rewards: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
             num_groups: int, *, num_turns: int | None = None,
             gamma: float = 0.9, fuse: str = "mean",
             eps: float = 1e-6) -> types.EstimatorOutput:
  """MatchTIR dual-level (trajectory + turn) advantages.

  A^g_i     = (Σ_k r_{i,k} − μ_g) / (σ_g + eps)
  R_{i,k}   = Σ_{k'≥k} γ^{k'−k} r_{i,k'}
  A^l_{i,k} = (R_{i,k} − μ_{g,k}) / (σ_{g,k} + eps)   over rows of g with a
              k-th turn (one such row: μ=0, σ=1)
  Â_{i,t}   = (A^g_i + A^l_{i,k(t)}) / 2   ("mean", repo) or the plain sum
              ("sum", paper figure) on tokens of turn k(t); 0 elsewhere.

  Turns are the maximal runs of `mask` (tool observations are masked) and
  r_{i,k} is `token_rewards` at the last token of turn k (see `turn_rewards`;
  `cajax.matching` computes r from tool-call matching and places it there).
  Rows with no turn get 0 and are left out of the statistics (the repo
  crashes on them); zero-variance groups give 0; σ is unbiased.

  See "MatchTIR: Fine-Grained Supervision for Tool-Integrated Reasoning via
  Bipartite Matching" (Qu et al., arXiv 2601.10712).

  Args:
    token_rewards: f[B, T] turn rewards at turn-end tokens (a non-finite
      turn reward marks the row unscorable).
    mask: bool[B, T] trainable tokens.
    group_ids: int[B] prompt group, in [0, num_groups).
    num_groups: static G.
    num_turns: static K ≥ the most turns of any row; default ⌈T/2⌉.
    gamma: turn discount γ in [0, 1], default 0.9 (hard-coded `lam` in the
      repo).
    fuse: "mean" (default, repo) or "sum" (paper).
    eps: added to both stds, default 1e-6.

  Returns:
    `EstimatorOutput` (returns = advantages) with info `turn_rewards`,
    `turn_returns`, `turn_advantages` (A^l) f32[B, K], `turn_valid`
    bool[B, K] and `trajectory_advantages` (A^g) f32[B].

  Raises:
    ValueError: bad shapes, dtypes or options.

  Examples:
    Two episodes of two assistant turns separated by a masked tool result;
    each turn's reward sits at its last token:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 1., 0., 0., 1.], [0., 0., 0., 0., 0.]])
    >>> mask = jnp.array([[1, 1, 0, 1, 1], [1, 1, 0, 1, 1]], bool)
    >>> out = cajax.matchtir(token_rewards, mask, jnp.array([0, 0]),
    ...                      num_groups=1)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.71  0.71  0.    0.71  0.71]
     [-0.71 -0.71  0.   -0.71 -0.71]]
  """
  _checks.check_choice(fuse, _FUSE, "fuse")
  gamma = _checks.check_number(gamma, "gamma", low=0.0, high=1.0)
  eps = _checks.check_number(eps, "eps", low=0.0)
  mask_b, group_ids, num_groups = groups.check_batch_groups(
      mask, group_ids, num_groups)
  rewards, turn_valid, turn_ids = turn_rewards(token_rewards, mask,
                                               num_turns=num_turns)
  num_turns = rewards.shape[1]
  total, scorable = scoring.split_unscorable(
      jnp.sum(jnp.where(turn_valid, rewards, 0.0), axis=1))
  # turn_valid is a row prefix.
  rows = turn_valid[:, 0] & scorable & groups.in_range(group_ids, num_groups)
  turn_valid = turn_valid & rows[:, None]
  rewards = jnp.where(turn_valid, rewards, 0.0)
  returns = sequences.reverse_discounted_cumsum(rewards, turn_valid, gamma)
  trajectory_adv = groups.group_normalize(jnp.where(rows, total, 0.0),
                                          group_ids, num_groups, rows,
                                          eps=eps)
  turn_adv = groups.group_normalize(returns, group_ids, num_groups,
                                    turn_valid, eps=eps, by_position=True)
  fused = jnp.where(turn_valid, trajectory_adv[:, None] + turn_adv, 0.0)
  if fuse == "mean":
    fused = 0.5 * fused
  advantages = jnp.where(mask_b, sequences.steps_to_tokens(fused, turn_ids),
                         0.0)
  info = dict(turn_rewards=rewards, turn_returns=returns,
              turn_advantages=turn_adv, turn_valid=turn_valid,
              trajectory_advantages=trajectory_adv)
  return types.EstimatorOutput(advantages, advantages, info)


def _matchtir_adapter(rollouts: types.Rollouts,
                      **kwargs) -> types.EstimatorOutput:
  """`matchtir` on Rollouts (turn rewards at turn ends of token_rewards)."""
  return matchtir(rollouts.token_rewards, rollouts.mask, rollouts.group_ids,
                  rollouts.num_groups, **kwargs)


# ----------------------------------------------------------------------------
# R³L: positive amplification and pivotal credit.
# ----------------------------------------------------------------------------

_R3L_BASELINES = ("mean", "logavgexp")


def _group_logavgexp(values, group_ids, num_groups: int, valid, tau: float):
  """τ·(logsumexp_{i∈g}(x_i/τ) − log n_g) per group, `f32[num_groups]`."""
  scaled = values / tau
  peak = groups.group_max(scaled, group_ids, num_groups, valid=valid)
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  weights = jnp.where(valid, jnp.exp(scaled - peak[group_ids]), 0.0)
  total = groups.group_sum(weights, group_ids, num_groups)
  count = groups.group_sum(valid.astype(jnp.float32), group_ids, num_groups)
  return tau * (peak + jnp.log(jnp.maximum(total, 1e-30))
                - jnp.log(jnp.maximum(count, 1.0)))


def r3l(token_rewards: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
        num_groups: int, *, pivot_turns: ArrayLike | None = None,
        alpha: float = 3.0, success_score: float = 1.0, r_max: float = 1.0,
        baseline: str = "mean", tau: float = 1.0,
        normalize_by_std: bool = False,
        eps: float = 1e-6) -> types.EstimatorOutput:
  """R³L advantages: positive amplification with pivotal-credit masking.

  b_g = mean_{i∈g} r_i  or  τ·(logsumexp_{i∈g}(r_i/τ) − log n_g)  (b=0 for a
        singleton group);  s_i = r_i − b_g  (or (r_i − μ_g)/(σ_g + eps) with
        `normalize_by_std`, the `grpo_reweight_adv` variant)
  Â_i = success_score   if r_i ≥ r_max
      = α · s_i         elif s_i ≥ 0
      = s_i             otherwise
  A_{i,t} = Â_i · 1[turn(t) ≥ p_i]   on mask.

  Pivotal credit: the first `pivot_turns[i]` turns (maximal runs of `mask`)
  of row i are the prefix shared with the retried attempt and get 0 on both
  the retry and its paired first attempt; pass the same p to both rows.
  p = 0 masks nothing; p ≥ the number of turns masks the whole row
  (`info["fully_masked"]` flags such rows: they carry no gradient). Use
  `info["loss_mask"]` as the loss mask so masked prefix tokens also drop out
  of the KL term and the token-mean denominator, as in the repo.

  An all-success group gives `success_score` to every member (not 0); an
  all-fail group gives 0. The paper's project page writes Â = α for
  successes, its code 1.0: `success_score` defaults to the code.

  See "R³L: Reflect-then-Retry RL with Language-Guided Exploration, Pivotal
  Credit, and Positive Amplification" (Shi et al., arXiv 2601.03715).

  Args:
    token_rewards: f[B, T]; the row sum is the trajectory reward (not
      finite: the row is unscorable, gets 0, and is left out of the
      baseline).
    mask: bool[B, T] trainable tokens (assistant segments).
    group_ids: int[B] task group, in [0, num_groups).
    num_groups: static G.
    pivot_turns: optional int[B] turns to mask at the start of each row
      (`retry_from_step`); None masks nothing.
    alpha: α ≥ 0, amplification of non-negative advantages, default 3.0.
    success_score: Â of a successful row, default 1.0 (repo code).
    r_max: reward at or above which a row counts as successful, default 1.0
      (inf: no row is a success).
    baseline: "mean" (default, `opmd_baseline`) or "logavgexp".
    tau: τ > 0 of the logavgexp baseline, default 1.0.
    normalize_by_std: divide by the group std (GRPO variant), default False.
    eps: added to the std when `normalize_by_std`, default 1e-6.

  Returns:
    `EstimatorOutput` (returns = advantages) with info `row_advantages`
    f32[B], `loss_mask` bool[B, T] and `fully_masked` bool[B].

  Raises:
    ValueError: bad shapes, dtypes or options.

  Examples:
    A first attempt (row 1, failed) and its retry (row 0, succeeded) share
    their first turn, so `pivot_turns=1` leaves that turn untrained in both:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 0., 0., 1.], [0., 0., 0., 0.]])
    >>> mask = jnp.array([[1, 0, 1, 1], [1, 0, 1, 1]], bool)
    >>> out = cajax.r3l(token_rewards, mask, jnp.array([0, 0]), num_groups=1,
    ...                 pivot_turns=jnp.array([1, 1]))
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.   0.   1.   1. ]
     [ 0.   0.  -0.5 -0.5]]
  """
  _checks.check_choice(baseline, _R3L_BASELINES, "baseline")
  alpha = _checks.check_number(alpha, "alpha", low=0.0)
  success_score = _checks.check_number(success_score, "success_score")
  r_max = _checks.check_number(r_max, "r_max", allow_inf=True)
  tau = _checks.check_number(tau, "tau", low=0.0, low_open=True)
  normalize_by_std = _checks.check_bool(normalize_by_std, "normalize_by_std")
  eps = _checks.check_number(eps, "eps", low=0.0)
  mask_b, group_ids, num_groups = groups.check_batch_groups(
      mask, group_ids, num_groups)
  scores, scorable = _row_scores(token_rewards, mask)
  scorable = scorable & groups.in_range(group_ids, num_groups)
  if baseline == "mean":
    shifted = groups.group_normalize(
        scores, group_ids, num_groups, scorable,
        mode="std" if normalize_by_std else "mean", eps=eps)
  else:
    base = _group_logavgexp(scores, group_ids, num_groups, scorable, tau)
    count = groups.group_sum(scorable.astype(jnp.float32), group_ids,
                             num_groups)
    base = jnp.where(count > 1, base, 0.0)[group_ids]
    shifted = scores - base
    if normalize_by_std:
      std = groups.group_moments(scores, group_ids, num_groups,
                                 valid=scorable).std[group_ids]
      shifted = masking.safe_divide(
          shifted, jnp.where(count[group_ids] > 1, std, 1.0) + eps)
    # Equal rewards give s = 0 exactly (logsumexp leaves a rounding residue).
    flat = _flat_segments(scores, group_ids, num_groups, scorable)
    shifted = jnp.where(flat & (count[group_ids] > 1), 0.0, shifted)
  row_adv = jnp.where(scores >= r_max, success_score,
                      jnp.where(shifted >= 0, alpha * shifted, shifted))
  row_adv = jnp.where(scorable, row_adv, 0.0)
  loss_mask = mask_b
  if pivot_turns is not None:
    _checks.check_shape(pivot_turns, (mask_b.shape[0],), "pivot_turns",
                        like=f"mask {tuple(mask_b.shape)}")
    turn_ids, _ = sequences.contiguous_runs(mask_b)
    loss_mask = mask_b & ~sequences.step_prefix_mask(turn_ids, pivot_turns)
  advantages = masking.broadcast_to_tokens(row_adv, loss_mask)
  info = dict(row_advantages=row_adv, loss_mask=loss_mask,
              fully_masked=jnp.any(mask_b, axis=1)
              & ~jnp.any(loss_mask, axis=1))
  return types.EstimatorOutput(advantages, advantages, info)


def _r3l_example_inputs(rollouts: types.Rollouts, rng) -> dict:
  """Random pivot turns in {0, 1, 2} per row."""
  batch = rollouts.mask.shape[0]
  return dict(pivot_turns=jnp.asarray(rng.integers(0, 3, size=batch),
                                      jnp.int32))


def _r3l_adapter(rollouts: types.Rollouts, **kwargs) -> types.EstimatorOutput:
  """`r3l` on Rollouts (`pivot_turns` as a keyword input)."""
  return r3l(rollouts.token_rewards, rollouts.mask, rollouts.group_ids,
             rollouts.num_groups, **kwargs)


# ----------------------------------------------------------------------------
# SLATE: sibling-step advantages after truncated step-level sampling.
# ----------------------------------------------------------------------------

def slate_step_reward(reasoning: ArrayLike, query: ArrayLike, answer: ArrayLike,
                      is_answer: ArrayLike, *,
                      weights: Sequence[float] = (1.0, 1.0, 1.0)) -> jax.Array:
  """Combines SLATE's ternary judge dimensions into one step reward.

  r = (w_r·reasoning + w_q·query + a·w_a·answer) / (w_r + w_q + a·w_a),
  a = 1[is_answer]: the weighted mean of the dimensions that apply, in
  [−1, 1] for ternary scores. [GAP] The paper scores reasoning, query and
  answer quality on {−1, 0, 1} but its combination rule is not available;
  this mean (answer only on the final-answer step) is the documented choice.

  See "Truncated Step-Level Sampling with Process Rewards for
  Retrieval-Augmented Reasoning" (Samarinas, Chang, Zamani, arXiv
  2602.23440).

  Args:
    reasoning: f[...] reasoning-quality score.
    query: f[...] search-query score (0 where the step makes no query).
    answer: f[...] answer-correctness score.
    is_answer: bool[...] the step gives the final answer.
    weights: static (w_r, w_q, w_a), default (1, 1, 1), all > 0.

  Returns:
    f32[...] rewards.
  """
  if len(weights) != 3 or min(weights) <= 0:
    raise ValueError(f"weights must be three positive numbers, got "
                     f"{weights!r}.")
  arrays = [_checks.as_float(x, name) for x, name in
            ((reasoning, "reasoning"), (query, "query"), (answer, "answer"))]
  for x, name in zip(arrays[1:], ("query", "answer")):
    _checks.check_same_shape(x, arrays[0], name, "reasoning")
  _checks.check_same_shape(is_answer, arrays[0], "is_answer", "reasoning")
  use_answer = _checks.as_mask(is_answer, "is_answer").astype(jnp.float32)
  w_r, w_q, w_a = (float(w) for w in weights)
  total = (w_r * arrays[0] + w_q * arrays[1]
           + use_answer * w_a * arrays[2])
  return total / (w_r + w_q + use_answer * w_a)


def slate(token_rewards: ArrayLike, mask: ArrayLike, sibling_ids: ArrayLike,
          num_branches: int, *, prefix_lengths: ArrayLike | None = None,
          normalize_by_std: bool = True,
          eps: float = 1e-6) -> types.EstimatorOutput:
  """SLATE sibling-step advantages among continuations of a shared prefix.

  r_i     = Σ_{t ≥ ℓ_i} token_rewards[i, t]     (reward of the sampled step)
  Â_i     = (r_i − μ_b) / (σ_b + eps)   (or r_i − μ_b without
            `normalize_by_std`)
  A_{i,t} = Â_i · 1[t ≥ ℓ_i]   on mask,

  where b = sibling_ids[i] is the branch point (one shared prefix h_{<t}
  with k sampled next steps) and ℓ_i = prefix_lengths[i] the number of
  prefix tokens. Prefix tokens are never trained (they were trained with the
  rollout that produced them). Statistics are per branch point: unbiased σ,
  a singleton branch passes r through (μ=0, σ=1), equal siblings give 0 (a
  wasted branch).

  [GAP] The SLATE code is not available; from the abstract: advantages are
  computed among the k siblings of one decision point. The choice of
  GRPO-style std normalisation as default (vs centring only, the baseline of
  the paper's variance argument), the reward as the non-prefix token-reward
  sum, and the prefix given as a token count are this implementation's.

  See "Truncated Step-Level Sampling with Process Rewards for
  Retrieval-Augmented Reasoning" (Samarinas, Chang, Zamani, arXiv
  2602.23440).

  Args:
    token_rewards: f[B, T] rewards of the sampled step (for example
      `slate_step_reward` at its last token); a non-finite sum marks an
      unscorable row.
    mask: bool[B, T] trainable tokens.
    sibling_ids: int[B] branch point of each row, in [0, num_branches).
    num_branches: static number of branch points.
    prefix_lengths: optional int[B] shared-prefix tokens at the start of each
      row (masked out); None means rows hold only the sampled step.
    normalize_by_std: divide by the branch std (default True) or only
      centre.
    eps: added to σ, default 1e-6.

  Returns:
    `EstimatorOutput` (returns = advantages) with info `step_advantages`
    f32[B] and `loss_mask` bool[B, T] (mask without the prefix).

  Raises:
    ValueError: bad shapes, dtypes or options.

  Examples:
    Two continuations sampled after a shared two-token prefix (branch point
    0):

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 0., 0., 1.], [0., 0., 0., 0.]])
    >>> mask = jnp.ones((2, 4), bool)
    >>> out = cajax.slate(token_rewards, mask, jnp.array([0, 0]),
    ...                   num_branches=1, prefix_lengths=jnp.array([2, 2]))
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.    0.    0.71  0.71]
     [ 0.    0.   -0.71 -0.71]]
  """
  normalize_by_std = _checks.check_bool(normalize_by_std, "normalize_by_std")
  eps = _checks.check_number(eps, "eps", low=0.0)
  mask_b, sibling_ids, num_branches = groups.check_batch_groups(
      mask, sibling_ids, num_branches, name="sibling_ids",
      count_name="num_branches")
  batch, length = mask_b.shape
  step_tokens = jnp.ones(mask_b.shape, bool)
  if prefix_lengths is not None:
    _checks.check_shape(prefix_lengths, (batch,), "prefix_lengths",
                        like=f"mask {tuple(mask_b.shape)}")
    step_tokens = ~masking.prefix_mask(prefix_lengths, length)
  scores, scorable = _row_scores(token_rewards, mask, keep=step_tokens)
  scorable = scorable & groups.in_range(sibling_ids, num_branches)
  step_adv = groups.group_normalize(
      scores, sibling_ids, num_branches, scorable,
      mode="std" if normalize_by_std else "mean", eps=eps)
  loss_mask = mask_b & step_tokens
  advantages = masking.broadcast_to_tokens(step_adv, loss_mask)
  info = dict(step_advantages=step_adv, loss_mask=loss_mask)
  return types.EstimatorOutput(advantages, advantages, info)


def _slate_example_inputs(rollouts: types.Rollouts, rng) -> dict:
  """Branch points = prompt groups; random prefixes of up to T/2 tokens."""
  batch, length = rollouts.mask.shape
  return dict(sibling_ids=rollouts.group_ids,
              prefix_lengths=jnp.asarray(
                  rng.integers(0, length // 2 + 1, size=batch), jnp.int32))


def _slate_adapter(rollouts: types.Rollouts, *, sibling_ids=None,
                   num_branches=None, **kwargs) -> types.EstimatorOutput:
  """`slate` on Rollouts.

  `sibling_ids` default to `group_ids` (each prompt group is one branch
  point) and `num_branches` to `num_groups` then, or to B when `sibling_ids`
  are given without it.
  """
  if sibling_ids is None:
    if rollouts.group_ids is None:
      raise ValueError("slate needs sibling_ids or rollouts.group_ids.")
    sibling_ids = rollouts.group_ids
    if num_branches is None:
      num_branches = rollouts.num_groups
  if num_branches is None:
    num_branches = int(np.shape(rollouts.mask)[0])
  return slate(rollouts.token_rewards, rollouts.mask, sibling_ids,
               num_branches, **kwargs)
