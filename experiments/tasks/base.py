"""The task protocol shared by the training loop and every task.

A task is host-side NumPy: it samples problems from a NumPy generator, scores
sampled responses, and writes supervised demonstrations. The loop only talks
to the `Task` protocol below; `make_task(config)` builds a task by name
(or import path) from the table in `registry.py`.

Token conventions: a prompt is a list of ids that starts with BOS; a response
is the list of ids the policy (and, for tool tasks, the environment) wrote
after the prompt, up to and including EOS, without padding. A response that
reaches the length limit has no EOS.

Step labels (the step checker's truth, `Score.step_labels`):

* `WRONG` = 0: malformed, wrong arithmetic, does not continue the chain, or
  (for the step holding the final answer) a wrong final answer.
* `CORRECT` = 1: a correct step that advances the solution.
* `FILLER` = 2: well formed and true but vacuous (`7+0=7`): it does not
  advance the solution.
* `UNKNOWN` = −1: a step the checker cannot judge (a `jsonl_math` step
  without an arithmetic claim), and padding in batches.
"""

import dataclasses
import hashlib
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from experiments.tasks import registry

__all__ = [
    "BOS_ID", "CORRECT", "CharVocab", "ConfigKeyError", "EOS_ID", "FILLER",
    "LABEL_NAMES", "NoEnvironment", "PAD_ID", "PROTOCOL_MEMBERS", "Problem",
    "Score", "Task", "Tokenizer", "UNKNOWN", "WRONG", "build_config",
    "check_optional_positive_int", "check_rate", "check_response",
    "config_to_dict", "make_task", "stable_hash",
]

UNKNOWN = -1
WRONG = 0
CORRECT = 1
FILLER = 2
LABEL_NAMES = {UNKNOWN: "unknown", WRONG: "wrong", CORRECT: "correct",
               FILLER: "filler"}

# Special ids of `CharVocab`.
PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
_NUM_SPECIAL = 3


class Tokenizer(Protocol):
  """What tasks and the loop need from a tokenizer."""
  eos_id: int
  pad_id: int
  bos_id: int | None
  vocab_size: int

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: Sequence[int]) -> str:
    ...


class CharVocab:
  """A character vocabulary: PAD = 0, BOS = 1, EOS = 2, then one id per symbol.

  Attributes:
    symbols: the characters, in id order (the first has id 3).
    banned_tokens: ids a policy may never sample: PAD, BOS and the
      prompt-only or environment-only symbols given at construction.
  """

  pad_id = PAD_ID
  bos_id = BOS_ID
  eos_id = EOS_ID

  def __init__(self, symbols: str, banned_symbols: str = ""):
    """Builds the vocabulary.

    Args:
      symbols: distinct single characters.
      banned_symbols: a subset of `symbols` the policy may never write.

    Raises:
      ValueError: repeated symbols, or banned symbols not in `symbols`.
    """
    if len(set(symbols)) != len(symbols) or not symbols:
      raise ValueError(f"symbols must be distinct characters, got "
                       f"{symbols!r}.")
    unknown = sorted(set(banned_symbols) - set(symbols))
    if unknown:
      raise ValueError(f"banned_symbols {unknown} are not in symbols "
                       f"{symbols!r}.")
    self.symbols = symbols
    self._ids = {c: i + _NUM_SPECIAL for i, c in enumerate(symbols)}
    self._chars = "\0" * _NUM_SPECIAL + symbols
    self.vocab_size = _NUM_SPECIAL + len(symbols)
    self.banned_tokens = (PAD_ID, BOS_ID) + tuple(
        self._ids[c] for c in banned_symbols)

  def id(self, symbol: str) -> int:
    """The id of one symbol."""
    return self.encode(symbol)[0]

  def encode(self, text: str) -> list[int]:
    """Ids of the characters of `text` (no BOS/EOS added).

    Raises:
      ValueError: a character outside the vocabulary (named with its index).
    """
    ids = []
    for index, char in enumerate(text):
      if char not in self._ids:
        raise ValueError(f"text[{index}] = {char!r} is not in the vocabulary "
                         f"{self.symbols!r} (text {text!r}).")
      ids.append(self._ids[char])
    return ids

  def chars(self, ids) -> str:
    """One character per id (PAD, BOS and EOS as NUL): text positions are
    token positions. `ids` must be valid (see `check_response`)."""
    return "".join(self._chars[int(t)] for t in ids)

  def decode(self, ids: Sequence[int]) -> str:
    """The text of `ids`; PAD, BOS and EOS are dropped.

    Raises:
      ValueError: an id outside [0, vocab_size).
    """
    out = []
    for index, token in enumerate(ids):
      token = int(token)
      if not 0 <= token < self.vocab_size:
        raise ValueError(f"ids[{index}] = {token} is outside the vocabulary "
                         f"[0, {self.vocab_size}).")
      if token >= _NUM_SPECIAL:
        out.append(self.symbols[token - _NUM_SPECIAL])
    return "".join(out)


