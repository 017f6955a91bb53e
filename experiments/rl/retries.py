"""R3L reflect-and-retry (arXiv 2601.03715): restart failed responses from
just before their first wrong step.

In each group of G rows, the last `retry_samples` rows are replaced by
continuations of one failed response of the group (the first failed row
among the others whose task gives a retry prefix, i.e. the response before
its first wrong step, found by the step checker). The prefix is copied with
its sampling log-probs (the same policy sampled it), and sampling continues
after it. With `freeze_prefix` (pivotal credit), the shared prefix is kept
out of the loss on BOTH the failed source row and its retries, as in the
authors' code: the prefix is trained by neither, and only the tokens after
the pivot are credited. Groups without such a failure keep their ordinary
samples.
"""

import dataclasses

import numpy as np

from experiments.rl import rollouts as rollouts_lib

__all__ = ["retry"]


def retry(task, problems, responses: rollouts_lib.Responses,
          scored: rollouts_lib.Scored, *, group_size: int,
          retry_samples: int, freeze_prefix: bool,
          generate) -> tuple[rollouts_lib.Responses, list[int]]:
  """Returns the responses with retries written in, and the retried rows.

  Args:
    task: supplies `retry_prefix`.
    problems: B problems, G consecutive rows per prompt.
    responses, scored: the ordinary samples and their scores.
    group_size: G.
    retry_samples: rows per group to replace (< G).
    freeze_prefix: keep the shared prefix out of the loss, on the source
      row and on its retries.
    generate: `(problems, prefixes) -> Responses` sampling continuations.
  """
  if not 0 <= retry_samples < group_size:
    raise ValueError(f"rl.retry_samples must be in [0, {group_size}), got "
                     f"{retry_samples}.")
  rows, prefixes, sources = [], [], []
  budget = responses.tokens.shape[1]
  for start in range(0, len(problems), group_size):
    source = _failed_with_prefix(task, problems, responses, scored,
                                 range(start, start + group_size
                                       - retry_samples), budget)
    if source is None:
      continue
    row, prefix = source
    sources.append((row, len(prefix)))
    lps = responses.sampler_logprobs[row, :len(prefix)]
    for target in range(start + group_size - retry_samples,
                        start + group_size):
      rows.append(target)
      prefixes.append((prefix, lps))
  if not rows:
    return responses, []
  new = generate([problems[r] for r in rows], prefixes)
  out = dataclasses.replace(
      responses, **{f: getattr(responses, f).copy() for f in (
          "tokens", "valid", "observation", "sampler_logprobs", "finished")})
  frozen = np.zeros(responses.valid.shape, bool)
  for i, row in enumerate(rows):
    for field in ("tokens", "valid", "observation", "sampler_logprobs",
                  "finished"):
      getattr(out, field)[row] = getattr(new, field)[i]
    frozen[row, :len(prefixes[i][0])] = freeze_prefix
  for row, length in sources:
    frozen[row, :length] = freeze_prefix
  out.frozen = frozen
  return out, rows


def _failed_with_prefix(task, problems, responses, scored, rows, budget):
  for row in rows:
    outcome = scored.outcome[row]
    if not np.isfinite(outcome) or outcome > 0.5:
      continue
    prefix = task.retry_prefix(problems[row], responses.response_ids(row),
                               scored.scores[row])
    if prefix is not None and 0 < len(prefix) < budget:
      return row, list(prefix)
  return None
