"""Process-reward credit assignment: PURE min-form, sum-form, process GRPO.

Every estimator here turns per-step scores (a process reward model, a judge,
a checker) into per-token advantages of a padded `[B, T]` batch:

* `pure`: PURE's min-form credit assignment (softmin, strict and uniform).
* `sum_form_prm`: the canonical γ-discounted sum of step rewards that PURE
  argues against, with the same baselines and switches.
* `process_grpo`: DeepSeekMath's process-supervision GRPO.
* `tp_grpo`: thought-level, capability-adaptive process rewards on top of
  GRPO (TP-GRPO; parametric where the paper is not available).

Steps (docs/conventions.md): `step_ids: int[B, T]` gives the step of each
token (−1 outside any step), `step_rewards: f[B, S]` and
`step_mask: bool[B, S]`. A step is *valid* when its `step_mask` entry is True
and it owns at least one valid token; invalid steps carry no reward. Steps
must be ordered: along a row the step ids of the valid tokens never decrease
(each step is one contiguous run, steps in id order, so ids are the steps'
order in time). Concrete unordered ids raise a ValueError naming `step_ids`;
traced ones are checked only under checkify (`cajax.checkify_estimate`),
and otherwise give undefined (finite) advantages, through the group
statistics on other rows too (the check costs more than the estimator;
`cajax.validate` checks it on the host). A step's reward is written at its
last valid token (its "step end"). Interior masked tokens are skipped by
every return (carry across), and all outputs are 0 at masked tokens.

Outcome rewards passed as `[B]` arrays may hold NaN (or ±inf) for an
unscorable row, and a non-finite reward at a valid step makes its row
unscorable too, as does a group id outside [0, num_groups) under jit: such a
row gets 0 everywhere and is left out of every group and batch statistic.
"""

import functools
from typing import NamedTuple

import jax
from jax.experimental import checkify
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import groups
from cajax import masking
from cajax import scoring
from cajax import sequences
from cajax import step_totals
from cajax import types

__all__ = [
    "PURE_BASELINES", "PURE_MODES", "TP_ADAPTS", "TP_CREDITS", "process_grpo",
    "pure", "pure_step_rewards", "sum_form_prm", "thought_segments", "tp_grpo",
]

PURE_MODES = ("softmin", "strict", "uniform")
PURE_BASELINES = ("token", "step", "none")
TP_CREDITS = ("local", "return")
TP_ADAPTS = ("linear", "none")

# Variance floor of PURE's batch whitening (OpenRLHF `clamp(min=1e-8)`).
_PURE_VAR_FLOOR = 1e-8


# --------------------------------------------------------------------------
# Shared helpers.


class _Steps(NamedTuple):
  rewards: jax.Array  # f32[B, S], 0 on invalid steps.
  valid: jax.Array  # bool[B, S], step_mask and at least one valid token.
  ids: jax.Array  # int32[B, T].
  mask: jax.Array  # bool[B, T].
  counts: jax.Array  # f32[B, S], valid tokens per step.
  ends: jax.Array  # bool[B, T], last valid token of each valid step.
  last: jax.Array  # int32[B, S], position of that token, −1 if not valid.


def _prepare_steps(step_rewards, step_mask, step_ids, mask,
                   rewards_name: str = "step_rewards") -> _Steps:
  batch, _ = _checks.check_batch(mask)
  _checks.check_rank(step_rewards, 2, rewards_name)
  _checks.check_shape(step_rewards, (batch, None), rewards_name,
                      like=f"mask {tuple(mask.shape)}")
  _checks.check_same_shape(step_mask, step_rewards, "step_mask",
                           rewards_name)
  _checks.check_same_shape(step_ids, mask, "step_ids", "mask")
  rewards = _checks.as_float(step_rewards, rewards_name)
  ids = _checks.as_int(step_ids, "step_ids")
  mask = _checks.as_mask(mask)
  num_steps = rewards.shape[1]
  inside = mask & (ids >= 0) & (ids < num_steps)
  step_totals.check_order(ids, inside)
  # Steps are ordered among the valid tokens: one search gives each step's
  # token count and last token (`cajax.step_totals`), with no token-level
  # scatter. The step ends are then written by a scatter of S positions per
  # row: a per-token gather of the `[B, S]` table is slower on XLA:CPU
  # (it recomputes the table's reductions per token: +28 ms at 64x32768).
  bounds = step_totals.totals(ids, inside, num_steps)
  counts = bounds.count.astype(jnp.float32)
  valid = _checks.as_mask(step_mask, "step_mask") & (bounds.count > 0)
  last = jnp.where(valid, bounds.last, -1)
  ends = step_totals.at_positions(jnp.ones(last.shape, jnp.float32), last,
                                  ids.shape[1]) > 0
  return _Steps(jnp.where(valid, rewards, 0.0), valid, ids, mask, counts,
                ends, last)


def _finite_step_rows(steps: _Steps) -> jax.Array:
  """bool[B]: rows whose valid step rewards are all finite (the others are
  unscorable; `_prepare_steps` already zeroed the invalid steps)."""
  return scoring.finite_rows(steps.rewards)


def _drop_rows(steps: _Steps, rows) -> _Steps:
  """`steps` with the rows where `rows` is False emptied: no valid token or
  step, so they take part in no return, statistic or whitening."""
  tokens = steps.mask & rows[:, None]
  valid = steps.valid & rows[:, None]
  return _Steps(rewards=jnp.where(valid, steps.rewards, 0.0), valid=valid,
                ids=steps.ids, mask=tokens,
                counts=jnp.where(valid, steps.counts, 0.0),
                ends=steps.ends & rows[:, None],
                last=jnp.where(valid, steps.last, -1))


