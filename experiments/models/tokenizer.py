"""A checkpoint directory's tokenizer: `tokenizer.json` plus its special ids.

  tok = Tokenizer("/ckpt/Qwen2.5-Math-1.5B")
  ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": q}]))

Special ids come from the checkpoint, in this order of precedence:
generation_config.json, config.json, then the token strings named in
tokenizer_config.json. PAD falls back to the first EOS id when the
checkpoint names none (the usual choice for base models). Satisfies the
tasks' `Tokenizer` protocol (encode, decode, eos_id, pad_id, bos_id,
vocab_size). Nothing is downloaded.
"""

import datetime
import json
import pathlib

import jinja2
import jinja2.ext
from jinja2 import sandbox
import tokenizers

__all__ = ["Tokenizer", "special_ids"]


def _read_optional(path: pathlib.Path) -> dict:
  if not path.is_file():
    return {}
  with open(path) as f:
    return json.load(f)


def _token_text(value):
  """tokenizer_config stores a token as a string or {"content": ...}."""
  return value.get("content") if isinstance(value, dict) else value


def _tojson(value, indent=None):
  return json.dumps(value, ensure_ascii=False, indent=indent)


def _raise(message):
  raise jinja2.TemplateError(message)


def special_ids(directory, token_to_id=None) -> dict:
  """{"eos_ids": tuple, "pad_id": int | None, "bos_id": int | None}.

  Ids from generation_config.json, then config.json, then (with
  `token_to_id`) the token strings of tokenizer_config.json.
  """
  directory = pathlib.Path(directory)
  sources = (_read_optional(directory / "generation_config.json"),
             _read_optional(directory / "config.json"))
  names = _read_optional(directory / "tokenizer_config.json")

  def find(kind):
    for source in sources:
      if source.get(f"{kind}_token_id") is not None:
        return source[f"{kind}_token_id"]
    text = _token_text(names.get(f"{kind}_token"))
    if text is None or token_to_id is None:
      return None
    token_id = token_to_id(text)
    if token_id is None:
      raise ValueError(f"tokenizer_config {kind}_token {text!r} is not in "
                       "the vocabulary")
    return token_id

  eos = find("eos")
  return {"eos_ids": tuple(int(e) for e in (
              eos if isinstance(eos, list) else [] if eos is None else [eos])),
          "pad_id": find("pad"), "bos_id": find("bos")}


class Tokenizer:
  """`tokenizers.Tokenizer` over a local directory, with chat template."""

  def __init__(self, directory):
    directory = pathlib.Path(directory)
    file = directory / "tokenizer.json"
    if not file.is_file():
      raise FileNotFoundError(f"{file} does not exist")
    self._tok = tokenizers.Tokenizer.from_file(str(file))
    self._config = _read_optional(directory / "tokenizer_config.json")
    ids = special_ids(directory, self._tok.token_to_id)
    self.eos_ids = ids["eos_ids"]
    if not self.eos_ids:
      raise ValueError(f"{directory}: no EOS token in generation_config.json, "
                       "config.json or tokenizer_config.json")
    self.eos_id = self.eos_ids[0]
    self.pad_id = self.eos_id if ids["pad_id"] is None else int(ids["pad_id"])
    self.bos_id = None if ids["bos_id"] is None else int(ids["bos_id"])
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    self.chat_template = self._config.get("chat_template")

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text`. Special tokens (e.g. a BOS) are added only when
    asked: a chat template already writes them into the text."""
    return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    return self._tok.decode([int(i) for i in ids],
                            skip_special_tokens=skip_special_tokens)

  def apply_chat_template(self, messages, add_generation_prompt: bool = True,
                          **variables) -> str:
    """Renders tokenizer_config.json's chat_template (Jinja, sandboxed).

    Args:
      messages: [{"role": ..., "content": ...}, ...].
      add_generation_prompt: end with the assistant turn's opening.
      **variables: extra template variables (e.g. tools).

    Raises:
      ValueError: the checkpoint has no chat template.
    """
    if not self.chat_template:
      raise ValueError("this tokenizer has no chat_template in "
                       "tokenizer_config.json")
    template = self.chat_template
    if isinstance(template, list):  # [{"name": "default", "template": ...}]
      template = {t["name"]: t["template"] for t in template}["default"]
    env = sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = (
        lambda fmt: datetime.datetime.now().strftime(fmt))
    specials = {f"{k}_token": _token_text(self._config.get(f"{k}_token"))
                for k in ("bos", "eos", "pad", "unk")}
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        **specials, **variables)
