"""Where each arm puts credit: per-token advantages of one fixed response.

One problem, a group of responses sampled from the (shared) warm-start
policy, scored once; every arm's estimator then runs on the same group and
the advantages of one response are drawn as a row per arm, with the
response's tokens on the x axis. A response with a wrong or filler step is
preferred, since that is where the methods disagree.
"""

import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

import cajax

from experiments.ablation import spec
from experiments.rl import checkpoints
from experiments.rl import policy as policy_lib
from experiments.rl import rollouts as rollouts_lib
from experiments.rl import experiment
from experiments.rl import run_config
from experiments.rl import train_step

__all__ = ["advantage_map"]


def _pick_row(scored) -> int:
  """The first row with a non-correct step label, else row 0."""
  labels = scored.arrays["step_labels"]
  mask = scored.arrays["step_mask"]
  for row in range(labels.shape[0]):
    if np.any(mask[row] & (labels[row] != 1)):
      return row
  return 0


def advantage_map(ablation, size: str, init_checkpoint: str | None,
                  path: str, group_size: int = 8, seed: int = 12345,
                  overrides: dict | None = None):
  """Draws the map to `path`; returns {arm: advantages of the row}.
  `overrides` are the runs' command-line overrides (`spec.build_config`)."""
  arms = list(ablation.arms)
  config = spec.build_config(ablation, f"{arms[0]},0,{size}", overrides)
  exp = experiment.Experiment(config)
  graphdef, params, rest = exp.new_policy(value_head=False)
  if init_checkpoint:
    params = checkpoints.restore_params(init_checkpoint + "/checkpoints",
                                        params)
  problem = exp.task.sample_problems(np.random.default_rng(seed), 1)[0]
  problems = [problem] * group_size
  decoder = policy_lib.merged_decoder(graphdef, params, rest)
  responses = rollouts_lib.generate(exp.task, decoder, problems,
                                    sampling=exp.sampling,
                                    key=jax.random.key(seed))
  scored = rollouts_lib.score_batch(exp.task, problems, responses,
                                    exp.task.max_steps)
  stats = train_step.jit_token_outputs(
      graphdef, temperature=exp.sampling.temperature,
      stats=tuple(policy_lib.STATISTICS), values=False,
      banned_tokens=exp.sampling.banned_tokens)(
          params, rest, responses.prompt_tokens, responses.prompt_valid,
          responses.tokens, responses.valid)
  # No critic or reference here: values are 0 and the reference is the
  # policy itself; no greedy baseline either.
  stats.update(values=jnp.zeros_like(stats["logprobs"]),
               ref_logprobs=stats["logprobs"])
  group_ids = np.zeros(group_size, np.int32)
  row = _pick_row(scored)
  out = {}
  for arm in arms:
    rl = run_config.validate(
        spec.build_config(ablation, f"{arm},0,{size}", overrides)).rl
    rollouts = rollouts_lib.build_batch(
        rl.resolved, responses, scored, group_ids, 1, statistics=stats,
        reward_source=rl.reward_source,
        baseline_scores=np.zeros(group_size, np.float32))
    out[arm] = np.asarray(rl.resolved.function(rollouts).advantages[row])
  length = int(responses.valid[row].sum())
  # Escaped (newlines, control bytes of a real tokenizer's pieces).
  text = [repr(exp.task.tokenizer.decode([int(t)]))[1:-1] or "·"
          for t in responses.tokens[row, :length]]
  grid = np.stack([out[a][:length] for a in arms])
  scale = np.max(np.abs(grid)) or 1.0
  fig, ax = plt.subplots(figsize=(max(6, 0.32 * length), 0.5 * len(arms) + 1.6))
  image = ax.imshow(grid, cmap="RdBu", vmin=-scale, vmax=scale,
                    aspect="auto")
  ax.set_yticks(range(len(arms)), arms)
  ax.set_xticks(range(length), text, fontsize=8)
  outcome = scored.outcome[row]
  ax.set_title(f"per-token advantage, one response (outcome {outcome:g}); "
               f"prompt {exp.task.tokenizer.decode(problem.prompt_ids)!r}",
               fontsize=9)
  fig.colorbar(image, ax=ax, fraction=0.02)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return out

