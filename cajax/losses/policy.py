"""Policy losses by name: `policy_loss`, and `make_policy_loss`, which binds
a loss's settings once into a hashable callable."""

import dataclasses
import inspect
import types
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import registry
from cajax.losses import covariance
from cajax.losses import ppo
from cajax.losses import sequence

__all__ = ["PEER_AGGREGATION", "POLICY_LOSSES", "PolicyLoss",
           "make_policy_loss", "policy_loss", "policy_loss_names"]

POLICY_LOSSES: registry.Registry[Callable[..., Any]] = registry.Registry(
    "policy loss", {
        "vanilla": ppo.vanilla_policy_loss,
        "gspo": sequence.gspo_policy_loss,
        "gspo_token": sequence.gspo_token_policy_loss,
        "cispo": ppo.cispo_policy_loss,
        "sapo": ppo.sapo_policy_loss,
        "gpg": ppo.gpg_policy_loss,
        "geo_mean": sequence.geo_mean_policy_loss,
        "clip_cov": covariance.clip_cov_policy_loss,
        "kl_cov": covariance.kl_cov_policy_loss,
        "dro": ppo.dro_policy_loss,
        "opmd": sequence.opmd_policy_loss,
    })

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

_INPUTS = ("logprobs", "old_logprobs", "advantages", "mask")
# Keywords given per call, never bound as settings.
_PER_CALL = ("rng", "return_metrics")


def policy_loss_names() -> tuple[str, ...]:
  """Names accepted by `policy_loss` and `make_policy_loss`."""
  return POLICY_LOSSES.names()


def _settings_of(function) -> dict:
  """{setting: default} of a policy-loss function."""
  return {p.name: p.default
          for p in inspect.signature(function).parameters.values()
          if p.name not in _INPUTS + _PER_CALL}


def _check_keywords(name: str, keywords, accepted) -> None:
  unknown = sorted(set(keywords) - set(accepted))
  if unknown:
    hints = ", ".join(f"{key!r}{registry.did_you_mean(key, accepted)}"
                      for key in unknown)
    raise ValueError(f"policy loss {name!r} does not take {hints}; it takes: "
                     f"{', '.join(sorted(accepted)) or 'no settings'}.")


def policy_loss(name: str, logprobs: ArrayLike, old_logprobs: ArrayLike,
                advantages: ArrayLike, mask: ArrayLike, *,
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
      ([B, T]; see `cajax.losses`).
    return_metrics: also return the metrics dict.
    **kwargs: the chosen loss's hyperparameters.

  Returns:
    The per-token loss (and metrics), as in `cajax.losses`.

  Raises:
    ValueError: on an unknown name, an unknown keyword, shape mismatches or
      out-of-range hyperparameters.
  """
  fn = POLICY_LOSSES.lookup(name, "name")
  _check_keywords(name, set(kwargs) - {"rng"}, _settings_of(fn))
  return fn(logprobs, old_logprobs, advantages, mask,
            return_metrics=return_metrics, **kwargs)


@dataclasses.dataclass(frozen=True, eq=False)
class PolicyLoss:
  """A policy loss with its settings bound (from `make_policy_loss`).

  Frozen and hashable (by name and settings), so it can be a static
  argument of `jax.jit`. Call it as
  `loss(logprobs, old_logprobs, advantages, mask, *, rng=None,
  return_metrics=False)`; `rng` reaches only losses that draw randomness
  (`clip_cov` with selection="random", see `takes_rng`).

  Attributes:
    name: the loss's registered name.
    settings: read-only {setting: value}, the loss's own defaults with the
      given settings over them.
  """
  name: str
  settings: Mapping[str, Any]

  @property
  def takes_rng(self) -> bool:
    """Whether the loss reads the per-call `rng` key."""
    return "rng" in inspect.signature(POLICY_LOSSES[self.name]).parameters

  def __call__(self, logprobs, old_logprobs, advantages, mask, *,
               rng: jax.Array | None = None, return_metrics: bool = False):
    extra = {"rng": rng} if self.takes_rng else {}
    return POLICY_LOSSES[self.name](
        logprobs, old_logprobs, advantages, mask,
        return_metrics=return_metrics, **self.settings, **extra)

  def _key(self):
    return self.name, tuple(sorted(self.settings.items()))

  def __eq__(self, other) -> bool:
    return isinstance(other, PolicyLoss) and self._key() == other._key()

  def __hash__(self) -> int:
    return hash(self._key())

  def __repr__(self) -> str:
    settings = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
    return f"make_policy_loss({self.name!r}{', ' if settings else ''}" \
           f"{settings})"


def make_policy_loss(name: str, **settings) -> PolicyLoss:
  """Binds the policy loss `name` with its settings, checked once.

  Each loss keeps its own defaults (`make_policy_loss("gpg")` needs no
  clip range); the given settings replace them. Every setting is checked
  here, before anything is traced for real: an unknown one (with the
  closest accepted name), a string, a traced or non-finite value, or one
  outside its domain raises ValueError naming the setting, its domain and
  the value.

  Args:
    name: one of `policy_loss_names()`.
    **settings: the loss's hyperparameters (see `<name>_policy_loss`);
      static Python values.

  Returns:
    A frozen, hashable `PolicyLoss`.

  Raises:
    ValueError: as above, or an unknown name.

  Examples:
    >>> import jax.numpy as jnp
    >>> from cajax import losses
    >>> loss = losses.make_policy_loss("vanilla", clip_high=0.28)
    >>> loss.settings["clip_low"], loss.settings["clip_high"]
    (0.2, 0.28)
    >>> x = jnp.zeros((1, 2))
    >>> print(loss(x, x, jnp.ones((1, 2)), jnp.ones((1, 2), bool)))
    [[-1. -1.]]
    >>> losses.make_policy_loss("gpg", clip_low=0.2)
    Traceback (most recent call last):
    ...
    ValueError: policy loss 'gpg' does not take 'clip_low'; it takes:
    no settings.
  """
  fn = POLICY_LOSSES.lookup(name, "policy_loss")
  accepted = _settings_of(fn)
  _check_keywords(name, settings, accepted)
  for key, value in settings.items():
    try:
      hash(value)
    except TypeError:
      raise ValueError(f"policy loss setting {key} must be a static Python "
                       f"value (a number, string, bool or None), got "
                       f"{value!r}.") from None
  loss = PolicyLoss(name, types.MappingProxyType({**accepted, **settings}))
  tiny = jnp.zeros((1, 1), jnp.float32)
  extra = {"rng": jax.random.key(0)} if loss.takes_rng else {}
  jax.eval_shape(lambda x: fn(x, x, x, jnp.ones((1, 1), bool),
                              **loss.settings, **extra), tiny)
  return loss