def _at_step_ends(step_values, steps: _Steps) -> jax.Array:
  """Writes `[B, S]` step values at the step-end tokens, 0 elsewhere."""
  return step_totals.at_positions(step_values, steps.last,
                                  steps.ids.shape[1])


# --------------------------------------------------------------------------
# PURE and the sum-form baseline.


def pure_step_rewards(step_rewards: ArrayLike, step_mask: ArrayLike,
                      mode: str = "softmin",
                      temperature: float = 0.1) -> jax.Array:
  """PURE's min-form transform of step rewards, r*ₖ (zeros on invalid steps).

  softmin:  wₖ = softmaxₖ(−rₖ / τ) over valid steps,  r*ₖ = wₖ·rₖ, so
            Σₖ r*ₖ → minₖ rₖ as τ → 0 (PURE main branch, τ = 0.1).
  uniform:  wₖ = 1 / #steps (`--disable_weighted_reward`), Σₖ r*ₖ = mean.
  strict:   r*ₖ = Vₖ − V_next(k),  Vₖ = min_{k' ≥ k valid} r_{k'}, so the
            γ=1 suffix sum of r* from step k is exactly Vₖ: the strict
            min-form value, taken over valid steps only (unlike the verl
            branch, whose token-level running min also sees the zero-filled
            non-step tokens).

  See "Stop Summation: Min-Form Credit Assignment Is All Process Reward Model
  Needs for Reasoning" (Cheng et al., arXiv 2504.15275).

  Args:
    step_rewards: f[B, S] step rewards rₖ.
    step_mask: bool[B, S] valid steps.
    mode: "softmin", "strict" or "uniform".
    temperature: softmin temperature τ > 0 (ignored by the other modes).

  Returns:
    f32[B, S] transformed step rewards r*, 0 on invalid steps.

  Raises:
    ValueError: bad ranks/shapes, unknown mode or τ ≤ 0.
  """
  _checks.check_choice(mode, PURE_MODES, "mode")
  _checks.check_rank(step_rewards, 2, "step_rewards")
  _checks.check_same_shape(step_mask, step_rewards, "step_mask",
                           "step_rewards")
  valid = _checks.as_mask(step_mask, "step_mask")
  rewards = jnp.where(valid, _checks.as_float(step_rewards, "step_rewards"),
                      0.0)
  if mode == "strict":
    value = sequences.suffix_min(rewards, valid)
    later = jax.lax.cummin(jnp.where(valid, value, jnp.inf), axis=1,
                           reverse=True)
    later = jnp.pad(later[:, 1:], ((0, 0), (0, 1)), constant_values=jnp.inf)
    later = jnp.where(jnp.isfinite(later), later, 0.0)
    return jnp.where(valid, value - later, 0.0)
  if mode == "softmin":
    temperature = _checks.check_number(temperature, "temperature", low=0.0,
                                       low_open=True)
    weights = masking.masked_softmax(-rewards, valid, axis=1,
                                     temperature=temperature)
  else:
    weights = masking.masked_softmax(jnp.zeros_like(rewards), valid, axis=1)
  return weights * rewards


def _whiten_nonzero(x, mask) -> jax.Array:
  """PURE/OpenRLHF replay-buffer whitening that skips exact zeros.

  N = #valid tokens with x ≠ 0, μ = Σ x / N, σ² = Σ_{all valid}(x − μ)² / N
  (the numerator includes the zero tokens, the count does not: the repo's
  quirk), out = (x − μ)·rsqrt(max(σ², 1e-8)), re-zeroed where x = 0.
  Computed in units of a = max |x| so that no finite scale overflows or
  underflows when squared.
  """
  nonzero = mask & (x != 0)
  # Three fused passes (count and scale together), see masking.fused_reduce.
  (scale,), count = masking.fused_reduce(
      (jnp.where(mask, jnp.abs(x), 0.0), nonzero), (0.0,), (jnp.maximum,))
  unit = jnp.where(mask, x / jnp.where(scale > 0, scale, 1.0), 0.0)
  mean = masking.safe_divide(masking.fused_sum(unit, mask), count)
  centred = jnp.where(mask, unit - mean, 0.0)
  std = scale * jnp.sqrt(masking.safe_divide(
      masking.fused_sum(centred * centred, mask), count))
  out = scale * centred / jnp.maximum(std, _PURE_VAR_FLOOR ** 0.5)
  return jnp.where(nonzero, out, 0.0)


class _PrmInputs(NamedTuple):
  steps: _Steps  # without the unscorable rows
  rows: jax.Array  # bool[B], scorable rows
  group_ids: jax.Array  # int32[B]
  verifiable_rewards: jax.Array | None  # f32[B], 0 on unscorable rows
  token_kl: jax.Array | None  # f32[B, T], 0 off the scorable tokens


def _check_signal(name: str, steps: _Steps, verifiable_rewards,
                  verifiable_reward_coef: float) -> None:
  """Raises when `pure` / `sum_form_prm` have neither step rewards (no
  valid step in the batch) nor a verifiable reward: every advantage would
  be 0. Traced steps are checked under checkify only."""
  if verifiable_rewards is not None and verifiable_reward_coef != 0:
    return
  why = ("verifiable_rewards is None" if verifiable_rewards is None
         else "verifiable_reward_coef=0")
  message = (
      f"{name} has no step rewards and no verifiable reward: no step of the "
      f"batch is valid (a True step_mask entry whose step_ids own a valid "
      f"token) and {why}, so every advantage would be 0. Pass step rewards "
      f"with their step_mask and step_ids, or verifiable_rewards (through "
      f"cajax.estimate: rollouts.token_rewards).")
  has_steps = jnp.any(steps.valid)
  if _checks.is_traced(has_steps):
    checkify.debug_check(has_steps, message)
  elif not bool(has_steps):
    raise ValueError(message)


