"""Group-normalised outcome advantages: GRPO and its relatives.

Every estimator here turns one scalar score per response into one advantage
per response and broadcasts it over that response's valid tokens. The score
of row b is s_b = Σ_t token_rewards[b, t] over all T positions (verl; padding
is expected to hold reward 0). Shared conventions:

* Groups are `group_ids: int[B]` in `[0, num_groups)` with a static
  `num_groups`; groups may be non-contiguous and of unequal size.
* A row whose score is not finite (NaN, ±inf) is *unscorable*: its
  advantage is 0, it is left out of every group and batch statistic as if
  absent, and no NaN or inf reaches other rows. So is a row whose group id
  lies outside [0, num_groups) under jit (concrete ids raise).
  Group sizes n_g count scorable rows only.
* A *singleton* group has exactly one scorable row. verl replaces its
  statistics by μ=0, σ=1 (`singleton="raw"`, the default); `"zero"` gives
  its row advantage 0 (TRL, Tunix RLOO).
* A group whose scorable scores are all equal gets advantage exactly 0 when
  centred on its own mean (no float residue is amplified by 1/(σ+ε)).
* Outputs are float32, exactly 0 at masked tokens; `returns` is the same
  array as `advantages` (verl's outcome estimators).
* `info` holds `scores` (f32[B], 0 on unscorable rows), `scorable` (bool[B])
  and `informative` (bool[B]: the row is scorable and its group has at least
  two distinct scorable scores, i.e. the group carries signal).

Peer settings reproduced by `grpo` (verified against the worked numbers of
docs/golden_numbers.md in tests/cajax/outcome_test.py):

| peer behaviour                        | grpo settings                        |
|---------------------------------------|--------------------------------------|
| verl `grpo` / `grpo_vectorized`       | defaults: center="group",            |
|                                       | scale="group", eps=1e-6, ddof=1,     |
|                                       | singleton="raw"                      |
| verl Dr.GRPO (norm_adv_by_std=False)  | scale="none" (= `drgrpo`)            |
| TRL scale_rewards="group" (default)   | eps=1e-4, singleton="zero"           |
| TRL scale_rewards="batch" (LitePPO)   | scale="batch", eps=1e-4,             |
|                                       | singleton="zero"                     |
| TRL scale_rewards="none"              | scale="none", singleton="zero"       |
| TRL None rewards (NaN, nan_to_num)    | NaN scores (built in, any setting)   |
| OpenRLHF `group_norm`                 | eps=1e-9 (scalar part; OpenRLHF then |
|                                       | adds a per-token KL reward and a     |
|                                       | cumulative return, not done here)    |
| OpenRLHF `dr_grpo` (scalar part)      | scale="none"                         |
| Tunix `grpo`                          | defaults (Tunix asserts n_g > 1)     |
| Tunix `drgrpo`                        | scale="none"                         |
| REINFORCE++-style global centring     | center="batch", scale="batch"        |

TRL's batch σ is the std of all rows' rewards while the mean stays the
group mean, which is `center="group", scale="batch"`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import groups
from cajax import masking
from cajax import scoring
from cajax import types

__all__ = [
    "drgrpo", "gdpo", "gpg", "grpo", "grpo_passk", "opo",
    "reinforce_plus_plus_baseline", "rloo",
]

_CENTERS = ("group", "batch", "none")
_SCALES = ("group", "batch", "none")
_SINGLETONS = ("raw", "zero")


class _Batch(NamedTuple):
  """Checked inputs shared by every estimator of this module."""
  scores: jax.Array     # f32[B], 0 on unscorable rows
  scorable: jax.Array   # bool[B]
  mask: jax.Array       # bool[B, T]
  group_ids: jax.Array  # int32[B]
  num_groups: int


class _RowStats(NamedTuple):
  """Statistics of each row's group over scorable rows, each `[B]`."""
  count: jax.Array     # f32, scorable rows in the group
  mean: jax.Array      # f32
  std: jax.Array       # f32, two-pass with the requested ddof
  spread: jax.Array    # bool, group holds two distinct scorable scores


