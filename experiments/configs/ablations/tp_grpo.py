"""TP-GRPO (arXiv 2507.23317) vs GRPO: samples needed to reach a target.

The paper reports higher accuracy with significantly fewer training
samples from thought-level process rewards with capability-adaptive
shaping. Chains of 3-6 operations over +, − and × make the task hard
enough for the two to separate. Metric: samples seen when greedy accuracy
first reaches the target.
"""

from experiments.ablation import spec


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="tp_grpo",
      description=__doc__.split("\n\n")[1].replace("\n", " "),
      base="chain_arith",
      common={"task.min_ops": 3, "task.max_ops": 6,
                  "task.max_response_len": 64, "sampling.max_new_tokens": 64},
      arms={"grpo": {"rl.estimator": "grpo"},
                "tp_grpo": {"rl.estimator": "tp_grpo"}},
      sizes={
          "default": {"rl.num_steps": 80, "rl.prompts_per_step": 8,
                      "eval_every": 10, "eval_problems": 64},
          "smoke": spec.SMOKE,
      },
      claims=[
          dict(name="fewer samples to the target accuracy",
               paper="higher accuracy with significantly fewer samples",
               metric="accuracy", reduce="samples_to_target", target=0.5,
               better="lower", arm="tp_grpo", baseline="grpo"),
          dict(name="higher final accuracy", paper="higher accuracy",
               metric="accuracy", reduce="final", last_k=2, better="higher",
               arm="tp_grpo", baseline="grpo"),
      ],
      plot_metrics=["accuracy", "task/wrong_steps"],
  )


def get_config(arg: str = "tp_grpo,0,default"):
  return spec.build_config(get_ablation(), arg)
