"""Advantage shaping on top of GRPO: UCAS (uncertainty) and CAPO (critiques).

Both start from verl's GRPO conventions (unbiased group std, eps added to
the std, singleton groups pass their score through, all-equal groups give 0)
and reshape the per-token advantages of a padded `[B, T]` batch:

* `ucas`: scales each response's advantage by its self-certainty relative to
  its group and subtracts a batch-normalised penalty on high-logit tokens.
* `capo`: votes over N generative critiques that flag wrong steps and turns
  outcome + step penalties into group-normalised token advantages.

Outputs are float32 and exactly 0 at masked tokens and on unscorable rows
(a non-finite outcome, or a non-finite certainty or logit at a valid token),
which are left out of every statistic as if absent.
"""

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import groups
from cajax import masking
from cajax import scoring
from cajax import sequences
from cajax import types

__all__ = [
    "CAPO_NORMALIZATIONS", "CAPO_VOTES", "CERTAINTY_REDUCES",
    "UCAS_CERTAINTY_SOURCES", "capo", "capo_vote", "ucas",
]

CERTAINTY_REDUCES = ("sum", "mean")
UCAS_CERTAINTY_SOURCES = ("self_certainty", "negative_entropy")
CAPO_VOTES = ("union", "intersect", "majority")
CAPO_NORMALIZATIONS = ("token", "outcome")

# |log m| cap of the UCAS multiplier m = exp(±β·Ĉ). With the default
# z-scored certainty |Ĉ| < √n, so the cap only binds for groups of more than
# ~20,000 rows or for mean-centred (unscaled) certainties, where it keeps m
# finite.
_UCAS_MAX_LOG_MULTIPLIER = 50.0
# torch.isclose defaults, the repo's test for a constant logit range.
_ISCLOSE_RTOL = 1e-5
_ISCLOSE_ATOL = 1e-8