def _prepare(token_rewards, mask, group_ids, num_groups) -> _Batch:
  mask, group_ids, num_groups = groups.check_batch_groups(mask, group_ids,
                                                         num_groups)
  scores, scorable = scoring.sequence_scores(token_rewards, mask)
  scorable = scorable & groups.in_range(group_ids, num_groups)
  return _Batch(jnp.where(scorable, scores, 0.0), scorable, mask, group_ids,
                num_groups)


def _row_stats(scores, valid, group_ids, num_groups, ddof=1) -> _RowStats:
  ddof = _checks.check_int(ddof, "ddof", low=0)
  moments = groups.group_moments(scores, group_ids, num_groups, valid=valid,
                                 ddof=ddof)
  high = groups.group_max(scores, group_ids, num_groups, valid=valid)
  low = -groups.group_max(-scores, group_ids, num_groups, valid=valid)
  return _RowStats(count=moments.count[group_ids],
                   mean=moments.mean[group_ids], std=moments.std[group_ids],
                   spread=(high > low)[group_ids])


def _normalise(scores, valid, group_ids, num_groups, center="group",
               scale="group", eps=1e-6, ddof=1, singleton="raw"):
  """Row advantages (s − μ)/(σ + ε) and the per-row group statistics.

  Args:
    scores: f32[B].
    valid: bool[B], rows taking part (others get 0 and are left out).
    group_ids: int32[B].
    num_groups: static G.
    center: "group" (μ_g), "batch" (μ over valid rows) or "none" (μ=0).
    scale: "group" (σ_g), "batch" (σ over valid rows) or "none" (σ+ε := 1).
    eps: added to σ.
    ddof: delta degrees of freedom of σ.
    singleton: "raw" (μ_g=0, σ_g=1 for a group of one valid row) or "zero".

  Returns:
    (f32[B] row advantages, `_RowStats`).
  """
  _checks.check_choice(center, _CENTERS, "center")
  _checks.check_choice(scale, _SCALES, "scale")
  _checks.check_choice(singleton, _SINGLETONS, "singleton")
  eps = _checks.check_number(eps, "eps", low=0.0)
  stats = _row_stats(scores, valid, group_ids, num_groups, ddof)
  if center == "group" and scale != "batch":
    row = groups.group_normalize(
        scores, group_ids, num_groups, valid,
        mode="std" if scale == "group" else "mean", eps=eps, ddof=ddof,
        singleton=singleton)
    return row, stats
  single = stats.count == 1
  raw_single = single if singleton == "raw" else jnp.zeros_like(single)
  if center == "group":
    centred = groups.group_normalize(scores, group_ids, num_groups, valid,
                                     mode="mean", singleton=singleton)
  elif center == "batch":
    # A batch without spread (or of one row) is centred to exactly 0.
    centred = groups.group_normalize(scores, jnp.zeros_like(group_ids), 1,
                                     valid, mode="mean", singleton="zero")
  else:
    centred = scores
  if scale == "group":
    std = jnp.where(raw_single, 1.0, stats.std)
    centred = masking.safe_divide(centred, std + eps)
  elif scale == "batch":
    std = groups.batch_moments(scores, valid=valid, ddof=ddof).std
    centred = masking.safe_divide(centred, std + eps)
  keep = valid & ~single if singleton == "zero" else valid
  return jnp.where(keep, centred, 0.0), stats


def _prepare_centred(token_rewards, mask, group_ids, num_groups, singleton):
  """Checked `_Batch`, group-centred scores s − μ_g and their `_RowStats`."""
  batch = _prepare(token_rewards, mask, group_ids, num_groups)
  centred, stats = _normalise(batch.scores, batch.scorable, batch.group_ids,
                              batch.num_groups, scale="none",
                              singleton=singleton)
  return batch, centred, stats


