"""From problems to a scored, padded batch: sample, score, and build
`cajax.Rollouts`.

`generate` samples one response per problem (a group repeats its prompt)
with the KV-cache sampler. For
tool tasks a response may stop on a tool-call token: the environment's
observation is appended (those tokens are attended to but never trained on,
and returns skip them) and sampling continues from the whole context, until
EOS, the response budget or the task's `max_tool_calls`. `score_batch` asks the task to score each
response on the host and lays the scores out as `[B, T]` / `[B, S]` arrays.
"""

import dataclasses

import jax
import numpy as np

import cajax

from experiments.models import sampler as sampler_lib
from experiments.tasks import base as task_base
from experiments.tasks import batching

__all__ = [
    "REWARD_SOURCES", "Responses", "Scored", "build_batch", "generate",
    "left_pad", "score_batch",
]


@dataclasses.dataclass
class Responses:
  """Sampled responses as host arrays (B rows, T = the response budget)."""
  prompt_tokens: np.ndarray     # int32[B, P], left-padded
  prompt_valid: np.ndarray      # bool[B, P]
  tokens: np.ndarray            # int32[B, T], pad after the end
  valid: np.ndarray             # bool[B, T], every token attended to
  observation: np.ndarray       # bool[B, T], inserted by the environment
  sampler_logprobs: np.ndarray  # f32[B, T], 0 on observations and padding
  finished: np.ndarray          # bool[B], ended with EOS in the budget
  # bool[B, T], tokens kept out of the loss (an R3L retry's shared prefix).
  frozen: np.ndarray | None = None

  @property
  def mask(self) -> np.ndarray:
    """Trainable tokens: sampled by the policy, inside the response."""
    mask = self.valid & ~self.observation
    return mask if self.frozen is None else mask & ~self.frozen

  def response_ids(self, row: int) -> np.ndarray:
    return self.tokens[row, :int(self.valid[row].sum())]


def left_pad(sequences, width: int, pad_id: int):
  """(int32[B, width], bool[B, width]) with each sequence right-aligned."""
  tokens = np.full((len(sequences), width), pad_id, np.int32)
  valid = np.zeros((len(sequences), width), bool)
  for row, seq in enumerate(sequences):
    if len(seq) > width:
      raise ValueError(f"sequence {row} has {len(seq)} tokens, more than the "
                       f"width {width}.")
    if len(seq):
      tokens[row, width - len(seq):] = seq
      valid[row, width - len(seq):] = True
  return tokens, valid


def generate(task: task_base.Task, decoder,
             problems: list[task_base.Problem], *,
             sampling: sampler_lib.SamplingConfig, key: jax.Array,
             prefixes=None) -> Responses:
  """Samples one response per problem (repeat problems for groups).

  Args:
    task: supplies the tokenizer, prompt width and tool observations.
    decoder: the policy's decoder.
    problems: B problems.
    sampling: the sampler settings; `max_new_tokens` is the response budget
      N, shared by every turn of a multi-turn response.
    key: PRNG key.
    prefixes: optional B (token ids, sampling log-probs) pairs that each
      response starts from (R3L retries); sampling continues after them.

  Returns:
    `Responses` with host arrays.
  """
  tok = task.tokenizer
  rows, budget = len(problems), sampling.max_new_tokens
  prompt_tokens, prompt_valid = left_pad(
      [p.prompt_ids for p in problems], task.max_prompt_len, tok.pad_id)
  tokens = np.full((rows, budget), tok.pad_id, np.int32)
  observation = np.zeros((rows, budget), bool)
  logprobs = np.zeros((rows, budget), np.float32)
  length = np.zeros(rows, np.int64)
  active = np.ones(rows, bool)
  finished = np.zeros(rows, bool)
  context = (prompt_tokens, prompt_valid)
  if prefixes is not None:
    for row, (ids, lps) in enumerate(prefixes):
      length[row] = len(ids)
      tokens[row, :len(ids)], logprobs[row, :len(ids)] = ids, lps
    active = length < budget
    context = _continuation_context(prompt_tokens, prompt_valid, tokens,
                                    length, task.max_prompt_len + budget,
                                    tok.pad_id)
  # The task's one tool-call limit (its `observation` also enforces it).
  max_turns = task.max_tool_calls
  for turn in range(max_turns + 1):
    out = jax.tree.map(np.asarray, sampler_lib.sample(
        decoder, *context, sampling, jax.random.fold_in(key, turn),
        tok.pad_id))
    for row in np.flatnonzero(active):
      sampled = int(out.mask[row].sum())
      take = min(sampled, budget - int(length[row]))
      span = slice(int(length[row]), int(length[row]) + take)
      tokens[row, span] = out.tokens[row, :take]
      logprobs[row, span] = out.logprobs[row, :take]
      length[row] += take
      ended = bool(out.stopped[row]) and take == sampled
      if ended and out.stop_token[row] == tok.eos_id:
        finished[row], active[row] = True, False
        continue
      obs = (task.observation(problems[row], tokens[row, :length[row]])
             if ended and turn < max_turns else None)
      if not obs:
        active[row] = False
        continue
      take = min(len(obs), budget - int(length[row]))
      span = slice(int(length[row]), int(length[row]) + take)
      tokens[row, span] = obs[:take]
      observation[row, span] = True
      length[row] += take
      active[row] = length[row] < budget
    if not active.any():
      break
    context = _continuation_context(prompt_tokens, prompt_valid, tokens,
                                    length, task.max_prompt_len + budget,
                                    tok.pad_id)
  valid = np.arange(budget)[None, :] < length[:, None]
  return Responses(prompt_tokens, prompt_valid, tokens, valid, observation,
                   logprobs, finished)


