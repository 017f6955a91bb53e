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
  out-of-range hyperparameters (a string, a traced or non-finite value, or
  one outside its domain: the error names the setting, its domain and the
  value).
* `make_policy_loss(name, **settings)` binds a loss's settings once (with
  that loss's own defaults) into a frozen, hashable `PolicyLoss`, the form
  a training loop passes to its jitted update.
* Every loss accepts `return_metrics=True` and then returns
  `(per_token_loss, metrics)` with float32 scalars `ppo_kl` (masked mean of
  −logr, verl's `ppo_kl`), `clipfrac` and `clipfrac_lower` (0 where the
  method has no such notion).

One family per module: `ppo` (vanilla, cispo, sapo, gpg, dro), `sequence`
(gspo, gspo_token, geo_mean, opmd), `covariance` (clip_cov, kl_cov),
`policy` (losses by name), `aggregation`, `kl`, `entropy` and `value`.
"""

from cajax.losses.aggregation import aggregate
from cajax.losses.aggregation import aggregate_mean
from cajax.losses.aggregation import AGGREGATION_MODES
from cajax.losses.aggregation import AGGREGATORS
from cajax.losses.aggregation import safe_divide
from cajax.losses.covariance import clip_cov_policy_loss
from cajax.losses.covariance import kl_cov_policy_loss
from cajax.losses.entropy import entropy_bonus
from cajax.losses.entropy import entropy_loss
from cajax.losses.kl import kl_penalty
from cajax.losses.kl import KL_KINDS
from cajax.losses.kl import KL_PENALTIES
from cajax.losses.policy import make_policy_loss
from cajax.losses.policy import PEER_AGGREGATION
from cajax.losses.policy import policy_loss
from cajax.losses.policy import policy_loss_names
from cajax.losses.policy import POLICY_LOSSES
from cajax.losses.policy import PolicyLoss
from cajax.losses.ppo import cispo_policy_loss
from cajax.losses.ppo import dro_policy_loss
from cajax.losses.ppo import gpg_policy_loss
from cajax.losses.ppo import sapo_policy_loss
from cajax.losses.ppo import vanilla_policy_loss
from cajax.losses.sequence import geo_mean_policy_loss
from cajax.losses.sequence import gspo_policy_loss
from cajax.losses.sequence import gspo_token_policy_loss
from cajax.losses.sequence import opmd_policy_loss
from cajax.losses.value import value_loss

__all__ = [
    "AGGREGATION_MODES", "AGGREGATORS", "KL_KINDS", "KL_PENALTIES",
    "PEER_AGGREGATION", "POLICY_LOSSES",
    "PolicyLoss", "aggregate", "aggregate_mean", "cispo_policy_loss",
    "clip_cov_policy_loss", "dro_policy_loss", "entropy_bonus",
    "entropy_loss", "geo_mean_policy_loss", "gpg_policy_loss",
    "gspo_policy_loss", "gspo_token_policy_loss", "kl_cov_policy_loss",
    "kl_penalty", "make_policy_loss", "opmd_policy_loss", "policy_loss",
    "policy_loss_names", "safe_divide", "sapo_policy_loss", "value_loss",
    "vanilla_policy_loss",
]