def _output(row_advantages, batch: _Batch, stats: _RowStats,
            **info) -> types.EstimatorOutput:
  """Broadcasts `[B]` row advantages over the valid tokens."""
  advantages = masking.broadcast_to_tokens(row_advantages, batch.mask)
  return _token_output(advantages, batch, stats, **info)


def _token_output(advantages, batch: _Batch, stats: _RowStats,
                  **info) -> types.EstimatorOutput:
  info = dict(scores=batch.scores, scorable=batch.scorable,
              informative=stats.spread & batch.scorable, **info)
  return types.EstimatorOutput(advantages=advantages, returns=advantages,
                               info=info)


def grpo(token_rewards: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
         num_groups: int, *, center: str = "group", scale: str = "group",
         eps: float = 1e-6, ddof: int = 1,
         singleton: str = "raw") -> types.EstimatorOutput:
  """Group-normalised outcome advantages (GRPO) with orthogonal switches.

  A_b = (s_b − μ)/(σ + ε),  A[b, t] = A_b·m[b, t],

  where μ is the group mean (center="group"), the batch mean ("batch") or 0
  ("none"), and σ is the group std, the batch std or absent (no division)
  for scale="group"/"batch"/"none". Statistics use scorable rows only; σ is
  the two-pass std with `ddof`. The module docstring lists the settings
  that reproduce verl, TRL, OpenRLHF and Tunix.

  See "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
  Language Models" (Shao et al., arXiv:2402.03300).

  Args:
    token_rewards: f[B, T] token rewards (bf16/f16/f32/int); s_b = Σ_t.
      NaN or ±inf anywhere in a row makes the row unscorable (advantage 0).
    mask: bool[B, T] valid tokens.
    group_ids: int[B] in [0, num_groups).
    num_groups: static number of groups G.
    center: "group", "batch" or "none".
    scale: "group", "batch" or "none".
    eps: added to σ (verl 1e-6, TRL 1e-4, OpenRLHF 1e-9).
    ddof: delta degrees of freedom of σ (1: unbiased, as every peer).
    singleton: policy for a group with one scorable row: "raw" (verl: its
      μ_g=0 and σ_g=1, so A = s/(1+ε) with the defaults) or "zero" (A=0).

  Returns:
    `EstimatorOutput` with f32[B, T] advantages (= returns) and info
    `scores`, `scorable`, `informative`.

  Raises:
    ValueError: bad ranks/shapes, a non-static `num_groups` or an unknown
      option.

  Examples:
    Two prompts with two responses each; the outcome reward sits at the last
    valid token and row 2 is one token shorter:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 0., 1.], [0., 0., 0.],
    ...                            [0., 1., 0.], [0., 0., 0.]])
    >>> mask = jnp.array([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)
    >>> group_ids = jnp.array([0, 0, 1, 1])
    >>> out = cajax.grpo(token_rewards, mask, group_ids, num_groups=2)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.71  0.71  0.71]
     [-0.71 -0.71 -0.71]
     [ 0.71  0.71  0.  ]
     [-0.71 -0.71 -0.71]]
  """
  batch = _prepare(token_rewards, mask, group_ids, num_groups)
  row, stats = _normalise(batch.scores, batch.scorable, batch.group_ids,
                          batch.num_groups, center=center, scale=scale,
                          eps=eps, ddof=ddof, singleton=singleton)
  return _output(row, batch, stats)


