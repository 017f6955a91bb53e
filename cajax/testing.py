"""Test batches for code built on cajax: random rollouts and named masks.

`make_rollouts` builds a random but well-formed `cajax.Rollouts` with every
field filled (the benchmarks and the tests that run every registered
estimator use it); `example_masks` holds small hand-written masks with the
layouts every estimator must handle; `assert_masked_allclose` checks the
output convention; `jit_with_static` jits a function once per setting of its
static keywords.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from cajax import types

__all__ = [
    "assert_masked_allclose", "example_masks", "jit_with_static",
    "make_rollouts",
]


def example_masks() -> dict[str, np.ndarray]:
  """Named bool[6, 5] masks: no padding, right padding, interior holes, and
  rows that are empty or hold a single valid token.

  Examples:
    >>> from cajax import testing
    >>> testing.example_masks()["right_padding"].sum(axis=1).tolist()
    [5, 3, 1, 4, 2, 5]
  """
  batch, length = 6, 5
  return {
      "no_padding": np.ones((batch, length), bool),
      "right_padding": np.arange(length)[None, :] < np.array(
          [5, 3, 1, 4, 2, 5])[:, None],
      "interior": np.array([[1, 0, 0, 1, 1], [1, 1, 0, 1, 0],
                            [0, 1, 1, 0, 1], [1, 1, 1, 1, 0],
                            [1, 0, 1, 0, 0], [1, 1, 0, 0, 1]], bool),
      "empty_and_single": np.array([[0, 0, 0, 0, 0], [0, 0, 1, 0, 0],
                                    [1, 1, 1, 0, 0], [1, 1, 0, 1, 0],
                                    [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool),
  }


def assert_masked_allclose(actual: ArrayLike, expected: ArrayLike,
                           mask: ArrayLike, rtol: float = 1e-5,
                           atol: float = 1e-5) -> None:
  """Asserts `actual` is finite, close to `expected` where `mask` is True
  and exactly 0 where it is False (the cajax output convention).

  Examples:
    >>> import numpy as np
    >>> from cajax import testing
    >>> mask = np.array([[True, False]])
    >>> testing.assert_masked_allclose(np.array([[1.0, 0.0]]),
    ...                                np.array([[1.0, 7.0]]), mask)
  """
  actual = np.asarray(actual, np.float64)
  mask = np.asarray(mask, bool)
  assert np.all(np.isfinite(actual)), "non-finite output"
  np.testing.assert_allclose(actual[mask], np.asarray(expected)[mask],
                             rtol=rtol, atol=atol)
  assert np.all(actual[~mask] == 0.0), "non-zero output at masked entries"


@functools.lru_cache(maxsize=None)
def _jitted(fn, static: tuple):
  return jax.jit(functools.partial(fn, **dict(static)))


def jit_with_static(fn: Callable, jit: bool = True, **static):
  """`fn` with `static` keywords bound; jitted once per configuration.

  Args:
    fn: the function.
    jit: jit it (False returns the eager partial, for the op-by-op path).
    **static: hashable keyword arguments to bind (they become static).

  Returns:
    A callable taking the remaining arguments.
  """
  if jit:
    return _jitted(fn, tuple(sorted(static.items())))
  return functools.partial(fn, **static)


def make_rollouts(batch: int = 8, length: int = 16, group_size: int = 4,
                  num_steps: int = 4, num_components: int = 2,
                  seed: int = 0, interior_skips: bool = True,
                  as_numpy: bool = False) -> types.Rollouts:
  """Builds a random `Rollouts` of shape [batch, length].

  Args:
    batch: B, a multiple of `group_size`.
    length: T.
    group_size: rows per group (contiguous groups).
    num_steps: S, the step axis of `step_rewards`/`step_mask`.
    num_components: K reward components per row.
    seed: numpy seed.
    interior_skips: put a masked observation run inside some rows.
    as_numpy: keep numpy arrays (for host-side checks) instead of jax arrays.

  Returns:
    A `cajax.Rollouts` with float32 fields, bool masks and int32 ids.

  Examples:
    >>> from cajax import testing
    >>> rollouts = testing.make_rollouts(batch=4, length=6, group_size=2)
    >>> rollouts.mask.shape, rollouts.step_rewards.shape, rollouts.num_groups
    ((4, 6), (4, 4), 2)
  """
  if batch % group_size:
    raise ValueError(f"batch={batch} must be a multiple of "
                     f"group_size={group_size}.")
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, length + 1, size=batch)
  lengths[0] = length
  positions = np.arange(length)[None, :]
  mask = positions < lengths[:, None]
  if interior_skips and length >= 6:
    for row in range(0, batch, 3):
      start = rng.integers(1, max(2, lengths[row] - 2))
      mask[row, start:min(start + 2, lengths[row] - 1)] = False
  outcome = rng.integers(0, 2, size=batch).astype(np.float32)
  last = np.where(mask.any(1), length - 1 - np.argmax(mask[:, ::-1], 1), 0)
  token_rewards = np.zeros((batch, length), np.float32)
  token_rewards[np.arange(batch), last] = outcome
  # Steps: cut each row's valid tokens into up to num_steps contiguous runs.
  step_ids = np.full((batch, length), -1, np.int32)
  step_mask = np.zeros((batch, num_steps), bool)
  for row in range(batch):
    valid = np.flatnonzero(mask[row])
    pieces = min(num_steps, len(valid))
    cuts = np.sort(rng.choice(np.arange(1, len(valid)), size=pieces - 1,
                              replace=False)) if pieces > 1 else []
    for step, chunk in enumerate(np.split(valid, cuts)):
      step_ids[row, chunk] = step
      step_mask[row, step] = True
  logits = rng.normal(size=(batch, length)).astype(np.float32) * 2.0
  logprobs = -np.abs(rng.normal(size=(batch, length))).astype(np.float32)
  fields = dict(
      mask=mask,
      token_rewards=token_rewards,
      group_ids=np.repeat(np.arange(batch // group_size), group_size).astype(
          np.int32),
      values=rng.normal(size=(batch, length)).astype(np.float32) * 0.5,
      old_logprobs=logprobs,
      ref_logprobs=(logprobs + 0.1 * rng.normal(size=logprobs.shape)).astype(
          np.float32),
      logprobs=(logprobs + 0.05 * rng.normal(size=logprobs.shape)).astype(
          np.float32),
      entropy=np.abs(rng.normal(size=(batch, length))).astype(np.float32),
      self_certainty=np.abs(rng.normal(size=(batch, length))).astype(
          np.float32),
      token_logits=logits,
      sum_pi_squared=rng.uniform(0.05, 1.0, size=(batch, length)).astype(
          np.float32),
      step_ids=step_ids,
      step_rewards=np.where(step_mask, rng.uniform(-1, 1, size=(
          batch, num_steps)), 0.0).astype(np.float32),
      step_mask=step_mask,
      reward_components=rng.integers(0, 2, size=(
          batch, num_components)).astype(np.float32),
      baseline_scores=rng.integers(0, 2, size=batch).astype(np.float32),
  )
  if not as_numpy:
    fields = {name: jnp.asarray(value) for name, value in fields.items()}
  return types.Rollouts(num_groups=batch // group_size, **fields)
