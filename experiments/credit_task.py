"""Controlled-bifurcation rollouts: one decision decides success.

Each response is cut into `num_steps` steps of equal length. Exactly one
decision, at a chosen position, determines success: the policy takes the good
branch with probability `p_good`, and success then happens with probability
`p_success_good` (`p_success_bad` after the bad branch). Every other token is
a distractor that has no effect on the outcome. The decision is

* `token`: one token in the decisive step,
* `step`: every token of the decisive step,
* `turn`: every token of the decisive turn, where turns are separated by
  masked observation tokens (so turns are the contiguous runs of `mask`).

Because the success probabilities are known, so is the true counterfactual
advantage of every token: at the decision, A*(good) = P(s | good) − P(s) and
A*(bad) = P(s | bad) − P(s); on distractors A* = 0.

Process signals (step rewards, critic values, critique flags) come with a
`signal_quality` q ∈ [0, 1]: a step reward is q · ideal + (1 − q) · noise,
where ideal is +1 for a correct step and −1 for the bad decisive step.
Outcome rewards can be flipped with probability `reward_noise`.

A hackable PRM (`hack_rate` > 0) adds `hack_bonus` to the reward of each
distractor step with probability `hack_rate`, whatever the outcome: the
exploitable over-rewarding that PURE (Cheng et al., arXiv 2504.15275) argues
sum-form credit accumulates and min-form credit ignores.

`credit_metrics` scores an advantage array against the ground truth, and
`method_inputs` supplies the method-specific inputs of an estimator.
"""

import dataclasses
from typing import Literal

import numpy as np

import cajax

__all__ = [
    "Batch", "GRANULARITIES", "OBSERVATION_TOKENS", "POSITIONS", "TaskConfig",
    "credit_metrics", "decisive_step", "make_batch", "method_inputs",
]

GRANULARITIES = ("token", "step", "turn")
POSITIONS = ("early", "middle", "late")
OBSERVATION_TOKENS = 2  # masked tokens between turns for `turn` decisions


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskConfig:
  """Shape and difficulty of a controlled-bifurcation batch.

  Attributes:
    num_groups: prompt groups in the batch.
    group_size: responses per prompt.
    num_steps: steps per response.
    step_length: tokens per step.
    granularity: what the decisive choice is: a token, a step or a turn.
    p_good: probability of taking the good branch.
    p_success_good: probability of success after the good branch.
    p_success_bad: probability of success after the bad branch.
    reward_noise: probability of flipping each outcome reward.
    position: where the decision sits: early, middle or late.
    signal_quality: q in q·ideal + (1 − q)·noise for step rewards, critic
      values and critiques.
    hack_rate: fraction of distractor steps whose PRM reward is inflated.
    hack_bonus: the inflation added to a hacked step's PRM reward.
    seed: NumPy seed.
  """
  num_groups: int = 32
  group_size: int = 8
  num_steps: int = 8
  step_length: int = 6
  granularity: Literal["token", "step", "turn"] = "step"
  p_good: float = 0.5
  p_success_good: float = 0.9
  p_success_bad: float = 0.1
  reward_noise: float = 0.0
  position: Literal["early", "middle", "late"] = "middle"
  signal_quality: float = 0.8
  hack_rate: float = 0.0
  hack_bonus: float = 2.0
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Batch:
  """A controlled-bifurcation batch and its ground truth."""
  rollouts: cajax.Rollouts
  decisive: np.ndarray        # bool[B, T], the decision's tokens
  true_advantage: np.ndarray  # f64[B, T], A* on valid tokens, 0 elsewhere
  good: np.ndarray            # bool[B], the row took the good branch
  critique_flags: np.ndarray  # bool[B, 3, S], noisy "step is wrong" votes


