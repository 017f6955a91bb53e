"""The random checkpoint with a BPE trained on the fly, and the roofline
step time of `memory.rl_step_seconds`."""

import json
import pathlib

import numpy as np
import pytest

from experiments import gpu_ablation
from experiments.models import config as config_lib
from experiments.models import hf
from experiments.models import memory
from experiments.models import random_checkpoint
from experiments.models.tokenizer import Tokenizer


def test_tiny_checkpoint_loads_with_its_tokenizer(tiny_checkpoint):
  config, model = hf.load(tiny_checkpoint)
  tok = Tokenizer(tiny_checkpoint)
  assert config.qkv_bias and config.vocab_size >= tok.vocab_size
  assert tok.decode([tok.eos_id], skip_special_tokens=False) == "<|im_end|>"
  assert tok.decode([tok.pad_id], skip_special_tokens=False) == (
      "<|endoftext|>")
  assert tok.bos_id is None
  text = tok.apply_chat_template([{"role": "user", "content": "3+4?"}])
  assert text == "<|im_start|>user\n3+4?<|im_end|>\n<|im_start|>assistant\n"
  assert tok.decode(tok.encode("Answer: 3\n[7*2]=4")) == "Answer: 3\n[7*2]=4"
  assert model.config == config
  saved = json.loads((tiny_checkpoint / "generation_config.json").read_text())
  assert saved["eos_token_id"] == tok.eos_id


def test_token_length_limit_and_padding():
  texts = ["Compute 3+4*2-1 modulo 10, applying the operations."] * 50
  free = random_checkpoint.train_tokenizer(texts, 400)
  short = random_checkpoint.train_tokenizer(texts, 400, max_token_length=4,
                                            pad_to=1000)
  assert max(len(free.decode([i])) for i in range(free.get_vocab_size())) > 4
  assert short.get_vocab_size() == 1000
  assert short.decode([999]) == ""  # a filler decodes to nothing
  lengths = [len(short.decode([i])) for i in range(400)]
  assert max(lengths) <= 4
  assert len(short.encode(texts[0]).ids) > len(free.encode(texts[0]).ids)
  with pytest.raises(ValueError, match="cannot hold"):
    random_checkpoint.write("/tmp/unused", config_lib.get("tiny"), texts,
                            vocab_size=400)


def test_roofline_step_time_by_hand():
  cfg = config_lib.get("qwen2_5_0_5b", param_dtype="bfloat16",
                       dtype="bfloat16", remat="full")
  peak, bandwidth, rows, prompt, response = 1e15, 3e12, 64, 128, 96
  got = memory.rl_step_seconds(cfg, rows, prompt, response, peak_flops=peak,
                               bandwidth=bandwidth)
  n = cfg.num_params  # tied: the embedding is the head, counted once
  param_bytes = 2 * n
  kv = 2 * 24 * 2 * 64 * 2  # K and V, layers, kv heads, head dim, bf16
  decode = 0.0
  for t in range(response):
    decode += max(2 * n * rows / peak,
                  (param_bytes + kv * rows * (prompt + t)) / bandwidth)
  prefill = max(2 * n * rows * prompt / peak, param_bytes / bandwidth)
  tokens = rows * (prompt + response)
  np.testing.assert_allclose(got["sample"], prefill + decode, rtol=1e-12)
  np.testing.assert_allclose(got["logprobs"], 2 * n * tokens / peak)
  np.testing.assert_allclose(got["update"], 8 * n * tokens / peak)
  np.testing.assert_allclose(got["total"], sum(
      got[k] for k in ("sample", "logprobs", "update")))
  untied = cfg.replace(tie_embeddings=False, remat="none")
  head = untied.vocab_size * untied.hidden_size
  assert memory.rl_step_seconds(untied, 1, 1, 1, peak_flops=peak)[
      "update"] == pytest.approx(6 * (untied.num_params - head) * 2 / peak)


def test_gpu_ablation_estimates_and_arms():
  table = gpu_ablation.estimates(128)
  assert "| qwen2_5_0_5b | 0.49B |" in table
  assert "| qwen2_5_1_5b | 1.54B |" in table
  # docs/ablations.md quotes the rows.
  docs = (pathlib.Path(__file__).resolve().parents[3] / "docs"
          / "ablations.md").read_text()
  for row in table.splitlines():
    if row.startswith("| qwen"):
      assert row in docs, row
  ablation = gpu_ablation.spec.load("pure").get_ablation()
  baseline, other = gpu_ablation.arms(ablation)
  assert other == "sum_form" and baseline in ablation.arms