def _check_prm_inputs(name, step_rewards, mask, step_ids, step_mask,
                      group_ids, num_groups, verifiable_rewards, token_kl, *,
                      baseline, verifiable_reward_coef, kl_coef,
                      mask_step_end, whiten) -> _PrmInputs:
  """Checks the inputs and knobs shared by `pure` and `sum_form_prm`
  (`name`, for messages).

  A row is unscorable when a valid step reward, its verifiable reward or
  its KL at a valid token is not finite; it is dropped from the steps.
  """
  _checks.check_choice(baseline, PURE_BASELINES, "baseline")
  verifiable_reward_coef = _checks.check_number(verifiable_reward_coef,
                                                "verifiable_reward_coef")
  _checks.check_number(kl_coef, "kl_coef")
  _checks.check_bool(mask_step_end, "mask_step_end")
  _checks.check_bool(whiten, "whiten")
  steps = _prepare_steps(step_rewards, step_mask, step_ids, mask)
  _check_signal(name, steps, verifiable_rewards, verifiable_reward_coef)
  batch = steps.mask.shape[0]
  group_ids = groups.check_group_ids(group_ids, batch, num_groups)
  rows = _finite_step_rows(steps) & groups.in_range(group_ids, num_groups)
  if verifiable_rewards is not None:
    verifiable_rewards, scorable = scoring.row_scores(
        verifiable_rewards, batch, "verifiable_rewards")
    rows = rows & scorable
  if token_kl is not None:
    token_kl = _checks.as_float_like(token_kl, steps.mask, "token_kl")
    rows = rows & scoring.finite_rows(token_kl, steps.mask)
  steps = _drop_rows(steps, rows)
  if verifiable_rewards is not None:
    verifiable_rewards = jnp.where(rows, verifiable_rewards, 0.0)
  if token_kl is not None:
    token_kl = jnp.where(steps.mask, token_kl, 0.0)
  return _PrmInputs(steps, rows, group_ids, verifiable_rewards, token_kl)


def _process_returns(step_values, inputs: _PrmInputs, num_groups: int, *,
                     baseline: str, verifiable_reward_coef: float,
                     kl_coef: float, mask_step_end: bool, whiten: bool,
                     gamma: float) -> types.EstimatorOutput:
  """The PURE main-branch reward → return → advantage pipeline."""
  steps, rows, group_ids = inputs.steps, inputs.rows, inputs.group_ids
  outcome = jnp.sum(step_values, axis=1)
  if baseline == "token":
    lengths = masking.sequence_lengths(steps.mask).astype(jnp.float32)
    # Σ over the other rows of the group of rewards and of lengths.
    others_reward = groups.group_sum(outcome, group_ids,
                                     num_groups)[group_ids] - outcome
    others_length = groups.group_sum(lengths, group_ids,
                                     num_groups)[group_ids] - lengths
    per_token = masking.safe_divide(others_reward, others_length)
    # num_tokens_per_step excludes the step-end token (repo quirk).
    step_baseline = per_token[:, None] * (steps.counts - 1.0)
  elif baseline == "step":
    num_steps = jnp.sum(steps.valid.astype(jnp.float32), axis=1)
    per_step = masking.safe_divide(outcome, num_steps)
    # mean_{j≠b} x_j = x_b − RLOO(x)_b; 0 for a row alone in its group.
    others_mean = per_step - groups.group_normalize(
        per_step, group_ids, num_groups, rows, mode="rloo")
    step_baseline = jnp.broadcast_to(others_mean[:, None], step_values.shape)
  else:
    step_baseline = jnp.zeros_like(step_values)
  shaped = jnp.where(steps.valid, step_values - step_baseline, 0.0)
  rewards = _at_step_ends(shaped, steps)
  last = masking.last_token_mask(steps.mask) & steps.mask
  info = {"process_outcome": outcome}
  if inputs.verifiable_rewards is not None:
    vr_advantage = groups.group_normalize(inputs.verifiable_rewards,
                                          group_ids, num_groups, rows,
                                          mode="rloo", singleton="zero")
    rewards = rewards + jnp.where(
        last, (verifiable_reward_coef * vr_advantage)[:, None], 0.0)
    info["verifiable_advantage"] = vr_advantage
  if inputs.token_kl is not None:
    rewards = rewards - kl_coef * inputs.token_kl
  # γ = 1 stays a Python number: the fast static-γ path of the recurrence.
  gamma = (1.0 if gamma == 1.0
           else jnp.where(steps.ends, jnp.float32(gamma), 1.0))
  returns = sequences.reverse_discounted_cumsum(rewards, steps.mask, gamma)
  if mask_step_end:
    returns = jnp.where(steps.ends | last, 0.0, returns)
  advantages = _whiten_nonzero(returns, steps.mask) if whiten else returns
  return types.EstimatorOutput(advantages=advantages, returns=returns,
                               info=info)