def drgrpo(token_rewards: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
           num_groups: int, *, center: str = "group",
           singleton: str = "raw") -> types.EstimatorOutput:
  """Dr.GRPO: GRPO without the std division, A_b = s_b − μ_g.

  Equal to `grpo(..., scale="none")` (verl `norm_adv_by_std_in_grpo=False`,
  Tunix `drgrpo`, TRL `scale_rewards="none"`).

  See "Understanding R1-Zero-Like Training: A Critical Perspective" (Liu et
  al., arXiv:2503.20783).

  Args:
    token_rewards: f[B, T] token rewards; s_b = Σ_t (non-finite: unscorable).
    mask: bool[B, T] valid tokens.
    group_ids: int[B] in [0, num_groups).
    num_groups: static number of groups G.
    center: "group", "batch" or "none" (see `grpo`).
    singleton: "raw" (verl: μ_g=0, A = s) or "zero".

  Returns:
    `EstimatorOutput` as for `grpo`.

  Raises:
    ValueError: as for `grpo`.

  Examples:
    Three responses to one prompt scored 1, 0 and 0.5; the advantage is the
    score minus the group mean:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 1.], [0., 0.], [0.5, 0.]])
    >>> mask = jnp.ones((3, 2), bool)
    >>> out = cajax.drgrpo(token_rewards, mask, jnp.zeros(3, int), num_groups=1)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.5  0.5]
     [-0.5 -0.5]
     [ 0.   0. ]]
  """
  return grpo(token_rewards, mask, group_ids, num_groups, center=center,
              scale="none", singleton=singleton)


def grpo_passk(token_rewards: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
               num_groups: int, *, normalize_by_std: bool = True,
               eps: float = 1e-6, ddof: int = 1,
               singleton: str = "zero") -> types.EstimatorOutput:
  """Pass@k advantages: only each group's best row gets r₁ − r₂.

  For each group with top-two scorable scores r₁ ≥ r₂ and r₁ at row i*
  (the lowest row index among ties; ties give r₁ − r₂ = 0 anyway):

    A_{i*} = (r₁ − r₂)/(σ_g + ε)  (or r₁ − r₂ without `normalize_by_std`),
    A_b = 0 for every other row.

  [GAP] verl raises for a group with fewer than two rows, which cannot
  happen under jit. Here a singleton group gets A = 0 (`singleton="zero"`,
  default: no second sample, no pass@k signal) or, with `singleton="raw"`,
  the GRPO-style raw value s/(1+ε) (s without `normalize_by_std`), i.e.
  r₂ := 0 and σ := 1.

  See "Optimizing Language Models for Inference Time Objectives using
  Reinforcement Learning" (Tang et al., arXiv:2503.19595).

  Args:
    token_rewards: f[B, T] token rewards; s_b = Σ_t (non-finite: unscorable).
    mask: bool[B, T] valid tokens.
    group_ids: int[B] in [0, num_groups).
    num_groups: static number of groups G.
    normalize_by_std: divide by σ_g + ε (verl `norm_adv_by_std_in_grpo`,
      default True).
    eps: added to σ_g.
    ddof: delta degrees of freedom of σ_g.
    singleton: "zero" or "raw" (see above).

  Returns:
    `EstimatorOutput` as for `grpo`, with info `best` (bool[B], the row
    holding r₁ of its group).

  Raises:
    ValueError: as for `grpo`.

  Examples:
    Only the best of the four responses gets (r₁ − r₂)/σ = 0.5 / 0.435:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[1.0], [0.5], [0.0], [0.2]])
    >>> out = cajax.grpo_passk(token_rewards, jnp.ones((4, 1), bool),
    ...                        jnp.zeros(4, int), num_groups=1)
    >>> print(np.asarray(out.advantages[:, 0]).round(3))
    [1.15 0.   0.   0.  ]
  """
  _checks.check_choice(singleton, _SINGLETONS, "singleton")
  normalize_by_std = _checks.check_bool(normalize_by_std, "normalize_by_std")
  eps = _checks.check_number(eps, "eps", low=0.0)
  batch = _prepare(token_rewards, mask, group_ids, num_groups)
  scores, valid, ids = batch.scores, batch.scorable, batch.group_ids
  stats = _row_stats(scores, valid, ids, batch.num_groups, ddof)
  top = groups.group_max(scores, ids, batch.num_groups, valid=valid)
  rows = jnp.arange(scores.shape[0], dtype=jnp.int32)
  at_top = valid & (scores == top[ids])
  first = jax.ops.segment_min(jnp.where(at_top, rows, scores.shape[0]), ids,
                              num_segments=batch.num_groups)
  best = at_top & (rows == first[ids])
  second = groups.group_max(scores, ids, batch.num_groups,
                            valid=valid & ~best)
  pair = stats.count >= 2
  gap = jnp.where(pair, top[ids] - jnp.where(pair, second[ids], 0.0), 0.0)
  std = stats.std
  if singleton == "raw":
    gap = jnp.where(stats.count == 1, scores, gap)
    std = jnp.where(stats.count == 1, 1.0, std)
  if normalize_by_std:
    gap = masking.safe_divide(gap, std + eps)
  row = jnp.where(best, gap, 0.0)
  return _output(row, batch, stats, best=best)


