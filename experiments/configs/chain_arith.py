"""Default CPU experiment: GRPO-family RL on chain arithmetic (a few minutes).

A 2-layer, width-64 decoder first learns the task format from generated
traces with deliberate wrong and filler steps (the warm start, so RL starts
from an imperfect policy), then trains with RL: 16 groups of 8 responses per
step (one prompt each), responses up to 48 tokens.

  python -m experiments.train --config=experiments/configs/chain_arith.py \
      --workdir=/tmp/chain --config.rl.estimator=pure
"""

import ml_collections

__all__ = ["get_config"]


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.task = ml_collections.ConfigDict(dict(
      name="chain_arith", min_ops=2, max_ops=4, ops="+-*", modulus=10,
      prm="oracle", prm_noise=0.0, prm_seed=0, max_response_len=48,
      free_length=False, check_rate=0.5))

  # A named size from experiments/models/config.py, with overrides; or a
  # Hugging Face-format directory in model_path (then `model` is ignored).
  c.model = ml_collections.ConfigDict(dict(name="toy", overrides={}))
  c.model_path = ""

  c.sampling = ml_collections.ConfigDict(dict(
      max_new_tokens=48, temperature=1.0, top_k=0, top_p=1.0))

  c.warm_start = ml_collections.ConfigDict(dict(
      steps=1500, batch_size=64, learning_rate=1e-3, wrong_rate=0.2,
      filler_rate=0.1,
      # Also warm-start a pretrained model_path checkpoint (an instruct
      # model already follows the task's format: off by default).
      pretrained=False))
  # Start RL from this checkpoint directory's params instead (a warm start
  # shared by several runs); empty: warm-start inside workdir.
  c.init_checkpoint = ""

  c.rl = ml_collections.ConfigDict(dict(
      num_steps=600,
      num_groups=16,   # G prompts per step, one group of responses each
      group_size=8,    # responses per prompt
      estimator="grpo",
      # Settings of the chosen estimator (cajax.resolve(estimator, **these));
      # from the command line: --config.rl.estimator_kwargs.<name>=<value>.
      estimator_kwargs=ml_collections.ConfigDict(),
      # Where the estimator's token_rewards come from: "outcome" (at the
      # last token) or "steps" (each step's PRM reward at its last token).
      reward_source="outcome",
      # Share of prompts whose outcome is verifiable (PURE's "10% VR").
      verifiable_fraction=1.0,
      # R3L: this many rows of each group restart a failed response from
      # just before its first wrong step; with mask_retry_prefix the shared
      # prefix is left out of the loss (pivotal credit).
      retry_samples=0,
      mask_retry_prefix=True,
      policy_loss="vanilla",
      # Settings of the chosen loss over its own defaults
      # (cajax.losses.make_policy_loss(policy_loss, **these)).
      policy_loss_kwargs=ml_collections.ConfigDict(),
      aggregation="token-mean",
      kl_coef=0.0,
      kl_kind="k3",
      entropy_coef=0.0,
      value_coef=0.0,  # > 0 adds a value head (needed by `gae`).
      value_clip=0.5,
      tis_ratio_cap=0.0,  # > 0: truncated importance weight on each token.
      ppo_epochs=1,
      num_mini_batches=1,
      num_micro_batches=1,
      # iStar's implicit PRM, built only for rl.estimator="istar": the β of
      # its step rewards and DPO loss, and its own AdamW learning rate and
      # gradient clip. The authors use β = 0.05 and, at 7B, a PRM learning
      # rate twice the policy's (1e-6 against 5e-7) with clip 10; here
      # twice `optimizer.learning_rate` (docs/ablations.md).
      implicit_prm=ml_collections.ConfigDict(dict(
          beta=0.05, learning_rate=4e-4, grad_clip=10.0)),
  ))

  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=2e-4, warmup_steps=0, b1=0.9, b2=0.999,
      weight_decay=0.0, grad_clip=1.0))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.distributed = False

  c.eval_every = 50
  c.eval_problems = 256
  # Evaluate the sampling policy (what RL optimises): greedy decoding hides
  # the wrong and filler steps the credit-assignment claims are about.
  c.eval_temperature = 1.0
  c.checkpoint_every = 50
  c.keep_checkpoints = 3
  c.show_progress = True
  # Testing aid: stop (with a checkpoint) after this step, as a kill would.
  c.stop_at_step = -1
  return c
