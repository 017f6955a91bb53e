"""UCAS (Xie et al., arXiv 2510.10649) vs GRPO: entropy and accuracy.

The paper reports that uncertainty-aware advantage shaping keeps policy
entropy higher (about 0.20 vs 0.01 at 7B) and responses longer, at equal or
better reward. Arms: GRPO and UCAS with the paper's coefficients.
"""

from experiments.ablation import spec


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="ucas",
      description=__doc__.split("\n\n")[1].replace("\n", " "),
      base="chain_arith",
      common={},
      arms={"grpo": {"rl.estimator": "grpo"},
                "ucas": {"rl.estimator": "ucas"}},
      sizes={
          "default": {"rl.num_steps": 80, "rl.prompts_per_step": 8,
                      "eval_every": 20, "eval_problems": 64},
          "smoke": spec.SMOKE,
      },
      claims=[
          dict(name="UCAS keeps entropy higher",
               paper="entropy ~0.20 (UCAS) vs ~0.01 (GRPO)",
               metric="train:entropy", reduce="final", last_k=10,
               better="higher", arm="ucas", baseline="grpo"),
          dict(name="UCAS accuracy at least GRPO's",
               paper="reward 0.81 vs 0.795", metric="accuracy", reduce="final",
               last_k=2, better="higher", arm="ucas", baseline="grpo"),
      ],
      plot_metrics=["accuracy", "train:entropy", "response_length"],
  )


def get_config(arg: str = "ucas,0,default"):
  return spec.build_config(get_ablation(), arg)
