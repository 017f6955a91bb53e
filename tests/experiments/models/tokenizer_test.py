"""Tokenizer: special ids from the checkpoint, chat template, generate text."""

import json

from flax import nnx
import pytest
import tokenizers
from tokenizers import models as tok_models
from tokenizers import pre_tokenizers

from experiments import generate as generate_lib
from experiments.models import config as config_lib
from experiments.models import decoder as decoder_lib
from experiments.models import hf
from experiments.models.tokenizer import special_ids
from experiments.models.tokenizer import Tokenizer

_WORDS = ["<pad>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "two",
          "plus", "three", "is", "five", "?"]
_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|> {{ m['content'] }} "
    "{% elif m['role'] == 'assistant' %}<|assistant|> {{ m['content'] }}"
    "{{ eos_token }} {% else %}{{ raise_exception('bad role') }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _write_tokenizer(directory, tokenizer_config, **json_files):
  tok = tokenizers.Tokenizer(tok_models.WordLevel(
      {w: i for i, w in enumerate(_WORDS)}, unk_token="?"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.add_special_tokens(["<pad>", "<bos>", "<eos>"])
  tok.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(
      json.dumps(tokenizer_config))
  for name, content in json_files.items():
    (directory / f"{name}.json").write_text(json.dumps(content))
  return directory


def test_ids_encode_decode_and_chat_template(tmp_path):
  d = _write_tokenizer(tmp_path, {
      "bos_token": "<bos>", "eos_token": {"content": "<eos>"},
      "chat_template": _TEMPLATE})
  tok = Tokenizer(d)
  assert (tok.bos_id, tok.eos_id, tok.eos_ids) == (1, 2, (2,))
  assert tok.pad_id == tok.eos_id  # no pad named: falls back to EOS
  assert tok.vocab_size == len(_WORDS)
  assert tok.encode("two plus three") == [5, 6, 7]
  assert tok.decode([1, 5, 6, 7, 2]) == "two plus three"
  text = tok.apply_chat_template([
      {"role": "user", "content": "two plus three"},
      {"role": "assistant", "content": "five"},
      {"role": "user", "content": "three plus two"}])
  assert text == ("<bos><|user|> two plus three <|assistant|> five<eos> "
                  "<|user|> three plus two <|assistant|>")
  assert tok.encode(text)[:4] == [1, 3, 5, 6]
  with pytest.raises(Exception, match="bad role"):
    tok.apply_chat_template([{"role": "system", "content": "x"}])


def test_checkpoint_ids_take_precedence(tmp_path):
  d = _write_tokenizer(tmp_path, {"eos_token": "<eos>", "pad_token": "<pad>"},
                       config={"eos_token_id": 9, "bos_token_id": 1},
                       generation_config={"eos_token_id": [4, 2]})
  tok = Tokenizer(d)
  assert tok.eos_ids == (4, 2) and tok.eos_id == 4
  assert tok.pad_id == 0 and tok.bos_id == 1
  assert special_ids(d) == {"eos_ids": (4, 2), "pad_id": None, "bos_id": 1}
  with pytest.raises(ValueError, match="no chat_template"):
    tok.apply_chat_template([{"role": "user", "content": "two"}])


def test_bad_tokenizer_directories(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenizer.json does not exist"):
    Tokenizer(tmp_path)
  _write_tokenizer(tmp_path, {})
  with pytest.raises(ValueError, match="no EOS token"):
    Tokenizer(tmp_path)
  _write_tokenizer(tmp_path, {"eos_token": "<end>"})
  with pytest.raises(ValueError, match="eos_token '<end>' is not in the"):
    Tokenizer(tmp_path)


def test_generate_from_text_prompt(tmp_path):
  (tmp_path / "tok").mkdir()
  source = _write_tokenizer(tmp_path / "tok", {"eos_token": "<eos>",
                                               "chat_template": _TEMPLATE},
                            config={"eos_token_id": 2})
  cfg = config_lib.get("tiny", vocab_size=len(_WORDS))
  model = decoder_lib.Decoder(cfg, rngs=nnx.Rngs(0))
  out = hf.save(model, cfg, tmp_path / "ckpt", tokenizer_dir=source)
  assert json.loads((out / "config.json").read_text())["eos_token_id"] == 2
  ids, text = generate_lib.generate(out, prompt="two plus three",
                                    max_new_tokens=4, chat=True)
  tok = Tokenizer(out)
  assert 1 <= len(ids) <= 4 and text == tok.decode(ids)
  assert (ids[-1] == 2) or len(ids) == 4
