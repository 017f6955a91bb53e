"""TP-GRPO (arXiv 2507.23317) vs GRPO: samples needed to reach a target.

The paper reports higher accuracy with significantly fewer training
samples from thought-level process rewards with capability-adaptive
shaping. Chains of 3-6 operations over +, − and × make the task hard
enough for the two to separate. Metric: samples seen when the training
batches' accuracy (a trailing mean over 10 steps) first reaches the target.
"""

from experiments.ablation import cost
from experiments.ablation import spec

__all__ = ["get_ablation", "get_config"]


# RL and warm-start steps measured on 2 idle AMD EPYC cores; the evaluation
# time is estimated from the sampling share of a step.
_TIMING = cost.Timing(rl_step=0.36, evaluation=4.0, warm_start_step=0.36,
                      machine="AMD EPYC, 2 idle cores")
_STEPS = 120


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="tp_grpo",
      description=spec.summary(__doc__),
      common={"task.min_ops": 3, "task.max_ops": 6,
              "task.max_response_len": 64, "sampling.max_new_tokens": 64},
      arms={"grpo": spec.GRPO, "tp_grpo": {"rl.estimator": "tp_grpo"}},
      sizes=spec.sizes(num_steps=_STEPS, evaluations=2, timing=_TIMING),
      claims=(
          # The smallest effect: a tenth of the budget's samples.
          spec.Claim("fewer samples to the target accuracy",
                     "higher accuracy with significantly fewer samples",
                     "tp_grpo", "grpo", reduce="samples_to_target",
                     target=0.6, window=10, better="lower",
                     smallest_effect=_STEPS * 64 / 10),
          spec.Claim("higher final accuracy", "higher accuracy", "tp_grpo",
                     "grpo"),
      ),
      plot_metrics=("task/wrong_steps", "eval/accuracy"),
  )


def get_config(arg: str = "tp_grpo,0,default"):
  return spec.build_config(get_ablation(), arg)
