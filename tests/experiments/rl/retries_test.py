"""R3L retries: pivotal credit freezes the shared prefix on the failed
source row and on every retry of it."""

import numpy as np

from experiments.rl import retries
from experiments.rl import rollouts


class _Task:
  """Fails every response whose first token is 9; its prefix is the
  response's first two tokens."""

  def retry_prefix(self, problem, ids, score):
    del problem, score
    return list(ids[:2]) if len(ids) > 2 else None


def _responses(rows, width=6, failed=()):
  tokens = np.arange(rows * width, dtype=np.int32).reshape(rows, width) % 7
  tokens[list(failed), 0] = 9
  valid = np.ones((rows, width), bool)
  zeros = np.zeros((rows, width), np.float32)
  return rollouts.Responses(np.zeros((rows, 1), np.int32),
                            np.ones((rows, 1), bool), tokens, valid,
                            ~valid, zeros, np.ones(rows, bool))


def _retry(freeze: bool):
  rows = 8  # two groups of 4; the last row of each is retried
  responses = _responses(rows, failed=[2])
  outcome = np.where(responses.tokens[:, 0] == 9, 0.0, 1.0)
  scored = rollouts.Scored(outcome.astype(np.float32), {}, [None] * rows, {})
  generated = []

  def generate(problems, prefixes):
    generated.append(prefixes)
    out = _responses(len(problems))
    for i, (ids, _) in enumerate(prefixes):
      out.tokens[i, :len(ids)] = ids
    return out

  out, rows_retried = retries.retry(
      _Task(), list(range(rows)), responses, scored, group_size=4,
      retry_samples=1, freeze_prefix=freeze, generate=generate)
  return out, rows_retried, generated


def test_the_prefix_is_frozen_on_the_source_row_and_its_retry():
  out, retried, generated = _retry(freeze=True)
  # Only group 0 has a failure (row 2); its last row (3) is retried.
  assert retried == [3] and len(generated[0]) == 1
  want = np.zeros(out.valid.shape, bool)
  want[[2, 3], :2] = True
  np.testing.assert_array_equal(out.frozen, want)
  np.testing.assert_array_equal(out.mask, out.valid & ~want)
  np.testing.assert_array_equal(out.tokens[3, :2], out.tokens[2, :2])


def test_without_pivotal_credit_nothing_is_frozen():
  out, retried, _ = _retry(freeze=False)
  assert retried == [3]
  assert not out.frozen.any()