def ucas(token_rewards: ArrayLike, self_certainty: ArrayLike,
         token_logits: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
         num_groups: int, *, beta_pos: float = 0.25, beta_neg: float = 0.35,
         token_coef: float = 0.05, eps: float = 1e-6,
         normalize_by_std: bool = True, certainty_reduce: str = "sum",
         penalize_zero_adv_groups: bool = True) -> types.EstimatorOutput:
  """Uncertainty-aware advantage shaping (UCAS), as in the authors' repo.

    sᵢ = Σₜ rᵢₜ,  Aᵢ = (sᵢ − μ_g(s)) / (σ_g(s) + eps),
    Cᵢ = Σₜ SCᵢₜ  (or the mean),  Ĉᵢ = (Cᵢ − μ_g(C)) / (σ_g(C) + eps),
    mᵢ = exp(−β₊·Ĉᵢ) if Aᵢ > 0 else exp(+β₋·Ĉᵢ),
    ℓ̂ₜ = (ℓₜ − min ℓ) / (max ℓ − min ℓ + eps)  over every valid token of the
         batch (0.5 when max ℓ and min ℓ are close: |max − min| ≤ 1e-8 +
         1e-5·|min|, torch's `isclose`, as in the repo),
    rawᵢₜ = Aᵢ·mᵢ − γ·ℓ̂ᵢₜ,
    Âᵢₜ = max(rawᵢₜ, 0) if Aᵢ·mᵢ > 0 else rawᵢₜ.

  Confident correct answers are damped, uncertain ones amplified; confident
  wrong answers are penalised harder; high-logit tokens are pushed down. As
  in the repo, rows of all-equal groups (Aᵢ = 0) still get the −γ·ℓ̂ token
  penalty (`penalize_zero_adv_groups=False` gives them 0 instead), the
  certainty is summed over tokens (so it grows with length), and the logit
  min/max is batch-global: call this on the full advantage batch, never per
  micro-batch. `normalize_by_std=False` mean-centres both z-scores (the repo's
  `norm_adv_by_std_in_grpo=False`).

  A group with one scorable row uses μ = 0, σ = 1 for both z-scores, as the
  repo does: Aᵢ = sᵢ/(1 + eps) and Ĉᵢ = Cᵢ/(1 + eps), so a correct answer
  alone in its group gets m = exp(−β₊·Ĉᵢ) (its summed certainty, not 1).
  Choices of cajax: |log m| is capped at 50 so mᵢ stays finite; unscorable
  rows (non-finite score) get 0 and are left out of the group statistics.

  See "Unlocking Exploration in RLVR: Uncertainty-aware Advantage Shaping for
  Deeper Reasoning" (Xie et al., arXiv 2510.10649).

  Args:
    token_rewards: f[B, T] rewards; sᵢ sums every position (verl).
    self_certainty: f[B, T] per-token self-certainty logsumexp(z) − mean(z)
      of the old policy (after temperature).
    token_logits: f[B, T] raw logit (before temperature) of each sampled
      token.
    mask: bool[B, T] valid response tokens.
    group_ids: int[B] prompt group of each row.
    num_groups: static number of groups.
    beta_pos: β₊, default 0.25.
    beta_neg: β₋, default 0.35.
    token_coef: γ of the logit penalty, default 0.05.
    eps: default 1e-6.
    normalize_by_std: divide by the group stds (default True).
    certainty_reduce: "sum" (default, the repo) or "mean" over valid tokens.
    penalize_zero_adv_groups: keep the token penalty on groups whose
      advantages are all 0 (default True, the repo).

  Returns:
    `EstimatorOutput` with advantages = returns f32[B, T]; info holds
    "outcome_advantages" (Aᵢ), "certainty_z" (Ĉᵢ) and "multiplier" (mᵢ),
    each f32[B].

  Raises:
    ValueError: bad shapes, dtypes or options.

  Examples:
    Two responses to one prompt with per-token self-certainty and sampled-
    token logits:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 1.], [0., 0.]])
    >>> self_certainty = jnp.array([[1.0, 2.0], [0.5, 0.5]])
    >>> token_logits = jnp.array([[3.0, 1.0], [2.0, 0.0]])
    >>> mask = jnp.ones((2, 2), bool)
    >>> out = cajax.ucas(token_rewards, self_certainty, token_logits, mask,
    ...                  jnp.array([0, 0]), num_groups=1)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.54  0.58]
     [-0.59 -0.55]]
  """
  _checks.check_choice(certainty_reduce, CERTAINTY_REDUCES,
                       "certainty_reduce")
  beta_pos = _checks.check_number(beta_pos, "beta_pos", low=0.0)
  beta_neg = _checks.check_number(beta_neg, "beta_neg", low=0.0)
  token_coef = _checks.check_number(token_coef, "token_coef", low=0.0)
  eps = _checks.check_number(eps, "eps", low=0.0)
  normalize_by_std = _checks.check_bool(normalize_by_std, "normalize_by_std")
  penalize_zero_adv_groups = _checks.check_bool(penalize_zero_adv_groups,
                                                "penalize_zero_adv_groups")
  batch, _ = _checks.check_batch(mask)
  self_certainty = _checks.as_float_like(self_certainty, mask,
                                         "self_certainty")
  token_logits = _checks.as_float_like(token_logits, mask, "token_logits")
  group_ids = groups.check_group_ids(group_ids, batch, num_groups)
  mask = _checks.as_mask(mask)
  scores, scorable = scoring.sequence_scores(token_rewards, mask)
  scorable = (scorable & scoring.finite_rows(self_certainty, mask)
              & scoring.finite_rows(token_logits, mask)
              & groups.in_range(group_ids, num_groups))
  # Unscorable rows are left out of every statistic, the batch-global logit
  # range included.
  mask = mask & scorable[:, None]
  self_certainty = jnp.where(mask, self_certainty, 0.0)
  token_logits = jnp.where(mask, token_logits, 0.0)
  standardize = functools.partial(
      groups.group_normalize, group_ids=group_ids, num_groups=num_groups,
      valid=scorable, mode="std" if normalize_by_std else "mean", eps=eps)
  advantage = standardize(scores, singleton="raw")
  if certainty_reduce == "sum":
    certainty = masking.masked_sum(self_certainty, mask, axis=1)
  else:
    certainty = masking.masked_mean(self_certainty, mask, axis=1, eps=0.0)
  certainty_z = standardize(certainty, singleton="raw")
  log_multiplier = jnp.where(advantage > 0, -beta_pos * certainty_z,
                             beta_neg * certainty_z)
  multiplier = jnp.exp(jnp.clip(log_multiplier, -_UCAS_MAX_LOG_MULTIPLIER,
                                _UCAS_MAX_LOG_MULTIPLIER))
  shaped = advantage * multiplier
  lo, hi = masking.masked_min_max(token_logits, mask)
  span = hi - lo
  logits = token_logits
  # torch.isclose(max, min) with its default tolerances, as in the repo.
  close = jnp.abs(span) <= _ISCLOSE_ATOL + _ISCLOSE_RTOL * jnp.abs(lo)
  normalized = jnp.where(close, 0.5, (logits - lo) / (span + eps))
  raw = shaped[:, None] - token_coef * normalized
  out = jnp.where(shaped[:, None] > 0, jnp.maximum(raw, 0.0), raw)
  keep = scorable
  if not penalize_zero_adv_groups:
    spread = groups.group_max(jnp.abs(advantage), group_ids, num_groups,
                              valid=scorable)
    keep = keep & (spread[group_ids] > 0)
  advantages = jnp.where(mask & keep[:, None], out, 0.0)
  info = {"outcome_advantages": advantage, "certainty_z": certainty_z,
          "multiplier": multiplier}
  return types.EstimatorOutput(advantages=advantages, returns=advantages,
                               info=info)


