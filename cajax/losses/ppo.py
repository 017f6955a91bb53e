"""Token-ratio policy losses: PPO clip (vanilla), CISPO, SAPO, GPG, DRO.

Each takes the shared inputs `(logprobs, old_logprobs, advantages, mask)`
and returns the per-token loss f32[B, T] (see `cajax.losses`).
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax.losses import _inputs

__all__ = ["cispo_policy_loss", "dro_policy_loss", "gpg_policy_loss",
           "sapo_policy_loss", "vanilla_policy_loss"]

_sg = jax.lax.stop_gradient


def vanilla_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                        advantages: ArrayLike, mask: ArrayLike, *,
                        clip_low: float = 0.2, clip_high: float = 0.2,
                        clip_ratio_c: float | None = 3.0,
                        log_ratio_clip: float = 20.0,
                        return_metrics: bool = False):
  """PPO clipped surrogate with asymmetric (clip-higher) and dual clip.

  r = exp(clip(logp − logp_old, −20, 20)),
  L = max(−A·r, −A·clip(r, 1−εl, 1+εh)),
  and for A < 0 (dual clip) L ← min(L, −A·c).

  This is verl's `compute_policy_loss_vanilla` (dual clip always on there,
  c = 3); `clip_ratio_c=None` gives the TRL/rlax form without dual clip.
  Defaults ε = 0.2 both ways are every peer's default; DAPO's clip-higher
  uses `clip_high=0.28`.
  See "Proximal Policy Optimization Algorithms" (Schulman et al., arXiv
  1707.06347); dual clip: "Mastering Complex Control in MOBA Games with Deep
  Reinforcement Learning" (Ye et al., arXiv 1912.09729); clip-higher: "DAPO:
  An Open-Source LLM Reinforcement Learning System at Scale" (Yu et al.,
  arXiv 2503.14476).

  Args:
    logprobs, old_logprobs, advantages, mask: the shared policy-loss inputs
      ([B, T]; see `cajax.losses`).
    clip_low: εl, the ratio is clipped below at 1 − εl.
    clip_high: εh, the ratio is clipped above at 1 + εh.
    clip_ratio_c: dual-clip constant c > 1, or None to disable.
    log_ratio_clip: symmetric clamp of the log-ratio before exp.
    return_metrics: also return the metrics dict (see `cajax.losses`);
      `clipfrac_lower` is verl's dual-clip fraction.

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.
  """
  clip_low, clip_high = _inputs.check_clip(clip_low, clip_high)
  if clip_ratio_c is not None:
    clip_ratio_c = _checks.check_number(clip_ratio_c, "clip_ratio_c", low=1.0,
                                        low_open=True)
  log_ratio_clip = _inputs.check_positive(log_ratio_clip, "log_ratio_clip")
  x = _inputs.Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, ratio = x.clamped_ratio(log_ratio_clip)
  unclipped, clipped = _inputs.ppo_clip_terms(x.advantages, ratio, clip_low,
                                              clip_high)
  loss = jnp.maximum(unclipped, clipped)
  lower = None
  if clip_ratio_c is not None:
    dual = -x.advantages * clip_ratio_c
    negative = x.advantages < 0
    lower = (loss > dual) & negative
    loss = jnp.where(negative, jnp.minimum(loss, dual), loss)
  return _inputs.finish(x, loss, return_metrics, log_ratio=log_ratio,
                        clipped=clipped > unclipped, clipped_lower=lower)


def cispo_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                      advantages: ArrayLike, mask: ArrayLike, *,
                      clip_low: float = 0.2, clip_high: float = 0.2,
                      ratio_cap: float | None = None,
                      log_ratio_clip: float = 20.0,
                      return_metrics: bool = False):
  """CISPO: REINFORCE weighted by a clipped, stop-gradient IS ratio.

  r = exp(clip(logp − logp_old, −20, 20)),
  L = −sg(clip(r, 1−εl, 1+εh))·A·logp            (verl),
  L = −sg(min(r, cap))·A·logp  if `ratio_cap`     (TRL, cap e.g. 5.0).

  Every token keeps a gradient (−w·A·∇logp); clipping only bounds its
  weight. See "MiniMax-M1: Scaling Test-Time Compute Efficiently with
  Lightning Attention" (MiniMax, arXiv 2506.13585).

  Args:
    logprobs, old_logprobs, advantages, mask: the shared policy-loss inputs
      ([B, T]; see `cajax.losses`).
    clip_low: εl (verl form).
    clip_high: εh (verl form).
    ratio_cap: if set, TRL's absolute upper cap with no lower clip (then
      `clip_low`/`clip_high` are unused).
    log_ratio_clip: symmetric clamp of the log-ratio before exp.
    return_metrics: also return the metrics dict (`clipfrac`: tokens whose
      weight was clipped).

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.
  """
  clip_low, clip_high = _inputs.check_clip(clip_low, clip_high)
  ratio_cap = _inputs.check_optional_positive(ratio_cap, "ratio_cap")
  log_ratio_clip = _inputs.check_positive(log_ratio_clip, "log_ratio_clip")
  x = _inputs.Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, ratio = x.clamped_ratio(log_ratio_clip)
  if ratio_cap is None:
    weight = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  else:
    weight = jnp.minimum(ratio, ratio_cap)
  loss = -_sg(weight) * x.advantages * x.logprobs
  return _inputs.finish(x, loss, return_metrics, log_ratio=log_ratio,
                        clipped=ratio != weight)


def sapo_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                     advantages: ArrayLike, mask: ArrayLike, *,
                     tau_pos: float = 1.0, tau_neg: float = 1.05,
                     log_ratio_clip: float = 20.0,
                     return_metrics: bool = False):
  """SAPO: a smooth sigmoid gate on the token ratio instead of a hard clip.

  τ = τ_pos if A > 0 else τ_neg,  f(r) = σ(τ·(r − 1))·4/τ,  L = −f(r)·A,
  with r = exp(clip(logp − logp_old, −20, 20)). At r = 1 the gradient equals
  the unclipped surrogate's (f′(1) = 1). verl forces seq-mean-token-mean
  (`PEER_AGGREGATION`); TRL aggregates it like `grpo`.
  See "Soft Adaptive Policy Optimization" (arXiv 2511.20347); verl
  `compute_policy_loss_sapo`.

  Args:
    logprobs, old_logprobs, advantages, mask: the shared policy-loss inputs
      ([B, T]; see `cajax.losses`).
    tau_pos: gate temperature for positive advantages.
    tau_neg: gate temperature for non-positive advantages.
    log_ratio_clip: symmetric clamp of the log-ratio before exp.
    return_metrics: also return the metrics dict.

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.

  Raises:
    ValueError: on shape mismatches or non-positive temperatures.
  """
  tau_pos = _inputs.check_positive(tau_pos, "tau_pos")
  tau_neg = _inputs.check_positive(tau_neg, "tau_neg")
  log_ratio_clip = _inputs.check_positive(log_ratio_clip, "log_ratio_clip")
  x = _inputs.Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, ratio = x.clamped_ratio(log_ratio_clip)
  tau = jnp.where(x.advantages > 0, tau_pos, tau_neg)
  gate = jax.nn.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)
  return _inputs.finish(x, -gate * x.advantages, return_metrics,
                        log_ratio=log_ratio)


def gpg_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                    advantages: ArrayLike, mask: ArrayLike, *,
                    return_metrics: bool = False):
  """GPG / REINFORCE: the plain policy-gradient loss L = −A·logp.

  `old_logprobs` is only used for the `ppo_kl` metric and may be None.
  See "GPG: A Simple and Strong Reinforcement Learning Baseline for Model
  Reasoning" (Chu et al., arXiv 2504.02546); verl
  `compute_policy_loss_gpg`.

  Args:
    logprobs: [B, T] current-policy token log-probabilities.
    old_logprobs: [B, T] behaviour-policy log-probabilities, or None.
    advantages: [B, T] (or [B]) advantages.
    mask: [B, T] bool, True on trainable tokens.
    return_metrics: also return the metrics dict.

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.

  Raises:
    ValueError: on shape mismatches.
  """
  x = _inputs.Inputs(logprobs, old_logprobs, advantages, mask,
                     need_old=False)
  return _inputs.finish(x, -x.advantages * x.logprobs, return_metrics)


def dro_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                    advantages: ArrayLike, mask: ArrayLike, *,
                    beta: float = 1.0, return_metrics: bool = False):
  """DRO: policy gradient with a quadratic log-ratio (trust-region) penalty.

  L = −(logp·A − ½·β·(logp − logp_old)²).

  β > 0 is required. [GAP] verl's default β is not recorded in the
  reference; 1.0 (Tinker's default) is used.
  See "Offline Regularised Reinforcement Learning for Large Language Models
  Alignment" (Richemond et al., arXiv 2405.19107); verl
  `compute_policy_loss_dro`.

  Args:
    logprobs, old_logprobs, advantages, mask: the shared policy-loss inputs
      ([B, T]; see `cajax.losses`).
    beta: β > 0, weight of the quadratic penalty.
    return_metrics: also return the metrics dict (see `cajax.losses`).

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.

  Raises:
    ValueError: on shape mismatches or β ≤ 0.
  """
  beta = _inputs.check_positive(beta, "beta")
  x = _inputs.Inputs(logprobs, old_logprobs, advantages, mask)
  loss = -(x.logprobs * x.advantages - 0.5 * beta * jnp.square(x.log_ratio))
  return _inputs.finish(x, loss, return_metrics)
