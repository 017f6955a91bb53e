"""A random Qwen2 checkpoint with a BPE tokenizer trained on the fly.

  texts = chain_problems.lines_texts(200) + word_problems(200)
  directory = write(path, config_lib.get("tiny", qkv_bias=True), texts,
                    vocab_size=512)

For the tests (every ablation on an HF-format checkpoint with a real
tokenizer) and for timing the loop at a real model size without a
download. The tokenizer is a byte-level BPE like Qwen's, but trained
without a pre-tokenizer split, so its merges cross digits, signs and
newlines ("=7\\n", "\\n[", "Answer: "): the hard case for mapping steps
back to tokens. It has Qwen's special tokens and a ChatML chat template
(`<|im_end|>` is EOS, `<|endoftext|>` PAD, no BOS). Nothing is downloaded.
"""

import json
import pathlib

import numpy as np
import tokenizers
from tokenizers import decoders
from tokenizers import models as tokenizer_models
from tokenizers import pre_tokenizers
from tokenizers import trainers

from experiments.models import decoder as decoder_lib
from experiments.models import hf
from experiments.models.config import ModelConfig

__all__ = [
    "CHAT_TEMPLATE", "train_tokenizer", "word_problems", "write",
    "write_tokenizer",
]

PAD, CHAT_START, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def train_tokenizer(texts, vocab_size: int,
                    max_token_length: int | None = None,
                    pad_to: int | None = None) -> tokenizers.Tokenizer:
  """A byte-level BPE over `texts`, merging across every character class.

  Args:
    texts: the training text.
    vocab_size: the vocabulary size, special tokens and the 256 bytes
      included.
    max_token_length: the longest token in characters (None: any; a small
      corpus of repeated prompts otherwise merges whole sentences).
    pad_to: add special filler tokens (`<|filler_k|>`, dropped by decode)
      up to this many tokens, as Qwen's tokenizer fills 151665 of its
      model's 151936 rows, so that the model has few ids past the
      tokenizer (the loop bans those, at a cost that grows with their
      number).
  """
  tokenizer = tokenizers.Tokenizer(tokenizer_models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                     use_regex=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=[PAD, CHAT_START, EOS],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      max_token_length=max_token_length, show_progress=False)
  tokenizer.train_from_iterator(list(texts), trainer)
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  if pad_to is not None and pad_to > size:
    tokenizer.add_special_tokens([f"<|filler_{i}|>"
                                  for i in range(size, pad_to)])
  return tokenizer


def write_tokenizer(directory, tokenizer: tokenizers.Tokenizer) -> None:
  """tokenizer.json, tokenizer_config.json (ChatML template) and
  generation_config.json (EOS and PAD ids) into `directory`."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  tokenizer.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(json.dumps(
      {"chat_template": CHAT_TEMPLATE, "eos_token": EOS, "pad_token": PAD,
       "bos_token": None}, indent=1))
  (directory / "generation_config.json").write_text(json.dumps(
      {"eos_token_id": tokenizer.token_to_id(EOS),
       "pad_token_id": tokenizer.token_to_id(PAD)}, indent=1))


def word_problems(num: int, seed: int = 0) -> list[str]:
  """Short math word problems with worked solutions (blank-line steps, a
  boxed answer): extra training text for `train_tokenizer`."""
  rng = np.random.default_rng(seed)
  texts = []
  for _ in range(num):
    a, b = int(rng.integers(1, 100)), int(rng.integers(1, 100))
    texts.append(f"Tom has {a} apples and buys {b} more. How many?\n\n"
                 f"{a} + {b} = {a + b}\n\nThe answer is \\boxed{{{a + b}}}")
  return texts


def write(directory, config: ModelConfig, texts, vocab_size: int,
          seed: int = 0, mesh=None, **tokenizer_options) -> pathlib.Path:
  """Writes a random checkpoint and a freshly trained tokenizer.

  Args:
    directory: an empty or missing directory.
    config: the model (Qwen2 when it has q/k/v biases); its vocab_size
      must hold the tokenizer's (a larger one, as Qwen's padded 151936
      rows, is fine: the loop bans the ids past the tokenizer).
    texts: the tokenizer's training text.
    vocab_size: the tokenizer's vocabulary size.
    seed: the parameters' seed.
    mesh: where to create the parameters (None: the first device).
    **tokenizer_options: `max_token_length` and `pad_to` of
      `train_tokenizer`.

  Returns:
    The directory.

  Raises:
    ValueError: a model vocabulary smaller than the tokenizer's.
  """
  tokenizer = train_tokenizer(texts, vocab_size, **tokenizer_options)
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  if config.vocab_size < size:
    raise ValueError(f"config.vocab_size={config.vocab_size} cannot hold the "
                     f"tokenizer's {size} tokens.")
  model = decoder_lib.create_model(config, seed, mesh)
  directory = hf.save(model, config, directory)
  write_tokenizer(directory, tokenizer)
  return directory
