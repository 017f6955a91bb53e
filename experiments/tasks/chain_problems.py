"""What the chain tasks (chain arithmetic, calculator) share: tokenizer and
layout, problems, prompts, response budgets and demonstrations that fit."""

import numpy as np

from experiments.tasks import arith
from experiments.tasks import base
from experiments.tasks import chain_text
from experiments.tasks import offsets
from experiments.tasks import splits

__all__ = [
    "ChainProblems", "budget", "lines_texts", "special_bans",
]


class ChainProblems:
  """What the chain tasks share: tokenizer and layout, problems, budgets
  and demonstrations.

  A subclass sets `name` and `config` (an `arith.ChainConfig`), calls
  `_set_up`, and defines `_demo_ids(steps, answer)`: the ids (EOS included)
  of a response made of these `arith.DemoStep`s and that answer.
  """

  def _set_up(self, symbols: str, banned_symbols: str, tool: bool) -> None:
    """Sets tokenizer, layout, text, max_prompt_len, max_response_len and
    max_steps."""
    c = self.config
    self.tokenizer, self.layout = chain_text.tokenizer_and_layout(
        c.tokenizer, symbols, banned_symbols)
    self.text = offsets.TokenText(self.tokenizer)
    self._prompts = chain_text.Prompts(self.tokenizer, self.layout,
                                       c.modulus, tool, c.chat_template)
    top = c.modulus - 1  # the numbers with the most digits
    self.max_prompt_len = self._prompts.max_len(
        c.prompt_text(top, [(c.ops[0], top)] * c.max_ops))
    worst = self._demo_ids(
        [arith.DemoStep(top, c.ops[0], top, top, base.CORRECT)] * c.max_ops,
        top)
    self.max_response_len = budget(c, len(worst),
                                   len(self._demo_ids([], top)))
    # Every step holds at least one token.
    self.max_steps = self.max_response_len

  def sample_problems(self, rng: np.random.Generator, n: int,
                      split: str = "train") -> list[base.Problem]:
    """n problems of `split` (see `splits`), k uniform in [min_ops,
    max_ops]; deterministic in rng."""
    chains = splits.sample(self.config.sample_chain,
                           lambda chain: self.config.prompt_text(*chain),
                           rng, n, split)
    return [self._problem(*chain) for chain in chains]

  def problem_from_text(self, text: str) -> base.Problem:
    """The problem of a chain written as text, e.g. "3+4*2-1".

    Raises:
      ValueError: the text is not a chain of the task's numbers and
        operators.
    """
    return self._problem(*self.config.parse_chain(text))

  def _problem(self, start: int, operations) -> base.Problem:
    text = self.config.prompt_text(start, operations)
    return base.Problem(
        prompt_ids=self._prompts.check(self._prompts.ids(text),
                                       self.max_prompt_len, text),
        answer=str(self.config.final_value(start, operations)),
        uid=base.stable_hash(self.name, text) >> 1, text=text, start=start,
        operations=tuple(operations))

  def _fit_demo(self, steps: list[arith.DemoStep], start: int) -> list[int]:
    """The ids of a demonstration that fits in `max_response_len`.

    Filler steps (checks included) are dropped from the end until it fits
    (they do not change the final value), so a tight budget lowers the
    filler rate of long chains only.
    """
    answer = steps[-1].z if steps else start
    kept = list(steps)
    ids = self._demo_ids(kept, answer)
    for index in reversed(range(len(steps))):
      if len(ids) <= self.max_response_len:
        break
      if steps[index].label == base.FILLER:
        del kept[index]
        ids = self._demo_ids(kept, answer)
    return ids


def budget(config: arith.ChainConfig, solution_len: int,
           answer_len: int) -> int:
  """The response budget: `max_response_len`, or two solutions' worth (room
  for wrong and filler steps) less one answer.

  Args:
    config: the chain config.
    solution_len: tokens of a solution of max_ops steps whose numbers have
      the most digits, answer and EOS included.
    answer_len: tokens of the answer and EOS alone.

  Raises:
    ValueError: a set budget that cannot hold that solution.
  """
  size = config.max_response_len or 2 * solution_len - answer_len
  if size < solution_len:
    raise ValueError(f"max_response_len={size} cannot hold a solution of "
                     f"max_ops={config.max_ops} operations; it needs at least "
                     f"{solution_len} tokens.")
  return size


def special_bans(tokenizer) -> tuple[int, ...]:
  """PAD (unless it is EOS) and BOS: never sampled in the lines layout."""
  banned = {tokenizer.pad_id} - {tokenizer.eos_id}
  if tokenizer.bos_id is not None:
    banned.add(tokenizer.bos_id)
  return tuple(sorted(banned))


def lines_texts(num_problems: int, seed: int = 0) -> list[str]:
  """Prompts and worked solutions (with wrong and filler steps) of both
  chain tasks in the lines layout: text to train a tokenizer on."""
  rng = np.random.default_rng(seed)
  texts = []
  for name in ("chain_arith", "calculator"):
    task = base.make_task({"name": name, "tokenizer": "bytes"})
    for problem in task.sample_problems(rng, num_problems):
      texts.append(task.tokenizer.decode(problem.prompt_ids))
      texts.append(task.tokenizer.decode(task.demonstration(
          problem, rng, wrong_rate=0.2, filler_rate=0.2)))
  return texts
