"""Policy, KL, entropy and value losses over padded `[B, T]` token batches.

Every policy loss returns a per-token loss `f32[B, T]` that is exactly 0 at
masked tokens; `aggregate` turns such a matrix into a `(sum, denominator)`
pair with one of the named aggregation modes. Pairs from micro-batches or
devices combine exactly: sum the sums, sum the denominators, divide once
(`safe_divide`). This is Tunix's deferred `WeightedMetric` pattern and gives
verl's global-batch normalisation without passing global counts around.

Shared conventions:

* `logprobs` are the current policy's token log-probabilities (the only
  argument gradients are meant to flow through), `old_logprobs` those of the
  behaviour policy, `advantages` `[B, T]` (or `[B]`, broadcast over tokens).
  `old_logprobs` and `advantages` are stop-gradient'ed.
* Values at masked tokens are ignored, even when NaN or inf, and receive a
  zero gradient.
* The log-ratio `logr = logprobs − old_logprobs` is clamped to
  `±log_ratio_clip` (verl's ±20) wherever it is exponentiated, so finite
  inputs never give inf/NaN; with `|logr| ≤ 20` the clamp changes nothing.
* Sequence-level losses (`gspo`, `gspo_token`, `sapo`, `geo_mean`, `opmd`)
  are still returned per token; `PEER_AGGREGATION` names the aggregation mode
  with which `aggregate` reproduces the peer's scalar loss (verl forces
  seq-mean-token-mean for gspo and sapo).
* Every policy loss returns `f32[B, T]`, exactly 0 at masked tokens, and
  raises ValueError (naming the argument and shapes) on shape mismatches or
  out-of-range hyperparameters.
* Every loss accepts `return_metrics=True` and then returns
  `(per_token_loss, metrics)` with float32 scalars `ppo_kl` (masked mean of
  −logr, verl's `ppo_kl`), `clipfrac` and `clipfrac_lower` (0 where the
  method has no such notion).
"""

import inspect
from typing import Callable

import jax
import jax.numpy as jnp

from cajax import _checks
from cajax import masking

AGGREGATION_MODES = ("token-mean", "token-sum", "seq-mean-token-mean",
                     "seq-mean-token-sum", "seq-mean-token-sum-norm")

# Aggregation mode that reproduces each peer's scalar policy loss (verl
# defaults: token-mean unless the peer forces another reduction).
PEER_AGGREGATION = {
    "vanilla": "token-mean",
    "gspo": "seq-mean-token-mean",
    "gspo_token": "seq-mean-token-mean",
    "cispo": "token-mean",
    "sapo": "seq-mean-token-mean",
    "gpg": "token-mean",
    "geo_mean": "seq-mean-token-mean",
    "clip_cov": "token-mean",
    "kl_cov": "token-mean",
    "dro": "token-mean",
    "opmd": "seq-mean-token-sum",
}

KL_KINDS = ("k1", "abs", "k2", "k3", "k1+", "abs+", "k2+", "k3+")
_KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}

_sg = jax.lax.stop_gradient


# --------------------------------------------------------------------------
# Shared preparation and metrics.


