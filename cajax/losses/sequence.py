"""Sequence-level policy losses: GSPO, GSPO-token, GMPO (geo_mean), OPMD.

Each is still returned per token (the row's loss or its share on every
valid token); `PEER_AGGREGATION` names the mode that reproduces the peer's
scalar loss.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import masking
from cajax.losses import _inputs

__all__ = ["geo_mean_policy_loss", "gspo_policy_loss",
           "gspo_token_policy_loss", "opmd_policy_loss"]

_sg = jax.lax.stop_gradient


def _gspo_loss(logprobs, old_logprobs, advantages, mask, clip_low, clip_high,
               log_ratio_max, return_metrics, token_gradient: bool):
  """GSPO's clipped loss on the sequence ratio; with `token_gradient` its
  value is the sequence ratio and its gradient each token's own."""
  clip_low, clip_high = _inputs.check_clip(clip_low, clip_high)
  log_ratio_max = _inputs.check_positive(log_ratio_max, "log_ratio_max")
  x = _inputs.Inputs(logprobs, old_logprobs, advantages, mask)
  sequence = _inputs.sequence_log_ratio(x)
  if token_gradient:
    log_ratio = x.logprobs - _sg(x.logprobs) + _sg(sequence)
  else:
    log_ratio = jnp.broadcast_to(sequence, x.mask.shape)
  ratio = jnp.exp(jnp.minimum(log_ratio, log_ratio_max))
  unclipped, clipped = _inputs.ppo_clip_terms(x.advantages, ratio, clip_low,
                                              clip_high)
  return _inputs.finish(x, jnp.maximum(unclipped, clipped), return_metrics,
                        clipped=clipped > unclipped)


def gspo_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                     advantages: ArrayLike, mask: ArrayLike, *,
                     clip_low: float = 0.2, clip_high: float = 0.2,
                     log_ratio_max: float = 10.0, return_metrics: bool = False):
  """GSPO with the sequence-level importance ratio (gradient through it).

  s_b = exp(min((1/|y_b|) Σ_t m·(logp − logp_old), 10)),
  L_bt = max(−A_bt·s_b, −A_bt·clip(s_b, 1−εl, 1+εh)).

  The gradient flows through the length-normalised sum of log-ratios, as in
  the GSPO objective and TRL `importance_sampling_level="sequence"`. With
  row-constant advantages and seq-mean-token-mean aggregation its value and
  gradient equal `gspo_token` (the form verl registers as `gspo`). verl
  forces seq-mean-token-mean for this loss (`PEER_AGGREGATION`); TRL keeps
  its loss type. No dual clip. The clamp at 10 on the log-ratio is verl's
  (TRL has none; equal whenever the mean log-ratio is ≤ 10).
  See "Group Sequence Policy Optimization" (Zheng et al., arXiv 2507.18071).

  Args:
    logprobs, old_logprobs, advantages, mask: the shared policy-loss inputs
      ([B, T]; see `cajax.losses`).
    clip_low: εl (the GSPO paper uses much smaller ranges, e.g. 3e-4).
    clip_high: εh (GSPO paper: 4e-4).
    log_ratio_max: upper clamp of the sequence log-ratio.
    return_metrics: also return the metrics dict.

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.
  """
  return _gspo_loss(logprobs, old_logprobs, advantages, mask, clip_low,
                    clip_high, log_ratio_max, return_metrics,
                    token_gradient=False)


def gspo_token_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                           advantages: ArrayLike, mask: ArrayLike, *,
                           clip_low: float = 0.2, clip_high: float = 0.2,
                           log_ratio_max: float = 10.0,
                           return_metrics: bool = False):
  """GSPO-token: sequence ratio value with a per-token gradient.

  s_bt = exp(min(logp_bt − sg(logp_bt) + sg(ℓ_b), 10)),
  ℓ_b = (1/|y_b|) Σ_t m·(logp − logp_old),
  L_bt = max(−A_bt·s_bt, −A_bt·clip(s_bt, 1−εl, 1+εh)).

  The value of s_bt is the sequence ratio; its gradient is s_b·∇logp_bt, so
  token-level advantages weight each token's own gradient. This is verl's
  `compute_policy_loss_gspo` (which forces seq-mean-token-mean), TRL's
  experimental `sequence_token` level and Tunix `gspo-token`. No dual clip.
  See "Group Sequence Policy Optimization" (Zheng et al., arXiv 2507.18071),
  GSPO-token variant.

  Args:
    logprobs, old_logprobs, advantages, mask: the shared policy-loss inputs
      ([B, T]; see `cajax.losses`).
    clip_low: εl.
    clip_high: εh.
    log_ratio_max: upper clamp of the combined log-ratio (verl: 10).
    return_metrics: also return the metrics dict.

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.
  """
  return _gspo_loss(logprobs, old_logprobs, advantages, mask, clip_low,
                    clip_high, log_ratio_max, return_metrics,
                    token_gradient=True)


