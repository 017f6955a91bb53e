"""UCAS (Xie et al., arXiv 2510.10649) vs GRPO: entropy and accuracy.

The paper reports that uncertainty-aware advantage shaping keeps policy
entropy higher (about 0.20 vs 0.01 at 7B) and responses longer, at equal or
better reward. Arms: GRPO and UCAS with the paper's coefficients, and UCAS
with per-token (mean) rather than summed self-certainty (`ucas_mean`,
version 2, exploratory: the summed certainty grows with length, so it
damps long right answers and penalises long wrong ones harder). The task
is chain arithmetic's length variant (`free_length`: a step may be
re-checked, unrewarded and unrequired), so response length can move; its
warm start writes responses from the bare solution to about twice that.
"""

from experiments.ablation import cost
from experiments.ablation import spec

__all__ = ["get_ablation", "get_config"]


# Calibrated (cost.calibrate) from a one-seed run of every arm on 2
# Intel Xeon cores, two processes at a time, on 2026-12-07.
_TIMING = cost.Timing(rl_step=0.128, evaluation=1.7138, warm_start_step=0.1218,
                      overhead=30.4626, machine="Intel Xeon, 2 cores")


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="ucas",
      description=spec.summary(__doc__),
      common={"task.free_length": True, "task.max_response_len": 64,
              "sampling.max_new_tokens": 64},
      arms={"grpo": spec.GRPO, "ucas": {"rl.estimator": "ucas"},
            "ucas_mean": {"rl.estimator": "ucas",
                          "rl.estimator_kwargs": {"certainty_reduce": "mean"}}},
      sizes=spec.sizes(num_steps=160, evaluations=2, timing=_TIMING,
                       **spec.FULL_WARM_START),
      claims=(
          # Token-mean entropy of the sampled tokens, in nats.
          spec.Claim("UCAS keeps entropy higher",
                     "entropy ~0.20 (UCAS) vs ~0.01 (GRPO)", "ucas", "grpo",
                     metric="rollout/entropy", smallest_effect=0.02),
          spec.Claim("UCAS accuracy at least GRPO's", "reward 0.81 vs 0.795",
                     "ucas", "grpo", kind="non_inferiority"),
          # Tokens per response; 2 is a tenth of a bare solution's length.
          spec.Claim("UCAS keeps responses longer",
                     "~1550 vs ~630 tokens at 7B", "ucas", "grpo",
                     metric="rollout/response_length", smallest_effect=2.0),
          # Added in version 2, after version 1 showed UCAS shortening
          # responses: exploratory, outside the Holm family.
          spec.Claim("per-token certainty keeps responses longer",
                     "the summed certainty grows with length", "ucas_mean",
                     "ucas", metric="rollout/response_length",
                     smallest_effect=2.0, primary=False),
      ),
      version=2,
      readings=(
          # pass@8: the share of a step's groups with a right response.
          spec.Reading("pass@8", "rollout/pass_at_group"),
          spec.Reading("entropy at matched accuracy", "rollout/entropy",
                       kind="at_level", window=10),
          spec.Reading("final accuracy", "eval/accuracy",
                       reduce="last_eval"),
      ),
      plot_metrics=("rollout/response_length", "eval/accuracy",
                    "task/check_steps"),
  )


def get_config(arg: str = "ucas,0,default"):
  return spec.build_config(get_ablation(), arg)
