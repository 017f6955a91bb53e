"""Token-level reward building blocks: implicit rewards, T-REG, transforms, InT.

Small pure functions over padded `[B, T]` batches (mask True on trainable
response tokens; outputs float32 and exactly 0 at masked positions):

* the implicit token reward β·log π/π_ref of "From r to Q*" and its step and
  sequence sums (the sequence sum is the DPO implicit reward);
* T-REG's self-generated contrastive token reward and its token-reward
  regularised preference loss;
* the log-sigmoid reward transform of "Transforming and Combining Rewards"
  and its "AND" combination with per-prompt reference rewards;
* InT's intervention masks (SFT on the on-policy prefix ⊕ the intervention).

None of these is a registered estimator: they produce token rewards, losses
or masks that feed an estimator or a loss.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cajax import _checks
from cajax import masking
from cajax import sequences

__all__ = [
    "InterventionMasks", "TRegLoss", "and_combine", "contrastive_token_reward",
    "first_error_step", "implicit_sequence_reward", "implicit_step_reward",
    "implicit_token_reward", "intervention_sft_mask", "log_sigmoid_transform",
    "reference_from_samples", "t_reg_loss",
]


def _token_pair(x, y, mask, x_name: str, y_name: str):
  _checks.check_batch(mask)
  return (_checks.as_float_like(x, mask, x_name),
          _checks.as_float_like(y, mask, y_name), _checks.as_mask(mask))


def implicit_token_reward(logprobs: ArrayLike, ref_logprobs: ArrayLike,
                          mask: ArrayLike, beta: float = 0.1) -> jax.Array:
  """Implicit token reward r̂ₜ = β·(log π_θ(yₜ|x,y<ₜ) − log π_ref(yₜ|x,y<ₜ)).

  In the token-level MDP of KL-regularised RL the optimal policy satisfies
  β log π*/π_ref(aₜ|sₜ) = Q*(sₜ,aₜ) − V*(sₜ), so r̂ differs from the true
  reward only by the potential-based shaping V*(sₜ) − V*(sₜ₊₁): it is in the
  same equivalence class and assigns credit token by token.

  See "From r to Q*: Your Language Model is Secretly a Q-Function" (Rafailov,
  Hejna, Park, Finn, arXiv 2404.12358).

  Args:
    logprobs: [B, T] log-probs of the sampled tokens under the policy.
    ref_logprobs: [B, T] log-probs of the same tokens under the reference.
    mask: [B, T] bool, True on response tokens (masked entries are ignored,
      even when they hold NaN or inf).
    beta: implicit-reward scale β (DPO's β; 0.1 is the usual DPO value,
      iStar uses 0.05).

  Returns:
    f32[B, T] token rewards, 0 at masked positions.

  Raises:
    ValueError: if `mask` is not rank 2 or the shapes differ.
  """
  logprobs, ref_logprobs, mask = _token_pair(logprobs, ref_logprobs, mask,
                                             "logprobs", "ref_logprobs")
  return jnp.where(mask, beta * (logprobs - ref_logprobs), 0.0)


def implicit_sequence_reward(logprobs: ArrayLike, ref_logprobs: ArrayLike,
                             mask: ArrayLike, beta: float = 0.1) -> jax.Array:
  """Sequence sum of implicit token rewards, the DPO implicit reward.

  R̂(x, y) = Σₜ r̂ₜ = β·log π_θ(y|x)/π_ref(y|x), because the sequence
  log-likelihood is the sum of the token log-likelihoods. This is DPO's
  implicit reward r(x,y) = β log π_θ(y|x)/π_ref(y|x) + β log Z(x) without the
  prompt-only term β log Z(x), which cancels in every preference margin
  R̂(x, y_w) − R̂(x, y_l). With the optimal policy, Σₜ r̂ₜ = Σₜ rₜ − V*(s₀).

  See "From r to Q*: Your Language Model is Secretly a Q-Function" (Rafailov,
  Hejna, Park, Finn, arXiv 2404.12358).

  Args:
    logprobs: [B, T] policy log-probs of the response tokens.
    ref_logprobs: [B, T] reference log-probs.
    mask: [B, T] bool, True on response tokens.
    beta: implicit-reward scale β.

  Returns:
    f32[B] sequence rewards (0 for an all-masked row).

  Raises:
    ValueError: if `mask` is not rank 2 or the shapes differ.
  """
  rewards = implicit_token_reward(logprobs, ref_logprobs, mask, beta=beta)
  return masking.masked_sum(rewards, mask, axis=1)


def implicit_step_reward(logprobs: ArrayLike, ref_logprobs: ArrayLike,
                         mask: ArrayLike, step_ids: ArrayLike, num_steps: int,
                         beta: float = 0.1) -> jax.Array:
  """Implicit step reward: the sum of r̂ₜ over the valid tokens of each step.

  r̂(step s) = Σ_{t: step_ids[t]=s, mask[t]} β·log π_θ(yₜ)/π_ref(yₜ), the
  implicit process reward of PRIME / iStar built on the r→Q* result.

  See "From r to Q*: Your Language Model is Secretly a Q-Function" (Rafailov,
  Hejna, Park, Finn, arXiv 2404.12358).

  Args:
    logprobs: [B, T] policy log-probs.
    ref_logprobs: [B, T] reference log-probs.
    mask: [B, T] bool, True on response tokens.
    step_ids: [B, T] int step index per token, −1 outside any step.
    num_steps: static number of steps S.
    beta: implicit-reward scale β.

  Returns:
    f32[B, S] step rewards, 0 for steps without a valid token.

  Raises:
    ValueError: on mismatched shapes, float `step_ids` or a bad `num_steps`.
  """
  rewards = implicit_token_reward(logprobs, ref_logprobs, mask, beta=beta)
  return sequences.tokens_to_steps(rewards, step_ids, num_steps, mask=mask)


# ------------------------------------------------------------------ T-REG ---


def contrastive_token_reward(better_logprobs: ArrayLike,
                             worse_logprobs: ArrayLike, mask: ArrayLike,
                             temperature: float = 1.0,
                             center: bool = False) -> jax.Array:
  """T-REG's self-generated token reward from contrastive (opposite) prompts.

  rₜ = σ((log π(yₜ | x ⊕ p₊, y<ₜ) − log π(yₜ | x ⊕ p₋, y<ₜ)) / τ) [− ½],

  where p₊ / p₋ steer the same model towards a better / worse response. The
  value is the probability that token yₜ is "good"; with `center=True` it is
  shifted to (−½, ½). Both log-prob arrays are treated as constants
  (stop-gradient): the rewards are weak supervision, not a training path.

  [GAP] T-REG's code is unavailable; the sigmoid of the log-prob difference
  with a temperature τ (default 1) is cajax's reading of the paper's
  contrastive-prompting rewards.

  See "T-REG: Preference Optimization with Token-Level Reward Regularization"
  (Zhou, Zhang, Zhao, Meng, arXiv 2412.02685).

  Args:
    better_logprobs: [B, T] log-probs of the response tokens under the
      "better"-steering prompt.
    worse_logprobs: [B, T] log-probs under the "worse"-steering prompt.
    mask: [B, T] bool, True on response tokens.
    temperature: τ > 0 dividing the log-prob difference.
    center: subtract ½ (signed rewards) instead of returning probabilities.

  Returns:
    f32[B, T] token rewards, 0 at masked positions.

  Raises:
    ValueError: on bad shapes or a non-positive temperature.
  """
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature!r}.")
  better, worse, mask = _token_pair(better_logprobs, worse_logprobs, mask,
                                    "better_logprobs", "worse_logprobs")
  diff = jax.lax.stop_gradient(jnp.where(mask, better - worse, 0.0))
  reward = jax.nn.sigmoid(diff / temperature) - (0.5 if center else 0.0)
  return jnp.where(mask, reward, 0.0)


class TRegLoss(NamedTuple):
  """Per-pair T-REG losses, each `f32[B]`.

  Attributes:
    loss: dpo + alpha · reg, the quantity to average and minimise.
    dpo: the sequence-level DPO loss −log σ(R̂_w − R̂_l).
    reg: the token-reward regulariser.
  """
  loss: jax.Array
  dpo: jax.Array
  reg: jax.Array


def _token_weights(self_rewards, mask, normalize: bool) -> jax.Array:
  if not normalize:
    return jnp.where(mask, self_rewards, 0.0)
  mean = masking.masked_mean(self_rewards, mask, axis=1, eps=0.0)
  safe = jnp.where(mean > 0, mean, 1.0)
  weights = jnp.where(mean[:, None] > 0, self_rewards / safe[:, None], 1.0)
  return jnp.where(mask, weights, 0.0)


def t_reg_loss(chosen_rewards: ArrayLike, chosen_mask: ArrayLike,
               chosen_self_rewards: ArrayLike, rejected_rewards: ArrayLike,
               rejected_mask: ArrayLike, rejected_self_rewards: ArrayLike,
               alpha: float = 1.0, reg_form: str = "weighted_dpo",
               normalize_weights: bool = True,
               target_scale: float = 0.1) -> TRegLoss:
  """DPO loss with T-REG's token-level reward regularisation, per pair.

  With ρₜ the implicit token rewards (`implicit_token_reward`) and sₜ ∈ [0,1]
  the self-generated token rewards (`contrastive_token_reward`, uncentred):

    L_DPO = −log σ(Σₜ ρᵂₜ − Σₜ ρᴸₜ)
    L     = L_DPO + α · L_reg

  `reg_form="weighted_dpo"` (default) re-weights the DPO margin by the token
  rewards so that the sequence reward is credited to the right tokens:

    L_reg = −log σ(Σₜ wᵂₜ ρᵂₜ − Σₜ wᴸₜ ρᴸₜ),  wᵂ = sᵂ,  wᴸ = 1 − sᴸ

  (good tokens of the chosen response and bad tokens of the rejected one
  carry the margin). With `normalize_weights` each row's weights are divided
  by their mean over valid tokens, so constant token rewards give
  L_reg = L_DPO (a row whose weights are all 0 falls back to weights 1).

  `reg_form="mse"` regresses the implicit rewards on the centred token
  rewards of both responses:

    L_reg = ½·(mean_t (ρᵂₜ − c(2sᵂₜ − 1))² + mean_t (ρᴸₜ − c(2sᴸₜ − 1))²),
    c = target_scale.

  [GAP] T-REG's exact regulariser is not recoverable (no code); both forms,
  α = 1 and c = 0.1 (= the default β) are documented choices. All inputs of
  sₜ are constants here.

  See "T-REG: Preference Optimization with Token-Level Reward Regularization"
  (Zhou, Zhang, Zhao, Meng, arXiv 2412.02685).

  Args:
    chosen_rewards: [B, Tw] implicit token rewards ρ of the chosen responses
      (already scaled by β).
    chosen_mask: [B, Tw] bool.
    chosen_self_rewards: [B, Tw] self-generated token rewards in [0, 1].
    rejected_rewards: [B, Tl] implicit token rewards of the rejected ones.
    rejected_mask: [B, Tl] bool.
    rejected_self_rewards: [B, Tl] self-generated token rewards in [0, 1].
    alpha: regularisation weight α.
    reg_form: "weighted_dpo" or "mse".
    normalize_weights: mean-1 token weights per row (weighted_dpo only).
    target_scale: c, the reward scale of the mse targets.

  Returns:
    `TRegLoss` of f32[B] arrays.

  Raises:
    ValueError: on bad shapes, a mismatched number of pairs, or an unknown
      `reg_form`.
  """
  _checks.check_choice(reg_form, ("weighted_dpo", "mse"), "reg_form")
  rho_w, s_w, mask_w = _token_pair(chosen_rewards, chosen_self_rewards,
                                   chosen_mask, "chosen_rewards",
                                   "chosen_self_rewards")
  rho_l, s_l, mask_l = _token_pair(rejected_rewards, rejected_self_rewards,
                                   rejected_mask, "rejected_rewards",
                                   "rejected_self_rewards")
  if mask_w.shape[0] != mask_l.shape[0]:
    raise ValueError(
        f"chosen_mask {tuple(mask_w.shape)} and rejected_mask "
        f"{tuple(mask_l.shape)} must have the same number of rows (pairs).")
  # Zero the masked entries first so NaN padding cannot leak into gradients.
  rho_w, rho_l = jnp.where(mask_w, rho_w, 0.0), jnp.where(mask_l, rho_l, 0.0)
  s_w = jax.lax.stop_gradient(jnp.where(mask_w, s_w, 0.0))
  s_l = jax.lax.stop_gradient(jnp.where(mask_l, s_l, 0.0))
  margin = (masking.masked_sum(rho_w, mask_w, axis=1)
            - masking.masked_sum(rho_l, mask_l, axis=1))
  dpo = jax.nn.softplus(-margin)
  if reg_form == "weighted_dpo":
    w_w = _token_weights(s_w, mask_w, normalize_weights)
    w_l = _token_weights(1.0 - s_l, mask_l, normalize_weights)
    weighted = (masking.masked_sum(w_w * rho_w, mask_w, axis=1)
                - masking.masked_sum(w_l * rho_l, mask_l, axis=1))
    reg = jax.nn.softplus(-weighted)
  else:
    err_w = rho_w - target_scale * (2.0 * s_w - 1.0)
    err_l = rho_l - target_scale * (2.0 * s_l - 1.0)
    reg = 0.5 * (masking.masked_mean(err_w * err_w, mask_w, axis=1, eps=0.0)
                 + masking.masked_mean(err_l * err_l, mask_l, axis=1,
                                       eps=0.0))
  return TRegLoss(loss=dpo + alpha * reg, dpo=dpo, reg=reg)


# ------------------------------------- transforming and combining rewards ---


def _check_reference(rewards, reference_rewards):
  if jnp.ndim(reference_rewards) != 0:
    _checks.check_same_shape(reference_rewards, rewards, "reference_rewards",
                             "rewards")
  return (_checks.as_float(rewards, "rewards"),
          _checks.as_float(reference_rewards, "reference_rewards"))


def log_sigmoid_transform(rewards: ArrayLike,
                          reference_rewards: ArrayLike) -> jax.Array:
  """Transformed reward u = log σ(r − r_ref) = −softplus(r_ref − r).

  Under Bradley–Terry, u is the log-probability that the response beats a
  reference response of reward r_ref(x). It saturates above the reference
  (little gain from over-optimising good outputs, which curbs reward hacking)
  and is ≈ r − r_ref far below it (the gradient stays alive). The stable
  softplus form never gives −inf for finite inputs.

  See "Transforming and Combining Rewards for Aligning Large Language Models"
  (Wang, Nagpal, Berant, Eisenstein, D'Amour, Koyejo, Veitch,
  arXiv 2402.00742).

  Args:
    rewards: raw rewards r, any shape (e.g. f[B] sequence rewards).
    reference_rewards: per-prompt reference rewards, same shape as `rewards`
      (gather a per-group reference with `ref[group_ids]`) or a scalar.

  Returns:
    f32 array shaped like `rewards`, every value < 0.

  Raises:
    ValueError: if `reference_rewards` is neither a scalar nor shaped like
      `rewards`.
  """
  rewards, reference_rewards = _check_reference(rewards, reference_rewards)
  return jax.nn.log_sigmoid(rewards - reference_rewards)


def and_combine(rewards: ArrayLike, reference_rewards: ArrayLike,
                weights: ArrayLike | None = None) -> jax.Array:
  """"AND" combination of K reward models: Σₖ wₖ·log σ(rₖ − r_ref,ₖ).

  The sum of log-sigmoid transformed rewards is log Πₖ P(good on property k)
  (for w = 1): it favours responses acceptable on every property (helpful
  AND harmless) over the raw sum Σₖ rₖ, which one large reward can dominate.

  See "Transforming and Combining Rewards for Aligning Large Language Models"
  (Wang, Nagpal, Berant, Eisenstein, D'Amour, Koyejo, Veitch,
  arXiv 2402.00742).

  Args:
    rewards: [..., K] rewards of the K reward models (last axis).
    reference_rewards: [..., K] per-prompt references (or a scalar).
    weights: optional [K] non-negative weights wₖ (default all 1, the
      paper's plain sum).

  Returns:
    f32[...] combined rewards (the last axis reduced).

  Raises:
    ValueError: on a rank-0 `rewards`, mismatched shapes or bad `weights`.
  """
  _checks.check_rank(rewards, tuple(range(1, 8)), "rewards")
  transformed = log_sigmoid_transform(rewards, reference_rewards)
  if weights is None:
    return jnp.sum(transformed, axis=-1)
  _checks.check_shape(weights, (jnp.shape(rewards)[-1],), "weights",
                      like=f"the last axis of rewards {jnp.shape(rewards)}")
  weights = _checks.as_float(weights, "weights")
  return transformed @ weights


def reference_from_samples(sample_rewards: ArrayLike, group_ids: ArrayLike,
                           num_groups: int, quantile: float = 0.85,
                           valid: ArrayLike | None = None) -> jax.Array:
  """Per-prompt reference reward r_ref(x): a quantile of sampled rewards.

  r_ref(g) = quantile_q {r_b : group_ids[b] = g, valid[b]}, with linear
  interpolation between order statistics (NumPy's default). The samples are
  typically rewards of base/SFT-policy responses to the same prompt; the
  result feeds `log_sigmoid_transform(r, ref[group_ids])`.

  [GAP] The paper studies the percentile choice; the default q = 0.85 is
  recalled from it, not read from code. An empty group gets 0.

  See "Transforming and Combining Rewards for Aligning Large Language Models"
  (Wang, Nagpal, Berant, Eisenstein, D'Amour, Koyejo, Veitch,
  arXiv 2402.00742).

  Args:
    sample_rewards: f[M] rewards of the M reference samples.
    group_ids: int[M] prompt (group) of each sample, in [0, num_groups).
    num_groups: static number of prompts G.
    quantile: q in [0, 1].
    valid: optional bool[M]; invalid samples are ignored.

  Returns:
    f32[num_groups] reference rewards.

  Raises:
    ValueError: on bad shapes, a non-static `num_groups` or q ∉ [0, 1].
  """
  if not 0.0 <= quantile <= 1.0:
    raise ValueError(f"quantile must be in [0, 1], got {quantile!r}.")
  _checks.check_rank(sample_rewards, 1, "sample_rewards")
  _checks.check_same_shape(group_ids, sample_rewards, "group_ids",
                           "sample_rewards")
  num_groups = _checks.check_positive_int(num_groups, "num_groups")
  rewards = _checks.as_float(sample_rewards, "sample_rewards")
  group_ids = _checks.as_int(group_ids, "group_ids")
  keep = jnp.ones(rewards.shape, bool)
  if valid is not None:
    _checks.check_same_shape(valid, sample_rewards, "valid", "sample_rewards")
    keep = _checks.as_mask(valid, "valid")
  member = (group_ids[None, :] == jnp.arange(num_groups)[:, None]) & keep[
      None, :]
  table = jnp.where(member, rewards[None, :], jnp.nan)
  ref = jnp.nanquantile(table, quantile, axis=1)
  return jnp.where(jnp.any(member, axis=1), ref, 0.0)


# -------------------------------------------------------------------- InT ---


class InterventionMasks(NamedTuple):
  """Masks of an InT intervention SFT example, each `bool[B, T]`.

  Attributes:
    loss_mask: tokens that carry the SFT loss: the intervention step (and the
      on-policy prefix steps when `train_prefix`).
    context_mask: tokens kept in the SFT sequence: every position before the
      first token of a step after the intervention (no suffix).
  """
  loss_mask: jax.Array
  context_mask: jax.Array


def intervention_sft_mask(step_ids: ArrayLike, intervention_step: ArrayLike,
                          mask: ArrayLike | None = None,
                          train_prefix: bool = False) -> InterventionMasks:
  """InT masks for SFT on (on-policy prefix up to the error) ⊕ intervention.

  With k = intervention_step[b] (the first erroneous step, replaced by the
  model's self-proposed intervention written as step k):

    loss_mask[t]    = mask[t] ∧ (step_ids[t] = k ∨ (train_prefix ∧
                      0 ≤ step_ids[t] < k))
    context_mask[t] = k ≥ 0 ∧ t < min{t' : step_ids[t'] > k}

  Steps after k (the suffix of the failed trace) are dropped entirely. A row
  with k < 0 (no intervention) gets empty masks. Tokens outside any step
  (id −1) never carry loss; they stay in the context when they precede the
  suffix.

  See "Self-Proposed Interventions Enable Credit Assignment in LLM
  Reasoning" (Yang, Bai, Wu, Yang, Setlur, Kumar, arXiv 2601.14209).

  Args:
    step_ids: [B, T] int step index per token, −1 outside any step.
    intervention_step: int[B] (or scalar) intervention step k per row.
    mask: optional [B, T] bool of trainable tokens (default all True).
    train_prefix: also put the SFT loss on the prefix steps (default False:
      the prefix is context only).

  Returns:
    `InterventionMasks` of bool[B, T].

  Raises:
    ValueError: on bad ranks or shapes, or non-integer ids.
  """
  _checks.check_batch(step_ids, "step_ids")
  ids = _checks.as_int(step_ids, "step_ids")
  k = _checks.as_int(jnp.asarray(intervention_step), "intervention_step")
  _checks.check_rank(k, (0, 1), "intervention_step")
  if k.ndim == 1:
    _checks.check_shape(k, (ids.shape[0],), "intervention_step",
                        like=f"step_ids {tuple(ids.shape)}")
  k = jnp.broadcast_to(k, (ids.shape[0],))
  if mask is None:
    trainable = jnp.ones(ids.shape, bool)
  else:
    _checks.check_same_shape(mask, step_ids, "mask", "step_ids")
    trainable = _checks.as_mask(mask)
  prefix = sequences.step_prefix_mask(ids, k)
  through = sequences.step_prefix_mask(ids, k + 1)
  loss = through if train_prefix else through & ~prefix
  length = ids.shape[1]
  positions = jnp.arange(length, dtype=jnp.int32)[None, :]
  first_suffix = jnp.min(jnp.where(ids > k[:, None], positions, length),
                         axis=1)
  context = (positions < first_suffix[:, None]) & (k[:, None] >= 0)
  return InterventionMasks(loss_mask=loss & trainable, context_mask=context)


def first_error_step(step_correct: ArrayLike,
                     step_mask: ArrayLike | None = None) -> jax.Array:
  """Index of the first valid step judged incorrect, −1 when there is none.

  k[b] = min{s : step_mask[b, s] ∧ ¬step_correct[b, s]}; the intervention
  step of InT when a verifier or judge labels steps.

  See "Self-Proposed Interventions Enable Credit Assignment in LLM
  Reasoning" (Yang, Bai, Wu, Yang, Setlur, Kumar, arXiv 2601.14209).

  Args:
    step_correct: [B, S] bool (non-zero = correct).
    step_mask: optional [B, S] bool of valid steps.

  Returns:
    int32[B].

  Raises:
    ValueError: if `step_correct` is not rank 2 or `step_mask` differs.
  """
  _checks.check_batch(step_correct, "step_correct")
  wrong = ~_checks.as_mask(step_correct, "step_correct")
  if step_mask is not None:
    _checks.check_same_shape(step_mask, step_correct, "step_mask",
                             "step_correct")
    wrong = wrong & _checks.as_mask(step_mask, "step_mask")
  num_steps = wrong.shape[1]
  index = jnp.min(jnp.where(wrong, jnp.arange(num_steps, dtype=jnp.int32),
                            num_steps), axis=1)
  return jnp.where(index < num_steps, index, -1).astype(jnp.int32)
