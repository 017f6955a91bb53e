"""Containers passed between cajax functions: `Rollouts` and `EstimatorOutput`.

Shapes (docs/conventions.md): B rows, T response tokens, S steps, K reward
components, G groups (static).
"""

import dataclasses
from typing import NamedTuple

import jax
from jax.typing import ArrayLike
import numpy as np

__all__ = [
    "Bools", "EstimatorOutput", "FLOAT_FIELDS", "Floats", "Ints",
    "LAYOUT_FIELDS", "ROW_FLOAT_FIELDS", "Rollouts", "SCORE_FIELDS",
    "TOKEN_FLOAT_FIELDS",
]

# The `Rollouts` fields by layout and meaning; `cajax.validate` checks each
# group by its rule.
TOKEN_FLOAT_FIELDS = (
    "token_rewards", "values", "old_logprobs", "ref_logprobs", "logprobs",
    "entropy", "self_certainty", "token_logits", "sum_pi_squared")  # f[B, T]
ROW_FLOAT_FIELDS = ("step_rewards", "reward_components",
                    "baseline_scores")  # f[B, S], f[B, K], f[B]
FLOAT_FIELDS = TOKEN_FLOAT_FIELDS + ROW_FLOAT_FIELDS
# Scores: NaN marks an unscorable row (for reward_components, a missing
# component) rather than a bug.
SCORE_FIELDS = ("token_rewards", "step_rewards", "reward_components",
                "baseline_scores")
LAYOUT_FIELDS = ("mask", "group_ids", "step_ids", "step_mask")

# Array annotations by the dtype each field documents (JAX or NumPy arrays
# and scalars are accepted; cajax computes in float32 either way).
Floats = ArrayLike
Ints = ArrayLike
Bools = ArrayLike


@dataclasses.dataclass(frozen=True)
class Rollouts:
  """A padded batch of B sampled responses and everything scored about them.

  A registered pytree: every field except `num_groups` is a leaf (or None);
  `num_groups` is static metadata, so one compile serves every batch of the
  same shapes.

  Attributes:
    mask: bool[B, T], True on trainable response tokens. Interior False
      tokens (tool/environment observations) are skipped by returns;
      trailing False tokens are padding.
    token_rewards: f[B, T] rewards per token. The sequence score of a row is
      Σ_t token_rewards (verl); outcome rewards sit at the last valid token.
      A row whose score is not finite (NaN, ±inf) is unscorable: it gets
      advantage 0 and is left out of every statistic, as if absent. The
      same holds for a non-finite value at a valid entry of any other score
      input an estimator reads (step rewards, values, baseline scores, ...).
    group_ids: int[B] prompt group of each row, in [0, num_groups).
    num_groups: static number of groups G, required whenever `group_ids` is
      given. Left as None, it is inferred from concrete `group_ids` as
      max(group_ids) + 1 (outside jit only: traced ids raise). Concrete ids
      outside [0, num_groups) raise in every estimator; under jit such a
      row is unscorable (advantage 0, left out of every statistic, so no
      other row changes), and `cajax.checkify_estimate` reports it.
    values: f[B, T] critic values V(s_t) (GAE, V-trace).
    old_logprobs: f[B, T] log π_old of the sampled tokens (behaviour policy).
    ref_logprobs: f[B, T] log π_ref of the sampled tokens.
    logprobs: f[B, T] log π_θ of the sampled tokens (current policy).
    entropy: f[B, T] token entropy of π.
    self_certainty: f[B, T] logsumexp(z) − mean(z) per token.
    token_logits: f[B, T] logit of the sampled token (UCAS).
    sum_pi_squared: f[B, T] Σ_v π(v)² per token (optimal token baseline).
    step_ids: int[B, T] step index per token, −1 outside any step; ids
      never decrease along a row (docs/conventions.md).
    step_rewards: f[B, S] per-step rewards (PRM, judge, matching).
    step_mask: bool[B, S] valid steps.
    reward_components: f[B, K] per-row scores of K reward functions (GDPO).
    baseline_scores: f[B] per-row baseline scores (ReMax greedy reward).
  """
  mask: Bools
  token_rewards: Floats | None = None
  group_ids: Ints | None = None
  num_groups: int | None = None
  values: Floats | None = None
  old_logprobs: Floats | None = None
  ref_logprobs: Floats | None = None
  logprobs: Floats | None = None
  entropy: Floats | None = None
  self_certainty: Floats | None = None
  token_logits: Floats | None = None
  sum_pi_squared: Floats | None = None
  step_ids: Ints | None = None
  step_rewards: Floats | None = None
  step_mask: Bools | None = None
  reward_components: Floats | None = None
  baseline_scores: Floats | None = None

  def __post_init__(self):
    # Also runs when JAX rebuilds the pytree (with tracers or placeholder
    # leaves); only a missing count next to real group ids is acted on.
    if self.num_groups is not None or self.group_ids is None:
      return
    if isinstance(self.group_ids, jax.core.Tracer):
      raise ValueError(
          "Rollouts.num_groups is required when group_ids are traced (inside "
          "jax.jit or vmap); pass the static number of groups.")
    if not hasattr(self.group_ids, "dtype"):
      return
    ids = np.asarray(self.group_ids)
    if not np.issubdtype(ids.dtype, np.integer):
      return  # left to the estimators' dtype check
    object.__setattr__(self, "num_groups",
                       int(ids.max()) + 1 if ids.size else 1)

  def replace(self, **changes) -> "Rollouts":
    """Returns a copy with the given fields replaced."""
    return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    Rollouts, data_fields=[field.name for field in dataclasses.fields(Rollouts)
                           if field.name != "num_groups"],
    meta_fields=["num_groups"])


class EstimatorOutput(NamedTuple):
  """What every estimator returns.

  Attributes:
    advantages: f32[B, T] per-token advantages, 0 at masked tokens.
    returns: f32[B, T] value targets (for outcome estimators, the same array
      as `advantages`, as in verl).
    info: dict of extra per-row or per-group arrays the estimator computed
      (for example `informative`, the rows whose group has spread).
  """
  advantages: jax.Array
  returns: jax.Array
  info: dict