def capo_vote(critique_flags: ArrayLike,
              critique_valid: ArrayLike | None = None, mode: str = "majority",
              threshold: float = 0.5) -> jax.Array:
  """Votes C critiques' wrong-step flags into one wrong-step mask.

    union:      wrong if any valid critique flags the step,
    intersect:  wrong if every valid critique flags it,
    majority:   wrong if the flagged fraction of valid critiques > threshold
                (strictly: the CAPO figure's 4 critiques [1,3], [1,2,3],
                [1,3], [2,3] give [1,3] at threshold 0.5).

  Critiques marked invalid (failed to parse) are dropped from the vote; a row
  with no valid critique has no wrong step.

  See "Towards Enhancing LLM Reasoning through Verifiable Generative Credit
  Assignment" (Xie et al., arXiv 2508.02298).

  Args:
    critique_flags: bool[B, C, S], True where critique n flags step s.
    critique_valid: optional bool[B, C] (default all True).
    mode: "union", "intersect" or "majority" (default).
    threshold: majority threshold in [0, 1], default 0.5.

  Returns:
    bool[B, S] wrong steps.

  Raises:
    ValueError: bad shapes or options.
  """
  _checks.check_choice(mode, CAPO_VOTES, "mode")
  threshold = _checks.check_number(threshold, "threshold", low=0.0, high=1.0)
  _checks.check_rank(critique_flags, 3, "critique_flags")
  batch, num_critiques, _ = critique_flags.shape
  flags = _checks.as_mask(critique_flags, "critique_flags")
  if critique_valid is None:
    critique_valid = jnp.ones((batch, num_critiques), bool)
  _checks.check_shape(critique_valid, (batch, num_critiques),
                      "critique_valid",
                      like=f"critique_flags {tuple(critique_flags.shape)}")
  valid = _checks.as_mask(critique_valid, "critique_valid")
  votes = jnp.sum(flags & valid[:, :, None], axis=1, dtype=jnp.int32)
  voters = jnp.sum(valid, axis=1, dtype=jnp.int32)[:, None]
  if mode == "union":
    return votes > 0
  if mode == "intersect":
    return (voters > 0) & (votes == voters)
  return (voters > 0) & (votes > threshold * voters)