def _prm_advantages(name, transform, step_rewards, mask, step_ids, step_mask,
                    group_ids, num_groups, verifiable_rewards, token_kl, *,
                    gamma: float, **knobs):
  """`pure` and `sum_form_prm` (`name`) with the step transform r → r*
  given: checks, drops unscorable rows, runs `_process_returns`. Returns
  the output and r*."""
  inputs = _check_prm_inputs(name, step_rewards, mask, step_ids, step_mask,
                             group_ids, num_groups, verifiable_rewards,
                             token_kl, **knobs)
  step_values = transform(inputs.steps.rewards, inputs.steps.valid)
  return _process_returns(step_values, inputs, num_groups, gamma=gamma,
                          **knobs), step_values


def pure(step_rewards: ArrayLike, mask: ArrayLike, step_ids: ArrayLike,
         step_mask: ArrayLike, group_ids: ArrayLike, num_groups: int, *,
         verifiable_rewards: ArrayLike | None = None,
         token_kl: ArrayLike | None = None, mode: str = "softmin",
         temperature: float = 0.1, baseline: str = "token",
         verifiable_reward_coef: float = 1.0, kl_coef: float = 0.001,
         mask_step_end: bool = True,
         whiten: bool = True) -> types.EstimatorOutput:
  """PURE min-form credit assignment with a process reward model.

  Reproduces the main (OpenRLHF) branch behind the paper's numbers:

    r*ₖ = `pure_step_rewards(r, mode, τ)`,  oᵢ = Σₖ r*ᵢₖ,
    token baseline:  r̃ᵢₖ = r*ᵢₖ − bᵢ·(nᵢₖ − 1),
                     bᵢ = Σ_{j≠i} oⱼ / Σ_{j≠i} Lⱼ   (same group),
    step baseline:   r̃ᵢₖ = r*ᵢₖ − mean_{j≠i}(oⱼ / #stepsⱼ),
    VR (optional):   vᵢ − mean_{j≠i} vⱼ, times the coefficient, added at the
                     last valid token,
    rewardₜ = r̃ at step ends + VR at the last token − β·klₜ,
    Gₜ = Σ_{t' ≥ t} reward_{t'} (γ = 1, interior masked tokens skipped),
    Gₜ = 0 at the reward tokens (step ends and the last valid token),
    Aₜ = batch whitening of G over its non-zero valid tokens.

  nᵢₖ is the number of valid tokens of step k (the repo's
  `num_tokens_per_step` leaves out the step-end token, hence the −1) and Lⱼ
  the number of valid tokens of row j. Quirks reproduced: the token baseline
  mixes counts with and without the end token; the whitening mean and count
  skip exact zeros but its variance numerator does not; every other token
  whose return is exactly 0 is also left at 0.

  Choices where the repo is undefined: groups of one row get a zero baseline
  (the repo asserts n > 1); a row with no valid step has oᵢ = 0; a group whose
  other rows have no token gives bᵢ = 0; a row with a non-finite valid step
  reward, verifiable reward or KL (at a valid token) is unscorable: 0
  everywhere and left out of every baseline, mean and the whitening as if
  absent; a batch with no non-zero return gives all-zero advantages.

  "No step rewards" means no valid step in the batch (no True `step_mask`
  entry whose step owns a valid token; all-zero rewards on valid steps are
  rewards). Without step rewards the process term vanishes and the result
  is the leave-one-out verifiable reward alone; without a verifiable reward
  too (`verifiable_rewards` None or `verifiable_reward_coef=0`) every
  advantage would be 0, so concrete inputs raise a ValueError (traced ones
  are checked under checkify). `cajax.validate(rollouts, estimator="pure",
  ...)` also flags a batch without steps, and steps so short that
  `mask_step_end` zeroes almost every return (one-token steps: end each
  step with a separator token, or set `mask_step_end=False`).

  See "Stop Summation: Min-Form Credit Assignment Is All Process Reward Model
  Needs for Reasoning" (Cheng et al., arXiv 2504.15275).

  Args:
    step_rewards: f[B, S] PRM step rewards rₖ (e.g. p(good) − p(bad)).
    mask: bool[B, T] valid response tokens.
    step_ids: int[B, T] step index of each token, −1 outside any step.
    step_mask: bool[B, S] valid steps.
    group_ids: int[B] prompt group of each row, in [0, num_groups).
    num_groups: static number of groups.
    verifiable_rewards: optional f[B] verifier outcome vᵢ (non-finite =
      unscorable row). Default None: PRM only.
    token_kl: optional f[B, T] per-token KL estimate put in the reward.
      Default None.
    mode: "softmin" (default), "strict" or "uniform".
    temperature: softmin τ, default 0.1.
    baseline: "token" (default, the published runs), "step" or "none".
    verifiable_reward_coef: coefficient of the VR term, default 1.0.
    kl_coef: β of the KL reward, default 0.001 (repo `init_kl_coef`).
    mask_step_end: zero the return at step ends and the last token, default
      True (`--nomask_separator_adv` turns it off in the repo). It assumes
      each step ends with a separator token: on one-token steps it zeroes
      every step token.
    whiten: batch-global whitening, default True (the repo's
      `advantage_estimator` normalisation).

  Returns:
    `EstimatorOutput`: f32[B, T] advantages (whitened) and returns (before
    whitening); info["process_outcome"] f32[B] = Σₖ r*ₖ (whose sign is the
    repo's predicted correctness) and, with VR, info["verifiable_advantage"]
    f32[B].

  Raises:
    ValueError: bad shapes, dtypes or options, concrete unordered
      `step_ids`, or neither step rewards nor a verifiable reward.

  Examples:
    Two responses of two PRM-scored steps each; `step_ids` gives each
    token's step:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> step_rewards = jnp.array([[0.9, 0.2], [0.8, 0.7]])
    >>> mask = jnp.ones((2, 4), bool)
    >>> step_ids = jnp.array([[0, 0, 1, 1], [0, 1, 1, 1]])
    >>> step_mask = jnp.ones((2, 2), bool)
    >>> out = cajax.pure(step_rewards, mask, step_ids, step_mask,
    ...                  jnp.array([0, 0]), num_groups=1, mode="strict",
    ...                  baseline="none", mask_step_end=False, whiten=False)
    >>> print(np.asarray(out.returns).round(2))
    [[0.2 0.2 0.2 0.2]
     [0.7 0.7 0.7 0.7]]
  """
  out, step_values = _prm_advantages(
      "pure", functools.partial(pure_step_rewards, mode=mode,
                        temperature=temperature),
      step_rewards, mask, step_ids, step_mask, group_ids, num_groups,
      verifiable_rewards, token_kl, gamma=1.0, baseline=baseline,
      verifiable_reward_coef=verifiable_reward_coef, kl_coef=kl_coef,
      mask_step_end=mask_step_end, whiten=whiten)
  out.info["step_rewards"] = step_values
  return out