@dataclasses.dataclass
class Problem:
  """One problem: the prompt ids and what the task needs to score it.

  Attributes:
    prompt_ids: prompt token ids, starting with BOS when the tokenizer has
      one.
    answer: the reference final answer, as text.
    uid: a stable identity (same problem, same uid), used to make noisy
      process rewards deterministic and to label logs.
    text: the prompt as text (for logs).
    start: the first number of an arithmetic chain (None otherwise).
    operations: the chain's (operator, operand) pairs, applied left to right.
  """
  prompt_ids: list[int]
  answer: str
  uid: int = 0
  text: str = ""
  start: int | None = None
  operations: tuple[tuple[str, int], ...] = ()


@dataclasses.dataclass
class Score:
  """The score of one response.

  Attributes:
    outcome: the outcome reward (NaN: the task cannot score this response).
    step_ids: int32[T_resp] step index of each response token, −1 outside
      any step (each task documents where that happens).
    step_rewards: float32[S] the process reward model's score per step.
    step_labels: int8[S] the step checker's label per step (`WRONG`,
      `CORRECT`, `FILLER`).
    metrics: scalar diagnostics (num_steps, wrong_steps, ...).
    extra: task-specific data (first wrong step, tool-call traces, ...).
  """
  outcome: float
  step_ids: np.ndarray
  step_rewards: np.ndarray
  step_labels: np.ndarray
  metrics: dict[str, float] = dataclasses.field(default_factory=dict)
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.step_ids = np.asarray(self.step_ids, np.int32)
    self.step_rewards = np.asarray(self.step_rewards, np.float32)
    self.step_labels = np.asarray(self.step_labels, np.int8)
    num_steps = self.step_rewards.shape[0]
    if (self.step_ids.ndim != 1 or self.step_rewards.ndim != 1
        or self.step_labels.shape != self.step_rewards.shape):
      raise ValueError(
          f"Score needs 1-D step_ids and step_rewards/step_labels of one "
          f"shape, got {self.step_ids.shape}, {self.step_rewards.shape}, "
          f"{self.step_labels.shape}.")
    if self.step_ids.size and (self.step_ids.min() < -1
                               or self.step_ids.max() >= num_steps):
      raise ValueError(f"step_ids must lie in [-1, {num_steps}), got "
                       f"{self.step_ids.tolist()}.")


class Task(Protocol):
  """What the loop needs from a task (see the module docstring).

  Attributes:
    name: the task's name (in messages and logs).
    tokenizer: the task's `Tokenizer`.
    banned_tokens: ids the sampler must never produce.
    stop_tokens: ids that stop sampling (EOS; a tool task adds its call end).
    max_prompt_len: the longest prompt `sample_problems` can produce.
    max_response_len: the response budget (tokens, observations included).
    max_steps: an upper bound on the steps of any response within the
      budget (a static S for step arrays).
    max_tool_calls: the most observations the environment appends to one
      response (0 without an environment); the sampler stops asking after
      that many.
  """
  name: str
  tokenizer: Tokenizer
  banned_tokens: tuple[int, ...]
  stop_tokens: tuple[int, ...]
  max_prompt_len: int
  max_response_len: int
  max_steps: int
  max_tool_calls: int

  def sample_problems(self, rng: np.random.Generator, n: int,
                      split: str = "train") -> list[Problem]:
    """n problems of `split` ("train": warm start and RL; "eval": the
    held-out problems of `splits`), deterministic given the generator's
    state."""

  def score(self, problem: Problem, response_ids: np.ndarray,
            observation_mask: np.ndarray | None = None) -> Score:
    """Scores a response (ids up to and including EOS, no padding)."""

  def demonstration(self, problem: Problem, rng: np.random.Generator,
                    wrong_rate: float = 0.0,
                    filler_rate: float = 0.0) -> list[int]:
    """A supervised target response with the given step error rates."""

  def observation(self, problem: Problem,
                  response_ids: Sequence[int]) -> list[int] | None:
    """Tokens the environment appends after a tool call (None: none)."""

  def observation_mask(self, problem: Problem,
                       response_ids: Sequence[int]) -> np.ndarray:
    """bool[T_resp], True on the tokens the environment inserted."""

  def retry_prefix(self, problem: Problem, response_ids: Sequence[int],
                   score: Score) -> list[int] | None:
    """The response prefix before the first wrong step (None: none)."""


class NoEnvironment:
  """The environment members of a task without tool calls."""

  max_tool_calls = 0

  def observation(self, problem: Problem, response_ids) -> None:
    """No environment: always None."""
    del problem, response_ids

  def observation_mask(self, problem: Problem, response_ids) -> np.ndarray:
    """All False: there are no observation tokens."""
    del problem
    return np.zeros(len(response_ids), bool)

  def check_no_observations(self, observation_mask) -> None:
    """Raises ValueError unless `observation_mask` is None or all False."""
    if observation_mask is not None and np.any(observation_mask):
      raise ValueError(f"{self.name} has no observations; observation_mask "
                       f"must be None or all False.")