class _Inputs:
  """Validated float32 inputs of a policy loss, zeroed at masked tokens."""

  def __init__(self, logprobs, old_logprobs, advantages, mask,
               need_old: bool = True):
    _checks.check_batch(mask)
    logprobs = _checks.as_float_like(logprobs, mask, "logprobs")
    self.mask = _checks.as_mask(mask)
    self.logprobs = jnp.where(self.mask, logprobs, 0.0)
    if old_logprobs is None:
      if need_old:
        raise ValueError("old_logprobs is required by this policy loss, got "
                         "None.")
      self.old_logprobs = None
      self.log_ratio = None
    else:
      self.old_logprobs = _sg(jnp.where(self.mask, _checks.as_float_like(
          old_logprobs, mask, "old_logprobs"), 0.0))
      self.log_ratio = self.logprobs - self.old_logprobs
    self.advantages = _sg(_token_advantages(advantages, self.mask))

  def masked(self, loss) -> jax.Array:
    return jnp.where(self.mask, loss, 0.0)

  def clamped_ratio(self, log_ratio_clip: float) -> tuple[jax.Array,
                                                         jax.Array]:
    """(clamped log-ratio, its exp)."""
    _check_positive(log_ratio_clip, "log_ratio_clip")
    clamped = jnp.clip(self.log_ratio, -log_ratio_clip, log_ratio_clip)
    return clamped, jnp.exp(clamped)

  def metrics(self, log_ratio=None, clipped=None, clipped_lower=None):
    """verl's `ppo_kl`, `pg_clipfrac` and `pg_clipfrac_lower`."""
    if log_ratio is None:
      log_ratio = self.log_ratio
    zero = jnp.zeros(self.mask.shape, jnp.float32)

    def frac(x):
      return masking.masked_mean(zero if x is None else x, self.mask)

    return {"ppo_kl": _sg(frac(None if log_ratio is None else -log_ratio)),
            "clipfrac": _sg(frac(clipped)),
            "clipfrac_lower": _sg(frac(clipped_lower))}


def _token_advantages(advantages, mask) -> jax.Array:
  if jnp.ndim(advantages) == 1:
    return masking.broadcast_to_tokens(advantages, mask, "advantages")
  _checks.check_rank(advantages, (1, 2), "advantages")
  return jnp.where(mask, _checks.as_float_like(advantages, mask, "advantages"),
                   0.0)


def _check_positive(value, name: str) -> None:
  if not value > 0:
    raise ValueError(f"{name} must be > 0, got {value!r}.")


def _check_clip(clip_low, clip_high) -> None:
  if not 0 <= clip_low < 1:
    raise ValueError(f"clip_low must be in [0, 1), got {clip_low!r}.")
  if not clip_high >= 0:
    raise ValueError(f"clip_high must be >= 0, got {clip_high!r}.")


def _finish(inputs: _Inputs, loss, return_metrics: bool, **metric_kw):
  loss = inputs.masked(loss)
  if return_metrics:
    return loss, inputs.metrics(**metric_kw)
  return loss


def _ppo_clip_terms(advantages, ratio, clip_low, clip_high):
  """(−A·r, −A·clip(r, 1−εl, 1+εh)); their max is the PPO-clip loss."""
  _check_clip(clip_low, clip_high)
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  return unclipped, clipped


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
  if not 0 < fraction <= 1:
    raise ValueError(f"the selection ratio must be in (0, 1], got "
                     f"{fraction!r}.")
  count = masking.masked_count(mask)
  return jnp.maximum(jnp.floor(fraction * count), 1.0)


def _batch_covariance(inputs: _Inputs) -> jax.Array:
  """sg[(A − MM(A)) · (logp − MM(logp))] with batch-global masked means."""
  adv_mean = masking.masked_mean(inputs.advantages, inputs.mask)
  lp = _sg(inputs.logprobs)
  lp_mean = masking.masked_mean(lp, inputs.mask)
  return (inputs.advantages - adv_mean) * (lp - lp_mean)


# --------------------------------------------------------------------------
# Policy losses.


