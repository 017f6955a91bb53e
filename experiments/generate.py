r"""Sample from a Hugging Face-format checkpoint: a conversion check by eye.

  python -m experiments.generate --model_path=DIR --prompt="2 + 3 =" \
      --max_new_tokens=16 --temperature=0
  python -m experiments.generate --model_path=DIR --prompt_ids=1,2,3 \
      --max_new_tokens=8

Prints `ids: 5,9,2` (the new tokens up to and including the stop token) on
one line and, when the directory has a tokenizer.json, `text: ...`.
"""

import pathlib

from absl import app
from absl import flags
import jax
import numpy as np

from experiments.models import hf
from experiments.models import sampler
from experiments.models import tokenizer as tokenizer_lib

__all__ = ["define_flags", "generate", "main"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS):
  """Registers the flags (only when run as a program, so importing this
  module beside other mains never defines a flag twice)."""
  flags.DEFINE_string("model_path", None, "checkpoint directory",
                      required=True, flag_values=flag_values)
  flags.DEFINE_string("prompt", None, "prompt text", flag_values=flag_values)
  flags.DEFINE_list("prompt_ids", None, "prompt token ids",
                    flag_values=flag_values)
  flags.DEFINE_integer("max_new_tokens", 32, "tokens to sample",
                       flag_values=flag_values)
  flags.DEFINE_float("temperature", 0.0, "0: greedy", flag_values=flag_values)
  flags.DEFINE_integer("top_k", 0, "0: off", flag_values=flag_values)
  flags.DEFINE_float("top_p", 1.0, "1: off", flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=flag_values)
  flags.DEFINE_bool("chat", False,
                    "wrap the prompt in the checkpoint's chat template",
                    flag_values=flag_values)
  flags.DEFINE_string("dtype", None,
                      "parameter dtype (default: the checkpoint's)",
                      flag_values=flag_values)


def generate(model_path, prompt: str | None = None,
             prompt_ids: list[int] | None = None, max_new_tokens: int = 32,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             seed: int = 0, chat: bool = False, dtype: str | None = None):
  """Loads the checkpoint and samples one response.

  Args:
    model_path: checkpoint directory.
    prompt: text (needs tokenizer.json); exactly one of prompt, prompt_ids.
    prompt_ids: token ids.
    max_new_tokens, temperature, top_k, top_p, seed: sampling settings.
    chat: apply the chat template to the prompt text.
    dtype: parameter dtype override.

  Returns:
    (new token ids up to and including the stop token, text or None).
  """
  if (prompt is None) == (prompt_ids is None):
    raise ValueError("give exactly one of prompt, prompt_ids")
  path = pathlib.Path(model_path)
  config, model = hf.load(path, dtype=dtype)
  tok = (tokenizer_lib.Tokenizer(path) if (path / "tokenizer.json").is_file()
         else None)
  if prompt is not None:
    if tok is None:
      raise ValueError(f"--prompt needs {path / 'tokenizer.json'}; use "
                       "--prompt_ids")
    text = (tok.apply_chat_template([{"role": "user", "content": prompt}])
            if chat else prompt)
    prompt_ids = tok.encode(text, add_special_tokens=not chat)
  ids = np.asarray([int(i) for i in prompt_ids], np.int32)
  if ids.size == 0 or ids.min() < 0 or ids.max() >= config.vocab_size:
    raise ValueError(f"prompt ids must be non-empty and in [0, "
                     f"{config.vocab_size}), got {ids.tolist()}")
  special = tokenizer_lib.special_ids(path)
  stops = tok.eos_ids if tok is not None else special["eos_ids"]
  pad = tok.pad_id if tok is not None else (special["pad_id"] or 0)
  settings = sampler.SamplingConfig(
      max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
      top_p=top_p, stop_tokens=tuple(stops))
  out = sampler.sample(model, ids[None], np.ones((1, ids.size), bool),
                       settings, jax.random.key(seed), pad_id=pad)
  new = np.asarray(out.tokens[0])[np.asarray(out.mask[0])].tolist()
  return new, (tok.decode(new) if tok is not None else None)


def main(argv):
  del argv
  f = flags.FLAGS
  ids, text = generate(
      f.model_path, prompt=f.prompt, prompt_ids=f.prompt_ids,
      max_new_tokens=f.max_new_tokens, temperature=f.temperature,
      top_k=f.top_k, top_p=f.top_p, seed=f.seed, chat=f.chat, dtype=f.dtype)
  print("ids: " + ",".join(map(str, ids)))
  if text is not None:
    print("text: " + text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