def geo_mean_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                         advantages: ArrayLike, mask: ArrayLike, *,
                         clip_low: float = 0.2, clip_high: float = 0.2,
                         log_ratio_clip: float = 20.0,
                         return_metrics: bool = False):
  """GMPO: maximise the geometric mean of clipped token ratios per sequence.

  σ = sign(A),  ℓ_t = σ·min(σ·logr_t, σ·clip(logr_t, −εl, εh)),
  R_b = exp(Σ_t m·ℓ_t / |y_b|),  Ā_b = Σ_t m·A_t / |y_b|,  L_b = −Ā_b·R_b.

  The clip is in log space (GMPO recommends wider ranges, e.g. 0.4). The
  per-token output is the row loss L_b repeated on every valid token, so
  `aggregate(..., "seq-mean-token-mean")` gives the mean of L_b over
  non-empty rows, with the gradient of verl's per-sequence loss. verl
  divides by all B rows (`torch.mean`), including empty ones whose L_b is 0;
  the two agree whenever every row has a valid token. The ±20 clamp of
  logr is verl's commented-out line, applied here so that R_b stays finite.
  See "Geometric-Mean Policy Optimization" (Zhao et al., arXiv 2507.20673);
  verl `compute_policy_loss_geo_mean`.

  Args:
    logprobs, old_logprobs, advantages, mask: the shared policy-loss inputs
      ([B, T]; see `cajax.losses`).
    clip_low: εl of the log-ratio clip.
    clip_high: εh of the log-ratio clip.
    log_ratio_clip: symmetric clamp of the log-ratio.
    return_metrics: also return the metrics dict (`clipfrac`: clipped tokens
      with A > 0, `clipfrac_lower`: with A < 0).

  Returns:
    f32[B, T] per-token loss (the row loss on valid tokens), 0 at masked
    tokens (and metrics if asked).

  Raises:
    ValueError: on shape mismatches or out-of-range hyperparameters.
  """
  clip_low, clip_high = _inputs.check_clip(clip_low, clip_high)
  log_ratio_clip = _inputs.check_positive(log_ratio_clip, "log_ratio_clip")
  x = _inputs.Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, _ = x.clamped_ratio(log_ratio_clip)
  sign = jnp.sign(x.advantages)
  clipped = jnp.clip(log_ratio, -clip_low, clip_high)
  pessimistic = sign * jnp.minimum(sign * log_ratio, sign * clipped)
  mean_log_ratio = masking.masked_mean(pessimistic, x.mask, axis=-1, eps=0.0)
  mean_adv = masking.masked_mean(x.advantages, x.mask, axis=-1, eps=0.0)
  row_loss = -mean_adv * jnp.exp(mean_log_ratio)
  was_clipped = log_ratio != clipped
  return _inputs.finish(x, masking.broadcast_to_tokens(row_loss, x.mask),
                        return_metrics, log_ratio=log_ratio,
                        clipped=was_clipped & (x.advantages > 0),
                        clipped_lower=was_clipped & (x.advantages < 0))


def opmd_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                     advantages: ArrayLike, mask: ArrayLike, *,
                     tau: float = 1.0, return_metrics: bool = False):
  """OPMD: Kimi k1.5's online policy mirror descent surrogate.

  Kimi k1.5 regresses the sequence log-ratio on the centred reward,
  min_θ E[(r − r̄ − τ·ℓ_b)²], ℓ_b = log π_θ(y_b)/π_old(y_b) = Σ_t m·logr_t,
  whose ascent direction they state as A·∇ℓ_b − (τ/2)·∇ℓ_b². [GAP] cajax
  defines the per-row loss with exactly that gradient (the squared loss
  divided by 2τ, minus the θ-independent A²/(2τ), so it is 0 on-policy),
  generalised to token advantages:
    L_b = −Σ_t m·A_t·logr_t + (τ/2)·ℓ_b²,
  which for a row-constant advantage A_b equals ((A_b − τℓ_b)² − A_b²)/(2τ).
  It is returned per token as L_bt = −(A_t − (τ/2)·ℓ_b)·logr_t, whose row
  sum is L_b (value and gradient), so `aggregate(..., "seq-mean-token-sum")`
  gives Kimi's mean over samples. `advantages` should be r − r̄ (Kimi uses
  the group mean reward as the estimate of τ·log Z). Trinity-RFT's `opmd`
  loss, −A·logp/(1 + τ), is a different (first-order) simplification and is
  not reproduced.
  See "Kimi k1.5: Scaling Reinforcement Learning with LLMs" (Kimi Team,
  arXiv 2501.12599), §2.3.

  Args:
    logprobs: [B, T] current-policy token log-probabilities.
    old_logprobs: [B, T] behaviour (previous iterate) log-probabilities.
    advantages: [B, T] (or [B]) centred rewards r − r̄.
    mask: [B, T] bool, True on trainable tokens.
    tau: τ > 0, strength of the relative-entropy regulariser.
    return_metrics: also return the metrics dict.

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.

  Raises:
    ValueError: on shape mismatches or τ ≤ 0.
  """
  tau = _inputs.check_positive(tau, "tau")
  x = _inputs.Inputs(logprobs, old_logprobs, advantages, mask)
  seq_log_ratio = masking.masked_sum(x.log_ratio, x.mask, axis=-1)[:, None]
  loss = -(x.advantages - 0.5 * tau * seq_log_ratio) * x.log_ratio
  return _inputs.finish(x, loss, return_metrics)
