r"""One `bench_peers` worker: GRPO with TRL's `GRPOTrainer` (PyTorch).

  python -m experiments.peers.run_trl --work='{"num_groups": 16}'

TRL's trainer on a transformers `Qwen2ForCausalLM` loaded from the
benchmark's random checkpoint (`Work.checkpoint`, the weights cajax starts
from), sampling with transformers' `generate` (KV cache), with the task's
character vocabulary as a fast tokenizer. Settings: beta 0 (no reference
model), one iteration (the old log-probs are the current ones, detached),
epsilon 0.2, loss type "dapo" (token mean over the batch), group-scaled
rewards, Adam (AdamW with weight decay 0) at a constant learning rate,
gradient clipping at 1, no dropout, `torch.set_num_threads(threads)`. The
tokenizer's EOS is BOS and the task's banned tokens are suppressed, so no
row ever stops: every row samples exactly `new_tokens`. Prompts are not
shuffled, so step s trains on the same prompts as in the other systems.
"""

import tempfile
import time

from absl import app
from absl import flags

from experiments.peers import work as work_lib

__all__ = [
    "define_flags", "main",
]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--work (the work as JSON) and --threads."""
  flags.DEFINE_string("work", "{}", "A work_lib.Work as JSON.",
                      flag_values=flag_values)
  flags.DEFINE_integer("threads", 1, "torch.set_num_threads.",
                       flag_values=flag_values)


def _tokenizer(vocab):
  """A transformers fast tokenizer over the task's characters: one token
  per character, BOS prepended, left padding (TRL pads prompts left)."""
  import tokenizers
  from tokenizers import decoders
  from tokenizers import models
  from tokenizers import pre_tokenizers
  from tokenizers import processors
  import transformers
  special = {vocab.pad_id: "<pad>", vocab.bos_id: "<bos>",
             vocab.eos_id: "<eos>"}
  names = {i: special.get(i) or vocab.decode([i])
           for i in range(vocab.vocab_size)}
  core = tokenizers.Tokenizer(models.WordLevel(
      {name: i for i, name in names.items()}, unk_token="<pad>"))
  core.pre_tokenizer = pre_tokenizers.Split(
      tokenizers.Regex("."), behavior="isolated")
  core.post_processor = processors.TemplateProcessing(
      single="<bos> $A", special_tokens=[("<bos>", vocab.bos_id)])
  core.decoder = decoders.Fuse()
  # EOS is BOS, which is never sampled: no row stops early.
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=core, bos_token="<bos>", eos_token="<bos>",
      pad_token="<pad>", padding_side="left")


def main(argv):
  del argv
  work = work_lib.Work.from_json(flags.FLAGS.work)
  if not work.checkpoint:
    raise ValueError("run_trl needs Work.checkpoint (bench_peers writes it).")
  import datasets
  import torch
  import transformers
  import trl

  torch.set_num_threads(flags.FLAGS.threads)
  torch.manual_seed(work.seed)
  build = time.perf_counter()
  task = work_lib.task()
  tokenizer = _tokenizer(task.tokenizer)
  prompts = [work_lib.prompt_texts(work, s)[g]
             for s in range(work.warmup + work.steps)
             for g in range(work.num_groups)]
  expected = work_lib.problems(work, 0)[0].prompt_ids
  got = tokenizer(prompts[0])["input_ids"]
  if got != expected:
    raise AssertionError(f"tokenizer gives {got}, the task {expected}")
  model = transformers.AutoModelForCausalLM.from_pretrained(
      work.checkpoint, dtype=getattr(torch, work.dtype))
  step = iter(range(10**9))

  def reward(prompts, completions, **unused):
    return [float(r) for r in work_lib.rewards(work, next(step),
                                                len(completions))]

  ends, sample_times, tokens = [], [], []

  class _Clock(transformers.TrainerCallback):

    def on_step_end(self, args, state, control, **kwargs):
      ends.append(time.perf_counter())

  with tempfile.TemporaryDirectory() as out:
    trainer = trl.GRPOTrainer(
        model=model, reward_funcs=reward, processing_class=tokenizer,
        train_dataset=datasets.Dataset.from_dict({"prompt": prompts}),
        callbacks=[_Clock()],
        args=trl.GRPOConfig(
            output_dir=out, per_device_train_batch_size=work.rows,
            gradient_accumulation_steps=1, steps_per_generation=1,
            num_generations=work.group_size,
            max_completion_length=work.new_tokens, temperature=1.0,
            top_p=1.0, top_k=0, beta=0.0, num_iterations=1,
            epsilon=work_lib.CLIP_EPSILON, loss_type="dapo",
            scale_rewards="group", mask_truncated_completions=False,
            learning_rate=work_lib.LEARNING_RATE, optim="adamw_torch",
            weight_decay=0.0, lr_scheduler_type="constant",
            max_grad_norm=1.0, max_steps=work.warmup + work.steps,
            shuffle_dataset=False, disable_dropout=True,
            generation_kwargs={"suppress_tokens":
                               list(task.banned_tokens)},
            use_cpu=True, bf16=False, report_to="none",
            save_strategy="no", logging_steps=10**6, seed=work.seed,
            dataloader_num_workers=0, log_completions=False))
    generate = trainer._generate_single_turn

    def timed_generate(*args, **kwargs):
      start = time.perf_counter()
      out = generate(*args, **kwargs)
      sample_times.append(time.perf_counter() - start)
      tokens.append(sum(len(ids) for ids in out[0]))
      return out

    trainer._generate_single_turn = timed_generate
    trainer.train()
  steps = [dict(step_s=ends[i] - ends[i - 1], sample_s=sample_times[i],
                tokens=tokens[i])
           for i in range(work.warmup, work.warmup + work.steps)]
  work_lib.emit("trl", trl.__version__, work, first_step_s=ends[0] - build,
                steps=steps, device="cpu", torch=torch.__version__,
                threads=torch.get_num_threads())


if __name__ == "__main__":
  define_flags()
  app.run(main)