def rloo(token_rewards: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
         num_groups: int, *, singleton: str = "raw") -> types.EstimatorOutput:
  """REINFORCE leave-one-out: A_b = s_b − mean_{j≠b, j∈g} s_j.

  Computed as (s_b − μ_g)·n_g/(n_g − 1), which equals verl's loop form
  s_b·n/(n−1) − μ_g·n/(n−1).

  Singleton groups: verl's loop estimator (`rloo`) keeps the raw score,
  A = s (`singleton="raw"`, default); verl's `rloo_vectorized` and Tunix
  give 0 (`singleton="zero"`).

  See "Back to Basics: Revisiting REINFORCE Style Optimization for Learning
  from Human Feedback in LLMs" (Ahmadian et al., arXiv:2402.14740).

  Args:
    token_rewards: f[B, T] token rewards; s_b = Σ_t (non-finite: unscorable).
    mask: bool[B, T] valid tokens.
    group_ids: int[B] in [0, num_groups).
    num_groups: static number of groups G.
    singleton: "raw" (A = s) or "zero" for a group of one scorable row.

  Returns:
    `EstimatorOutput` as for `grpo`.

  Raises:
    ValueError: as for `grpo`.

  Examples:
    Through the registry: two responses to prompt 0 and a single one to
    prompt 1, which keeps its score:

    >>> import jax.numpy as jnp
    >>> import cajax
    >>> rollouts = cajax.Rollouts(mask=jnp.ones((3, 1), bool),
    ...                           token_rewards=jnp.array([[1.], [0.], [1.]]),
    ...                           group_ids=jnp.array([0, 0, 1]), num_groups=2)
    >>> cajax.estimate("rloo", rollouts).advantages[:, 0].tolist()
    [1.0, -1.0, 1.0]
  """
  batch = _prepare(token_rewards, mask, group_ids, num_groups)
  _checks.check_choice(singleton, _SINGLETONS, "singleton")
  stats = _row_stats(batch.scores, batch.scorable, batch.group_ids,
                     batch.num_groups)
  row = groups.group_normalize(batch.scores, batch.group_ids,
                               batch.num_groups, batch.scorable, mode="rloo",
                               singleton=singleton)
  return _output(row, batch, stats)