def sum_form_prm(step_rewards: ArrayLike, mask: ArrayLike, step_ids: ArrayLike,
                 step_mask: ArrayLike, group_ids: ArrayLike, num_groups: int, *,
                 verifiable_rewards: ArrayLike | None = None,
                 token_kl: ArrayLike | None = None, gamma: float = 1.0,
                 baseline: str = "token", verifiable_reward_coef: float = 1.0,
                 kl_coef: float = 0.001, mask_step_end: bool = True,
                 whiten: bool = True) -> types.EstimatorOutput:
  """Canonical sum-form return of PRM step rewards (PURE's baseline).

    Gₜ = Σ_{k ≥ k(t)} γ^{k − k(t)} r̃ₖ + (VR and KL terms),

  i.e. `pure` with r*ₖ = rₖ (no min-form transform) and a discount γ applied
  once per step boundary (at each step end), not per token. The baselines,
  VR, KL, step-end masking and whitening are exactly those of `pure`, with
  oᵢ = Σₖ rᵢₖ.

  [GAP] The PURE paper compares min-form with "sum-form" credit assignment
  (the canonical return of PRM rewards), but its repository ships only the
  min-form pipeline. Building the sum-form arm from that same pipeline (the
  same baselines, VR and KL terms, step-end masking and whitening, with
  r*ₖ = rₖ and γ = 1) is cajax's choice, so that the two arms differ only in
  the transform; it is not the paper's code.

  See "Stop Summation: Min-Form Credit Assignment Is All Process Reward Model
  Needs for Reasoning" (Cheng et al., arXiv 2504.15275).

  Args:
    step_rewards: f[B, S] PRM step rewards.
    mask: bool[B, T] valid response tokens.
    step_ids: int[B, T] step index of each token, −1 outside any step.
    step_mask: bool[B, S] valid steps.
    group_ids: int[B] prompt group of each row.
    num_groups: static number of groups.
    verifiable_rewards: optional f[B] verifier outcome (non-finite =
      unscorable row).
    token_kl: optional f[B, T] per-token KL estimate.
    gamma: γ per step in [0, 1], default 1.0.
    baseline: "token" (default), "step" or "none".
    verifiable_reward_coef: default 1.0.
    kl_coef: default 0.001.
    mask_step_end: default True (see `pure`: assumes steps end with a
      separator token).
    whiten: default True.

  Returns:
    `EstimatorOutput` as in `pure` (info["process_outcome"] = Σₖ rₖ).

  Raises:
    ValueError: as `pure` (bad inputs, concrete unordered `step_ids`, or
      neither step rewards nor a verifiable reward).

  Examples:
    Through the registry with the batch of `pure`'s example; each token gets
    the sum of its own step's reward and the later ones:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> rollouts = cajax.Rollouts(
    ...     mask=jnp.ones((2, 4), bool),
    ...     step_rewards=jnp.array([[0.9, 0.2], [0.8, 0.7]]),
    ...     step_ids=jnp.array([[0, 0, 1, 1], [0, 1, 1, 1]]),
    ...     step_mask=jnp.ones((2, 2), bool),
    ...     group_ids=jnp.array([0, 0]), num_groups=1)
    >>> out = cajax.estimate("sum_form_prm", rollouts, baseline="none",
    ...                      mask_step_end=False, whiten=False)
    >>> print(np.asarray(out.returns).round(2))
    [[1.1 1.1 0.2 0.2]
     [1.5 0.7 0.7 0.7]]
  """
  gamma = _checks.check_number(gamma, "gamma", low=0.0, high=1.0)
  out, _ = _prm_advantages(
      "sum_form_prm", lambda rewards, valid: rewards, step_rewards, mask,
      step_ids, step_mask, group_ids, num_groups, verifiable_rewards, token_kl,
      gamma=gamma, baseline=baseline,
      verifiable_reward_coef=verifiable_reward_coef, kl_coef=kl_coef,
      mask_step_end=mask_step_end, whiten=whiten)
  return out


# --------------------------------------------------------------------------
# DeepSeekMath process supervision.


