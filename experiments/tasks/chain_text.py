"""How the chain tasks write problems and solutions as text.

Two layouts, one parser and one checker (a character vocabulary is one
tokenizer among others: `offsets` maps the text back to tokens):

* compact: the default, on the task's own character vocabulary
  (`base.CharVocab`, one token per character), for the toy decoder:

    prompt    ^3+4*2-1?                 (^ BOS; "?" ends every prompt)
    response  3+4=7;7*2=4;4-1=3;>3$     ($ EOS)

* lines: with any other tokenizer (the task config's `tokenizer`: a
  checkpoint's, set by the loop from `model_path`, or "bytes"). The prompt
  is an instruction in words, rendered by the config's `chat_template`
  when there is one (the checkpoint's), else followed by a newline. An
  instruct model answers one step per line and the answer on a last line:

    3+4=7
    7*2=4
    4-1=3
    Answer: 3

  The calculator writes each call on its own line, `[3+4]`; the tool
  replies "=7" and a newline.

Parsing (`split`), the same for both layouts: the text before the first
answer mark (">" or "Answer:") holds the steps, cut after each step end
(";" or a newline) by `offsets.cut`: a trailing piece without one is a
step too, and a piece of whitespace only (a blank line) joins the step
before it (or, at the start, the step after it). The answer is the text
after the mark, without surrounding whitespace. Inside a step, whitespace
around numbers and signs is allowed (`3 + 4 = 7`); the compact vocabulary
has none.
"""

import dataclasses
import re
from typing import Callable

from experiments.tasks import base
from experiments.tasks import offsets
from experiments.tasks import text_tokenizers

__all__ = [
    "CALL_PATTERN", "COMPACT", "LINES", "Layout", "NUMBER", "PROMPT_END",
    "Prompts", "STEP_PATTERN", "Split", "instruction", "split", "step_text",
    "tokenizer_and_layout",
]

NUMBER = r"(0|[1-9][0-9]*)"
STEP_PATTERN = re.compile(
    rf"^\s*{NUMBER}\s*([-+*])\s*{NUMBER}\s*=\s*{NUMBER}\s*$")
CALL_PATTERN = re.compile(rf"^\s*\[\s*{NUMBER}\s*([-+*])\s*{NUMBER}\s*\]\s*$")
# Ends every compact prompt (the model answers after it; never sampled).
PROMPT_END = "?"


@dataclasses.dataclass(frozen=True)
class Layout:
  """One way of writing chain solutions.

  Attributes:
    name: "compact" or "lines".
    step_end: the text that ends a step.
    answer_mark: the text before the final answer.
    answer_format: how demonstrations write the answer ("{z}").
    result_end: what the calculator writes after a result.
  """
  name: str
  step_end: str
  answer_mark: str
  answer_format: str
  result_end: str


COMPACT = Layout("compact", ";", ">", ">{z}", "")
LINES = Layout("lines", "\n", "Answer:", "Answer: {z}", "\n")


def tokenizer_and_layout(spec, symbols: str, banned_symbols: str):
  """(tokenizer, layout) of a chain task config's `tokenizer` value.

  Args:
    spec: None (the compact layout on `base.CharVocab(symbols)`), "bytes",
      a checkpoint directory, or a tokenizer object (the lines layout).
    symbols, banned_symbols: the character vocabulary of the compact
      layout.
  """
  if spec is None:
    return base.CharVocab(symbols, banned_symbols=banned_symbols), COMPACT
  return text_tokenizers.load_tokenizer(spec), LINES


def instruction(chain: str, modulus: int, tool: bool) -> str:
  """The lines layout's prompt text for a chain such as "3+4*2-1"."""
  how = ("Use the calculator for every operation: write the call on its own "
         "line as [x+y], [x-y] or [x*y], and it replies with =z, the result "
         "modulo {m}." if tool else
         "Write one operation per line as x+y=z, x-y=z or x*y=z, with z "
         "reduced modulo {m}.")
  return (f"Compute {chain} modulo {modulus}, applying the operations from "
          f"left to right. " + how.format(m=modulus) +
          " Then write a last line 'Answer: ' followed by the result.")


class Prompts:
  """Writes the prompt ids of a chain in a layout.

  Attributes:
    layout: the layout.
    tokenizer: the task's tokenizer.
  """

  def __init__(self, tokenizer, layout: Layout, modulus: int, tool: bool,
               chat_template: Callable[[str], str] | None):
    self.tokenizer, self.layout = tokenizer, layout
    self._modulus, self._tool = modulus, tool
    self._template = chat_template

  def ids(self, chain: str) -> list[int]:
    """BOS (when the tokenizer has one and no chat template writes it) and
    the prompt's tokens."""
    tok = self.tokenizer
    if self.layout is COMPACT:
      return [tok.bos_id] + tok.encode(chain + PROMPT_END)
    text = instruction(chain, self._modulus, self._tool)
    if self._template is not None:
      return list(tok.encode(self._template(text)))
    bos = [] if tok.bos_id is None else [tok.bos_id]
    return bos + list(tok.encode(text + "\n"))

  def max_len(self, longest_chain: str) -> int:
    """An upper bound on the prompt length of chains no longer than
    `longest_chain` (exact for the compact layout).

    In the lines layout the bound adds a token per character of the chain
    to the longest chain's own prompt: a chain's digits and signs may
    tokenize into more tokens than the longest one's, never into more
    than one per character more (`check` enforces the bound).
    """
    size = len(self.ids(longest_chain))
    if self.layout is COMPACT:
      return size
    return size + len(longest_chain.encode("utf-8"))

  def check(self, ids: list[int], bound: int, chain: str) -> list[int]:
    """`ids` after checking they fit in `bound` tokens."""
    if len(ids) > bound:
      raise ValueError(f"the prompt of chain {chain!r} has {len(ids)} "
                       f"tokens, more than the bound max_prompt_len={bound} "
                       f"computed for this tokenizer; its tokenizer merges "
                       f"this chain's text unusually.")
    return ids


@dataclasses.dataclass
class Split:
  """A response text cut into steps.

  Attributes:
    spans: [start, stop) characters of each step; the last runs to the end
      of the text (the answer belongs to it). One span covering the text
      when there is no step before the answer.
    texts: each step's text (without the answer); [] when no step.
    answer: the answer text, None without an answer mark.
  """
  spans: list
  texts: list
  answer: str | None


def split(text: str, layout: Layout) -> Split:
  """Cuts a response's text into steps and the answer (module docstring)."""
  mark = text.find(layout.answer_mark)
  answer = None if mark < 0 else text[mark + len(layout.answer_mark):].strip()
  spans = offsets.cut(text, layout.step_end, len(text) if mark < 0 else mark)
  texts = [text[a:b] for a, b in spans]
  if not spans:
    spans = [[0, len(text)]]
  spans[-1][1] = len(text)
  return Split(spans, texts, answer)


def step_text(piece: str, layout: Layout) -> str:
  """A step's text without its step end."""
  return piece.removesuffix(layout.step_end)
