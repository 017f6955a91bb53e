"""verl's return-based LLM estimators over padded `[B, T]` batches.

`gae`, `reinforce_plus_plus`, `remax` and `prime` match verl's
`core_algos.py` on valid tokens (defaults included); each is a plain
function returning `cajax.EstimatorOutput` and is registered by name.
`kl_in_reward` folds a per-token KL penalty into the rewards.

Masks: interior False tokens are skipped (the running return carries across
them undiscounted, as in verl and Tunix GAE), trailing False tokens are
padding, and every `[B, T]` output is exactly 0 at masked tokens. verl
leaves whitened GAE advantages and returns non-zero on padding; only valid
tokens are comparable.

Related modules: `cajax.token_baseline` (verl's optimal token baseline),
`cajax.multistep` and `cajax.off_policy` (rlax-parity targets).
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import groups
from cajax import masking
from cajax import scoring
from cajax import sequences
from cajax import token_rewards
from cajax import types

__all__ = [
    "gae", "implicit_process_rewards", "kl_in_reward", "prime",
    "reinforce_plus_plus", "remax",
]

# GAE with a static λ ≥ this telescopes into one recurrence (see `gae`).
_GAE_TELESCOPE_MIN_LAMBDA = 0.5


def _static_or_coefficient(x, mask, name: str):
  """γ or λ in [0, 1]: a Python number stays a static float (it selects the
  fast path of `sequences.reverse_discounted_cumsum`); else a scalar or
  `[B, T]` float32 array (checked when concrete)."""
  return _checks.check_coefficient(x, mask, name, "mask")


def _maybe_whiten(x, mask, whiten: bool) -> jax.Array:
  """verl `masked_whiten` (batch-global, unbiased, eps 1e-8) or masking."""
  if _checks.check_bool(whiten, "whiten"):
    return masking.masked_whiten(x, mask)
  return jnp.where(mask, x, 0.0)


def _scorable_tokens(mask, *token_arrays) -> jax.Array:
  """`mask` without the rows holding a non-finite valid entry in any of
  `token_arrays` (the unscorable rows, which then act as absent)."""
  rows = jnp.ones(mask.shape[:1], bool)
  for x in token_arrays:
    rows = rows & scoring.finite_rows(x, mask)
  return mask & rows[:, None]


def gae(token_rewards: ArrayLike, values: ArrayLike, mask: ArrayLike, *,
        gamma: ArrayLike = 1.0, lambda_: ArrayLike = 1.0,
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
  a batch with a single valid token whitens to 0 instead of raising; a row
  with a non-finite reward or value at a valid token is unscorable (0
  everywhere, left out of the whitening; verl's NaN reaches every row).

  See "High-Dimensional Continuous Control Using Generalized Advantage
  Estimation" (Schulman et al., arXiv:1506.02438).

  Args:
    token_rewards: f[B, T] per-token rewards rₜ.
    values: f[B, T] critic values vₜ.
    mask: bool[B, T] valid tokens.
    gamma: discount γ in [0, 1], scalar or f[B, T] (verl `algorithm.gamma`,
      1.0).
    lambda_: GAE λ in [0, 1], scalar or f[B, T] (verl and TRL call it
      `lam`; verl `algorithm.lam`, 1.0).
    whiten: whiten the advantages batch-globally (verl always does).

  Returns:
    EstimatorOutput(advantages f32[B, T], returns f32[B, T] = Â_raw + v,
    info={"raw_advantages": Â before whitening}).

  Raises:
    ValueError: wrong ranks or shapes, or γ, λ outside [0, 1].

  Examples:
    One response whose token 1 is a masked tool observation (skipped),
    reward at the end:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 0., 0., 1.]])
    >>> values = jnp.array([[0.5, 9.0, 0.6, 0.7]])
    >>> mask = jnp.array([[True, False, True, True]])
    >>> out = cajax.gae(token_rewards, values, mask, gamma=0.9, lambda_=1.0,
    ...                 whiten=False)
    >>> print(np.asarray(out.advantages).round(2))
    [[0.31 0.   0.3  0.3 ]]
  """
  _checks.check_batch(mask)
  rewards = _checks.as_float_like(token_rewards, mask, "token_rewards")
  values = _checks.as_float_like(values, mask, "values")
  mask = _checks.as_mask(mask)
  gamma = _static_or_coefficient(gamma, mask, "gamma")
  lam = _static_or_coefficient(lambda_, mask, "lambda_")
  _checks.check_bool(whiten, "whiten")
  mask = _scorable_tokens(mask, rewards, values)
  rewards = jnp.where(mask, rewards, 0.0)
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
    next_value, _ = masking.next_valid(values, mask)
    delta = jnp.where(mask, rewards + gamma * next_value - values, 0.0)
    raw = sequences.reverse_discounted_cumsum(delta, mask, gamma * lam)
  returns = jnp.where(mask, raw + values, 0.0)
  return types.EstimatorOutput(
      advantages=_maybe_whiten(raw, mask, whiten), returns=returns,
      info={"raw_advantages": raw})