def decisive_step(config: TaskConfig) -> int:
  """Index of the decisive step for the configured position."""
  last = config.num_steps - 1
  return {"early": 0, "middle": last // 2, "late": last}[config.position]


def make_batch(config: TaskConfig) -> Batch:
  """Samples one controlled-bifurcation batch (numpy, then jax arrays)."""
  if config.granularity not in GRANULARITIES:
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got "
                     f"{config.granularity!r}.")
  if config.position not in POSITIONS:
    raise ValueError(f"position must be one of {POSITIONS}, got "
                     f"{config.position!r}.")
  rng = np.random.default_rng(config.seed)
  batch = config.num_groups * config.group_size
  gap = OBSERVATION_TOKENS if config.granularity == "turn" else 0
  stride = config.step_length + gap
  length = config.num_steps * stride
  steps, decision = config.num_steps, decisive_step(config)

  # Layout: step s occupies [s·stride, s·stride + step_length); in `turn`
  # mode the next `gap` tokens are masked observations.
  offsets = np.arange(length) % stride
  step_of_token = np.arange(length) // stride
  in_step = offsets < config.step_length
  mask = np.broadcast_to(in_step, (batch, length)).copy()
  step_ids = np.where(mask, step_of_token[None, :], -1).astype(np.int32)

  good = rng.random(batch) < config.p_good
  p_success = np.where(good, config.p_success_good, config.p_success_bad)
  success = rng.random(batch) < p_success
  flip = rng.random(batch) < config.reward_noise
  outcome = (success ^ flip).astype(np.float32)

  decisive = mask & (step_ids == decision)
  if config.granularity == "token":
    position = decision * stride + rng.integers(0, config.step_length,
                                                size=batch)
    decisive = np.zeros_like(mask)
    decisive[np.arange(batch), position] = True

  p_mean = (config.p_good * config.p_success_good
            + (1 - config.p_good) * config.p_success_bad)
  row_true = np.where(good, config.p_success_good, config.p_success_bad)
  true_advantage = np.where(decisive, (row_true - p_mean)[:, None], 0.0)

  token_rewards = np.zeros((batch, length), np.float32)
  token_rewards[:, length - 1 - gap] = outcome

  q = config.signal_quality
  ideal_steps = np.ones((batch, steps))
  ideal_steps[:, decision] = np.where(good, 1.0, -1.0)
  step_rewards = q * ideal_steps + (1 - q) * rng.uniform(
      -1, 1, size=(batch, steps))
  hacked = np.zeros((batch, steps), bool)
  if config.hack_rate > 0:  # no draw otherwise: default batches unchanged
    hacked = rng.random((batch, steps)) < config.hack_rate
    hacked[:, decision] = False
  step_rewards = (step_rewards + config.hack_bonus * hacked).astype(
      np.float32)
  wrong_prob = np.clip(0.5 - 0.5 * q * ideal_steps, 0.0, 1.0)
  critique_flags = rng.random((batch, 3, steps)) < wrong_prob[:, None, :]

  # Oracle-quality critic: P(success | prefix), blurred by (1 − q).
  decided = step_of_token[None, :] > decision
  if config.granularity == "token":
    decided = np.arange(length)[None, :] > position[:, None]
  values = np.where(decided, p_success[:, None], p_mean)
  values = (q * values + (1 - q) * rng.uniform(0, 1, size=values.shape))

  logprobs = np.where(mask, -np.abs(rng.normal(0.5, 0.3, (batch, length))),
                      0.0)
  entropy = np.abs(rng.normal(1.0, 0.3, (batch, length)))
  entropy = np.where(decisive, entropy + 1.0, entropy)  # forks are uncertain
  greedy_success = (config.p_success_good if config.p_good >= 0.5
                    else config.p_success_bad)
  f32 = lambda x: np.asarray(x, np.float32)
  rollouts = cajax.Rollouts(
      mask=mask,
      token_rewards=token_rewards,
      group_ids=np.repeat(np.arange(config.num_groups),
                          config.group_size).astype(np.int32),
      num_groups=config.num_groups,
      values=f32(values),
      old_logprobs=f32(logprobs),
      ref_logprobs=f32(logprobs + 0.05 * rng.normal(size=logprobs.shape)),
      logprobs=f32(logprobs + 0.02 * rng.normal(size=logprobs.shape)),
      entropy=f32(entropy),
      self_certainty=f32(np.maximum(3.0 - entropy, 0.0)),
      token_logits=f32(rng.normal(2.0, 1.0, (batch, length))),
      sum_pi_squared=f32(np.exp(-entropy)),
      step_ids=step_ids,
      step_rewards=step_rewards,
      step_mask=np.ones((batch, steps), bool),
      reward_components=np.stack(
          [outcome, np.ones(batch, np.float32)], axis=1),
      baseline_scores=f32(rng.random(batch) < greedy_success),
  )
  return Batch(rollouts=rollouts, decisive=decisive,
               true_advantage=true_advantage, good=good,
               critique_flags=critique_flags)


def credit_metrics(advantages: np.ndarray, batch: Batch) -> dict:
  """Localisation, Spearman ρ, sign accuracy and distractor variance."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  mask = np.asarray(batch.rollouts.mask)
  adv = np.where(mask, np.asarray(advantages, np.float64), 0.0)
  decisive = batch.decisive
  distractor = mask & ~decisive
  total = np.abs(adv).sum()
  localisation = np.abs(adv[decisive]).sum() / total if total > 0 else 0.0
  rho = stats.spearmanr(adv[mask], batch.true_advantage[mask]).statistic
  decision_mean = (adv * decisive).sum(1) / np.maximum(decisive.sum(1), 1)
  wanted = np.where(batch.good, 1.0, -1.0)
  sign_accuracy = np.mean(np.sign(decision_mean) == wanted)
  decisive_power = np.mean(adv[decisive] ** 2)
  distractor_var = (np.var(adv[distractor]) / decisive_power
                    if decisive_power > 0 else np.nan)
  return {"localisation": localisation,
          "spearman": 0.0 if np.isnan(rho) else rho,
          "sign_accuracy": sign_accuracy,
          "distractor_var": distractor_var}


def method_inputs(name: str, batch: Batch, seed: int) -> dict:
  """Keyword inputs of `name`: the task's own where it has them.

  The task has critiques of its steps, no retried prefix (R³L pivot turns
  are 0) and no shared branch prefix (SLATE prefixes are empty: each prompt
  group is one branch point); other inputs are the registry's examples.
  """
  kwargs = cajax.example_inputs(name, batch.rollouts,
                                np.random.default_rng(seed))
  batch_size = batch.good.shape[0]
  task_inputs = dict(critique_flags=batch.critique_flags,
                     pivot_turns=np.zeros(batch_size, np.int32),
                     prefix_lengths=np.zeros(batch_size, np.int32))
  return {key: task_inputs.get(key, value) for key, value in kwargs.items()}
