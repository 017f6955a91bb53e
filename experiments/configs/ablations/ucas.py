"""UCAS (Xie et al., arXiv 2510.10649) vs GRPO: entropy and accuracy.

The paper reports that uncertainty-aware advantage shaping keeps policy
entropy higher (about 0.20 vs 0.01 at 7B) and responses longer, at equal or
better reward. Arms: GRPO and UCAS with the paper's coefficients.
"""

from experiments.ablation import spec

__all__ = ["get_ablation", "get_config"]


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="ucas",
      description=spec.summary(__doc__),
      arms={"grpo": spec.GRPO, "ucas": {"rl.estimator": "ucas"}},
      sizes=spec.sizes(num_steps=300, eval_every=50),
      claims=[
          spec.claim("UCAS keeps entropy higher",
                     "entropy ~0.20 (UCAS) vs ~0.01 (GRPO)", "ucas", "grpo",
                     metric="rollout/entropy", last_k=50),
          spec.claim("UCAS accuracy at least GRPO's", "reward 0.81 vs 0.795",
                     "ucas", "grpo"),
      ],
      plot_metrics=["eval/accuracy", "rollout/entropy",
                    "eval/response_length"],
  )


def get_config(arg: str = "ucas,0,default"):
  return spec.build_config(get_ablation(), arg)