def process_grpo(step_rewards: ArrayLike, mask: ArrayLike, step_ids: ArrayLike,
                 step_mask: ArrayLike, group_ids: ArrayLike, num_groups: int, *,
                 eps: float = 1e-6, ddof: int = 1,
                 normalize_by_std: bool = True) -> types.EstimatorOutput:
  """GRPO with process supervision (DeepSeekMath §4.1.3).

    r̃ᵢₖ = (rᵢₖ − mean(R_g)) / (std(R_g) + eps),
    Aᵢₜ = Σ_{k : end(k) ≥ t} r̃ᵢₖ,

  where R_g holds every valid step reward of every row of the group: a token
  gets the sum of the normalised rewards of its own step and all later ones
  (tokens outside any step get those of the later steps). Conventions as
  verl's GRPO: std with `ddof` (torch default 1), eps added to it, a
  group with a single valid step passes its reward through, a group of
  equal step rewards gives 0.

  See "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
  Language Models" (Shao et al., arXiv 2402.03300).

  Args:
    step_rewards: f[B, S] step rewards.
    mask: bool[B, T] valid response tokens.
    step_ids: int[B, T] step index of each token, −1 outside any step.
    step_mask: bool[B, S] valid steps.
    group_ids: int[B] prompt group of each row.
    num_groups: static number of groups.
    eps: added to the std, default 1e-6.
    ddof: 1 (default, unbiased) or 0.
    normalize_by_std: divide by the std (default True; verl
      `norm_adv_by_std_in_grpo`); False only centres.

  Returns:
    `EstimatorOutput` with advantages = returns f32[B, T] and
    info["normalized_step_rewards"] f32[B, S].

  A row with a non-finite valid step reward is unscorable: 0 everywhere and
  left out of its group's statistics.

  Raises:
    ValueError: bad shapes, dtypes or options, or concrete unordered
      `step_ids`.

  Examples:
    Three responses with up to two steps (row 2 has one step, and its token
    0 is outside every step, id −1); the normalised step rewards are summed
    from each token's step on:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> step_rewards = jnp.array([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    >>> step_mask = jnp.array([[1, 1], [1, 1], [1, 0]], bool)
    >>> step_ids = jnp.array([[0, 1, 1], [0, 0, 1], [-1, 0, 0]])
    >>> mask = jnp.ones((3, 3), bool)
    >>> out = cajax.process_grpo(step_rewards, mask, step_ids, step_mask,
    ...                          jnp.zeros(3, int), num_groups=1)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.48 -0.96 -0.96]
     [ 0.48  0.48  0.24]
     [-0.96 -0.96 -0.96]]
  """
  eps = _checks.check_number(eps, "eps", low=0.0)
  normalize_by_std = _checks.check_bool(normalize_by_std, "normalize_by_std")
  steps = _prepare_steps(step_rewards, step_mask, step_ids, mask)
  group_ids = groups.check_group_ids(group_ids, steps.rewards.shape[0],
                                     num_groups)
  steps = _drop_rows(steps, _finite_step_rows(steps)
                     & groups.in_range(group_ids, num_groups))
  normalized = groups.group_normalize(
      steps.rewards, group_ids, num_groups, steps.valid,
      mode="std" if normalize_by_std else "mean", eps=eps, ddof=ddof,
      singleton="keep")
  advantages = sequences.reverse_discounted_cumsum(
      _at_step_ends(normalized, steps), steps.mask)
  return types.EstimatorOutput(
      advantages=advantages, returns=advantages,
      info={"normalized_step_rewards": normalized})


# --------------------------------------------------------------------------
# TP-GRPO.