def vanilla_policy_loss(logprobs, old_logprobs, advantages, mask, *,
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
      ([B, T]; see the module docstring).
    clip_low: εl, the ratio is clipped below at 1 − εl.
    clip_high: εh, the ratio is clipped above at 1 + εh.
    clip_ratio_c: dual-clip constant c > 1, or None to disable.
    log_ratio_clip: symmetric clamp of the log-ratio before exp.
    return_metrics: also return the metrics dict (see module docstring);
      `clipfrac_lower` is verl's dual-clip fraction.

  Returns:
    The per-token loss (and metrics), as in the module docstring.
  """
  x = _Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, ratio = x.clamped_ratio(log_ratio_clip)
  unclipped, clipped = _ppo_clip_terms(x.advantages, ratio, clip_low,
                                       clip_high)
  loss = jnp.maximum(unclipped, clipped)
  lower = None
  if clip_ratio_c is not None:
    if not clip_ratio_c > 1:
      raise ValueError(f"clip_ratio_c must be > 1, got {clip_ratio_c!r}.")
    dual = -x.advantages * clip_ratio_c
    negative = x.advantages < 0
    lower = (loss > dual) & negative
    loss = jnp.where(negative, jnp.minimum(loss, dual), loss)
  return _finish(x, loss, return_metrics, log_ratio=log_ratio,
                 clipped=clipped > unclipped, clipped_lower=lower)


def _sequence_log_ratio(x: _Inputs) -> jax.Array:
  """[B, 1] mean log-ratio over the valid tokens of each row."""
  return masking.masked_mean(x.log_ratio, x.mask, axis=-1, eps=0.0)[:, None]


def _gspo_loss(x: _Inputs, log_ratio, clip_low, clip_high, log_ratio_max,
               return_metrics):
  _check_positive(log_ratio_max, "log_ratio_max")
  ratio = jnp.exp(jnp.minimum(log_ratio, log_ratio_max))
  unclipped, clipped = _ppo_clip_terms(x.advantages, ratio, clip_low,
                                       clip_high)
  return _finish(x, jnp.maximum(unclipped, clipped), return_metrics,
                 clipped=clipped > unclipped)


def gspo_policy_loss(logprobs, old_logprobs, advantages, mask, *,
                     clip_low: float = 0.2, clip_high: float = 0.2,
                     log_ratio_max: float = 10.0,
                     return_metrics: bool = False):
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
      ([B, T]; see the module docstring).
    clip_low: εl (the GSPO paper uses much smaller ranges, e.g. 3e-4).
    clip_high: εh (GSPO paper: 4e-4).
    log_ratio_max: upper clamp of the sequence log-ratio.
    return_metrics: also return the metrics dict.

  Returns:
    The per-token loss (and metrics), as in the module docstring.
  """
  x = _Inputs(logprobs, old_logprobs, advantages, mask)
  seq = jnp.broadcast_to(_sequence_log_ratio(x), x.mask.shape)
  return _gspo_loss(x, seq, clip_low, clip_high, log_ratio_max,
                    return_metrics)


def gspo_token_policy_loss(logprobs, old_logprobs, advantages, mask, *,
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
      ([B, T]; see the module docstring).
    clip_low: εl.
    clip_high: εh.
    log_ratio_max: upper clamp of the combined log-ratio (verl: 10).
    return_metrics: also return the metrics dict.

  Returns:
    The per-token loss (and metrics), as in the module docstring.
  """
  x = _Inputs(logprobs, old_logprobs, advantages, mask)
  combined = x.logprobs - _sg(x.logprobs) + _sg(_sequence_log_ratio(x))
  return _gspo_loss(x, combined, clip_low, clip_high, log_ratio_max,
                    return_metrics)


def cispo_policy_loss(logprobs, old_logprobs, advantages, mask, *,
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
      ([B, T]; see the module docstring).
    clip_low: εl (verl form).
    clip_high: εh (verl form).
    ratio_cap: if set, TRL's absolute upper cap with no lower clip (then
      `clip_low`/`clip_high` are unused).
    log_ratio_clip: symmetric clamp of the log-ratio before exp.
    return_metrics: also return the metrics dict (`clipfrac`: tokens whose
      weight was clipped).

  Returns:
    The per-token loss (and metrics), as in the module docstring.
  """
  x = _Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, ratio = x.clamped_ratio(log_ratio_clip)
  if ratio_cap is None:
    _check_clip(clip_low, clip_high)
    weight = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  else:
    _check_positive(ratio_cap, "ratio_cap")
    weight = jnp.minimum(ratio, ratio_cap)
  loss = -_sg(weight) * x.advantages * x.logprobs
  return _finish(x, loss, return_metrics, log_ratio=log_ratio,
                 clipped=ratio != weight)


def sapo_policy_loss(logprobs, old_logprobs, advantages, mask, *,
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
      ([B, T]; see the module docstring).
    tau_pos: gate temperature for positive advantages.
    tau_neg: gate temperature for non-positive advantages.
    log_ratio_clip: symmetric clamp of the log-ratio before exp.
    return_metrics: also return the metrics dict.

  Returns:
    The per-token loss (and metrics), as in the module docstring.

  Raises:
    ValueError: on shape mismatches or non-positive temperatures.
  """
  _check_positive(tau_pos, "tau_pos")
  _check_positive(tau_neg, "tau_neg")
  x = _Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, ratio = x.clamped_ratio(log_ratio_clip)
  tau = jnp.where(x.advantages > 0, tau_pos, tau_neg)
  gate = jax.nn.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)
  return _finish(x, -gate * x.advantages, return_metrics,
                 log_ratio=log_ratio)


def gpg_policy_loss(logprobs, old_logprobs, advantages, mask, *,
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
    The per-token loss (and metrics), as in the module docstring.

  Raises:
    ValueError: on shape mismatches.
  """
  x = _Inputs(logprobs, old_logprobs, advantages, mask, need_old=False)
  return _finish(x, -x.advantages * x.logprobs, return_metrics)


def geo_mean_policy_loss(logprobs, old_logprobs, advantages, mask, *,
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
      ([B, T]; see the module docstring).
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
  _check_clip(clip_low, clip_high)
  x = _Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, _ = x.clamped_ratio(log_ratio_clip)
  sign = jnp.sign(x.advantages)
  clipped = jnp.clip(log_ratio, -clip_low, clip_high)
  pessimistic = sign * jnp.minimum(sign * log_ratio, sign * clipped)
  mean_log_ratio = masking.masked_mean(pessimistic, x.mask, axis=-1, eps=0.0)
  mean_adv = masking.masked_mean(x.advantages, x.mask, axis=-1, eps=0.0)
  row_loss = -mean_adv * jnp.exp(mean_log_ratio)
  was_clipped = log_ratio != clipped
  return _finish(x, masking.broadcast_to_tokens(row_loss, x.mask),
                 return_metrics, log_ratio=log_ratio,
                 clipped=was_clipped & (x.advantages > 0),
                 clipped_lower=was_clipped & (x.advantages < 0))


def clip_cov_policy_loss(logprobs, old_logprobs, advantages, mask, *,
                         clip_low: float = 0.2, clip_high: float = 0.2,
                         clip_cov_ratio: float = 2e-4,
                         clip_cov_lb: float = 1.0, clip_cov_ub: float = 5.0,
                         selection: str = "random",
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
      ([B, T]; see the module docstring).
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
    The per-token loss (and metrics), as in the module docstring.

  Raises:
    ValueError: on shape mismatches, bad hyperparameters or a missing rng.
  """
  _checks.check_choice(selection, ("random", "topk"), "selection")
  x = _Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, ratio = x.clamped_ratio(log_ratio_clip)
  unclipped, clipped = _ppo_clip_terms(x.advantages, ratio, clip_low,
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
  return _finish(x, loss, return_metrics, log_ratio=log_ratio,
                 clipped=detached)


def kl_cov_policy_loss(logprobs, old_logprobs, advantages, mask, *,
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
      ([B, T]; see the module docstring).
    kl_cov_ratio: ρ, fraction of valid tokens penalised.
    ppo_kl_coef: β, weight of |logr| on the selected tokens.
    log_ratio_clip: symmetric clamp of the log-ratio.
    return_metrics: also return the metrics dict (`clipfrac`: fraction of
      penalised tokens).

  Returns:
    The per-token loss (and metrics), as in the module docstring.
  """
  x = _Inputs(logprobs, old_logprobs, advantages, mask)
  log_ratio, ratio = x.clamped_ratio(log_ratio_clip)
  surrogate = -x.advantages * ratio
  score = jnp.where(x.mask, -_batch_covariance(x), jnp.inf)
  count = _selection_count(x.mask, kl_cov_ratio)
  selected = x.mask & (_rank_ascending(score) < count)
  loss = surrogate + jnp.where(selected, ppo_kl_coef * jnp.abs(log_ratio),
                               0.0)
  return _finish(x, loss, return_metrics, log_ratio=log_ratio,
                 clipped=selected)


def dro_policy_loss(logprobs, old_logprobs, advantages, mask, *,
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
      ([B, T]; see the module docstring).
    beta: β > 0, weight of the quadratic penalty.
    return_metrics: also return the metrics dict (see module docstring).

  Returns:
    The per-token loss (and metrics), as in the module docstring.

  Raises:
    ValueError: on shape mismatches or β ≤ 0.
  """
  x = _Inputs(logprobs, old_logprobs, advantages, mask)
  _check_positive(beta, "beta")
  loss = -(x.logprobs * x.advantages - 0.5 * beta * jnp.square(x.log_ratio))
  return _finish(x, loss, return_metrics)


def opmd_policy_loss(logprobs, old_logprobs, advantages, mask, *,
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
    The per-token loss (and metrics), as in the module docstring.

  Raises:
    ValueError: on shape mismatches or τ ≤ 0.
  """
  _check_positive(tau, "tau")
  x = _Inputs(logprobs, old_logprobs, advantages, mask)
  seq_log_ratio = masking.masked_sum(x.log_ratio, x.mask, axis=-1)[:, None]
  loss = -(x.advantages - 0.5 * tau * seq_log_ratio) * x.log_ratio
  return _finish(x, loss, return_metrics)


POLICY_LOSSES: dict[str, Callable[..., jax.Array]] = {
    "vanilla": vanilla_policy_loss,
    "gspo": gspo_policy_loss,
    "gspo_token": gspo_token_policy_loss,
    "cispo": cispo_policy_loss,
    "sapo": sapo_policy_loss,
    "gpg": gpg_policy_loss,
    "geo_mean": geo_mean_policy_loss,
    "clip_cov": clip_cov_policy_loss,
    "kl_cov": kl_cov_policy_loss,
    "dro": dro_policy_loss,
    "opmd": opmd_policy_loss,
}


def policy_loss_names() -> tuple[str, ...]:
  """Names accepted by `policy_loss`."""
  return tuple(POLICY_LOSSES)


def policy_loss(name: str, logprobs, old_logprobs, advantages, mask, *,
                return_metrics: bool = False, **kwargs):
  """Per-token policy loss selected by name.

  Dispatches to `<name>_policy_loss` (see each function for its equation,
  knobs and peer). Keyword arguments the chosen loss does not take raise
  ValueError rather than being ignored. Aggregate the result with
  `aggregate(loss, mask, mode=PEER_AGGREGATION[name])` to reproduce the
  peer's scalar loss.

  Args:
    name: one of `policy_loss_names()`.
    logprobs, old_logprobs, advantages, mask: the shared policy-loss inputs
      ([B, T]; see the module docstring).
    return_metrics: also return the metrics dict.
    **kwargs: the chosen loss's hyperparameters.

  Returns:
    The per-token loss (and metrics), as in the module docstring.

  Raises:
    ValueError: on an unknown name, an unknown keyword, shape mismatches or
      out-of-range hyperparameters.
  """
  _checks.check_choice(name, policy_loss_names(), "name")
  fn = POLICY_LOSSES[name]
  accepted = set(inspect.signature(fn).parameters) - {
      "logprobs", "old_logprobs", "advantages", "mask", "return_metrics"}
  unknown = sorted(set(kwargs) - accepted)
  if unknown:
    raise ValueError(f"policy loss {name!r} does not take {unknown}; it "
                     f"takes {sorted(accepted)}.")
  return fn(logprobs, old_logprobs, advantages, mask,
            return_metrics=return_metrics, **kwargs)


# --------------------------------------------------------------------------
# Aggregation.


def aggregate(per_token_loss, mask, mode: str = "token-mean", *,
              loss_scale_factor: float | None = None,
              num_micro_batches: int = 1) -> tuple[jax.Array, jax.Array]:
  """Reduces a per-token loss to a `(sum, denominator)` pair.

  With L the loss, m the mask, n_b = Σ_t m, S_b = Σ_t L·m and N_seq the
  number of rows with n_b > 0 (empty rows are excluded, as in verl):

  * token-mean: sum Σ_b S_b, denominator Σ_b n_b. verl token-mean; TRL
    bnpo (and dapo/cispo with the global count); Tunix token-mean; OpenRLHF
    `token_level_loss=True`.
  * token-sum: sum Σ_b S_b, denominator 1/`num_micro_batches`. verl
    token-sum.
  * seq-mean-token-mean: sum Σ_b S_b/n_b, denominator N_seq. verl; Tunix
    sequence-mean-token-mean; TRL grpo and OpenRLHF `token_level_loss=False`
    count empty rows too (equal when no row is empty).
  * seq-mean-token-sum: sum Σ_b S_b, denominator N_seq. verl; Tunix
    seq-mean-token-sum.
  * seq-mean-token-sum-norm: sum Σ_b S_b / C, denominator N_seq. verl
    (current); TRL dr_grpo (C = max_completion_length, rows counted as in
    grpo); Tunix sequence-mean-token-scale (C = its `norm`).

  C is `loss_scale_factor`, or T (`mask.shape[-1]`) when None, verl's
  current semantics (older verl divided the token sum by C only, like
  Tunix sequence-mean-token-sum-norm). C divides the sum, so micro-batches
  padded to different T keep verl's per-micro-batch behaviour; pass a
  constant C to make the loss independent of padding.

  Micro-batches and devices: summing the sums and the denominators of the
  pieces and dividing once (`safe_divide`) equals the full-batch value, for
  every mode. token-sum has no natural count, so each piece reports
  1/`num_micro_batches` (the total number of pieces) and the pieces' shares
  add up to 1.

  Args:
    per_token_loss: [B, T] per-token loss (values at masked tokens are
      ignored, even NaN).
    mask: [B, T] bool, True on tokens that count.
    mode: one of `AGGREGATION_MODES`.
    loss_scale_factor: C of seq-mean-token-sum-norm (ignored otherwise).
    num_micro_batches: number of pieces the token-sum batch is split into.

  Returns:
    (sum, denominator) float32 scalars; the loss is sum / denominator.

  Raises:
    ValueError: on an unknown mode, shape mismatch or bad constants.
  """
  _checks.check_choice(mode, AGGREGATION_MODES, "mode")
  _, length = _checks.check_batch(mask)
  _checks.check_same_shape(per_token_loss, mask, "per_token_loss", "mask")
  num_micro_batches = _checks.check_positive_int(num_micro_batches,
                                                 "num_micro_batches")
  row_sums = masking.masked_sum(per_token_loss, mask, axis=-1)
  row_counts = masking.masked_count(mask, axis=-1)
  if mode == "token-mean":
    return jnp.sum(row_sums), jnp.sum(row_counts)
  if mode == "token-sum":
    return jnp.sum(row_sums), jnp.asarray(1.0 / num_micro_batches,
                                          jnp.float32)
  num_seqs = jnp.sum((row_counts > 0).astype(jnp.float32))
  if mode == "seq-mean-token-mean":
    return jnp.sum(row_sums / jnp.maximum(row_counts, 1.0)), num_seqs
  total = jnp.sum(row_sums)
  if mode == "seq-mean-token-sum-norm":
    scale = length if loss_scale_factor is None else loss_scale_factor
    _check_positive(scale, "loss_scale_factor")
    total = total / scale
  return total, num_seqs


# Pairs from `aggregate` combine as safe_divide(Σ sums, Σ denominators).
safe_divide = masking.safe_divide


def aggregate_mean(per_token_loss, mask, mode: str = "token-mean", *,
                   loss_scale_factor: float | None = None) -> jax.Array:
  """Scalar loss `sum / denominator` of `aggregate` (0 for an empty batch).

  Args:
    per_token_loss: [B, T] per-token loss.
    mask: [B, T] bool, True on tokens that count.
    mode: one of `AGGREGATION_MODES`.
    loss_scale_factor: C of seq-mean-token-sum-norm (default T).

  Returns:
    float32 scalar.

  Raises:
    ValueError: as `aggregate`.
  """
  return safe_divide(*aggregate(per_token_loss, mask, mode,
                                loss_scale_factor=loss_scale_factor))


# --------------------------------------------------------------------------
# KL, entropy and value losses.


def _parse_kl_kind(kind: str) -> tuple[str, bool]:
  straight_through = isinstance(kind, str) and kind.endswith("+")
  base = kind[:-1] if straight_through else kind
  base = _KL_ALIASES.get(base, base)
  if base not in ("k1", "abs", "k2", "k3"):
    names = KL_KINDS + tuple(_KL_ALIASES) + tuple(a + "+"
                                                  for a in _KL_ALIASES)
    raise ValueError(f"kind must be one of {names}, got {kind!r}.")
  return base, straight_through


def kl_penalty(kind: str, logprobs, ref_logprobs, mask=None) -> jax.Array:
  """Per-token KL estimate between the policy and a reference policy.

  With x = logprobs, y = ref_logprobs:
    k1 ("kl"):          x − y
    abs:                |x − y|
    k2 ("mse"):         ½(x − y)²
    k3 ("low_var_kl"):  clip(e^d − d − 1, −10, 10),  d = clip(y − x, −20, 20)
    k*+:                k2 − sg(k2) + sg(k*)   (value of k*, gradient of k2)
  The clamps are verl's (`kl_penalty_forward`); k1/k2 are unclamped as in
  verl (OpenRLHF clamps them to ±10). The straight-through forms give the
  gradient x − y of the true reverse KL in expectation, which k1 and k3 do
  not. Gradients flow to both arguments.
  See "Approximating KL Divergence" (J. Schulman, 2020,
  http://joschu.net/blog/kl-approx.html); verl `kl_penalty`.

  Args:
    kind: one of `KL_KINDS` or an alias ("kl", "mse", "low_var_kl", with an
      optional "+").
    logprobs: policy log-probabilities, any shape.
    ref_logprobs: reference log-probabilities, same shape.
    mask: optional bool mask of the same shape; masked entries are 0 (and
      their inputs ignored, even NaN).

  Returns:
    float32 array shaped like `logprobs`.

  Raises:
    ValueError: on an unknown kind or shape mismatch.
  """
  base, straight_through = _parse_kl_kind(kind)
  _checks.check_same_shape(ref_logprobs, logprobs, "ref_logprobs",
                           "logprobs")
  x = _checks.as_float(logprobs, "logprobs")
  y = _checks.as_float(ref_logprobs, "ref_logprobs")
  if mask is not None:
    _checks.check_same_shape(mask, logprobs, "mask", "logprobs")
    mask = _checks.as_mask(mask)
    x, y = jnp.where(mask, x, 0.0), jnp.where(mask, y, 0.0)
  diff = x - y
  k2 = 0.5 * jnp.square(diff)
  if base == "k1":
    value = diff
  elif base == "abs":
    value = jnp.abs(diff)
  elif base == "k2":
    value = k2
  else:
    d = jnp.clip(-diff, -20.0, 20.0)
    value = jnp.clip(jnp.exp(d) - d - 1.0, -10.0, 10.0)
  if straight_through:
    value = k2 - _sg(k2) + _sg(value)
  return value if mask is None else jnp.where(mask, value, 0.0)


def entropy_bonus(entropy, mask, mode: str = "token-mean", *,
                  loss_scale_factor: float | None = None,
                  num_micro_batches: int = 1) -> tuple[jax.Array, jax.Array]:
  """Aggregated token entropy as a `(sum, denominator)` pair (to maximise).

  All peers aggregate the token entropy with the policy loss's mode and
  subtract `coef · H` from the loss (verl `entropy_coeff`, default 0).

  Args:
    entropy: [B, T] per-token entropies.
    mask: [B, T] bool.
    mode: one of `AGGREGATION_MODES`.
    loss_scale_factor: as in `aggregate`.
    num_micro_batches: as in `aggregate`.

  Returns:
    (sum, denominator) float32 scalars.
  """
  return aggregate(entropy, mask, mode, loss_scale_factor=loss_scale_factor,
                   num_micro_batches=num_micro_batches)


def entropy_loss(entropy, mask, mode: str = "token-mean", *,
                 loss_scale_factor: float | None = None,
                 num_micro_batches: int = 1) -> tuple[jax.Array, jax.Array]:
  """Negated `entropy_bonus`: a `(sum, denominator)` pair to minimise.

  Add `coef · sum / denominator` to the loss to encourage exploration.
  """
  total, denominator = entropy_bonus(
      entropy, mask, mode, loss_scale_factor=loss_scale_factor,
      num_micro_batches=num_micro_batches)
  return -total, denominator


def value_loss(values, old_values, returns, mask, *,
               clip: float | None = 0.5, mode: str = "token-mean",
               loss_scale_factor: float | None = None,
               num_micro_batches: int = 1, return_metrics: bool = False):
  """Clipped PPO value loss as a `(sum, denominator)` pair.

  v̂c = clip(v̂, v_old − c, v_old + c),
  L = ½·agg(max((v̂ − R)², (v̂c − R)²)).

  verl `compute_value_loss` / OpenRLHF `ValueLoss` / Tunix
  `ppo_value_loss_fn`; `clip=None` gives the unclipped ½·agg((v̂ − R)²).
  The default c = 0.5 is verl's `critic.cliprange_value`. `old_values` and
  `returns` are stop-gradient'ed.
  See "Proximal Policy Optimization Algorithms" (Schulman et al., arXiv
  1707.06347).

  Args:
    values: [B, T] current value predictions v̂.
    old_values: [B, T] value predictions at rollout time.
    returns: [B, T] regression targets R.
    mask: [B, T] bool.
    clip: value clip range c > 0, or None.
    mode: one of `AGGREGATION_MODES`.
    loss_scale_factor: as in `aggregate`.
    num_micro_batches: as in `aggregate`.
    return_metrics: also return {"vf_clipfrac": fraction of valid tokens
      where the clipped term is larger}.

  Returns:
    (sum, denominator) float32 scalars (and metrics if asked).

  Raises:
    ValueError: on shape mismatches, an unknown mode or c ≤ 0.
  """
  _checks.check_batch(mask)
  names = ("values", "old_values", "returns")
  arrays = [_checks.as_float_like(a, mask, n)
            for n, a in zip(names, (values, old_values, returns))]
  mask = _checks.as_mask(mask)
  v, v_old, target = (jnp.where(mask, a, 0.0) for a in arrays)
  v_old, target = _sg(v_old), _sg(target)
  unclipped = jnp.square(v - target)
  if clip is None:
    loss, larger = unclipped, jnp.zeros(mask.shape, bool)
  else:
    _check_positive(clip, "clip")
    clipped = jnp.square(jnp.clip(v, v_old - clip, v_old + clip) - target)
    loss, larger = jnp.maximum(unclipped, clipped), clipped > unclipped
  pair = aggregate(0.5 * loss, mask, mode,
                   loss_scale_factor=loss_scale_factor,
                   num_micro_batches=num_micro_batches)
  if return_metrics:
    return pair, {"vf_clipfrac": _sg(masking.masked_mean(larger, mask))}
  return pair