def kl_in_reward(token_rewards: ArrayLike, kl: ArrayLike, mask: ArrayLike, *,
                 kl_coef: float) -> jax.Array:
  """Folds a per-token KL penalty into the rewards: rₜ − c·klₜ on valid tokens.

  verl `apply_kl_penalty` (use_kl_in_reward) and OpenRLHF's per-token KL
  reward. Masked tokens keep their reward unchanged (their KL is ignored).

  Args:
    token_rewards: f[B, T] rewards.
    kl: f[B, T] per-token KL estimate (e.g. `losses.kl_penalty`).
    mask: bool[B, T] valid tokens.
    kl_coef: the KL coefficient c (scalar; verl `kl_ctrl.kl_coef`).

  Returns:
    f32[B, T] penalised rewards.
  """
  _checks.check_batch(mask)
  rewards = _checks.as_float_like(token_rewards, mask, "token_rewards")
  kl = _checks.as_float_like(kl, mask, "kl")
  mask = _checks.as_mask(mask)
  return rewards - jnp.where(mask, kl_coef * kl, 0.0)


def reinforce_plus_plus(token_rewards: ArrayLike, mask: ArrayLike, *,
                        gamma: ArrayLike = 1.0, skip_masked: bool = True,
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
    EstimatorOutput(advantages, returns = G), f32[B, T], 0 at masked tokens
    and on unscorable rows (a non-finite reward at a valid token; left out
    of the whitening).

  Raises:
    ValueError: wrong ranks or shapes, or γ outside [0, 1].

  Examples:
    Two responses, rewards at the last valid token; `returns` are the
    discounted rewards-to-go before whitening:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 0., 1.], [0., 0., 0.]])
    >>> mask = jnp.array([[1, 1, 1], [1, 1, 0]], bool)
    >>> out = cajax.reinforce_plus_plus(token_rewards, mask, gamma=0.5)
    >>> print(np.asarray(out.returns).round(2))
    [[0.25 0.5  1.  ]
     [0.   0.   0.  ]]
  """
  _checks.check_batch(mask)
  rewards = _checks.as_float_like(token_rewards, mask, "token_rewards")
  mask = _checks.as_mask(mask)
  gamma = _static_or_coefficient(gamma, mask, "gamma")
  _checks.check_bool(whiten, "whiten")
  mask = _scorable_tokens(mask, rewards)
  rewards = jnp.where(mask, rewards, 0.0)
  if not _checks.check_bool(skip_masked, "skip_masked"):
    next_valid = jnp.pad(mask[:, 1:], ((0, 0), (0, 1)))
    gamma = jnp.where(next_valid, gamma, 0.0)
  returns = sequences.reverse_discounted_cumsum(rewards, mask, gamma)
  return types.EstimatorOutput(
      advantages=_maybe_whiten(returns, mask, whiten), returns=returns,
      info={})


def remax(token_rewards: ArrayLike, baseline_scores: ArrayLike,
          mask: ArrayLike) -> types.EstimatorOutput:
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
    EstimatorOutput(advantages = G − b, returns = G), f32[B, T]; 0 on
    unscorable rows (a non-finite reward at a valid token or a non-finite
    baseline score).

  Raises:
    ValueError: wrong ranks or shapes.

  Examples:
    Each row's greedy response to the same prompt scored `baseline_scores`:

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 0., 1.], [0., 0., 0.]])
    >>> mask = jnp.array([[1, 1, 1], [1, 1, 0]], bool)
    >>> out = cajax.remax(token_rewards, jnp.array([0.5, 0.5]), mask)
    >>> print(np.asarray(out.advantages).round(2))
    [[ 0.5  0.5  0.5]
     [-0.5 -0.5  0. ]]
  """
  batch, _ = _checks.check_batch(mask)
  rewards = _checks.as_float_like(token_rewards, mask, "token_rewards")
  _checks.check_shape(baseline_scores, (batch,), "baseline_scores",
                      like=f"mask {tuple(jnp.shape(mask))}")
  baseline, finite = scoring.split_unscorable(
      _checks.as_float(baseline_scores, "baseline_scores"))
  mask = _checks.as_mask(mask)
  mask = _scorable_tokens(mask, rewards) & finite[:, None]
  returns = sequences.reverse_discounted_cumsum(
      jnp.where(mask, rewards, 0.0), mask)
  return types.EstimatorOutput(
      advantages=jnp.where(mask, returns - baseline[:, None], 0.0),
      returns=returns, info={})


