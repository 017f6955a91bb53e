"""Rewards from judges: rating expectations, pairwise aggregation, trust.

Building blocks that turn the raw outputs of LLM judges and reward models
into rewards, weights and masks:

* TrustJudge's distribution-sensitive score (a softmax-weighted rating over
  the judge's rating-token probabilities, as in the official code) and its
  likelihood-aware pairwise aggregation (summed bidirectional outcome
  probabilities, or the lower-perplexity order);
* Ctrl-U-style uncertainty weights: rewards whose repeated evaluations
  disagree get less weight;
* SCIR-style agreement masks: keep only the samples on which several
  internal reward signals agree (in sign, or in within-group rank).

Everything is jit-able JAX; static knobs are keyword arguments.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import groups
from cajax import masking

__all__ = [
    "AGGREGATIONS", "PERPLEXITY_TIES", "PairwisePreference", "RATING_METHODS",
    "UncertaintyWeights", "bidirectional_preference", "expected_rating",
    "perplexity_preference", "rank_agreement_mask", "rating_distribution",
    "sign_agreement_mask", "uncertainty_weights", "within_group_ranks",
]


def _outcome_mask(logprobs, valid, name: str):
  logprobs = _checks.as_float(logprobs, name)
  finite = jnp.isfinite(logprobs)
  if valid is None:
    return logprobs, finite
  _checks.check_same_shape(valid, logprobs, f"{name} valid", name)
  return logprobs, finite & _checks.as_mask(valid)


def rating_distribution(rating_logprobs: ArrayLike,
                        valid: ArrayLike | None = None) -> jax.Array:
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


RATING_METHODS = ("softmax_weighted", "geval", "renormalized")

# TrustJudge's guard inside log((p + ε) / (1 − p + ε)).
_LOGIT_EPS = 1e-8


def expected_rating(rating_logprobs: ArrayLike,
                    rating_values: ArrayLike | None = None,
                    valid: ArrayLike | None = None, *,
                    method: str = "softmax_weighted",
                    temperature: float = 0.2) -> jax.Array:
  """TrustJudge's distribution-sensitive score of a judge's rating.

  With pₖ = exp(ℓₖ) the judge's raw probabilities of the K rating tokens
  (the mass on other tokens is not redistributed) and vₖ their values:

    "softmax_weighted" (default, the official code's TrustJudge score):
        zₖ = log((pₖ + ε) / (1 − pₖ + ε)),  wₖ = softmaxₖ(zₖ / τ),
        score = Σₖ wₖ·vₖ   over the tokens with 0 < pₖ < 1 (ε = 1e-8,
        τ = `temperature`, 0.2 in the official code);
    "geval": score = Σₖ pₖ·vₖ, the raw probability-weighted sum of G-Eval
        (not renormalised, so missing mass lowers the score);
    "renormalized": score = Σₖ pₖ·vₖ / Σⱼ pⱼ, the expectation under the
        renormalised rating distribution (`rating_distribution`); this was
        cajax's form before it followed the official code.

  For probabilities {1: .02, 2: .08, 3: .30, 4: .45, 5: .05} the three
  methods give 3.962, 3.130 and 3.478. The continuous score keeps the
  information a single greedy rating throws away: two responses with the
  same mode rating but different distributions score differently. A slice
  with no usable rating token scores 0 (as in the official code).

  See "TrustJudge: Inconsistencies of LLM-as-a-Judge and How to Alleviate
  Them" (Wang et al., arXiv 2509.21117).

  Args:
    rating_logprobs: [..., K] log-probs of the K rating tokens (for
      "renormalized", unnormalised logits work too).
    rating_values: optional [K] value of each rating token (default 1..K).
    valid: optional bool[..., K] of usable rating tokens.
    method: "softmax_weighted" (default), "geval" or "renormalized".
    temperature: τ > 0 of "softmax_weighted" (ignored otherwise).

  Returns:
    f32[...] scores.

  Raises:
    ValueError: on a rank-0 input, a `rating_values` of the wrong shape, an
      unknown method or a temperature that is not > 0.
  """
  _checks.check_choice(method, RATING_METHODS, "method")
  temperature = _checks.check_number(temperature, "temperature", low=0.0,
                                     low_open=True)
  _checks.check_rank(rating_logprobs, tuple(range(1, 8)), "rating_logprobs")
  num_ratings = jnp.shape(rating_logprobs)[-1]
  if rating_values is None:
    values = jnp.arange(1, num_ratings + 1, dtype=jnp.float32)
  else:
    _checks.check_shape(rating_values, (num_ratings,), "rating_values",
                        like=f"the last axis of rating_logprobs "
                        f"{tuple(jnp.shape(rating_logprobs))}")
    values = _checks.as_float(rating_values, "rating_values")
  if method == "renormalized":
    return rating_distribution(rating_logprobs, valid=valid) @ values
  logprobs, usable = _outcome_mask(rating_logprobs, valid, "rating_logprobs")
  probs = jnp.where(usable, jnp.exp(logprobs), 0.0)
  if method == "geval":
    return probs @ values
  inside = usable & (probs > 0.0) & (probs < 1.0)
  logits = jnp.log((probs + _LOGIT_EPS) / (1.0 - probs + _LOGIT_EPS))
  weights = masking.masked_softmax(jnp.where(inside, logits, 0.0), inside,
                                   axis=-1, temperature=temperature)
  return weights @ values


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


AGGREGATIONS = ("raw", "renormalized")
PERPLEXITY_TIES = ("tie", "keep_ab")


def bidirectional_preference(logprobs_ab: ArrayLike, logprobs_ba: ArrayLike,
                             valid_ab: ArrayLike | None = None,
                             valid_ba: ArrayLike | None = None, *,
                             aggregation: str = "raw",
                             tie_tolerance: float = 0.0) -> PairwisePreference:
  """TrustJudge's likelihood-aware aggregation of both presentation orders.

  The judge is asked twice, with (A, B) and with (B, A), and its outcome
  tokens are read in the order (first ≻ second, tie, second ≻ first) (or
  without the tie). The probabilities of the two orders are mapped to A/B
  terms and summed:

    m[A ≻ B] = P_AB(first) + P_BA(second)
    m[tie]   = P_AB(tie)   + P_BA(tie)
    m[B ≻ A] = P_AB(second) + P_BA(first)

  With `aggregation="raw"` (default, the official code) P are the judge's
  raw outcome-token probabilities exp(ℓ); with "renormalized" (cajax's form
  before it followed the official code) each order is first renormalised
  over its outcome tokens. The decision is the outcome of largest m, except
  that it is a tie when the two largest m differ by less than
  2·`tie_tolerance` (the official |first − second|/2 < tolerance, default 0).
  Summing both orders cancels position bias, which removes most
  transitivity violations. probs = m / 2.

  Example (the official decision): P_AB = (.20, .01, .05) and P_BA = (.70,
  .01, .28) give m = (.48, .02, .75): B wins. Renormalising each order first
  would give A.

  [GAP] Exactly equal largest m resolve to a tie (the official code picks
  whichever outcome its set iteration meets first); the soft score
  P(A ≻ B) − P(B ≻ A) is a cajax addition.

  See "TrustJudge: Inconsistencies of LLM-as-a-Judge and How to Alleviate
  Them" (Wang et al., arXiv 2509.21117).

  Args:
    logprobs_ab: [..., C] outcome log-probs with A shown first, C ∈ {2, 3}.
    logprobs_ba: [..., C] outcome log-probs with B shown first.
    valid_ab: optional bool[..., C] usable outcome tokens of the AB order.
    valid_ba: optional bool[..., C] of the BA order.
    aggregation: "raw" (default) or "renormalized".
    tie_tolerance: ≥ 0; a tie when (largest m − second m)/2 is below it.

  Returns:
    `PairwisePreference`.

  Raises:
    ValueError: if the shapes differ, C is not 2 or 3, or an option is out
      of its domain.
  """
  _checks.check_choice(aggregation, AGGREGATIONS, "aggregation")
  tie_tolerance = _checks.check_number(tie_tolerance, "tie_tolerance",
                                       low=0.0)
  _checks.check_rank(logprobs_ab, tuple(range(1, 8)), "logprobs_ab")
  _checks.check_same_shape(logprobs_ba, logprobs_ab, "logprobs_ba",
                           "logprobs_ab")
  if jnp.shape(logprobs_ab)[-1] not in (2, 3):
    raise ValueError("the outcome axis of logprobs_ab must have 2 or 3 "
                     f"entries, got shape {jnp.shape(logprobs_ab)}.")
  orders = []
  for logprobs, v, name in ((logprobs_ab, valid_ab, "logprobs_ab"),
                            (logprobs_ba, valid_ba, "logprobs_ba")):
    if v is not None:
      _checks.check_same_shape(v, logprobs_ab, f"valid_{name[-2:]}",
                               "logprobs_ab")
    if aggregation == "renormalized":
      orders.append(rating_distribution(logprobs, valid=v))
    else:
      logprobs, usable = _outcome_mask(logprobs, v, name)
      orders.append(jnp.where(usable, jnp.exp(logprobs), 0.0))
  p_ab, p_ba = orders
  m = p_ab + jnp.flip(p_ba, axis=-1)
  best = jnp.argmax(m, axis=-1)
  ordered = jnp.sort(m, axis=-1)
  gap = ordered[..., -1] - ordered[..., -2]
  tie = (gap == 0.0) | (0.5 * gap < tie_tolerance)
  outcomes = m.shape[-1]
  decision = jnp.where(best == 0, 1, jnp.where(best == outcomes - 1, -1, 0))
  decision = jnp.where(tie, 0, decision).astype(jnp.int32)
  return PairwisePreference(probs=0.5 * m, decision=decision,
                            score=0.5 * (m[..., 0] - m[..., -1]))


def perplexity_preference(decision_ab: ArrayLike, decision_ba: ArrayLike,
                          output_logprobs_ab: ArrayLike, mask_ab: ArrayLike,
                          output_logprobs_ba: ArrayLike, mask_ba: ArrayLike, *,
                          tie_tolerance: float = 0.0,
                          on_equal: str = "tie") -> jax.Array:
  """TrustJudge's perplexity variant: keep the more confident order's verdict.

  With the judge's verdict in each order, d_AB (A first) and d_BA (B first),
  each +1 when the first response wins, −1 when the second does and 0 for a
  tie, and the judge's output perplexity PPL = exp(−mean_t log p(oₜ)):

    decision = d_AB     if PPL_AB < PPL_BA − tolerance
               −d_BA    if PPL_BA < PPL_AB − tolerance   (mapped to A/B terms)
               0        otherwise (a tie, as in the official code)

  `on_equal="keep_ab"` instead keeps d_AB when neither order is more
  confident (cajax's rule before it followed the official code).
  Perplexities are compared without forming exp(·) when they are equal or
  far apart (no overflow); an order with no output token has PPL 1.

  See "TrustJudge: Inconsistencies of LLM-as-a-Judge and How to Alleviate
  Them" (Wang et al., arXiv 2509.21117).

  Args:
    decision_ab: int[B] verdict with A shown first.
    decision_ba: int[B] verdict with B shown first (in its own order).
    output_logprobs_ab: [B, T] log-probs of the judge's output tokens (AB).
    mask_ab: [B, T] bool valid output tokens (AB).
    output_logprobs_ba: [B, T'] log-probs of the judge's output tokens (BA).
    mask_ba: [B, T'] bool (BA).
    tie_tolerance: ≥ 0, the perplexity difference below which the orders
      are equally confident (official `tolerance_gap`, default 0).
    on_equal: "tie" (default, official) or "keep_ab".

  Returns:
    int32[B] decisions in A/B terms (+1 A, −1 B, 0 tie).

  Raises:
    ValueError: on mismatched shapes, non-integer decisions or options out
      of their domain.
  """
  _checks.check_choice(on_equal, PERPLEXITY_TIES, "on_equal")
  tie_tolerance = _checks.check_number(tie_tolerance, "tie_tolerance",
                                       low=0.0)
  _checks.check_batch(mask_ab, "mask_ab")
  _checks.check_batch(mask_ba, "mask_ba")
  batch = mask_ab.shape[0]
  _checks.check_shape(decision_ab, (batch,), "decision_ab",
                      like=f"mask_ab {tuple(mask_ab.shape)}")
  _checks.check_shape(decision_ba, (batch,), "decision_ba",
                      like=f"mask_ab {tuple(mask_ab.shape)}")
  _checks.check_shape(mask_ba, (batch, None), "mask_ba",
                      like=f"mask_ab {tuple(mask_ab.shape)}")
  _checks.check_same_shape(output_logprobs_ab, mask_ab, "output_logprobs_ab",
                           "mask_ab")
  _checks.check_same_shape(output_logprobs_ba, mask_ba, "output_logprobs_ba",
                           "mask_ba")
  nll_ab = -masking.masked_mean(output_logprobs_ab, mask_ab, axis=1, eps=0.0)
  nll_ba = -masking.masked_mean(output_logprobs_ba, mask_ba, axis=1, eps=0.0)
  d_ab = _checks.as_int(decision_ab, "decision_ab")
  d_ba = _checks.as_int(decision_ba, "decision_ba")
  # log|PPL_AB − PPL_BA| = hi + log(1 − exp(lo − hi)), −inf when equal.
  hi, lo = jnp.maximum(nll_ab, nll_ba), jnp.minimum(nll_ab, nll_ba)
  log_gap = hi + jnp.log(-jnp.expm1(lo - hi))
  if tie_tolerance > 0.0:
    distinct = log_gap > math.log(tie_tolerance)
  else:
    distinct = nll_ab != nll_ba
  verdict = jnp.where(nll_ab < nll_ba, d_ab, -d_ba)
  fallback = d_ab if on_equal == "keep_ab" else jnp.zeros_like(d_ab)
  return jnp.where(distinct, verdict, fallback)


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


def uncertainty_weights(repeated_rewards: ArrayLike,
                        valid: ArrayLike | None = None, kappa: float = 1.0,
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


def sign_agreement_mask(signals: ArrayLike, valid: ArrayLike | None = None,
                        thresholds: ArrayLike = 0.0, margin: float = 0.0,
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


def within_group_ranks(values: ArrayLike, group_ids: ArrayLike,
                       valid: ArrayLike | None = None) -> jax.Array:
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


def rank_agreement_mask(signals: ArrayLike, group_ids: ArrayLike,
                        valid: ArrayLike | None = None, tolerance: float = 0.25,
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
