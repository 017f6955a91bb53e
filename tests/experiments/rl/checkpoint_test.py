"""Two RL steps of the qwen_math config on a tiny local checkpoint."""

import json

import numpy as np
import tokenizers
from tokenizers import models as tok_models
from tokenizers import pre_tokenizers

from experiments.configs import qwen_math
from experiments.models import config as config_lib
from experiments.models import decoder as decoder_lib
from experiments.models import hf
from experiments.rl import metrics
from experiments.rl import trainer

_WORDS = (["<pad>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "plus",
           "minus", "is", "what", "?", "answer"] + [str(i) for i in range(10)])
_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|user|> "
             "{{ m['content'] }} {% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _checkpoint(directory):
  tok = tokenizers.Tokenizer(tok_models.WordLevel(
      {w: i for i, w in enumerate(_WORDS)}, unk_token="?"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.add_special_tokens(["<pad>", "<bos>", "<eos>"])
  tokdir = directory / "tok"
  tokdir.mkdir()
  tok.save(str(tokdir / "tokenizer.json"))
  (tokdir / "tokenizer_config.json").write_text(json.dumps({
      "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
      "chat_template": _TEMPLATE}))
  config = config_lib.get("tiny", vocab_size=len(_WORDS), qkv_bias=True)
  model = decoder_lib.create_model(config, seed=0)
  return hf.save(model, config, directory / "ckpt", tokenizer_dir=tokdir)


def test_two_steps_on_a_local_checkpoint(tmp_path):
  path = _checkpoint(tmp_path)
  data = tmp_path / "math.jsonl"
  rows = [("2 plus 3", 5), ("7 minus 4", 3), ("1 plus 1", 2),
          ("9 minus 9", 0), ("4 plus 4", 8)]
  data.write_text("".join(
      json.dumps({"question": f"what is {q} ?", "answer": f"#### {a}"}) + "\n"
      for q, a in rows))
  config = qwen_math.get_config()
  config.model_path = str(path)
  config.task.path = str(data)
  config.task.max_prompt_len = 16
  config.task.max_response_len = config.sampling.max_new_tokens = 8
  config.rl.num_steps = 2
  config.rl.num_groups = 2
  config.rl.group_size = 2
  config.rl.num_mini_batches = config.rl.num_micro_batches = 2
  config.mesh.data, config.mesh.fsdp = 1, 1
  config.eval_problems = 2
  config.eval_every = 2
  config.show_progress = False
  out = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  records = metrics.read_jsonl(str(tmp_path / "run" / "train_metrics.jsonl"))
  assert [r["step"] for r in records] == [1, 2]
  for key in ("update/loss", "update/grad_norm", "rollout/entropy",
              "rollout/mismatch_kl"):
    assert np.isfinite(records[-1][key]), key
  assert "eval/accuracy" in out["eval"]