def implicit_process_rewards(prm_logprobs: ArrayLike, ref_logprobs: ArrayLike,
                             mask: ArrayLike, beta: float = 0.05) -> jax.Array:
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


def _leave_one_out(rewards, source_mask, rows, group_ids, num_groups: int,
                   singleton: str) -> jax.Array:
  """PRIME's per-source RLOO on the entries of `source_mask`.

  r ← r·n/(n−1) − Σ_{j∈g} mean_j / (n−1), mean_j the mean of row j's source
  entries (0 when it has none), n the number of `rows` (scorable rows) in
  the group. Singleton rows keep r ("raw") or get 0 ("zero").
  """
  row_mean = masking.masked_mean(rewards, source_mask, axis=1, eps=0.0)
  size = groups.group_sum(rows.astype(jnp.float32), group_ids,
                          num_groups)[group_ids]
  total = groups.group_sum(row_mean, group_ids, num_groups)[group_ids]
  scale = jnp.where(size > 1, size / jnp.maximum(size - 1.0, 1.0), 1.0)
  offset = jnp.where(size > 1, total / jnp.maximum(size - 1.0, 1.0), 0.0)
  out = rewards * scale[:, None] - offset[:, None]
  if singleton == "zero":
    out = jnp.where((size > 1)[:, None], out, 0.0)
  return jnp.where(source_mask, out, 0.0)