def _continuation_context(prompt_tokens, prompt_valid, tokens, length,
                          width: int, pad_id: int):
  """Each row's prompt and response so far, left-padded to `width`."""
  return left_pad([list(pt[pv]) + list(t[:n]) for pt, pv, t, n in
                   zip(prompt_tokens, prompt_valid, tokens, length)],
                  width, pad_id)


@dataclasses.dataclass
class Scored:
  """Host-side scores of a batch, laid out for cajax."""
  outcome: np.ndarray        # f32[B], NaN on unscorable rows
  arrays: dict               # token_rewards [B, T], step_ids [B, T],
                             # step_rewards / step_mask / step_labels [B, S]
  scores: list               # the tasks' `Score` objects
  metrics: dict              # batch means of the tasks' metrics


def score_batch(task: task_base.Task, problems, responses: Responses,
                max_steps: int) -> Scored:
  """Scores every response on the host (NaN outcomes stay NaN)."""
  scores, observations = [], []
  for row, problem in enumerate(problems):
    ids = responses.response_ids(row)
    obs = responses.observation[row, :ids.size]
    scores.append(task.score(problem, ids, obs if obs.any() else None))
    observations.append(obs)
  arrays = batching.scores_to_arrays(scores, responses.tokens.shape[1],
                                     max_steps, observations)
  outcome = np.asarray([s.outcome for s in scores], np.float32)
  keys = sorted({k for s in scores for k in s.metrics})
  metrics = {k: float(np.mean([s.metrics.get(k, np.nan) for s in scores]))
             for k in keys}
  return Scored(outcome, arrays, scores, metrics)


# Where `rl.reward_source` takes the token rewards from (`Scored.arrays`).
REWARD_SOURCES = cajax.Registry("reward source", {
    "outcome": "token_rewards",      # the outcome at the last valid token
    "steps": "step_token_rewards",   # each step's reward at its last token
})
# Rollouts fields every training batch carries, from the task's scores.
_SCORE_FIELDS = ("token_rewards", "group_ids", "step_ids", "step_rewards",
                 "step_mask")


def _estimator_token_rewards(scored: Scored, group_ids, fraction: float,
                             source: str) -> np.ndarray:
  """The token rewards the estimator sees, f32[B, T].

  `fraction` is the share of groups whose outcome is verifiable (PURE's
  "10% VR"): the first ⌈fraction · G⌉ groups of the batch keep their
  rewards, the others get 0, as prompts without a reference answer.
  """
  rewards = scored.arrays[REWARD_SOURCES.lookup(source,
                                                "rl.reward_source")].copy()
  if fraction < 1.0:
    num_groups = int(np.max(group_ids)) + 1
    hidden = np.asarray(group_ids) >= int(np.ceil(fraction * num_groups))
    rewards[hidden] = np.where(np.isnan(rewards[hidden]), np.nan, 0.0)
  return rewards


def build_batch(resolved: cajax.registry.Resolved, responses: Responses,
                scored: Scored, group_ids, num_groups: int, *,
                statistics: dict, reward_source: str = "outcome",
                verifiable_fraction: float = 1.0,
                baseline_scores=None) -> cajax.Rollouts:
  """THE batch builder: the `cajax.Rollouts` an estimator reads.

  Used by the trainer, its config checks and the ablation heat map. The
  task's scores give the token rewards, groups and step layout; the
  trainer's per-token statistics give exactly the other fields
  `resolved.fields` names (device placement is the caller's).

  Args:
    resolved: the estimator, from `cajax.resolve(name, **settings)`.
    responses: from `generate`.
    scored: from `score_batch`.
    group_ids: int32[B] group of each row.
    num_groups: G.
    statistics: per-token f32[B, T] arrays of the policy before the update,
      by `Rollouts` field name: `logprobs` (also used as `old_logprobs`),
      the `policy.STATISTICS` the estimator reads, and `values` and
      `ref_logprobs` when it reads them.
    reward_source: "outcome" or "steps" (`REWARD_SOURCES`).
    verifiable_fraction: share of groups whose rewards the estimator sees.
    baseline_scores: f32[B] (ReMax's greedy rewards), when it reads them.

  Returns:
    The rollouts, with every field `resolved.fields` names set.

  Raises:
    ValueError: a field the estimator reads that was not supplied.
  """
  supplied = {**statistics, "old_logprobs": statistics.get("logprobs"),
              "baseline_scores": baseline_scores}
  extra = {f: supplied.get(f) for f in resolved.fields
           if f not in _SCORE_FIELDS}
  missing = sorted(f for f, v in extra.items() if v is None)
  if missing:
    raise ValueError(
        f"estimator {resolved.name!r} reads Rollouts fields {missing}, which "
        f"this batch was not given (statistics: {sorted(statistics)}).")
  return cajax.Rollouts(
      mask=responses.mask,
      token_rewards=_estimator_token_rewards(scored, group_ids,
                                             verifiable_fraction,
                                             reward_source),
      group_ids=np.asarray(group_ids, np.int32),
      num_groups=num_groups,
      step_ids=scored.arrays["step_ids"],
      step_rewards=scored.arrays["step_rewards"],
      step_mask=scored.arrays["step_mask"],
      **extra)