def opo(token_rewards: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
        num_groups: int, *, singleton: str = "raw") -> types.EstimatorOutput:
  """OPO: subtracts the length-weighted group baseline.

  b_g = Σ_{j∈g} L_j s_j / Σ_{j∈g} L_j,  L_j = Σ_t m[j, t],  A_b = s_b − b_g.

  A singleton group has b = 0 (verl; `singleton="raw"`) or A = 0
  (`"zero"`). A group whose rows all have length 0 gets b = 0 (its
  advantages sit on no token).

  See "On-Policy RL with Optimal Reward Baseline" (Hao et al.,
  arXiv:2505.23585).

  Args:
    token_rewards: f[B, T] token rewards; s_b = Σ_t (non-finite: unscorable).
    mask: bool[B, T] valid tokens.
    group_ids: int[B] in [0, num_groups).
    num_groups: static number of groups G.
    singleton: "raw" (b = 0) or "zero" (A = 0) for a lone scorable row.

  Returns:
    `EstimatorOutput` as for `grpo`.

  Raises:
    ValueError: as for `grpo`.

  Examples:
    The baseline weights each score by its response length (1 and 3 tokens
    here): (1·1 + 3·0) / 4 = 0.25.

    >>> import jax.numpy as jnp
    >>> import cajax
    >>> mask = jnp.array([[1, 0, 0], [1, 1, 1]], bool)
    >>> token_rewards = jnp.array([[1., 0., 0.], [0., 0., 0.]])
    >>> out = cajax.opo(token_rewards, mask, jnp.array([0, 0]), num_groups=1)
    >>> out.advantages[:, 0].tolist()
    [0.75, -0.25]
  """
  _checks.check_choice(singleton, _SINGLETONS, "singleton")
  batch = _prepare(token_rewards, mask, group_ids, num_groups)
  scores, valid, ids = batch.scores, batch.scorable, batch.group_ids
  stats = _row_stats(scores, valid, ids, batch.num_groups)
  lengths = masking.masked_count(batch.mask, axis=1)
  weighted = groups.group_sum(lengths * scores, ids, batch.num_groups,
                              valid=valid)
  total = groups.group_sum(lengths, ids, batch.num_groups, valid=valid)
  baseline = masking.safe_divide(weighted, total)[ids]
  row = jnp.where(stats.spread, scores - baseline, 0.0)
  single = stats.count == 1
  row = jnp.where(single, scores if singleton == "raw" else 0.0, row)
  return _output(jnp.where(valid, row, 0.0), batch, stats)


def gpg(token_rewards: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
        num_groups: int, *, f_norm: float = 1.0,
        singleton: str = "raw") -> types.EstimatorOutput:
  """GPG: group-centred scores rescaled by the inverse non-zero fraction.

  α = B / max(#{b : s_b ≠ 0}, 1),  A_b = α·(s_b − μ_g)/f_norm.

  B counts the scorable rows (verl: all rows; the same when every row is scorable).
  A singleton group has μ = 0 (verl; `singleton="raw"`) or A = 0.

  See "GPG: A Simple and Strong Reinforcement Learning Baseline for Model
  Reasoning" (Chu et al., arXiv:2504.02546).

  Args:
    token_rewards: f[B, T] token rewards; s_b = Σ_t (non-finite: unscorable).
    mask: bool[B, T] valid tokens.
    group_ids: int[B] in [0, num_groups).
    num_groups: static number of groups G.
    f_norm: constant divisor > 0 (verl 1.0).
    singleton: "raw" or "zero".

  Returns:
    `EstimatorOutput` as for `grpo`, with info `alpha` (scalar).

  Raises:
    ValueError: as for `grpo`.

  Examples:
    One of the two scores is non-zero, so the centred scores ±0.5 are scaled
    by 2 / 1:

    >>> import jax.numpy as jnp
    >>> import cajax
    >>> scores_at_end = jnp.array([[0., 1.], [0., 0.]])
    >>> group_ids = jnp.array([0, 0])
    >>> out = cajax.gpg(scores_at_end, jnp.ones((2, 2), bool), group_ids, 1)
    >>> out.advantages.tolist()
    [[1.0, 1.0], [-1.0, -1.0]]
  """
  f_norm = _checks.check_number(f_norm, "f_norm", low=0.0, low_open=True)
  batch, centred, stats = _prepare_centred(token_rewards, mask, group_ids,
                                          num_groups, singleton)
  rows = jnp.sum(batch.scorable.astype(jnp.float32))
  nonzero = jnp.sum((batch.scorable & (batch.scores != 0)).astype(
      jnp.float32))
  alpha = rows / jnp.maximum(nonzero, 1.0)
  return _output(centred * (alpha / f_norm), batch, stats, alpha=alpha)


