"""Tokenizers for text tasks: a byte vocabulary and local tokenizer.json files.

Nothing here downloads: a tokenizer is either `ByteVocab` (no file at all),
a local `tokenizer.json` read with the `tokenizers` library, a local
checkpoint directory (its tokenizer.json and special ids,
`experiments.models.tokenizer.Tokenizer`), or any object that already
implements `base.Tokenizer`.
"""

import os
from typing import Any, Sequence

from experiments.models import tokenizer as tokenizer_lib
from experiments.tasks import base

__all__ = ["ByteVocab", "FileTokenizer", "load_tokenizer"]

_NUM_SPECIAL = 3


class ByteVocab:
  """UTF-8 bytes as tokens: PAD = 0, BOS = 1, EOS = 2, byte b = b + 3."""

  pad_id = base.PAD_ID
  bos_id = base.BOS_ID
  eos_id = base.EOS_ID
  vocab_size = _NUM_SPECIAL + 256

  def encode(self, text: str) -> list[int]:
    """The UTF-8 bytes of `text`, shifted past the special ids."""
    return [b + _NUM_SPECIAL for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    """The text of `ids`; special ids are dropped, bad UTF-8 replaced."""
    data = bytes(int(t) - _NUM_SPECIAL for t in ids
                 if _NUM_SPECIAL <= int(t) < self.vocab_size)
    return data.decode("utf-8", errors="replace")


class FileTokenizer:
  """A local `tokenizer.json` (Hugging Face `tokenizers`) as a `Tokenizer`."""

  def __init__(self, path: str, eos_token: str, pad_token: str | None = None,
               bos_token: str | None = None):
    """Loads the file.

    Args:
      path: a local tokenizer.json.
      eos_token: the text of the EOS token (e.g. "<|im_end|>").
      pad_token: the PAD token's text; None uses EOS.
      bos_token: the BOS token's text; None: the tokenizer has no BOS.

    Raises:
      ValueError: a missing file or a token the vocabulary lacks.
    """
    import tokenizers  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(path):
      raise ValueError(f"tokenizer path {path!r} is not a local file.")
    self._tokenizer = tokenizers.Tokenizer.from_file(path)
    self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
    self.eos_id = self._token_id(eos_token, "eos_token")
    self.pad_id = (self.eos_id if pad_token is None
                   else self._token_id(pad_token, "pad_token"))
    self.bos_id = (None if bos_token is None
                   else self._token_id(bos_token, "bos_token"))

  def _token_id(self, token: str, name: str) -> int:
    token_id = self._tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f"{name} {token!r} is not in the tokenizer's "
                       f"vocabulary.")
    return token_id

  def encode(self, text: str) -> list[int]:
    """Ids of `text`, without added special tokens."""
    return self._tokenizer.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    """The text of `ids`, special tokens skipped."""
    return self._tokenizer.decode([int(t) for t in ids],
                                  skip_special_tokens=True)


def load_tokenizer(spec: Any, eos_token: str | None = None,
                   pad_token: str | None = None,
                   bos_token: str | None = None) -> base.Tokenizer:
  """A tokenizer from a config value.

  Args:
    spec: "bytes" (`ByteVocab`), a local checkpoint directory, a path to a
      local tokenizer.json, or an object with encode, decode, eos_id,
      pad_id, bos_id and vocab_size.
    eos_token, pad_token, bos_token: token texts for a tokenizer.json.

  Returns:
    The tokenizer.

  Raises:
    ValueError: an unusable spec.
  """
  if spec == "bytes":
    return ByteVocab()
  if isinstance(spec, str):
    if "://" in spec:
      raise ValueError(f"tokenizer must be a local file; nothing is "
                       f"downloaded, got {spec!r}.")
    if os.path.isdir(spec):
      return tokenizer_lib.Tokenizer(spec)
    if eos_token is None:
      raise ValueError(f"eos_token is needed with the tokenizer file "
                       f"{spec!r}.")
    return FileTokenizer(spec, eos_token, pad_token, bos_token)
  required = ("encode", "decode", "eos_id", "pad_id", "bos_id", "vocab_size")
  missing = [name for name in required if not hasattr(spec, name)]
  if missing:
    raise ValueError(f"tokenizer must be 'bytes', a tokenizer.json path or "
                     f"an object with {required}; {type(spec).__name__} "
                     f"lacks {missing}.")
  return spec
