"""Rewards from judges: rating expectations, pairwise aggregation, trust.

Building blocks that turn the raw outputs of LLM judges and reward models
into rewards, weights and masks:

* TrustJudge's distribution-sensitive score (the expected rating under the
  judge's renormalised rating-token probabilities) and its likelihood-aware
  pairwise aggregation (bidirectional preference probabilities, or the
  lower-perplexity order);
* Ctrl-U-style uncertainty weights: rewards whose repeated evaluations
  disagree get less weight;
* SCIR-style agreement masks: keep only the samples on which several
  internal reward signals agree (in sign, or in within-group rank).

Everything is jit-able JAX; static knobs are keyword arguments.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cajax import _checks
from cajax import groups
from cajax import masking


def _outcome_mask(logprobs, valid, name: str):
  logprobs = _checks.as_float(logprobs, name)
  finite = jnp.isfinite(logprobs)
  if valid is None:
    return logprobs, finite
  _checks.check_same_shape(valid, logprobs, f"{name} valid", name)
  return logprobs, finite & _checks.as_mask(valid)


def rating_distribution(rating_logprobs, valid=None) -> jax.Array:
  """Judge's rating probabilities renormalised over the rating vocabulary.

  p_k = exp(ℓ_k) / Σ_{j valid} exp(ℓ_j) over the K rating tokens, where ℓ
  are the judge's log-probs of the rating tokens at the rating position
  (the mass on non-rating tokens is discarded). Entries that are −inf or
  marked invalid (e.g. a rating token missing from a top-k list) get 0; a
  slice with no valid entry gives all zeros.

  See "TrustJudge: Inconsistencies of LLM-as-a-Judge and How to Alleviate
  Them" (Wang et al., arXiv 2509.21117).

  Args:
    rating_logprobs: [..., K] log-probs (or logits) of the rating tokens.
    valid: optional bool[..., K].

  Returns:
    f32[..., K] probabilities summing to 1 (or 0) over the last axis.

  Raises:
    ValueError: on a rank-0 input or a `valid` of another shape.
  """
  _checks.check_rank(rating_logprobs, tuple(range(1, 8)), "rating_logprobs")
  logprobs, usable = _outcome_mask(rating_logprobs, valid, "rating_logprobs")
  return masking.masked_softmax(logprobs, usable, axis=-1)


def expected_rating(rating_logprobs, rating_values=None,
                    valid=None) -> jax.Array:
  """TrustJudge's distribution-sensitive score: E[rating] = Σ_k p_k·v_k.

  The continuous expectation of the discrete rating under the judge's
  renormalised rating probabilities (`rating_distribution`) keeps the
  information a single sampled or greedy rating throws away: two responses
  with the same mode rating but different distributions get different
  scores. TrustJudge pairs this with a finer rating scale (e.g. 100 points
  instead of 5); pass that scale as `rating_values`.

  See "TrustJudge: Inconsistencies of LLM-as-a-Judge and How to Alleviate
  Them" (Wang et al., arXiv 2509.21117).

  Args:
    rating_logprobs: [..., K] log-probs of the K rating tokens.
    rating_values: optional [K] value of each rating token (default 1..K).
    valid: optional bool[..., K] of usable rating tokens.

  Returns:
    f32[...] expected ratings (0 where no rating token is valid).

  Raises:
    ValueError: on a rank-0 input or a `rating_values` of the wrong shape.
  """
  probs = rating_distribution(rating_logprobs, valid=valid)
  num_ratings = probs.shape[-1]
  if rating_values is None:
    values = jnp.arange(1, num_ratings + 1, dtype=jnp.float32)
  else:
    _checks.check_shape(rating_values, (num_ratings,), "rating_values",
                        like=f"the last axis of rating_logprobs "
                        f"{tuple(probs.shape)}")
    values = _checks.as_float(rating_values, "rating_values")
  return probs @ values


class PairwisePreference(NamedTuple):
  """Aggregated pairwise judgement of A against B.

  Attributes:
    probs: f32[..., C] outcome probabilities in A/B terms, (A ≻ B, tie,
      B ≻ A) for C = 3 or (A ≻ B, B ≻ A) for C = 2.
    decision: int32[...] +1 when A is preferred, −1 when B is, 0 for a tie.
    score: f32[...] P(A ≻ B) − P(B ≻ A) in [−1, 1], a soft reward for A.
  """
  probs: jax.Array
  decision: jax.Array
  score: jax.Array


def bidirectional_preference(logprobs_ab, logprobs_ba, valid_ab=None,
                             valid_ba=None,
                             tie_tolerance: float = 1e-6
                             ) -> PairwisePreference:
  """TrustJudge's likelihood-aware aggregation of both presentation orders.

  The judge is asked twice, with (A, B) and with (B, A), and its outcome
  tokens are read in the order (first ≻ second, tie, second ≻ first) (or
  without the tie). After renormalising each order over its outcome tokens,
  the outcomes are mapped to A/B terms and summed:

    m[A ≻ B] = P_AB(first) + P_BA(second)
    m[tie]   = P_AB(tie)   + P_BA(tie)
    m[B ≻ A] = P_AB(second) + P_BA(first)

  and the decision is argmax_k m[k]. Summing both orders cancels position
  bias and replaces an ambiguous discrete tie by the likelihoods, which
  removes most transitivity violations. probs = m / 2.

  [GAP] Ties in m (maxima within `tie_tolerance`, which absorbs float
  rounding) resolve to "tie" (0) rather than to the first index; the soft
  score P(A ≻ B) − P(B ≻ A) is a cajax addition.

  See "TrustJudge: Inconsistencies of LLM-as-a-Judge and How to Alleviate
  Them" (Wang et al., arXiv 2509.21117).

  Args:
    logprobs_ab: [..., C] outcome log-probs with A shown first, C ∈ {2, 3}.
    logprobs_ba: [..., C] outcome log-probs with B shown first.
    valid_ab: optional bool[..., C] usable outcome tokens of the AB order.
    valid_ba: optional bool[..., C] of the BA order.
    tie_tolerance: A (or B) wins only when its m exceeds every other outcome
      by more than this.

  Returns:
    `PairwisePreference`.

  Raises:
    ValueError: if the shapes differ or C is not 2 or 3.
  """
  _checks.check_rank(logprobs_ab, tuple(range(1, 8)), "logprobs_ab")
  _checks.check_same_shape(logprobs_ba, logprobs_ab, "logprobs_ba",
                           "logprobs_ab")
  if jnp.shape(logprobs_ab)[-1] not in (2, 3):
    raise ValueError("the outcome axis of logprobs_ab must have 2 or 3 "
                     f"entries, got shape {jnp.shape(logprobs_ab)}.")
  if not tie_tolerance >= 0:
    raise ValueError(f"tie_tolerance must be >= 0, got {tie_tolerance!r}.")
  valid = None
  if valid_ab is not None or valid_ba is not None:
    shape = jnp.shape(logprobs_ab)
    masks = []
    for v, name in ((valid_ab, "valid_ab"), (valid_ba, "valid_ba")):
      if v is not None:
        _checks.check_same_shape(v, logprobs_ab, name, "logprobs_ab")
      masks.append(jnp.ones(shape, bool) if v is None else
                   _checks.as_mask(v, name))
    valid = jnp.stack(masks)
  # One softmax over both orders keeps their arithmetic identical.
  p_ab, p_ba = rating_distribution(
      jnp.stack([_checks.as_float(logprobs_ab, "logprobs_ab"),
                 _checks.as_float(logprobs_ba, "logprobs_ba")]), valid=valid)
  m = p_ab + jnp.flip(p_ba, axis=-1)
  a_wins = m[..., 0] > jnp.max(m[..., 1:], axis=-1) + tie_tolerance
  b_wins = m[..., -1] > jnp.max(m[..., :-1], axis=-1) + tie_tolerance
  decision = (a_wins.astype(jnp.int32) - b_wins.astype(jnp.int32))
  return PairwisePreference(probs=0.5 * m, decision=decision,
                            score=0.5 * (m[..., 0] - m[..., -1]))


def perplexity_preference(decision_ab, decision_ba, output_logprobs_ab,
                          mask_ab, output_logprobs_ba,
                          mask_ba) -> jax.Array:
  """TrustJudge's perplexity variant: keep the more confident order's verdict.

  With the judge's verdict in each order, d_AB (A first) and d_BA (B first),
  each +1 when the first response wins, −1 when the second does and 0 for a
  tie, and the judge's output perplexity PPL = exp(−mean_t log p(oₜ)):

    decision = d_AB     if PPL_AB ≤ PPL_BA
               −d_BA    otherwise            (mapped to A/B terms)

  Perplexities are compared in log space (no overflow); equal perplexities
  (including two empty outputs) keep the AB order.

  See "TrustJudge: Inconsistencies of LLM-as-a-Judge and How to Alleviate
  Them" (Wang et al., arXiv 2509.21117).

  Args:
    decision_ab: int[B] verdict with A shown first.
    decision_ba: int[B] verdict with B shown first (in its own order).
    output_logprobs_ab: [B, T] log-probs of the judge's output tokens (AB).
    mask_ab: [B, T] bool valid output tokens (AB).
    output_logprobs_ba: [B, T'] log-probs of the judge's output tokens (BA).
    mask_ba: [B, T'] bool (BA).

  Returns:
    int32[B] decisions in A/B terms (+1 A, −1 B, 0 tie).

  Raises:
    ValueError: on mismatched shapes or non-integer decisions.
  """
  _checks.check_batch(mask_ab, "mask_ab")
  _checks.check_batch(mask_ba, "mask_ba")
  batch = mask_ab.shape[0]
  _checks.check_shape(decision_ab, (batch,), "decision_ab",
                      like=f"mask_ab {tuple(mask_ab.shape)}")
  _checks.check_shape(decision_ba, (batch,), "decision_ba",
                      like=f"mask_ab {tuple(mask_ab.shape)}")
  _checks.check_shape(mask_ba, (batch, None), "mask_ba",
                      like=f"mask_ab {tuple(mask_ab.shape)}")
  nll_ab = -masking.masked_mean(output_logprobs_ab, mask_ab, axis=1, eps=0.0)
  nll_ba = -masking.masked_mean(output_logprobs_ba, mask_ba, axis=1, eps=0.0)
  d_ab = _checks.as_int(decision_ab, "decision_ab")
  d_ba = _checks.as_int(decision_ba, "decision_ba")
  return jnp.where(nll_ab <= nll_ba, d_ab, -d_ba)


# ----------------------------------------------------------------- Ctrl-U ---


class UncertaintyWeights(NamedTuple):
  """Per-sample reward statistics and weights, each `f32[B]`.

  Attributes:
    weights: uncertainty weights (mean 1 over samples with an evaluation
      when normalised; 0 for samples without one).
    mean: mean of the repeated evaluations (the reward to weight).
    std: their standard deviation (the uncertainty u).
  """
  weights: jax.Array
  mean: jax.Array
  std: jax.Array


def uncertainty_weights(repeated_rewards, valid=None, kappa: float = 1.0,
                        form: str = "exp", ddof: int = 0,
                        normalize: bool = True) -> UncertaintyWeights:
  """Ctrl-U-style weights: rewards whose evaluations disagree count less.

  Each sample's reward is evaluated K times (different noise, crops, judge
  samples or reward-model heads); their spread u_b is the uncertainty:

    u_b = std_k r[b, k]
    w_b = exp(−κ·u_b)          (form="exp", default)
        = 1 / (1 + κ·u_b²)     (form="inverse")
    w_b ← w_b / mean_{b' with an evaluation} w_b'   (normalize=True)

  so the weights have mean 1 over the batch and only redistribute credit
  towards reliable rewards. Weights are computed under stop-gradient.

  [GAP] Ctrl-U measures uncertainty as the discrepancy between two reward
  predictions and down-weights the reward loss accordingly; for scalar LLM
  rewards cajax uses the std of K evaluations (ddof=0, so K = 2 gives
  |r₁ − r₂|/2) and the two documented weight forms above. A sample with a
  single valid evaluation has u = 0 (full weight); one with none gets
  weight 0 and is left out of the normalisation.

  See "Ctrl-U: Robust Conditional Image Generation via Uncertainty-aware
  Reward Modeling" (Zhang, Gao, Jiang, Zhao, Zheng, arXiv 2410.11236).

  Args:
    repeated_rewards: [B, K] rewards of K repeated evaluations per sample.
    valid: optional bool[B, K] of valid evaluations.
    kappa: κ ≥ 0, the strength of the down-weighting (0 gives weights 1).
    form: "exp" or "inverse".
    ddof: delta degrees of freedom of the std (0 or 1).
    normalize: rescale the weights to mean 1 over samples with evaluations.

  Returns:
    `UncertaintyWeights` of f32[B].

  Raises:
    ValueError: on a bad shape, an unknown `form` or a negative κ.
  """
  _checks.check_choice(form, ("exp", "inverse"), "form")
  if not kappa >= 0:
    raise ValueError(f"kappa must be >= 0, got {kappa!r}.")
  _checks.check_batch(repeated_rewards, "repeated_rewards")
  batch, repeats = repeated_rewards.shape
  rewards = _checks.as_float(repeated_rewards, "repeated_rewards")
  if valid is None:
    keep = jnp.ones(rewards.shape, bool)
  else:
    _checks.check_same_shape(valid, repeated_rewards, "valid",
                             "repeated_rewards")
    keep = _checks.as_mask(valid, "valid")
  rows = jnp.repeat(jnp.arange(batch, dtype=jnp.int32), repeats)
  moments = groups.group_moments(rewards.reshape(-1), rows, batch,
                                 valid=keep.reshape(-1), ddof=ddof)
  has_eval = moments.count > 0
  std = moments.std
  if form == "exp":
    weights = jnp.exp(-kappa * std)
  else:
    weights = 1.0 / (1.0 + kappa * std * std)
  weights = jnp.where(has_eval, weights, 0.0)
  if normalize:
    mean_w = masking.masked_mean(weights, has_eval, eps=0.0)
    weights = weights / jnp.where(mean_w > 0, mean_w, 1.0)
  return UncertaintyWeights(weights=jax.lax.stop_gradient(weights),
                            mean=moments.mean, std=std)


# ------------------------------------------------------------------- SCIR ---


def _signal_mask(signals, valid):
  _checks.check_batch(signals, "signals")
  values = _checks.as_float(signals, "signals")
  if valid is None:
    return values, jnp.ones(values.shape, bool)
  _checks.check_same_shape(valid, signals, "valid", "signals")
  return values, _checks.as_mask(valid, "valid")


def sign_agreement_mask(signals, valid=None, thresholds=0.0,
                        margin: float = 0.0,
                        min_signals: int = 2) -> jax.Array:
  """Keeps samples on which K reward signals agree in sign (SCIR-style).

  With cₖ = sₖ − θₖ the signal relative to its threshold, each valid signal
  votes +1 if cₖ > margin, −1 if cₖ < −margin, and abstains (0) otherwise.
  A sample is kept iff it has at least `min_signals` valid signals and all
  of them vote the same non-zero sign.

  For preference pairs, pass the reward margins sₖ = rₖ(y₁) − rₖ(y₂) of the
  internal reward models (LLM-as-a-judge, the implicit DPO reward, ...) with
  θ = 0: SCIR trains only on pairs whose preferred response is the same
  under every internal reward model; `margin` adds a confidence dead zone.

  [GAP] SCIR's own selection also involves its consistency-trained judges;
  this is the mask only, with the dead zone and `min_signals` as knobs.

  See "Self-Consistency of the Internal Reward Models Improves Self-Rewarding
  Language Models" (Zhou, Guo, Ma, Gui, Zhang, Huang, arXiv 2502.08922).

  Args:
    signals: [B, K] K reward signals per sample (or per pair margin).
    valid: optional bool[B, K] of available signals.
    thresholds: θ, a scalar or [K] per-signal thresholds.
    margin: non-negative dead zone around each threshold.
    min_signals: valid signals needed to keep a sample.

  Returns:
    bool[B].

  Raises:
    ValueError: on bad shapes, a negative margin or `min_signals` < 1.
  """
  if not margin >= 0:
    raise ValueError(f"margin must be >= 0, got {margin!r}.")
  min_signals = _checks.check_positive_int(min_signals, "min_signals")
  values, keep = _signal_mask(signals, valid)
  if jnp.ndim(thresholds) != 0:
    _checks.check_shape(thresholds, (values.shape[1],), "thresholds",
                        like=f"signals {tuple(values.shape)}")
  centred = values - jnp.broadcast_to(
      _checks.as_float(thresholds, "thresholds"), values.shape)
  positive = keep & (centred > margin)
  negative = keep & (centred < -margin)
  count = jnp.sum(keep, axis=1)
  all_positive = jnp.all(positive | ~keep, axis=1)
  all_negative = jnp.all(negative | ~keep, axis=1)
  return (count >= min_signals) & (all_positive | all_negative)


def within_group_ranks(values, group_ids, valid=None) -> jax.Array:
  """Mid-rank of each value within its group, scaled to [0, 1].

  q_b = (#{b' ≠ b in g : x_b' < x_b} + ½·#{b' ≠ b in g : x_b' = x_b}) /
        (n_g − 1),

  over the valid rows b' of b's group g (n_g of them); a group with one
  valid row gives ½, and invalid rows give 0. O(B²) pairwise comparisons.

  Args:
    values: f[B] (or [B, K]: ranks of each column separately).
    group_ids: int[B] group of each row (any integer labels).
    valid: optional bool, shaped like `values`.

  Returns:
    f32 ranks shaped like `values`.

  Raises:
    ValueError: on a bad rank or mismatched shapes.
  """
  _checks.check_rank(values, (1, 2), "values")
  x = _checks.as_float(values, "values")
  keep = (jnp.ones(x.shape, bool) if valid is None else
          _checks.as_mask(valid, "valid"))
  _checks.check_same_shape(keep, x, "valid", "values")
  _checks.check_shape(group_ids, (x.shape[0],), "group_ids",
                      like=f"values {tuple(x.shape)}")
  ids = _checks.as_int(group_ids, "group_ids")
  squeeze = x.ndim == 1
  if squeeze:
    x, keep = x[:, None], keep[:, None]
  size = x.shape[0]
  same = (ids[:, None] == ids[None, :]) & ~jnp.eye(size, dtype=bool)
  peers = same[:, :, None] & keep[None, :, :]
  x = jnp.where(keep, x, 0.0)
  below = jnp.sum(peers & (x[None, :, :] < x[:, None, :]), axis=1)
  equal = jnp.sum(peers & (x[None, :, :] == x[:, None, :]), axis=1)
  others = jnp.sum(peers, axis=1)
  ranks = jnp.where(others > 0,
                    (below + 0.5 * equal) / jnp.maximum(others, 1), 0.5)
  ranks = jnp.where(keep, ranks, 0.0)
  return ranks[:, 0] if squeeze else ranks


def rank_agreement_mask(signals, group_ids, valid=None,
                        tolerance: float = 0.25,
                        min_signals: int = 2) -> jax.Array:
  """Keeps samples whose within-group rank agrees across K reward signals.

  Each signal ranks the samples of a prompt group (`within_group_ranks`,
  q ∈ [0, 1]); a sample is kept iff it has at least `min_signals` valid
  signals and max_k qₖ − min_k qₖ ≤ tolerance over them. This is the group
  (GRPO) analogue of SCIR's keep-only-consistent-preferences rule: when the
  internal reward signals order a group's responses alike, the sample's
  relative credit is trusted.

  [GAP] The rank form and tolerance = 0.25 are cajax choices; SCIR itself
  filters preference pairs (see `sign_agreement_mask`).

  See "Self-Consistency of the Internal Reward Models Improves Self-Rewarding
  Language Models" (Zhou, Guo, Ma, Gui, Zhang, Huang, arXiv 2502.08922).

  Args:
    signals: [B, K] K reward signals per sample.
    group_ids: int[B] prompt group of each sample.
    valid: optional bool[B, K] of available signals.
    tolerance: largest allowed rank spread, in [0, 1].
    min_signals: valid signals needed to keep a sample.

  Returns:
    bool[B].

  Raises:
    ValueError: on bad shapes or knobs.
  """
  if not 0.0 <= tolerance <= 1.0:
    raise ValueError(f"tolerance must be in [0, 1], got {tolerance!r}.")
  min_signals = _checks.check_positive_int(min_signals, "min_signals")
  values, keep = _signal_mask(signals, valid)
  ranks = within_group_ranks(values, group_ids, valid=keep)
  hi = jnp.max(jnp.where(keep, ranks, -jnp.inf), axis=1)
  lo = jnp.min(jnp.where(keep, ranks, jnp.inf), axis=1)
  count = jnp.sum(keep, axis=1)
  return (count >= min_signals) & (hi - lo <= tolerance)