def reinforce_plus_plus_baseline(
    token_rewards: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
    num_groups: int, *, eps: float = 1e-8,
    singleton: str = "raw") -> types.EstimatorOutput:
  """REINFORCE++-baseline: group-centred scores, whitened over all tokens.

  a[b, t] = (s_b − μ_g)·m[b, t],  A = whiten(a, m)·m,

  where whiten is verl's token-weighted batch whitening
  (x − MM(x))·rsqrt(Var + eps) with the unbiased variance over every valid
  token of the batch (long responses weigh more). Unscorable rows are left
  out of the whitening statistics and get 0. A singleton group has μ = 0
  (verl; `singleton="raw"`) or a = 0 (`"zero"`).

  See "REINFORCE++: A Simple and Efficient Approach for Aligning Large
  Language Models" (Hu, arXiv:2501.03262).

  Args:
    token_rewards: f[B, T] token rewards; s_b = Σ_t (non-finite: unscorable).
    mask: bool[B, T] valid tokens.
    group_ids: int[B] in [0, num_groups).
    num_groups: static number of groups G.
    eps: variance guard of the whitening (verl 1e-8).
    singleton: "raw" or "zero".

  Returns:
    `EstimatorOutput` as for `grpo`.

  Raises:
    ValueError: as for `grpo`.

  Examples:
    Group-centred scores, then whitened over all 5 valid tokens, so the
    longer response weighs more:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 0., 1.], [0., 0., 0.]])
    >>> mask = jnp.array([[1, 1, 1], [1, 1, 0]], bool)
    >>> out = cajax.reinforce_plus_plus_baseline(token_rewards, mask,
    ...                                          jnp.array([0, 0]),
    ...                                          num_groups=1)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.73  0.73  0.73]
     [-1.1  -1.1   0.  ]]
  """
  batch, centred, stats = _prepare_centred(token_rewards, mask, group_ids,
                                          num_groups, singleton)
  tokens = batch.mask & batch.scorable[:, None]
  advantages = masking.masked_whiten(
      jnp.broadcast_to(centred[:, None], tokens.shape), tokens, eps=eps)
  return _token_output(advantages, batch, stats)


