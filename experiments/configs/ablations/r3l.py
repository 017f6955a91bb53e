"""R3L (arXiv 2601.03715): reflect-and-retry with pivotal credit and
positive amplification vs GRPO, and each component removed.

Retries restart a failed response from just before its first wrong step
(found by the task's step checker); the shared prefix is taken out of the
loss (pivotal credit: only the tokens after the pivot are credited), and
positive advantages are amplified by α. The paper reports that the full
method beats GRPO and that removing any component lowers success.
"""

from experiments.ablation import spec

_R3L = {"rl.estimator": "r3l", "rl.retry_samples": 2,
        "rl.mask_retry_prefix": True,
        "rl.estimator_kwargs": {"alpha": 3.0}}


_ACCURACY = dict(metric="accuracy", reduce="final", last_k=2,
                 better="higher", arm="r3l")


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="r3l",
      description=__doc__.split("\n\n")[1].replace("\n", " "),
      base="chain_arith",
      common={},
      arms={
          "grpo": {"rl.estimator": "grpo"},
          "r3l": _R3L,
          "no_retry": {**_R3L, "rl.retry_samples": 0},
          "no_pivot": {**_R3L, "rl.mask_retry_prefix": False},
          "no_amplify": {**_R3L, "rl.estimator_kwargs": {"alpha": 1.0}},
      },
      sizes={
          "default": {"rl.num_steps": 60, "rl.prompts_per_step": 8,
                      "eval_every": 15, "eval_problems": 64},
          "smoke": spec.SMOKE,
      },
      claims=[
          dict(_ACCURACY, name="R3L beats GRPO", paper="GSM8K 0.721 vs 0.474",
               baseline="grpo"),
          dict(_ACCURACY, name="retries help",
               paper="removing reflect-retry hurts", baseline="no_retry"),
          dict(_ACCURACY, name="pivotal credit helps",
               paper="removing pivotal credit hurts", baseline="no_pivot"),
          dict(_ACCURACY, name="positive amplification helps",
               paper="removing amplification hurts", baseline="no_amplify"),
      ],
      plot_metrics=["accuracy", "task/wrong_steps"],
  )


def get_config(arg: str = "r3l,0,default"):
  return spec.build_config(get_ablation(), arg)