def capo(outcome_rewards: ArrayLike, critique_flags: ArrayLike, mask: ArrayLike,
         step_ids: ArrayLike, step_mask: ArrayLike, group_ids: ArrayLike,
         num_groups: int, *, critique_valid: ArrayLike | None = None,
         vote: str = "majority", threshold: float = 0.5,
         whole_weight: float = 1.0, process_weight: float = 0.5,
         normalization: str = "token", penalize_correct: bool = True,
         correct_threshold: float = 0.5, eps: float = 1e-6,
         ddof: int = 1) -> types.EstimatorOutput:
  """CAPO: generative-critique step penalties with group normalisation.

    wrong = `capo_vote(flags, mode=vote)`,
    Rᵢₜ = W_whole·r_vᵢ − W_process·1[t in a wrong step of row i],
    "token":    Aᵢₜ = (Rᵢₜ − μ_g(R)) / (σ_g(R) + eps), μ, σ over every valid
                token of every row of the group,
    "outcome":  Aᵢₜ = W_whole·GRPO(r_v)ᵢ − W_process·1[t wrong].

  [GAP] The code is unreleased and the paper's W_whole, W_process and
  normalisation are not available. Choices, each a
  knob: W_whole = 1, W_process = 0.5 (< W_whole, so a correct answer with
  flawed steps still outscores a wrong one); token rewards normalised over
  the group's tokens (the "token-level rewards ... normalized to produce
  per-token advantages" summary), with verl's GRPO conventions (a group with
  one valid token passes it through, equal rewards give 0); correct answers
  (r_v > correct_threshold) are penalised too, as in the paper's figure;
  majority means a fraction strictly above the threshold. Steps that are
  not in `step_mask` or own no token get no penalty.

  See "Towards Enhancing LLM Reasoning through Verifiable Generative Credit
  Assignment" (Xie et al., arXiv 2508.02298).

  Args:
    outcome_rewards: f[B] rule-verifier outcome r_v ∈ {0, 1} (NaN =
      unscorable: advantage 0, left out of the statistics).
    critique_flags: bool[B, C, S] wrong-step flags of C critiques.
    mask: bool[B, T] valid response tokens.
    step_ids: int[B, T] step index of each token, −1 outside any step;
      steps may come in any order (each token reads its own step's flag).
    step_mask: bool[B, S] valid steps.
    group_ids: int[B] prompt group of each row.
    num_groups: static number of groups.
    critique_valid: optional bool[B, C], False for unparsable critiques.
    vote: "union", "intersect" or "majority" (default).
    threshold: majority threshold in [0, 1], default 0.5.
    whole_weight: W_whole ≥ 0, default 1.0.
    process_weight: W_process ≥ 0, default 0.5.
    normalization: "token" (default) or "outcome".
    penalize_correct: penalise wrong steps of correct answers (default True).
    correct_threshold: r_v above it counts as correct, in [0, 1], default
      0.5.
    eps: default 1e-6.
    ddof: default 1.

  Returns:
    `EstimatorOutput` with advantages f32[B, T] and returns = the token
    rewards R (0 on masked tokens and unscorable rows); info["wrong_steps"]
    bool[B, S].

  Raises:
    ValueError: bad shapes, dtypes or options.

  Examples:
    Three critiques (`critique_flags[b, n, s]`) vote on the two steps of two
    responses; two of three flag step 1 of row 0, whose tokens are
    penalised:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> critique_flags = jnp.array([[[0, 1], [0, 1], [0, 0]],
    ...                             [[0, 0], [1, 0], [0, 0]]], bool)
    >>> step_ids = jnp.array([[0, 1, 1], [0, 0, 1]])
    >>> outcome_rewards = jnp.array([1.0, 0.0])
    >>> out = cajax.capo(outcome_rewards, critique_flags, jnp.ones((2, 3), bool),
    ...                  step_ids, jnp.ones((2, 2), bool), jnp.array([0, 0]),
    ...                  num_groups=1)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 1.63  0.41  0.41]
     [-0.82 -0.82 -0.82]]
  """
  _checks.check_choice(normalization, CAPO_NORMALIZATIONS, "normalization")
  # Checked here under the caller's names (capo_vote calls them mode and
  # threshold).
  _checks.check_choice(vote, CAPO_VOTES, "vote")
  threshold = _checks.check_number(threshold, "threshold", low=0.0, high=1.0)
  whole_weight = _checks.check_number(whole_weight, "whole_weight", low=0.0)
  process_weight = _checks.check_number(process_weight, "process_weight",
                                        low=0.0)
  penalize_correct = _checks.check_bool(penalize_correct, "penalize_correct")
  correct_threshold = _checks.check_number(
      correct_threshold, "correct_threshold", low=0.0, high=1.0)
  eps = _checks.check_number(eps, "eps", low=0.0)
  batch, _ = _checks.check_batch(mask)
  _checks.check_rank(step_mask, 2, "step_mask")
  _checks.check_shape(step_mask, (batch, None), "step_mask",
                      like=f"mask {tuple(mask.shape)}")
  _checks.check_shape(critique_flags, (batch, None, step_mask.shape[1]),
                      "critique_flags",
                      like=f"step_mask {tuple(step_mask.shape)}")
  _checks.check_same_shape(step_ids, mask, "step_ids", "mask")
  group_ids = groups.check_group_ids(group_ids, batch, num_groups)
  outcome, scorable = scoring.row_scores(outcome_rewards, batch)
  scorable = scorable & groups.in_range(group_ids, num_groups)
  outcome = jnp.where(scorable, outcome, 0.0)
  mask = _checks.as_mask(mask)
  wrong = capo_vote(critique_flags, critique_valid, mode=vote,
                    threshold=threshold) & _checks.as_mask(step_mask,
                                                           "step_mask")
  if not penalize_correct:
    wrong = wrong & ~(outcome > correct_threshold)[:, None]
  in_wrong = sequences.steps_to_tokens(wrong, _checks.as_int(
      step_ids, "step_ids")) > 0
  valid = mask & scorable[:, None]
  penalty = jnp.where(in_wrong, process_weight, 0.0)
  rewards = jnp.where(valid, whole_weight * outcome[:, None] - penalty, 0.0)
  if normalization == "token":
    advantages = groups.group_normalize(rewards, group_ids, num_groups,
                                        valid, eps=eps, ddof=ddof,
                                        singleton="keep")
  else:
    outcome_adv = groups.group_normalize(outcome, group_ids, num_groups,
                                         scorable, eps=eps, ddof=ddof,
                                         singleton="keep")
    advantages = jnp.where(valid, whole_weight * outcome_adv[:, None]
                           - penalty, 0.0)
  return types.EstimatorOutput(advantages=advantages, returns=rewards,
                               info={"wrong_steps": wrong})