def prime(token_rewards: ArrayLike, rm_scores: ArrayLike, mask: ArrayLike,
          group_ids: ArrayLike, num_groups: int, *, outcome_coef: float = 5.0,
          process_coef: float = 5.0, singleton: str = "raw",
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
  (`"zero"`); a row with no valid token has mean 0 and still counts in n; a
  row with a non-finite score or process score (at a valid token) is
  unscorable: 0 everywhere and left out of n, the means and the whitening;
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
    outcome_coef: weight of the outcome source (verl `reward_gt_coef`, 5),
      finite.
    process_coef: weight of the process source (verl `reward_dpo_coef`, 5),
      finite.
    singleton: "raw" or "zero", the policy for one-row groups.
    whiten: whiten the returns into advantages (verl always does).

  Returns:
    EstimatorOutput(advantages, returns = G, info={"token_rewards": r}),
    f32[B, T], 0 at masked tokens and on unscorable rows.

  Raises:
    ValueError: wrong ranks, shapes, `num_groups` or options.

  Examples:
    Two responses to one prompt with outcome rewards only
    (`rm_scores=None`):

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import cajax
    >>> token_rewards = jnp.array([[0., 0., 1.], [0., 0., 0.]])
    >>> mask = jnp.array([[1, 1, 1], [1, 1, 0]], bool)
    >>> out = cajax.prime(token_rewards, None, mask, jnp.array([0, 0]),
    ...                   num_groups=1, whiten=False)
    >>> print(np.asarray(out.returns).round(2))
    [[ 5.  5.  5.]
     [-5. -5.  0.]]
  """
  batch, _ = _checks.check_batch(mask)
  _checks.check_choice(singleton, ("raw", "zero"), "singleton")
  outcome_coef = _checks.check_number(outcome_coef, "outcome_coef")
  process_coef = _checks.check_number(process_coef, "process_coef")
  _checks.check_bool(whiten, "whiten")
  group_ids = groups.check_group_ids(group_ids, batch, num_groups)
  scores, rows = scoring.sequence_scores(token_rewards, mask)
  rows = rows & groups.in_range(group_ids, num_groups)
  mask = _checks.as_mask(mask)
  if rm_scores is not None:
    process = _checks.as_float_like(rm_scores, mask, "rm_scores")
    rows = rows & scoring.finite_rows(process, mask)
  mask = mask & rows[:, None]
  last = masking.last_token_mask(mask) & mask
  outcome = jnp.where(last, scores[:, None], 0.0)
  rewards = outcome_coef * _leave_one_out(outcome, last, rows, group_ids,
                                          num_groups, singleton)
  if rm_scores is not None:
    rewards = rewards + process_coef * _leave_one_out(
        jnp.where(mask, process, 0.0), mask, rows, group_ids, num_groups,
        singleton)
  returns = sequences.reverse_discounted_cumsum(rewards, mask)
  return types.EstimatorOutput(
      advantages=_maybe_whiten(returns, mask, whiten), returns=returns,
      info={"token_rewards": rewards})


# ---------------------------------------------------------------------------
# Registry adapters.


def _gae_adapter(rollouts: types.Rollouts, **kwargs) -> types.EstimatorOutput:
  return gae(rollouts.token_rewards, rollouts.values, rollouts.mask, **kwargs)


def _reinforce_plus_plus_adapter(rollouts: types.Rollouts,
                                 **kwargs) -> types.EstimatorOutput:
  return reinforce_plus_plus(rollouts.token_rewards, rollouts.mask, **kwargs)


def _remax_adapter(rollouts: types.Rollouts) -> types.EstimatorOutput:
  return remax(rollouts.token_rewards, rollouts.baseline_scores,
               rollouts.mask)


def _prime_example_inputs(rollouts: types.Rollouts, rng) -> dict:
  shape = jnp.shape(rollouts.mask)
  scores = rng.normal(size=shape).astype("float32") * 0.05
  return {"rm_scores": jnp.where(rollouts.mask, scores, 0.0)}


def _prime_adapter(rollouts: types.Rollouts, rm_scores=None,
                   beta: float = 0.05, **kwargs) -> types.EstimatorOutput:
  """PRIME from `Rollouts`.

  Process scores: the `rm_scores` keyword if given; otherwise the implicit
  rewards β·(logprobs − ref_logprobs), reading `rollouts.logprobs` as the
  implicit PRM's log-probs (PRIME initialises the PRM from the policy);
  otherwise (neither given) outcome rewards only.
  """
  beta = _checks.check_number(beta, "beta")
  if rm_scores is None and rollouts.logprobs is not None and (
      rollouts.ref_logprobs is not None):
    rm_scores = implicit_process_rewards(rollouts.logprobs,
                                         rollouts.ref_logprobs,
                                         rollouts.mask, beta=beta)
  return prime(rollouts.token_rewards, rm_scores, rollouts.mask,
               rollouts.group_ids, rollouts.num_groups, **kwargs)