def gdpo(reward_components: ArrayLike, mask: ArrayLike, group_ids: ArrayLike,
         num_groups: int, *, weights: ArrayLike | None = None,
         variant: str = "verl", normalize_by_std: bool = True,
         eps: float = 1e-6, ddof: int = 1,
         singleton: str = "raw") -> types.EstimatorOutput:
  """GDPO: per-component group normalisation, weighted sum, batch norm.

  For each reward component k, Z_k = GRPO-normalised f[:, k] within groups;
  R_b = Σ_k w_k Z_{b,k}. Then

  * variant="verl" (verl `gdpo`): A = whiten(R·m, m)·m, token-weighted batch
    whitening (unbiased variance, rsqrt(Var + 1e-8)).
  * variant="normalize_then_sum" (TRL `multi_objective_aggregation`):
    A_b = (R_b − mean_b R)/(std_b R + eps) over rows (unbiased), then
    broadcast. TRL uses eps=1e-4 and singleton="zero".

  Each Z_k uses `eps`, `ddof`, `singleton` as `grpo` (scale="none" when
  `normalize_by_std` is False). A non-finite component (NaN, ±inf) is
  missing: it is left out of that component's statistics and contributes 0
  to R_b (TRL's nansum of NaN); a row whose components are all missing is
  unscorable (advantage 0, left out of the batch normalisation). Whitening
  a constant R (one row, or every row scoring the same) gives exactly 0.

  See "GDPO: Group reward-Decoupled Normalization Policy Optimization for
  Multi-reward RL Optimization" (Liu et al., arXiv:2601.05242).

  Args:
    reward_components: f[B, K] per-row scores of K reward functions.
    mask: bool[B, T] valid tokens.
    group_ids: int[B] in [0, num_groups).
    num_groups: static number of groups G.
    weights: f[K] component weights w_k (default all 1).
    variant: "verl" or "normalize_then_sum".
    normalize_by_std: divide each component by σ_g + eps.
    eps: added to each σ (and, for "normalize_then_sum", to the batch σ).
    ddof: delta degrees of freedom of every σ.
    singleton: "raw" or "zero" for the per-component normalisation.

  Returns:
    `EstimatorOutput`; info `scores` is R_b (before batch normalisation),
    `informative` marks rows whose group has spread in some component.

  Raises:
    ValueError: bad ranks/shapes or unknown options.

  Examples:
    Two reward functions scored each of four responses to one prompt:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> reward_components = jnp.array([[1., 0.], [0., 1.], [1., 1.], [0., 0.]])
    >>> mask = jnp.ones((4, 2), bool)
    >>> out = cajax.gdpo(reward_components, mask, jnp.zeros(4, int),
    ...                  num_groups=1)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.    0.  ]
     [ 0.    0.  ]
     [ 1.32  1.32]
     [-1.32 -1.32]]
  """
  _checks.check_choice(variant, ("verl", "normalize_then_sum"), "variant")
  normalize_by_std = _checks.check_bool(normalize_by_std, "normalize_by_std")
  mask, ids, num_groups = groups.check_batch_groups(mask, group_ids,
                                                   num_groups)
  _checks.check_rank(reward_components, 2, "reward_components")
  batch_size, components = jnp.shape(reward_components)
  _checks.check_shape(reward_components, (mask.shape[0], None),
                      "reward_components", like=f"mask {tuple(mask.shape)}")
  values = _checks.as_float(reward_components, "reward_components")
  if weights is None:
    weights = jnp.ones((components,), jnp.float32)
  _checks.check_shape(weights, (components,), "weights",
                      like=f"reward_components {(batch_size, components)}")
  _checks.check_finite(weights, "weights")
  weights = _checks.as_float(jnp.asarray(weights), "weights")
  values, present = scoring.split_unscorable(values)
  present = present & groups.in_range(ids, num_groups)[:, None]
  values = jnp.where(present, values, 0.0)
  scorable = jnp.any(present, axis=1)
  total = jnp.zeros((batch_size,), jnp.float32)
  spread = jnp.zeros((batch_size,), bool)
  for k in range(components):
    z, stats = _normalise(values[:, k], present[:, k], ids, num_groups,
                          scale="group" if normalize_by_std else "none",
                          eps=eps, ddof=ddof, singleton=singleton)
    total = total + weights[k] * z
    spread = spread | (stats.spread & present[:, k])
  if variant == "verl":
    tokens = mask & scorable[:, None]
    advantages = masking.masked_whiten(
        jnp.broadcast_to(total[:, None], tokens.shape), tokens)
  else:
    row, _ = _normalise(total, scorable, ids, num_groups, center="batch",
                        scale="batch", eps=eps, ddof=ddof)
    advantages = masking.broadcast_to_tokens(row, mask)
  info = dict(scores=total, scorable=scorable, informative=spread)
  return types.EstimatorOutput(advantages=advantages, returns=advantages,
                               info=info)


def _group_adapter(function):
  """Adapter `(rollouts, **kw)` calling `function` on the token rewards."""
  def adapter(rollouts: types.Rollouts, **hyperparameters):
    return function(rollouts.token_rewards, rollouts.mask,
                    rollouts.group_ids, rollouts.num_groups,
                    **hyperparameters)
  adapter.__doc__ = f"`{function.__name__}` on `Rollouts` fields."
  return adapter


def _gdpo_adapter(rollouts: types.Rollouts,
                  **hyperparameters) -> types.EstimatorOutput:
  """`gdpo` on `rollouts.reward_components`."""
  return gdpo(rollouts.reward_components, rollouts.mask, rollouts.group_ids,
              rollouts.num_groups, **hyperparameters)