# --------------------------------------------------------------------------
# Registry adapters.


def _ucas_adapter(rollouts, *, certainty: str = "self_certainty", **kwargs):
  """`ucas` on Rollouts.

  `certainty="self_certainty"` (default, the repo) reads
  rollouts.self_certainty; "negative_entropy" uses −rollouts.entropy (also
  larger for peakier distributions) when fused kernels give no
  self-certainty.
  """
  _checks.check_choice(certainty, UCAS_CERTAINTY_SOURCES, "certainty")
  if certainty == "self_certainty":
    values = rollouts.self_certainty
  else:
    values = -_checks.as_float(rollouts.entropy, "rollouts.entropy")
  return ucas(rollouts.token_rewards, values, rollouts.token_logits,
              rollouts.mask, rollouts.group_ids, rollouts.num_groups,
              **kwargs)


def _capo_example_inputs(rollouts, rng) -> dict:
  """Four random critiques flagging each step with probability 0.3.

  The step axis is that of `step_mask` (or `step_rewards`); without either,
  T steps (the most a row of T tokens can hold).
  """
  batch, length = jnp.shape(rollouts.mask)
  steps = rollouts.step_mask if rollouts.step_mask is not None else (
      rollouts.step_rewards)
  num_steps = length if steps is None else jnp.shape(steps)[1]
  return {"critique_flags": jnp.asarray(
      rng.random((batch, 4, num_steps)) < 0.3)}


def _capo_adapter(rollouts, *, critique_flags, **kwargs):
  """`capo` on Rollouts with r_v = Σₜ token_rewards (NaN = unscorable)."""
  return capo(scoring.row_sums(rollouts.token_rewards, rollouts.mask),
              critique_flags,
              rollouts.mask, rollouts.step_ids, rollouts.step_mask,
              rollouts.group_ids, rollouts.num_groups, **kwargs)