def thought_segments(step_labels: ArrayLike,
                     step_mask: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Merges maximal runs of equally-labelled valid steps into thoughts.

  Labels are sign(step_labels) ∈ {+1, −1, 0 (unknown)}. Invalid steps are
  skipped: they neither belong to a thought nor split one.

  Args:
    step_labels: f[B, S] step scores or labels (only the sign is used).
    step_mask: bool[B, S] valid steps.

  Returns:
    (thought_ids int32[B, S] index of each valid step's thought within its
    row, −1 on invalid steps; num_thoughts int32[B]).
  """
  _checks.check_rank(step_labels, 2, "step_labels")
  _checks.check_same_shape(step_mask, step_labels, "step_mask",
                           "step_labels")
  valid = _checks.as_mask(step_mask, "step_mask")
  labels = jnp.where(valid, jnp.sign(_checks.as_float(step_labels,
                                                      "step_labels")), 0.0)
  positions = jnp.arange(labels.shape[1], dtype=jnp.int32)[None, :]
  previous = jax.lax.cummax(jnp.where(valid, positions, -1), axis=1)
  previous = jnp.pad(previous[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  previous_label = jnp.take_along_axis(labels, jnp.maximum(previous, 0),
                                       axis=1)
  starts = valid & ((previous < 0) | (previous_label != labels))
  thought_ids = jnp.cumsum(starts, axis=1, dtype=jnp.int32) - 1
  return (jnp.where(valid, thought_ids, -1),
          jnp.sum(starts, axis=1, dtype=jnp.int32))


def tp_grpo(outcome_rewards: ArrayLike, step_labels: ArrayLike, mask: ArrayLike,
            step_ids: ArrayLike, step_mask: ArrayLike, group_ids: ArrayLike,
            num_groups: int, *, positive_scale: float = 0.5,
            negative_scale: float = 0.5, adapt: str = "linear",
            adapt_power: float = 1.0, credit: str = "local",
            correct_threshold: float = 0.5, eps: float = 1e-6, ddof: int = 1,
            normalize_by_std: bool = True,
            merge_thoughts: bool = True) -> types.EstimatorOutput:
  """TP-GRPO: thought-level, capability-adaptive process rewards + GRPO.

    Aᵢₜ = (sᵢ − μ_g) / (σ_g + eps) + pᵢ,ₕ₍ₜ₎,
    p for a thought h of row i (acc_g = fraction of correct rows in i's
    group, f = (1 − acc)^q, g = acc^q with `adapt="linear"`, f = g = 1 with
    "none"):
      +positive_scale·f   a correct thought (label +1) in a wrong answer,
      −negative_scale·g   a wrong thought (label −1) in a correct answer,
      0                   thoughts that agree with the outcome or are unknown.

  [GAP] The paper's code and exact formulas are unavailable; this is a
  parametric form of what its abstract describes. Choices, each a knob:
  step labels are sign(step_labels) (the GenPRM's judgement; 0 = unknown);
  thoughts are maximal runs of equal labels (`thought_segments`); only
  thoughts that contradict the outcome are rewarded, so the outcome target of
  agreeing ("key") tokens is kept; a weak model (low acc) is rewarded for its
  correct partial reasoning and a strong one (high acc) penalised for flawed
  steps, so all-wrong and all-right groups (zero GRPO signal) still learn.
  `credit="local"` gives the thought's reward to each of its tokens (then the
  merge into thoughts does not change the per-token values, only
  info["num_thoughts"]); `credit="return"` writes one reward at the end of
  each thought and sums them from each token onwards (γ = 1), where the merge
  makes the credit independent of how equally-labelled text is split into
  steps. `merge_thoughts=False` makes every step a thought of its own
  (step-level credit: with "return", k equally-labelled steps in a row then
  pay their reward k times), the ablation that isolates the merge. A row is
  correct when sᵢ > `correct_threshold`.

  See "Good Learners Think Their Thinking: Generative PRM Makes LRM a More
  Efficient Math Learner" (He et al., arXiv 2507.23317).

  Args:
    outcome_rewards: f[B] outcome scores sᵢ (non-finite = unscorable:
      advantage 0, left out of every statistic).
    step_labels: f[B, S] step judgements (sign used; a non-finite valid
      one makes the row unscorable).
    mask: bool[B, T] valid response tokens.
    step_ids: int[B, T] step index of each token, −1 outside any step.
    step_mask: bool[B, S] valid steps.
    group_ids: int[B] prompt group of each row.
    num_groups: static number of groups.
    positive_scale: reward of a correct thought in a wrong answer, 0.5.
    negative_scale: penalty of a wrong thought in a correct answer, 0.5.
    adapt: "linear" (default) or "none" capability scaling.
    adapt_power: exponent q of the capability scaling, default 1.0.
    credit: "local" (default) or "return".
    correct_threshold: sᵢ above it counts as correct, default 0.5.
    eps: GRPO std eps, default 1e-6.
    ddof: GRPO std ddof, default 1.
    normalize_by_std: GRPO divides by the std (default True).
    merge_thoughts: merge runs of equally-labelled steps into thoughts
      (default True); False: one thought per step.

  Returns:
    `EstimatorOutput` with advantages = returns f32[B, T]; info holds
    "outcome_advantages" f32[B], "group_accuracy" f32[B], "thought_ids"
    int32[B, S], "num_thoughts" int32[B], "thought_rewards" f32[B, S] (the
    reward of each step's thought).

  Raises:
    ValueError: bad shapes, dtypes or options, or concrete unordered
      `step_ids`.

  Examples:
    Step labels +1 (right) and −1 (wrong) for one correct and one wrong
    answer:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> outcome_rewards = jnp.array([1.0, 0.0])
    >>> step_labels = jnp.array([[1.0, -1.0], [1.0, -1.0]])
    >>> mask = jnp.ones((2, 4), bool)
    >>> step_ids = jnp.array([[0, 0, 1, 1], [0, 1, 1, 1]])
    >>> out = cajax.tp_grpo(outcome_rewards, step_labels, mask, step_ids,
    ...                     jnp.ones((2, 2), bool), jnp.array([0, 0]),
    ...                     num_groups=1)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.71  0.71  0.46  0.46]
     [-0.46 -0.71 -0.71 -0.71]]
  """
  _checks.check_choice(adapt, TP_ADAPTS, "adapt")
  _checks.check_choice(credit, TP_CREDITS, "credit")
  positive_scale = _checks.check_number(positive_scale, "positive_scale",
                                        low=0.0)
  negative_scale = _checks.check_number(negative_scale, "negative_scale",
                                        low=0.0)
  adapt_power = _checks.check_number(adapt_power, "adapt_power", low=0.0)
  correct_threshold = _checks.check_number(correct_threshold,
                                           "correct_threshold")
  eps = _checks.check_number(eps, "eps", low=0.0)
  normalize_by_std = _checks.check_bool(normalize_by_std, "normalize_by_std")
  merge_thoughts = _checks.check_bool(merge_thoughts, "merge_thoughts")
  steps = _prepare_steps(step_labels, step_mask, step_ids, mask,
                         rewards_name="step_labels")
  batch = steps.mask.shape[0]
  group_ids = groups.check_group_ids(group_ids, batch, num_groups)
  outcome, scorable = scoring.row_scores(outcome_rewards, batch,
                                         "outcome_rewards")
  scorable = (scorable & _finite_step_rows(steps)
              & groups.in_range(group_ids, num_groups))
  steps = _drop_rows(steps, scorable)
  outcome = jnp.where(scorable, outcome, 0.0)
  outcome_adv = groups.group_normalize(outcome, group_ids, num_groups,
                                       scorable,
                                       mode="std" if normalize_by_std
                                       else "mean", eps=eps, ddof=ddof,
                                       singleton="keep")
  correct = scorable & (outcome > correct_threshold)
  moments = groups.group_moments(correct.astype(jnp.float32), group_ids,
                                 num_groups, valid=scorable)
  accuracy = moments.mean[group_ids]
  if adapt == "linear":
    pos = positive_scale * (1.0 - accuracy) ** adapt_power
    neg = negative_scale * accuracy ** adapt_power
  else:
    pos = jnp.full((batch,), positive_scale, jnp.float32)
    neg = jnp.full((batch,), negative_scale, jnp.float32)
  labels = jnp.sign(steps.rewards)
  if merge_thoughts:
    thought_ids, num_thoughts = thought_segments(labels, steps.valid)
  else:
    order = jnp.cumsum(steps.valid.astype(jnp.int32), axis=1) - 1
    thought_ids = jnp.where(steps.valid, order, -1)
    num_thoughts = jnp.sum(steps.valid.astype(jnp.int32), axis=1)
  rewards = (jnp.where((labels > 0) & ~correct[:, None], pos[:, None], 0.0)
             - jnp.where((labels < 0) & correct[:, None], neg[:, None], 0.0))
  rewards = jnp.where(steps.valid & scorable[:, None], rewards, 0.0)
  if credit == "local":
    process = sequences.steps_to_tokens(rewards, steps.ids)
  else:
    # A step closes its thought when the next valid step (if any) starts
    # another one; ids grow along the valid steps, so that is the smallest
    # later id.
    later = jnp.where(steps.valid, thought_ids, jnp.iinfo(jnp.int32).max)
    following = jax.lax.cummin(jnp.pad(
        later[:, 1:], ((0, 0), (0, 1)),
        constant_values=jnp.iinfo(jnp.int32).max), axis=1, reverse=True)
    closes = steps.valid & (following != thought_ids)
    process = sequences.reverse_discounted_cumsum(
        _at_step_ends(jnp.where(closes, rewards, 0.0), steps), steps.mask)
  advantages = jnp.where(steps.mask & scorable[:, None],
                         outcome_adv[:, None] + process, 0.0)
  info = {"outcome_advantages": outcome_adv, "group_accuracy": accuracy,
          "thought_ids": thought_ids, "num_thoughts": num_thoughts,
          "thought_rewards": rewards}
  return types.EstimatorOutput(advantages=advantages, returns=advantages,
                               info=info)


# --------------------------------------------------------------------------
# Registry adapters.


def _prm_inputs(rollouts, kl_in_reward, verifiable_rewards,
                token_kl) -> dict:
  """`pure` / `sum_form_prm` arguments from Rollouts and the overrides."""
  kl_in_reward = _checks.check_bool(kl_in_reward, "kl_in_reward")
  if kl_in_reward:
    if token_kl is not None:
      raise ValueError("pass token_kl or kl_in_reward=True, not both.")
    token_kl = (
        _checks.as_float(rollouts.old_logprobs, "rollouts.old_logprobs")
        - _checks.as_float(rollouts.ref_logprobs, "rollouts.ref_logprobs"))
  if verifiable_rewards is None and rollouts.token_rewards is not None:
    verifiable_rewards = scoring.row_sums(rollouts.token_rewards,
                                          rollouts.mask)
  return dict(step_rewards=rollouts.step_rewards,
              step_mask=rollouts.step_mask, step_ids=rollouts.step_ids,
              mask=rollouts.mask, group_ids=rollouts.group_ids,
              num_groups=rollouts.num_groups,
              verifiable_rewards=verifiable_rewards, token_kl=token_kl)


def _pure_adapter(rollouts, *, kl_in_reward: bool = False,
                  verifiable_rewards=None, token_kl=None, **kwargs):
  """`pure` on Rollouts.

  The verifiable reward is the `verifiable_rewards` keyword if given, else
  Σₜ token_rewards when `rollouts.token_rewards` is set (NaN = unscorable),
  else absent (PRM only; or set `verifiable_reward_coef=0.0`).
  `kl_in_reward=True` puts the k1 estimate old_logprobs − ref_logprobs in
  the reward (the repo's setting); a `token_kl` keyword puts any per-token
  KL there; by default KL is left to `cajax.losses`.
  """
  return pure(**_prm_inputs(rollouts, kl_in_reward, verifiable_rewards,
                            token_kl), **kwargs)


def _sum_form_prm_adapter(rollouts, *, kl_in_reward: bool = False,
                          verifiable_rewards=None, token_kl=None, **kwargs):
  """`sum_form_prm` on Rollouts, with the inputs of `pure`'s adapter."""
  return sum_form_prm(**_prm_inputs(rollouts, kl_in_reward,
                                    verifiable_rewards, token_kl), **kwargs)


def _process_grpo_adapter(rollouts, **kwargs):
  return process_grpo(rollouts.step_rewards, rollouts.mask,
                      rollouts.step_ids, rollouts.step_mask,
                      rollouts.group_ids, rollouts.num_groups, **kwargs)


def _tp_grpo_adapter(rollouts, **kwargs):
  """`tp_grpo` with sᵢ = Σₜ token_rewards and labels sign(step_rewards)."""
  # tp_grpo calls its step input step_labels: name the Rollouts field here.
  batch, _ = _checks.check_batch(rollouts.mask)
  _checks.check_shape(rollouts.step_rewards, (batch, None), "step_rewards",
                      like=f"mask {tuple(jnp.shape(rollouts.mask))}")
  _checks.check_same_shape(rollouts.step_mask, rollouts.step_rewards,
                           "step_mask", "step_rewards")
  return tp_grpo(scoring.row_sums(rollouts.token_rewards, rollouts.mask),
                 rollouts.step_rewards, rollouts.mask, rollouts.step_ids,
                 rollouts.step_mask, rollouts.group_ids, rollouts.num_groups,
                 **kwargs)
