"""RL on a pretrained Qwen2/Llama checkpoint with local JSONL math data.

  python -m experiments.train --config=experiments/configs/qwen_math.py \
      --config.model_path=/models/Qwen2.5-Math-1.5B \
      --config.task.path=/data/gsm8k_train.jsonl --workdir=/runs/qwen_math \
      [--config.rl.estimator=drgrpo ...]

GRPO family by default (any registered estimator by override), bf16
parameters with fp32 Adam state (the optimizer works in float32 and casts
its updates to bf16), per-block rematerialisation, FSDP over every device,
log-probs through the fused kernels. No warm start: the checkpoint is the
starting policy. The checkpoint's tokenizer and chat template are used.
"""

from experiments.configs import chain_arith

__all__ = ["get_config"]


def get_config():
  c = chain_arith.get_config()
  c.model_path = ""  # required: a local Hugging Face-format directory
  c.model.overrides = {"param_dtype": "bfloat16", "dtype": "bfloat16",
                       "remat": "full"}
  c.task = dict(name="jsonl_math", path="", question_key="question",
                answer_key="answer", max_prompt_len=256,
                max_response_len=1024, use_chat_template=True)
  c.sampling.max_new_tokens = 1024
  c.sampling.temperature = 1.0
  c.warm_start.steps = 0
  c.rl.num_steps = 500
  c.rl.num_groups = 32
  c.rl.group_size = 8
  c.rl.estimator = "grpo"
  c.rl.aggregation = "token-mean"
  c.rl.num_mini_batches = 4
  c.rl.num_micro_batches = 4
  c.rl.kl_coef = 0.0
  c.optimizer.learning_rate = 1e-6
  c.optimizer.warmup_steps = 10
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.eval_every = 50
  c.eval_problems = 128
  c.eval_temperature = 0.0
  c.checkpoint_every = 20
  return c
