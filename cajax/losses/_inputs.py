"""Shared preparation of the policy losses: inputs, hyperparameter checks,
the PPO clip terms and the metrics every loss reports."""

import jax
import jax.numpy as jnp

from cajax import _checks
from cajax import masking

_sg = jax.lax.stop_gradient


def check_positive(value, name: str) -> float:
  """A static number > 0 (ValueError naming `name`, domain and value)."""
  return _checks.check_number(value, name, low=0.0, low_open=True)


def check_optional_positive(value, name: str) -> float | None:
  return None if value is None else check_positive(value, name)


def check_clip(clip_low, clip_high) -> tuple[float, float]:
  """εl in [0, 1) and εh ≥ 0, as static numbers."""
  return (_checks.check_number(clip_low, "clip_low", low=0.0, high=1.0,
                               high_open=True),
          _checks.check_number(clip_high, "clip_high", low=0.0))


def check_ratio(value, name: str) -> float:
  """A selection ratio in (0, 1] (clip_cov, kl_cov)."""
  return _checks.check_number(value, name, low=0.0, high=1.0, low_open=True)


class Inputs:
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
    log_ratio_clip = check_positive(log_ratio_clip, "log_ratio_clip")
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


def finish(inputs: Inputs, loss, return_metrics: bool, **metric_kw):
  loss = inputs.masked(loss)
  if return_metrics:
    return loss, inputs.metrics(**metric_kw)
  return loss


def ppo_clip_terms(advantages, ratio, clip_low, clip_high):
  """(−A·r, −A·clip(r, 1−εl, 1+εh)); their max is the PPO-clip loss."""
  clip_low, clip_high = check_clip(clip_low, clip_high)
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  return unclipped, clipped


def sequence_log_ratio(x: Inputs) -> jax.Array:
  """[B, 1] mean log-ratio over the valid tokens of each row."""
  return masking.masked_mean(x.log_ratio, x.mask, axis=-1, eps=0.0)[:, None]
