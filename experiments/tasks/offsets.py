"""Where each token's text lies in a decoded response, and its step.

Tasks check steps on text and credit tokens. `TokenText.decode(ids)` gives
a response's text (special tokens dropped) and, for every token, the
character offset where its text ends, with any tokenizer: the task's
character vocabulary (one character per token), UTF-8 bytes, a byte-level
BPE that merges a separator into its neighbours (";\\n", "=7;" or "7\\n7"
as one token), or a tokenizer whose tokens decode differently alone than in
context (SentencePiece's leading spaces, a character split over two byte
tokens).

Token i covers the characters [ends[i − 1], ends[i]) (ends[−1] = 0). A
token whose own text is empty (EOS, another special token, the first bytes
of a character that a later token completes) covers no character and
starts where the previous token ends.

Which step owns a token that spans a step boundary (`token_steps`): the
step its first character is in. So a step's last token always holds the
step's last character (its separator): the reward written at a step's last
token is written once the step is complete. A token that also holds the
start of the next step stays with the earlier step. A step all of whose
text lies inside a token that began in an earlier step owns no token (the
task merges it into that step, `step_scores`).

The retry prefix before a step (`tokens_before`) holds the tokens of the
steps before it that end at or before its first character: no character
of that step, so a token that straddles the boundary is sampled again.
"""

from typing import Sequence

import numpy as np

__all__ = [
    "TokenText", "cut", "token_steps", "tokens_before",
]


class TokenText:
  """Decodes responses with character offsets; caches one-token texts.

  Attributes:
    tokenizer: any `base.Tokenizer` (encode, decode, vocab_size, ...).
  """

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer
    self._pieces: dict[int, str] = {}

  def piece(self, token: int) -> str:
    """The text of one token decoded alone ("" for special tokens)."""
    token = int(token)
    if token not in self._pieces:
      self._pieces[token] = self.tokenizer.decode([token])
    return self._pieces[token]

  def decode(self, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    """(text, ends): the text of `ids` and int64[T] the end of each token.

    `ends` never decreases and its last value is len(text) (0 for no
    token). When the one-token texts concatenate to the text (a character
    vocabulary, byte-level BPE on whole characters), they give the offsets
    directly; from the first token where they do not, each end is the
    length of the text that the prefix up to that token decodes to and
    shares with the whole text.
    """
    ids = [int(t) for t in ids]
    text = self.tokenizer.decode(ids)
    ends = np.zeros(len(ids), np.int64)
    position = 0
    for index, token in enumerate(ids):
      piece = self.piece(token)
      if not text.startswith(piece, position):
        ends[index:] = _prefix_ends(self.tokenizer, ids, text, index,
                                    position)
        break
      position += len(piece)
      ends[index] = position
    if ids and ends[-1] != len(text):
      # The pieces matched a prefix only: the text goes on after them.
      ends[:] = _prefix_ends(self.tokenizer, ids, text, 0, 0)
    return text, ends

  def ids_containing(self, substring: str) -> tuple[int, ...]:
    """Every id whose one-token text contains `substring` (a vocabulary
    scan, done once per task for its stop and banned tokens)."""
    return tuple(t for t in range(self.tokenizer.vocab_size)
                 if substring in self.piece(t))


def _prefix_ends(tokenizer, ids, text: str, first: int,
                 floor: int) -> np.ndarray:
  """Ends of tokens first.. from decoding each prefix (O(T²) characters):
  the longest prefix of the whole text that the decoded prefix starts with,
  never below the previous end."""
  out = np.zeros(len(ids) - first, np.int64)
  for index in range(first, len(ids)):
    prefix = tokenizer.decode(ids[:index + 1])
    size = 0
    for a, b in zip(prefix, text):
      if a != b:
        break
      size += 1
    floor = max(floor, size)
    out[index - first] = floor
  out[-1] = max(out[-1], len(text))
  return out


def cut(text: str, separator: str, end: int | None = None) -> list[list[int]]:
  """[start, stop) characters of the steps of text[:end].

  A step ends after each `separator`; a trailing piece without one is a
  step too (a separator at the very end opens no step). A piece of
  whitespace only (a blank line) joins the step before it, or at the start
  the step after it. [] when text[:end] holds no step.
  """
  end = len(text) if end is None else end
  spans, start = [], 0
  while start < end:
    stop = text.find(separator, start, end)
    stop = end if stop < 0 else stop + len(separator)
    if text[start:stop].strip():
      spans.append([start, stop])
    elif spans:
      spans[-1][1] = stop
    start = stop
  if spans:
    spans[0][0] = 0
  return spans


def token_steps(ends: np.ndarray, boundaries: Sequence[int]) -> np.ndarray:
  """int32[T]: the step of each token, by its first character.

  Args:
    ends: the tokens' ends (`TokenText.decode`).
    boundaries: the first character of steps 1, 2, ... (increasing); step 0
      starts at character 0.

  Returns:
    The number of boundaries at or before each token's first character.
  """
  ends = np.asarray(ends, np.int64)
  starts = np.concatenate([[0], ends[:-1]]) if ends.size else ends
  return np.searchsorted(np.asarray(boundaries, np.int64), starts,
                         side="right").astype(np.int32)


def tokens_before(ends: np.ndarray, position: int) -> int:
  """How many leading tokens start before character `position` and end at
  or before it (the retry prefix of a step that starts there; an empty
  token at `position`, such as EOS, belongs to that step)."""
  ends = np.asarray(ends, np.int64)
  starts = np.concatenate([[0], ends[:-1]]) if ends.size else ends
  return int(min(np.searchsorted(ends, position, side="right"),
                 np.searchsorted(starts, position, side="left")))
