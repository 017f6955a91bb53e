"""Covariance-selected policy losses: Clip-Cov and KL-Cov (Cui et al., arXiv
2505.22617): a few tokens whose advantage and log-prob covary most are
detached (Clip-Cov) or penalised (KL-Cov) to keep the entropy from
collapsing.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import masking
from cajax.losses import _inputs

__all__ = ["clip_cov_policy_loss", "kl_cov_policy_loss"]

_sg = jax.lax.stop_gradient


def _rank_ascending(score) -> jax.Array:
  """Rank (0 = smallest) of every entry of `score` over the whole array.

  Ties keep the flat (row-major) order, so the choice is deterministic.
  """
  flat = score.reshape(-1)
  order = jnp.argsort(flat, stable=True)
  ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(
      jnp.arange(flat.size, dtype=jnp.int32))
  return ranks.reshape(score.shape)


def _selection_count(mask, fraction: float) -> jax.Array:
  """max(⌊fraction·N⌋, 1) with N the number of valid tokens (float32)."""
  count = masking.masked_count(mask)
  return jnp.maximum(jnp.floor(fraction * count), 1.0)


def _batch_covariance(inputs: _inputs.Inputs) -> jax.Array:
  """sg[(A − MM(A)) · (logp − MM(logp))] with batch-global masked means."""
  adv_mean = masking.masked_mean(inputs.advantages, inputs.mask)
  lp = _sg(inputs.logprobs)
  lp_mean = masking.masked_mean(lp, inputs.mask)
  return (inputs.advantages - adv_mean) * (lp - lp_mean)


def clip_cov_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                         advantages: ArrayLike, mask: ArrayLike, *,
                         clip_low: float = 0.2, clip_high: float = 0.2,
                         clip_cov_ratio: float = 2e-4, clip_cov_lb: float = 1.0,
                         clip_cov_ub: float = 5.0, selection: str = "random",
                         rng: jax.Array | None = None,
                         log_ratio_clip: float = 20.0,
                         return_metrics: bool = False):
  """Clip-Cov: PPO clip, plus detaching a few high-covariance tokens.

  cov_t = (A_t − MM(A))·(logp_t − MM(sg logp))   (batch-global masked means),
  candidates: valid, not already clipped by PPO, lb < cov_t < ub;
  k = max(⌊ρ·N⌋, 1) of them (N valid tokens) get corr = 0,
  L = max(−A·r, −A·clip(r, 1−εl, 1+εh))·corr   (no dual clip).

  verl draws the k tokens uniformly at random (`torch.randperm`);
  `selection="random"` does the same with the explicit `rng` key (uniform
  keys, k smallest), `selection="topk"` deterministically takes the k
  candidates with the largest covariance ([GAP]: not in verl). k is
  computed in float32 (verl: Python float64 `int(ratio·N)`). Selection uses
  the whole batch, so like verl the loss depends on how the batch is split
  into micro-batches. The ±20 clamp of logr is not in verl (finiteness).
  See "The Entropy Mechanism of Reinforcement Learning for Reasoning Language
  Models" (Cui et al., arXiv 2505.22617); verl
  `compute_policy_loss_clip_cov`.

  Args:
    logprobs, old_logprobs, advantages, mask: the shared policy-loss inputs
      ([B, T]; see `cajax.losses`).
    clip_low: εl.
    clip_high: εh.
    clip_cov_ratio: ρ, fraction of valid tokens to detach.
    clip_cov_lb: lower covariance bound of the candidates.
    clip_cov_ub: upper covariance bound of the candidates.
    selection: "random" (verl) or "topk".
    rng: PRNG key, required for `selection="random"`.
    log_ratio_clip: symmetric clamp of the log-ratio before exp.
    return_metrics: also return the metrics dict (`clipfrac`: fraction of
      detached tokens, verl's `pg_clipfrac` for this loss).

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.

  Raises:
    ValueError: on shape mismatches, bad hyperparameters or a missing rng.
  """
  clip_low, clip_high = _inputs.check_clip(clip_low, clip_high)
  clip_cov_ratio = _inputs.check_ratio(clip_cov_ratio, "clip_cov_ratio")
  clip_cov_lb = _checks.check_number(clip_cov_lb, "clip_cov_lb",
                                     allow_inf=True)
  clip_cov_ub = _checks.check_number(clip_cov_ub, "clip_cov_ub",
                                     allow_inf=True)
  _checks.check_choice(selection, ("random", "topk"), "selection")
  log_ratio_clip = _inputs.check_positive(log_ratio_clip, "log_ratio_clip")
  x = _inputs.Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, ratio = x.clamped_ratio(log_ratio_clip)
  unclipped, clipped = _inputs.ppo_clip_terms(x.advantages, ratio, clip_low,
                                              clip_high)
  cov = _batch_covariance(x)
  candidate = (x.mask & ~(clipped > unclipped) & (cov > clip_cov_lb)
               & (cov < clip_cov_ub))
  if selection == "random":
    if rng is None:
      raise ValueError("clip_cov with selection='random' needs an rng key, "
                       "got rng=None (or use selection='topk').")
    score = jax.random.uniform(rng, x.mask.shape)
  else:
    score = -cov
  score = jnp.where(candidate, score, jnp.inf)
  count = _selection_count(x.mask, clip_cov_ratio)
  detached = candidate & (_rank_ascending(score) < count)
  loss = jnp.where(detached, 0.0, jnp.maximum(unclipped, clipped))
  return _inputs.finish(x, loss, return_metrics, log_ratio=log_ratio,
                        clipped=detached)


def kl_cov_policy_loss(logprobs: ArrayLike, old_logprobs: ArrayLike,
                       advantages: ArrayLike, mask: ArrayLike, *,
                       kl_cov_ratio: float = 2e-4, ppo_kl_coef: float = 0.1,
                       log_ratio_clip: float = 20.0,
                       return_metrics: bool = False):
  """KL-Cov: unclipped surrogate plus |logr| on the top-covariance tokens.

  cov_t = sg[(A_t − mean A)·(logp_t − mean logp)] over valid tokens;
  the k = max(⌊ρ·N⌋, 1) valid tokens with the largest cov get
  L = −A·r + β·|logr|, all others L = −A·r (no clipping at all).

  `ppo_kl_coef` defaults to verl's config value 0.1 (the code fallback is
  1.0). Ties in cov are broken by row-major position (torch.topk leaves it
  unspecified). Selection uses the whole batch, so the loss depends on the
  micro-batch split, as in verl. The ±20 clamp of logr is not in verl.
  See "The Entropy Mechanism of Reinforcement Learning for Reasoning Language
  Models" (Cui et al., arXiv 2505.22617); verl `compute_policy_loss_kl_cov`.

  Args:
    logprobs, old_logprobs, advantages, mask: the shared policy-loss inputs
      ([B, T]; see `cajax.losses`).
    kl_cov_ratio: ρ, fraction of valid tokens penalised.
    ppo_kl_coef: β, weight of |logr| on the selected tokens.
    log_ratio_clip: symmetric clamp of the log-ratio.
    return_metrics: also return the metrics dict (`clipfrac`: fraction of
      penalised tokens).

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.

  Raises:
    ValueError: on shape mismatches or bad hyperparameters.
  """
  kl_cov_ratio = _inputs.check_ratio(kl_cov_ratio, "kl_cov_ratio")
  ppo_kl_coef = _checks.check_number(ppo_kl_coef, "ppo_kl_coef", low=0.0)
  log_ratio_clip = _inputs.check_positive(log_ratio_clip, "log_ratio_clip")
  x = _inputs.Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, ratio = x.clamped_ratio(log_ratio_clip)
  surrogate = -x.advantages * ratio
  score = jnp.where(x.mask, -_batch_covariance(x), jnp.inf)
  count = _selection_count(x.mask, kl_cov_ratio)
  selected = x.mask & (_rank_ascending(score) < count)
  loss = surrogate + jnp.where(selected, ppo_kl_coef * jnp.abs(log_ratio),
                               0.0)
  return _inputs.finish(x, loss, return_metrics, log_ratio=log_ratio,
                        clipped=selected)
