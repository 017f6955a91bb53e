"""Returns and value-based advantages over padded `[B, T]` batches.

Two families live here.

* LLM-RL estimators that match verl's current `core_algos.py` on valid
  tokens (defaults included), each a plain function returning
  `cajax.EstimatorOutput` and registered by name: `gae`,
  `reinforce_plus_plus`, `remax`, `optimal_token_baseline` and `prime`.
* rlax-parity multistep targets, batch-major: `lambda_returns`,
  `discounted_returns`, `n_step_bootstrapped_returns`,
  `truncated_generalized_advantage_estimation`, `vtrace` and
  `vtrace_td_error_and_advantage`. They follow rlax's index convention: at row
  position t, `r_t`, `discount_t` and `v_t` are the reward, discount and value
  of the *next* step (Sutton & Barto's rₜ₊₁, γₜ₊₁, vₜ₊₁), while `v_tm1` and
  `rho_tm1` belong to the step the action was taken from. Termination is a
  zero `discount_t`; only the V-trace functions take a `sample_mask`.

Masks (DESIGN.md §2): interior False tokens are skipped (the running return
carries across them undiscounted, as in verl/Tunix GAE and rlax V-trace's
`sample_mask`), trailing False tokens are padding, and every `[B, T]` output is
exactly 0 at masked tokens. verl leaves whitened GAE advantages and returns
non-zero on padding; only valid tokens are comparable.

Every recurrence runs through `cajax.sequences.reverse_discounted_cumsum`;
"the value at the next valid token" is a vectorised gather, never a loop.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cajax import _checks
from cajax import groups
from cajax import masking
from cajax import registry
from cajax import sequences
from cajax import token_rewards
from cajax import types


# ---------------------------------------------------------------------------
# Private helpers.


def _tokens(x, mask, name: str) -> jax.Array:
  """Checks `x` is shaped like `mask` and returns it as float32."""
  _checks.check_same_shape(x, mask, name, "mask")
  return _checks.as_float(x, name)


def _coefficient(x, like, name: str, like_name: str = "r_t") -> jax.Array:
  """A scalar or a per-token `[B, T]` coefficient (γ, λ), as float32."""
  return _checks.scalar_or_like(x, like, name, like_name)


def _static_or_coefficient(x, like, name: str, like_name: str = "r_t"):
  """A Python-number coefficient stays a Python float (static: it selects
  the fast matmul path of `sequences.reverse_discounted_cumsum`); anything
  else goes through `_coefficient`."""
  if _checks.is_static_number(x):
    return float(x)
  return _coefficient(x, like, name, like_name)


# GAE with a static λ ≥ this telescopes into one recurrence (see `gae`).
_GAE_TELESCOPE_MIN_LAMBDA = 0.5


def _next_valid(x, mask) -> tuple[jax.Array, jax.Array]:
  """x at the first valid token strictly after t, and whether one exists.

  Args:
    x: f32[B, T].
    mask: bool[B, T].

  Returns:
    (f32[B, T] gathered values, 0 where there is none; bool[B, T] exists).
  """
  length = mask.shape[1]
  positions = jnp.arange(length, dtype=jnp.int32)[None, :]
  first_at_or_after = jax.lax.cummin(jnp.where(mask, positions, length),
                                     axis=1, reverse=True)
  after = jnp.pad(first_at_or_after[:, 1:], ((0, 0), (0, 1)),
                  constant_values=length)
  exists = after < length
  gathered = jnp.take_along_axis(x, jnp.minimum(after, length - 1), axis=1)
  return jnp.where(exists, gathered, 0.0), exists


def _maybe_whiten(x, mask, whiten: bool) -> jax.Array:
  """verl `masked_whiten` (batch-global, unbiased, eps 1e-8) or masking."""
  if whiten:
    return masking.masked_whiten(x, mask)
  return jnp.where(mask, x, 0.0)


def _stop_gradient_if(x, flag: bool) -> jax.Array:
  return jax.lax.stop_gradient(x) if flag else x


# ---------------------------------------------------------------------------
# LLM-RL estimators (verl parity on valid tokens).


def gae(token_rewards, values, mask, gamma=1.0, lam=1.0,
        whiten: bool = True) -> types.EstimatorOutput:
  """Generalized advantage estimation with skip-masked tokens (verl, Tunix).

  At a valid token t with t' the next valid token (none: V = 0):

    δₜ = rₜ + γ·v_{t'} − vₜ,   Âₜ = δₜ + γλ·Â_{t'},   returnsₜ = Âₜ + vₜ,

  so masked (observation) tokens are skipped: their reward and value are
  ignored and no discount is applied for them. The advantages are then
  whitened over every valid token of the batch (verl `masked_whiten`:
  unbiased variance, rsqrt(var + 1e-8)).

  Differences from verl, on purpose: outputs are 0 at masked tokens (verl's
  whitened advantages hold −μ/σ and its returns hold carried values there);
  a batch with a single valid token whitens to 0 instead of raising.

  See "High-Dimensional Continuous Control Using Generalized Advantage
  Estimation" (Schulman et al., arXiv:1506.02438).

  Args:
    token_rewards: f[B, T] per-token rewards rₜ.
    values: f[B, T] critic values vₜ.
    mask: bool[B, T] valid tokens.
    gamma: discount γ, scalar or f[B, T] (verl `algorithm.gamma`, 1.0).
    lam: GAE λ, scalar or f[B, T] (verl `algorithm.lam`, 1.0).
    whiten: whiten the advantages batch-globally (verl always does).

  Returns:
    EstimatorOutput(advantages f32[B, T], returns f32[B, T] = Â_raw + v,
    info={"raw_advantages": Â before whitening}).

  Raises:
    ValueError: wrong ranks or shapes.
  """
  _checks.check_batch(mask)
  rewards = _tokens(token_rewards, mask, "token_rewards")
  values = _tokens(values, mask, "values")
  mask = _checks.as_mask(mask)
  gamma = _static_or_coefficient(gamma, mask, "gamma", "mask")
  lam = _static_or_coefficient(lam, mask, "lam", "mask")
  values = jnp.where(mask, values, 0.0)
  if (isinstance(lam, float) and lam >= _GAE_TELESCOPE_MIN_LAMBDA
      and jnp.ndim(gamma) == 0):
    # Telescoped: with V = Σ (γλ)^n v the discounted values, the γ·v_{t'}
    # terms sum to (V − v)/λ, so Â = G(r + (1/λ − 1)·v) − v/λ: one
    # recurrence and no next-valid gather (1/λ ≤ 2 keeps it accurate).
    raw = sequences.reverse_discounted_cumsum(
        rewards + (1.0 / lam - 1.0) * values, mask, gamma * lam)
    raw = jnp.where(mask, raw - values / lam, 0.0)
  else:
    next_value, _ = _next_valid(values, mask)
    delta = jnp.where(mask, rewards + gamma * next_value - values, 0.0)
    raw = sequences.reverse_discounted_cumsum(delta, mask, gamma * lam)
  returns = jnp.where(mask, raw + values, 0.0)
  return types.EstimatorOutput(
      advantages=_maybe_whiten(raw, mask, whiten), returns=returns,
      info={"raw_advantages": raw})


def kl_in_reward(token_rewards, kl, beta, mask) -> jax.Array:
  """Folds a per-token KL penalty into the rewards: rₜ − β·klₜ on valid tokens.

  verl `apply_kl_penalty` (use_kl_in_reward) and OpenRLHF's per-token KL
  reward. Masked tokens keep their reward unchanged (their KL is ignored).

  Args:
    token_rewards: f[B, T] rewards.
    kl: f[B, T] per-token KL estimate (e.g. `losses.kl_penalty`).
    beta: KL coefficient β (scalar).
    mask: bool[B, T] valid tokens.

  Returns:
    f32[B, T] penalised rewards.
  """
  _checks.check_batch(mask)
  rewards = _tokens(token_rewards, mask, "token_rewards")
  kl = _tokens(kl, mask, "kl")
  mask = _checks.as_mask(mask)
  return rewards - jnp.where(mask, beta * kl, 0.0)


def reinforce_plus_plus(token_rewards, mask, gamma=1.0,
                        skip_masked: bool = True,
                        whiten: bool = True) -> types.EstimatorOutput:
  """REINFORCE++: discounted token returns, whitened over the batch (verl).

  Current verl (`skip_masked=True`): Gₜ = rₜ + γ·G_{t'} with t' the next
  valid token, i.e. masked tokens are skipped and carried. Older verl
  (`skip_masked=False`, before verl PR #6376): the running return is reset
  after every masked token, Gₜ = rₜ + γ·[t+1 valid]·G_{t+1}, so a turn before
  a tool observation loses every later reward. Then

    A = whiten(G, m)·m   (batch-global, unbiased, rsqrt(var + 1e-8)).

  A per-token KL reward (OpenRLHF, verl use_kl_in_reward) is folded in by the
  caller with `kl_in_reward`. OpenRLHF's whitening (biased variance,
  rsqrt(max(var, 1e-8))) is `masking.masked_whiten(returns, mask, ddof=0,
  eps_mode="max")` applied to this function's `returns`.

  See "REINFORCE++: An Efficient RLHF Algorithm with Robustness to Both
  Prompt and Reward Models" (Hu et al., arXiv:2501.03262).

  Args:
    token_rewards: f[B, T] per-token rewards (outcome at the last token).
    mask: bool[B, T] valid tokens.
    gamma: discount γ, scalar or f[B, T] (verl `algorithm.gamma`, 1.0).
    skip_masked: carry across masked tokens (current verl) or reset after
      them (older verl).
    whiten: whiten the returns into advantages (verl always does).

  Returns:
    EstimatorOutput(advantages, returns = G), f32[B, T], 0 at masked tokens.

  Raises:
    ValueError: wrong ranks or shapes.
  """
  _checks.check_batch(mask)
  rewards = _tokens(token_rewards, mask, "token_rewards")
  mask = _checks.as_mask(mask)
  gamma = _static_or_coefficient(gamma, mask, "gamma", "mask")
  if not skip_masked:
    next_valid = jnp.pad(mask[:, 1:], ((0, 0), (0, 1)))
    gamma = jnp.where(next_valid, gamma, 0.0)
  returns = sequences.reverse_discounted_cumsum(rewards, mask, gamma)
  return types.EstimatorOutput(
      advantages=_maybe_whiten(returns, mask, whiten), returns=returns,
      info={})


def remax(token_rewards, baseline_scores, mask) -> types.EstimatorOutput:
  """ReMax: reward-to-go minus the greedy rollout's reward (verl).

    Gₜ = Σ_{s ≥ t, s valid} r_s,   Aₜ = Gₜ − b,

  with b the reward of the greedy response to the same prompt. No whitening.

  See "ReMax: A Simple, Effective, and Efficient Reinforcement Learning
  Method for Aligning Large Language Models" (Li et al., arXiv:2310.10505).

  Args:
    token_rewards: f[B, T] per-token rewards.
    baseline_scores: f[B] greedy-rollout reward of each row's prompt.
    mask: bool[B, T] valid tokens.

  Returns:
    EstimatorOutput(advantages = G − b, returns = G), f32[B, T].

  Raises:
    ValueError: wrong ranks or shapes.
  """
  _checks.check_batch(mask)
  rewards = _tokens(token_rewards, mask, "token_rewards")
  mask = _checks.as_mask(mask)
  returns = sequences.reverse_discounted_cumsum(rewards, mask)
  baseline = masking.broadcast_to_tokens(baseline_scores, mask)
  return types.EstimatorOutput(advantages=returns - baseline,
                               returns=returns, info={})


def _group_token_mean(numerator, denominator, mask, group_ids,
                      num_groups: int, index, eps: float) -> jax.Array:
  """Per (group, index) ratio Σ numerator / (Σ denominator + eps), gathered.

  Sums run over the valid tokens of each group that share the same `index`
  (a token position when `index` is None, or a rank among valid tokens);
  the ratio is read back at every valid token.
  """
  length = mask.shape[1]
  if index is None:  # index = token position: segments are (group, column)
    # Whole rows are the scatter updates: B of them, not B·T entries.
    def row_total(x):
      return jax.ops.segment_sum(jnp.where(mask, x, 0.0), group_ids,
                                 num_segments=num_groups)

    ratio = row_total(numerator) / (row_total(denominator) + eps)
    return ratio[group_ids]
  segments = num_groups * length
  ids = jnp.where(mask, group_ids[:, None] * length + index, segments)
  flat_ids = ids.reshape(-1)

  def total(x):
    return jax.ops.segment_sum(jnp.where(mask, x, 0.0).reshape(-1),
                               flat_ids, num_segments=segments + 1)

  ratio = total(numerator) / (total(denominator) + eps)
  return ratio[ids]


def optimal_token_baseline(token_rewards, mask, group_ids, num_groups: int,
                           old_logprobs, sum_pi_squared,
                           rollout_is_weights=None,
                           handle_zero_tail: bool = True,
                           multi_turn: bool = False,
                           eps: float = 1e-8) -> types.EstimatorOutput:
  """Optimal Token Baseline: a per-position, variance-weighted group baseline.

  With Gₜ the reward-to-go, wₜ = 1 − 2·π(yₜ) + Σ_v π(v)² (times ρ̄ₜ² when
  rollout importance weights are given) and Wₜ = Σ_{s ≤ t, valid} w_s:

    Bₜ = Σ_{j∈g} G_{j,t}·W_{j,t} / (Σ_{j∈g} W_{j,t} + eps),   Aₜ = Gₜ − Bₜ,

  the sums running over the group's rows valid at position t. A singleton
  group gets B = 0. With `handle_zero_tail` (verl default), when a group's
  longest row is unique its baseline is 0 from position L₂ on, L₂ being the
  second-largest valid-token count in the group.

  `multi_turn=True` is verl's TIR variant: positions are ranks among each
  row's valid tokens (left-compacted turns), and rows without valid tokens are
  left out of their group.

  See verl `compute_optimal_token_baseline_advantage` and
  `compute_multi_turn_optimal_token_baseline_advantage` (verl-project/verl,
  `verl/trainer/ppo/core_algos.py`).

  Args:
    token_rewards: f[B, T] per-token rewards.
    mask: bool[B, T] valid tokens.
    group_ids: int[B] prompt group of each row, in [0, num_groups).
    num_groups: static number of groups.
    old_logprobs: f[B, T] log π_old(yₜ) of the sampled tokens.
    sum_pi_squared: f[B, T] Σ_v π_old(v)² per token.
    rollout_is_weights: optional f[B, T] truncated rollout IS weights ρ̄ₜ.
    handle_zero_tail: zero the baseline on the unique longest row's tail.
    multi_turn: index positions by rank among valid tokens (verl TIR OTB).
    eps: added to the baseline's denominator.

  Returns:
    EstimatorOutput(advantages, returns = G, info={"baselines": B}), all
    f32[B, T] and 0 at masked tokens.

  Raises:
    ValueError: wrong ranks, shapes or `num_groups`.
  """
  batch, length = _checks.check_batch(mask)
  rewards = _tokens(token_rewards, mask, "token_rewards")
  old_logprobs = _tokens(old_logprobs, mask, "old_logprobs")
  sum_pi_squared = _tokens(sum_pi_squared, mask, "sum_pi_squared")
  group_ids = groups.check_group_ids(group_ids, batch, num_groups)
  mask = _checks.as_mask(mask)

  returns = sequences.reverse_discounted_cumsum(rewards, mask)
  weight = 1.0 - 2.0 * jnp.exp(old_logprobs) + sum_pi_squared
  if rollout_is_weights is not None:
    rho = _tokens(rollout_is_weights, mask, "rollout_is_weights")
    weight = weight * rho * rho
  # Wₜ at valid t, as a suffix sum of the reversed row (jnp.cumsum is an
  # associative scan on XLA CPU, several times slower).
  cumulative = sequences.reverse_discounted_cumsum(
      weight[:, ::-1], mask[:, ::-1])[:, ::-1]

  lengths = masking.sequence_lengths(mask).astype(jnp.float32)
  if multi_turn:
    index = sequences.prefix_count(mask) - 1
    member = lengths > 0
  else:
    index = None  # the token position
    member = jnp.ones((batch,), bool)
  baseline = _group_token_mean(returns * cumulative, cumulative, mask,
                               group_ids, num_groups, index, eps)

  size = groups.group_sum(member.astype(jnp.float32), group_ids, num_groups)
  keep = (size[group_ids] > 1)[:, None] & mask
  if handle_zero_tail:
    longest = groups.group_max(lengths, group_ids, num_groups, valid=member)
    at_longest = member & (lengths == longest[group_ids])
    ties = groups.group_sum(at_longest.astype(jnp.float32), group_ids,
                            num_groups)
    second = groups.group_max(lengths, group_ids, num_groups,
                              valid=member & ~at_longest)
    unique = at_longest & (ties[group_ids] == 1) & (size[group_ids] > 1)
    position = (jnp.arange(length, dtype=jnp.int32)[None, :] if index is None
                else index)
    tail = unique[:, None] & (position >= second[group_ids][:, None])
    keep = keep & ~tail
  baseline = jnp.where(keep, baseline, 0.0)
  return types.EstimatorOutput(advantages=jnp.where(mask, returns - baseline,
                                                    0.0),
                               returns=returns, info={"baselines": baseline})


def implicit_process_rewards(prm_logprobs, ref_logprobs, mask,
                             beta: float = 0.05) -> jax.Array:
  """PRIME implicit-PRM token rewards β·(log π_φ(yₜ) − log π_ref(yₜ)).

  `token_rewards.implicit_token_reward` with PRIME's β = 0.05 (the recipe's
  `beta_train`). See "Process Reinforcement through Implicit Rewards" (Cui et
  al., arXiv:2502.01456).

  Args:
    prm_logprobs: f[B, T] log-probs of the implicit PRM π_φ.
    ref_logprobs: f[B, T] log-probs of the reference model.
    mask: bool[B, T] valid tokens.
    beta: implicit-reward scale β.

  Returns:
    f32[B, T], 0 at masked tokens.
  """
  return token_rewards.implicit_token_reward(prm_logprobs, ref_logprobs, mask,
                                             beta=beta)


def _leave_one_out(rewards, source_mask, group_ids, num_groups: int,
                   singleton: str) -> jax.Array:
  """PRIME's per-source RLOO on the entries of `source_mask`.

  r ← r·n/(n−1) − Σ_{j∈g} mean_j / (n−1), mean_j the mean of row j's source
  entries (0 when it has none), n the group size. Singleton rows keep r
  ("raw") or get 0 ("zero").
  """
  row_mean = masking.masked_mean(rewards, source_mask, axis=1, eps=0.0)
  ones = jnp.ones(row_mean.shape, jnp.float32)
  size = groups.group_sum(ones, group_ids, num_groups)[group_ids]
  total = groups.group_sum(row_mean, group_ids, num_groups)[group_ids]
  scale = jnp.where(size > 1, size / jnp.maximum(size - 1.0, 1.0), 1.0)
  offset = jnp.where(size > 1, total / jnp.maximum(size - 1.0, 1.0), 0.0)
  out = rewards * scale[:, None] - offset[:, None]
  if singleton == "zero":
    out = jnp.where((size > 1)[:, None], out, 0.0)
  return jnp.where(source_mask, out, 0.0)


def prime(token_rewards, rm_scores, mask, group_ids, num_groups: int,
          outcome_coef: float = 5.0, process_coef: float = 5.0,
          singleton: str = "raw",
          whiten: bool = True) -> types.EstimatorOutput:
  """PRIME: leave-one-out process + outcome rewards, summed and whitened.

  Two reward sources, each turned into leave-one-out rewards within its
  prompt group (verl PRIME recipe `compute_rloo_advantage_return`):

  * process: implicit-PRM token scores `rm_scores` on every valid token;
  * outcome: the row score s = Σₜ token_rewards placed at the last valid
    token.

  For a source with entries rₜ and row means mean_j over the group's n rows,
  rₜ ← rₜ·n/(n−1) − Σ_j mean_j/(n−1). Then

    r = c_proc·r_proc + c_out·r_out,   Gₜ = Σ_{s ≥ t, valid} r_s,
    A = whiten(G, m)   (batch-global, unbiased, rsqrt(var + 1e-8)).

  [GAP] choices: a singleton group (verl divides by n − 1 = 0) keeps its raw
  rewards (`singleton="raw"`, as verl's RLOO loop does) or gets 0
  (`"zero"`); a row with no valid token has mean 0 and still counts in n;
  the outcome sits at the last valid token (verl uses the valid-token count
  − 1, which differs only with interior masked tokens); groups come from
  `group_ids` (any sizes) instead of contiguous blocks of `n_samples`.

  See "Process Reinforcement through Implicit Rewards" (Cui et al.,
  arXiv:2502.01456).

  Args:
    token_rewards: f[B, T] outcome rewards; a row's score is their sum.
    rm_scores: f[B, T] implicit-PRM token scores (see
      `implicit_process_rewards`), or None for outcome only.
    mask: bool[B, T] valid tokens.
    group_ids: int[B] prompt group of each row.
    num_groups: static number of groups.
    outcome_coef: weight of the outcome source (verl `reward_gt_coef`, 5).
    process_coef: weight of the process source (verl `reward_dpo_coef`, 5).
    singleton: "raw" or "zero", the policy for one-row groups.
    whiten: whiten the returns into advantages (verl always does).

  Returns:
    EstimatorOutput(advantages, returns = G, info={"token_rewards": r}),
    f32[B, T], 0 at masked tokens.

  Raises:
    ValueError: wrong ranks, shapes, `num_groups` or `singleton`.
  """
  batch, _ = _checks.check_batch(mask)
  _checks.check_choice(singleton, ("raw", "zero"), "singleton")
  group_ids = groups.check_group_ids(group_ids, batch, num_groups)
  scores, _ = registry.sequence_scores(token_rewards, mask)
  mask = _checks.as_mask(mask)
  last = masking.last_token_mask(mask)
  outcome = jnp.where(last, scores[:, None], 0.0)
  rewards = outcome_coef * _leave_one_out(outcome, last, group_ids,
                                          num_groups, singleton)
  if rm_scores is not None:
    process = _tokens(rm_scores, mask, "rm_scores")
    rewards = rewards + process_coef * _leave_one_out(
        jnp.where(mask, process, 0.0), mask, group_ids, num_groups,
        singleton)
  returns = sequences.reverse_discounted_cumsum(rewards, mask)
  return types.EstimatorOutput(
      advantages=_maybe_whiten(returns, mask, whiten), returns=returns,
      info={"token_rewards": rewards})


# ---------------------------------------------------------------------------
# Registry adapters.


@registry.register("gae", required=("token_rewards", "values"))
def _gae_adapter(rollouts: types.Rollouts, **kwargs) -> types.EstimatorOutput:
  return gae(rollouts.token_rewards, rollouts.values, rollouts.mask, **kwargs)


@registry.register("reinforce_plus_plus", required=("token_rewards",))
def _reinforce_plus_plus_adapter(rollouts: types.Rollouts,
                                 **kwargs) -> types.EstimatorOutput:
  return reinforce_plus_plus(rollouts.token_rewards, rollouts.mask, **kwargs)


@registry.register("remax", required=("token_rewards", "baseline_scores"))
def _remax_adapter(rollouts: types.Rollouts) -> types.EstimatorOutput:
  return remax(rollouts.token_rewards, rollouts.baseline_scores,
               rollouts.mask)


@registry.register("optimal_token_baseline",
                   required=("token_rewards", "group_ids", "old_logprobs",
                             "sum_pi_squared"))
def _optimal_token_baseline_adapter(rollouts: types.Rollouts,
                                    **kwargs) -> types.EstimatorOutput:
  return optimal_token_baseline(
      rollouts.token_rewards, rollouts.mask, rollouts.group_ids,
      rollouts.num_groups, rollouts.old_logprobs, rollouts.sum_pi_squared,
      **kwargs)


def _prime_example_inputs(rollouts: types.Rollouts, rng) -> dict:
  shape = jnp.shape(rollouts.mask)
  scores = rng.normal(size=shape).astype("float32") * 0.05
  return {"rm_scores": jnp.where(rollouts.mask, scores, 0.0)}


@registry.register("prime", required=("token_rewards", "group_ids"),
                   example_inputs=_prime_example_inputs)
def _prime_adapter(rollouts: types.Rollouts, rm_scores=None,
                   beta: float = 0.05, **kwargs) -> types.EstimatorOutput:
  """PRIME from `Rollouts`.

  Process scores: the `rm_scores` keyword if given; otherwise the implicit
  rewards β·(logprobs − ref_logprobs), reading `rollouts.logprobs` as the
  implicit PRM's log-probs (PRIME initialises the PRM from the policy);
  otherwise (neither given) outcome rewards only.
  """
  if rm_scores is None and rollouts.logprobs is not None and (
      rollouts.ref_logprobs is not None):
    rm_scores = implicit_process_rewards(rollouts.logprobs,
                                         rollouts.ref_logprobs,
                                         rollouts.mask, beta=beta)
  return prime(rollouts.token_rewards, rm_scores, rollouts.mask,
               rollouts.group_ids, rollouts.num_groups, **kwargs)


# ---------------------------------------------------------------------------
# rlax-parity multistep targets, batch-major [B, T].


def _check_trajectory(r_t, discount_t, name: str = "r_t"):
  """Checks a `[B, T]` reward array and a matching (or scalar) discount."""
  _checks.check_rank(r_t, 2, name)
  r_t = _checks.as_float(r_t, name)
  return r_t, _coefficient(discount_t, r_t, "discount_t")


def lambda_returns(r_t, discount_t, v_t, lambda_=1.0,
                   stop_target_gradients: bool = False) -> jax.Array:
  """λ-returns of a batch of trajectories (rlax `lambda_returns`, [B, T]).

    Gₜ = rₜ₊₁ + γₜ₊₁ [(1 − λₜ₊₁) vₜ₊₁ + λₜ₊₁ Gₜ₊₁],   bootstrapped from the
    last value: G_{T−1} = r_T + γ_T v_T.

  Row position t holds rₜ₊₁, γₜ₊₁, vₜ₊₁ (rlax convention).

  See "Reinforcement Learning: An Introduction" (Sutton and Barto, 2018),
  §12.1.

  Args:
    r_t: f[B, T] rewards at times [1, T].
    discount_t: f[B, T] (or scalar) discounts at times [1, T].
    v_t: f[B, T] state values at times [1, T].
    lambda_: scalar or f[B, T] mixing parameter.
    stop_target_gradients: stop gradients through the targets.

  Returns:
    f32[B, T] λ-returns G at times [0, T−1].

  Raises:
    ValueError: wrong ranks or shapes.
  """
  r_t, discount_t = _check_trajectory(r_t, discount_t)
  _checks.check_same_shape(v_t, r_t, "v_t", "r_t")
  v_t = _checks.as_float(v_t, "v_t")
  lambda_ = _coefficient(lambda_, r_t, "lambda_")
  trace = jnp.broadcast_to(discount_t * lambda_, r_t.shape)
  inputs = r_t + discount_t * (1.0 - lambda_) * v_t
  # The bootstrap G_T = v_T enters the last step through the trace.
  inputs = inputs.at[:, -1].add(trace[:, -1] * v_t[:, -1])
  everything = jnp.ones(r_t.shape, bool)
  returns = sequences.reverse_discounted_cumsum(inputs, everything, trace)
  return _stop_gradient_if(returns, stop_target_gradients)


def discounted_returns(r_t, discount_t, v_t,
                       stop_target_gradients: bool = False) -> jax.Array:
  """Discounted returns Gₜ = rₜ₊₁ + γₜ₊₁ Gₜ₊₁ (rlax `discounted_returns`).

  The return is bootstrapped from the value at the last position.

  See "Reinforcement Learning: An Introduction" (Sutton and Barto, 2018),
  §3.3.

  Args:
    r_t: f[B, T] rewards at times [1, T].
    discount_t: f[B, T] (or scalar) discounts at times [1, T].
    v_t: bootstrap values: a scalar, f[B] (one per row) or f[B, T] (only the
      last column is used, as in rlax).
    stop_target_gradients: stop gradients through the targets.

  Returns:
    f32[B, T] discounted returns.

  Raises:
    ValueError: wrong ranks or shapes.
  """
  _checks.check_rank(r_t, 2, "r_t")
  _checks.check_rank(v_t, (0, 1, 2), "v_t")
  batch, length = jnp.shape(r_t)
  if jnp.ndim(v_t) == 1:
    _checks.check_shape(v_t, (batch,), "v_t", like=f"r_t {(batch, length)}")
    v_t = jnp.asarray(v_t)[:, None]
  elif jnp.ndim(v_t) == 2:
    _checks.check_same_shape(v_t, r_t, "v_t", "r_t")
  v_t = jnp.broadcast_to(_checks.as_float(v_t, "v_t"), (batch, length))
  return lambda_returns(r_t, discount_t, v_t, 1.0,
                        stop_target_gradients=stop_target_gradients)


def n_step_bootstrapped_returns(r_t, discount_t, v_t, n: int, lambda_t=1.0,
                                stop_target_gradients: bool = False
                                ) -> jax.Array:
  """Strided n-step bootstrapped returns (rlax `n_step_bootstrapped_returns`).

  The recursion Gₜ = rₜ₊₁ + γₜ₊₁ [(1 − λₜ₊₁) vₜ₊₁ + λₜ₊₁ Gₜ₊₁] is unrolled
  n times starting from G = v_{t+n} (the last value past the end), so with
  λ = 1

    Gₜ = rₜ₊₁ + γₜ₊₁ (rₜ₊₂ + … + γₜ₊ₙ₋₁ (rₜ₊ₙ + γₜ₊ₙ vₜ₊ₙ)).

  Past the end of a row, rewards are 0 and discounts and λ are 1, as in rlax.
  Costs n vectorised passes over [B, T] (n is static).

  See "Reinforcement Learning: An Introduction" (Sutton and Barto, 2018),
  §7.1 (n-step bootstrapping).

  Args:
    r_t: f[B, T]; position t holds the reward rₜ₊₁.
    discount_t: f[B, T] (or scalar); position t holds γₜ₊₁.
    v_t: f[B, T]; position t holds the bootstrap value vₜ₊₁.
    n: static number of steps, ≥ 1.
    lambda_t: scalar or f[B, T] mixing parameter.
    stop_target_gradients: stop gradients through the targets.

  Returns:
    f32[B, T] n-step returns.

  Raises:
    ValueError: wrong ranks, shapes or `n`.
  """
  n = _checks.check_positive_int(n, "n")
  r_t, discount_t = _check_trajectory(r_t, discount_t)
  _checks.check_same_shape(v_t, r_t, "v_t", "r_t")
  v_t = _checks.as_float(v_t, "v_t")
  shape = r_t.shape
  length = shape[1]
  lambda_t = jnp.broadcast_to(_coefficient(lambda_t, r_t, "lambda_t"), shape)
  discount_t = jnp.broadcast_to(discount_t, shape)

  def extend(x, fill):
    return jnp.pad(x, ((0, 0), (0, n - 1)), constant_values=fill)

  last_value = v_t[:, -1:]
  values = jnp.concatenate(
      [v_t, jnp.broadcast_to(last_value, (shape[0], n - 1))], axis=1)
  rewards, discounts, lambdas = (extend(r_t, 0.0), extend(discount_t, 1.0),
                                 extend(lambda_t, 1.0))
  targets = values[:, n - 1:n - 1 + length]
  for i in reversed(range(n)):
    window = slice(i, i + length)
    targets = rewards[:, window] + discounts[:, window] * (
        (1.0 - lambdas[:, window]) * values[:, window]
        + lambdas[:, window] * targets)
  return _stop_gradient_if(targets, stop_target_gradients)


def truncated_generalized_advantage_estimation(
    r_t, discount_t, lambda_, values,
    stop_target_gradients: bool = False) -> jax.Array:
  """Truncated GAE (rlax `truncated_generalized_advantage_estimation`).

    δₜ = rₜ₊₁ + γₜ₊₁ v(sₜ₊₁) − v(sₜ),   Âₜ = δₜ + γₜ₊₁ λₜ₊₁ Âₜ₊₁,   Â_T = 0.

  `values` has T + 1 columns (times [0, T]); termination is γ = 0, there is no
  mask (use `gae` for masked LLM batches).

  See "High-Dimensional Continuous Control Using Generalized Advantage
  Estimation" (Schulman et al., arXiv:1506.02438).

  Args:
    r_t: f[B, T] rewards at times [1, T].
    discount_t: f[B, T] (or scalar) discounts at times [1, T].
    lambda_: scalar or f[B, T] mixing parameter.
    values: f[B, T + 1] values at times [0, T].
    stop_target_gradients: stop gradients through the advantages.

  Returns:
    f32[B, T] advantages at times [0, T − 1].

  Raises:
    ValueError: wrong ranks or shapes.
  """
  r_t, discount_t = _check_trajectory(r_t, discount_t)
  batch, length = r_t.shape
  _checks.check_shape(values, (batch, length + 1), "values",
                      like=f"r_t {(batch, length)} plus one column")
  values = _checks.as_float(values, "values")
  lambda_ = _coefficient(lambda_, r_t, "lambda_")
  delta = r_t + discount_t * values[:, 1:] - values[:, :-1]
  everything = jnp.ones(r_t.shape, bool)
  advantages = sequences.reverse_discounted_cumsum(
      delta, everything, jnp.broadcast_to(discount_t * lambda_, r_t.shape))
  return _stop_gradient_if(advantages, stop_target_gradients)


class VTraceOutput(NamedTuple):
  """V-trace outputs, each f32[B, T] (0 at masked steps).

  Attributes:
    errors: V-trace errors v_s − v_tm1.
    pg_advantage: clipped-ρ policy-gradient advantages.
    q_estimate: the Q targets behind `pg_advantage`.
  """
  errors: jax.Array
  pg_advantage: jax.Array
  q_estimate: jax.Array


def _vtrace_inputs(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_,
                   sample_mask):
  r_t, discount_t = _check_trajectory(r_t, discount_t)
  arrays = {"v_tm1": v_tm1, "v_t": v_t, "rho_tm1": rho_tm1}
  for name, x in arrays.items():
    _checks.check_same_shape(x, r_t, name, "r_t")
    arrays[name] = _checks.as_float(x, name)
  lambda_ = jnp.broadcast_to(_coefficient(lambda_, r_t, "lambda_"),
                             r_t.shape)
  if sample_mask is None:
    sample_mask = jnp.ones(r_t.shape, bool)
  else:
    _checks.check_same_shape(sample_mask, r_t, "sample_mask", "r_t")
    sample_mask = _checks.as_mask(sample_mask, "sample_mask")
  return (arrays["v_tm1"], arrays["v_t"], r_t,
          jnp.broadcast_to(discount_t, r_t.shape), arrays["rho_tm1"],
          lambda_, sample_mask)


def vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_=1.0,
           clip_rho_threshold: float = 1.0,
           stop_target_gradients: bool = True,
           sample_mask=None) -> jax.Array:
  """V-trace errors from importance ratios (rlax `vtrace`, [B, T]).

    cₜ = λₜ·min(1, ρₜ),   ρ̄ₜ = min(ρ̄, ρₜ),
    δₜ = ρ̄ₜ (rₜ₊₁ + γₜ₊₁ vₜ₊₁ − vₜ),   eₜ = δₜ + γₜ₊₁ cₜ e_{t'},

  with t' the next step where `sample_mask` is True (e = 0 past the last):
  masked steps are skipped and carry the accumulator (rlax's `sample_mask`
  rule). Errors at masked steps are 0 here (rlax returns the carried value).

  See "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
  Actor-Learner Architectures" (Espeholt et al., arXiv:1802.01561).

  Args:
    v_tm1: f[B, T] values at times [0, T − 1].
    v_t: f[B, T] values at times [1, T].
    r_t: f[B, T] rewards at times [1, T].
    discount_t: f[B, T] (or scalar) discounts at times [1, T].
    rho_tm1: f[B, T] importance ratios π/μ at times [0, T − 1].
    lambda_: scalar or f[B, T] mixing parameter.
    clip_rho_threshold: ρ̄, the clip of the TD importance weights.
    stop_target_gradients: return sg(e + v_tm1) − v_tm1 (rlax default True).
    sample_mask: optional bool[B, T]; False steps are skipped.

  Returns:
    f32[B, T] V-trace errors (targets minus v_tm1).

  Raises:
    ValueError: wrong ranks or shapes.
  """
  v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, sample_mask = (
      _vtrace_inputs(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_,
                     sample_mask))
  trace = jnp.minimum(1.0, rho_tm1) * lambda_
  td = jnp.minimum(clip_rho_threshold, rho_tm1) * (
      r_t + discount_t * v_t - v_tm1)
  td = jnp.where(sample_mask, td, 0.0)
  errors = sequences.reverse_discounted_cumsum(td, sample_mask,
                                               discount_t * trace)
  if stop_target_gradients:
    errors = jax.lax.stop_gradient(errors + v_tm1) - v_tm1
  return jnp.where(sample_mask, errors, 0.0)


def vtrace_td_error_and_advantage(
    v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_=1.0,
    clip_rho_threshold: float = 1.0, clip_pg_rho_threshold: float = 1.0,
    stop_target_gradients: bool = True, sample_mask=None) -> VTraceOutput:
  """V-trace errors and policy-gradient advantages (rlax, [B, T]).

    qₜ = rₜ₊₁ + γₜ₊₁ [λₜ (eₜ₊₁ + vₜ₊₁) + (1 − λₜ) vₜ₊₁]   (last step: vₜ₊₁ =
    v_t[T−1] alone),   advₜ = min(ρ̄_pg, ρₜ)·(qₜ − vₜ),

  where eₜ₊₁ + vₜ₊₁ is the V-trace target of the next step (its `v_tm1`).
  [GAP] With a `sample_mask`, "next step" means the next valid step t', and
  a valid step with no valid step after it bootstraps from its own `v_t`;
  without a mask this is exactly rlax.

  See "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
  Actor-Learner Architectures" (Espeholt et al., arXiv:1802.01561).

  Args:
    v_tm1: as in `vtrace`.
    v_t: as in `vtrace`.
    r_t: as in `vtrace`.
    discount_t: as in `vtrace`.
    rho_tm1: as in `vtrace`; also weights the advantages.
    lambda_: as in `vtrace`; also mixes the Q bootstrap.
    clip_rho_threshold: ρ̄ for the TD errors.
    clip_pg_rho_threshold: ρ̄_pg for the policy-gradient advantages.
    stop_target_gradients: as in `vtrace`.
    sample_mask: as in `vtrace`.

  Returns:
    VTraceOutput(errors, pg_advantage, q_estimate), f32[B, T] each.

  Raises:
    ValueError: wrong ranks or shapes.
  """
  errors = vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_,
                  clip_rho_threshold, stop_target_gradients, sample_mask)
  v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, sample_mask = (
      _vtrace_inputs(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_,
                     sample_mask))
  next_target, has_next = _next_valid(errors + v_tm1, sample_mask)
  next_value, _ = _next_valid(v_tm1, sample_mask)
  bootstrap = jnp.where(
      has_next, lambda_ * next_target + (1.0 - lambda_) * next_value, v_t)
  q_estimate = r_t + discount_t * bootstrap
  pg_advantage = jnp.minimum(clip_pg_rho_threshold, rho_tm1) * (
      q_estimate - v_tm1)
  return VTraceOutput(
      errors=errors,
      pg_advantage=jnp.where(sample_mask, pg_advantage, 0.0),
      q_estimate=jnp.where(sample_mask, q_estimate, 0.0))