# ----------------------------------------------------------------------------
# Helpers shared by the tasks.
# ----------------------------------------------------------------------------


def stable_hash(*parts) -> int:
  """A 64-bit hash of ints, strings and lists of ints, stable across runs."""
  digest = hashlib.blake2b(repr(parts).encode(), digest_size=8)
  return int.from_bytes(digest.digest(), "little")


def check_response(response_ids, tokenizer: Tokenizer) -> np.ndarray:
  """Validates a response and returns it as int64[T_resp].

  Raises:
    ValueError: not 1-D integers, ids outside the vocabulary, PAD inside,
      or tokens after the first EOS.
  """
  ids = np.asarray(response_ids)
  if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
    raise ValueError(f"response_ids must be a 1-D integer array, got dtype "
                     f"{ids.dtype} and shape {ids.shape}.")
  ids = ids.astype(np.int64)
  if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
    raise ValueError(f"response_ids must lie in [0, {tokenizer.vocab_size}),"
                     f" got {ids.tolist()}.")
  eos = np.flatnonzero(ids == tokenizer.eos_id)
  # PAD may share EOS's id: only the tokens before a final EOS are checked.
  body = ids[:-1] if ids.size and ids[-1] == tokenizer.eos_id else ids
  if np.any(body == tokenizer.pad_id):
    raise ValueError(f"response_ids must not contain PAD ({tokenizer.pad_id})"
                     f"; pass the response without padding, got "
                     f"{ids.tolist()}.")
  if eos.size and eos[0] != ids.size - 1:
    raise ValueError(f"response_ids must end at its first EOS (index "
                     f"{eos[0]}), got {ids.size} tokens: {ids.tolist()}.")
  return ids


def check_rate(value: float, name: str) -> float:
  """Returns `value` as a float after checking 0 ≤ value ≤ 1."""
  if isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
    raise ValueError(f"{name} must be a probability in [0, 1], got "
                     f"{value!r}.")
  return float(value)


def check_optional_positive_int(value, name: str) -> None:
  """Raises ValueError unless `value` is None or an int ≥ 1."""
  if value is not None and (isinstance(value, bool)
                            or not isinstance(value, int) or value < 1):
    raise ValueError(f"{name} must be a positive int or None, got "
                     f"{value!r}.")


def config_to_dict(config) -> dict[str, Any]:
  """A plain dict from an `ml_collections.ConfigDict` or a mapping."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if not isinstance(config, Mapping):
    raise ValueError(f"a task config must be a ConfigDict or a mapping, got "
                     f"{type(config).__name__}.")
  return dict(config)


class ConfigKeyError(ValueError):
  """A task config key the task's config dataclass does not have."""


def build_config(cls, config, task: str):
  """Builds the frozen config dataclass `cls` from a mapping.

  Raises:
    ConfigKeyError: a key that `cls` does not have (one line, naming the
      key as `task.<key>` and the valid keys).
  """
  values = config_to_dict(config)
  values.pop("name", None)
  fields = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(values) - set(fields))
  if unknown:
    keys = ", ".join(f"`task.{k}`" for k in unknown)
    raise ConfigKeyError(
        f"{keys} {'is not a key' if len(unknown) == 1 else 'are not keys'} "
        f"of the {task} task's config ({cls.__name__}); choose from: "
        f"{', '.join(fields)}. A config file written for another task "
        f"passes that task's keys: give this task its own task section, as "
        f"in docs/tasks.md.")
  return cls(**values)


# What `make_task` checks a built task for (the `Task` protocol).
PROTOCOL_MEMBERS = (
    "name", "tokenizer", "banned_tokens", "stop_tokens", "max_prompt_len",
    "max_response_len", "max_steps", "max_tool_calls", "sample_problems",
    "score", "demonstration", "observation", "observation_mask",
    "retry_prefix")


def make_task(config) -> Task:
  """Builds a task from a config whose `name` selects it.

  Args:
    config: an `ml_collections.ConfigDict` or a mapping with `name` (one of
      `registry.task_names()`, or an import path "package.module:Class")
      and the task's own keys.

  Returns:
    The task: the class called with the whole config mapping.

  Raises:
    ValueError: no or an unknown name (the valid names and how to add a
      task are listed), a bad task config, or a task that lacks members of
      the `Task` protocol (named).
  """
  values = config_to_dict(config)
  cls = registry.task_class(values.get("name"))
  task = cls(values)
  missing = [m for m in PROTOCOL_MEMBERS if not hasattr(task, m)]
  if missing:
    raise ValueError(f"task {values['name']!r} ({cls.__qualname__}) lacks "
                     f"the Task protocol members {missing}; see the protocol "
                     f"table in docs/tasks.md (tasks without tools inherit "
                     f"base.NoEnvironment).")
  return task
