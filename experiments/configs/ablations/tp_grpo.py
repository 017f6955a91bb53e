"""TP-GRPO (arXiv 2507.23317) vs GRPO: samples needed to reach a target.

The paper reports higher accuracy with significantly fewer training
samples from thought-level process rewards with capability-adaptive
shaping. Chains of 3-6 operations over +, − and × make the task hard
enough for the two to separate. Metric: samples seen when evaluation
accuracy (sampled at the loop config's eval_temperature, 1.0) first reaches
the target.
"""

from experiments.ablation import spec

__all__ = ["get_ablation", "get_config"]


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="tp_grpo",
      description=spec.summary(__doc__),
      common={"task.min_ops": 3, "task.max_ops": 6,
              "task.max_response_len": 64, "sampling.max_new_tokens": 64},
      arms={"grpo": spec.GRPO, "tp_grpo": {"rl.estimator": "tp_grpo"}},
      sizes=spec.sizes(num_steps=300, eval_every=25),
      claims=[
          spec.claim("fewer samples to the target accuracy",
                     "higher accuracy with significantly fewer samples",
                     "tp_grpo", "grpo", reduce="samples_to_target",
                     target=0.6, better="lower"),
          spec.claim("higher final accuracy", "higher accuracy", "tp_grpo",
                     "grpo"),
      ],
      plot_metrics=["eval/accuracy", "eval/task/wrong_steps"],
  )


def get_config(arg: str = "tp_grpo,0,default"):
  return spec.build_config(get_ablation(), arg)
