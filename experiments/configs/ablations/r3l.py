"""R3L (arXiv 2601.03715): reflect-and-retry with pivotal credit and
positive amplification vs GRPO, and each component removed.

Retries restart a failed response from just before its first wrong step
(found by the task's step checker); the shared prefix is taken out of the
loss on both the failed response and its retries (pivotal credit: only the
tokens after the pivot are credited), and positive advantages are
amplified by α. The paper reports that the full
method beats GRPO and that removing any component lowers success.

With 0/1 outcomes α never acts on its own: a successful row gets the
success score and a failed one a negative advantage, so no row has a
non-negative s below r_max. The amplification is then the success score,
α on the paper's project page and 1.0 in its code; the amplified arms use
the page's α = 3 (`success_score=3`), and `no_amplify` sets both to 1.
"""

from experiments.ablation import cost
from experiments.ablation import spec

__all__ = ["get_ablation", "get_config"]

_R3L = {"rl.estimator": "r3l", "rl.retry_samples": 2,
        "rl.mask_retry_prefix": True,
        "rl.estimator_kwargs": {"alpha": 3.0, "success_score": 3.0}}


# Calibrated (cost.calibrate) from a one-seed run of every arm on 2
# Intel Xeon cores, two processes at a time, on 2026-12-07.
_TIMING = cost.Timing(rl_step=0.2169, evaluation=1.3495, warm_start_step=0.1332,
                      overhead=14.8781, machine="Intel Xeon, 2 cores")
# Retried rows restart from a correct prefix, which inflates the training
# batch's accuracy in every retrying arm: the claims read evaluations.
_EVAL_AUC = dict(metric="eval/accuracy", reduce="eval_auc")


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="r3l",
      description=spec.summary(__doc__),
      arms={
          "grpo": spec.GRPO,
          "r3l": _R3L,
          "no_retry": {**_R3L, "rl.retry_samples": 0},
          "no_pivot": {**_R3L, "rl.mask_retry_prefix": False},
          "no_amplify": {**_R3L, "rl.estimator_kwargs": {
              "alpha": 1.0, "success_score": 1.0}},
      },
      sizes=spec.sizes(num_steps=80, evaluations=3, timing=_TIMING,
                       **spec.FULL_WARM_START),
      claims=(
          spec.Claim("R3L beats GRPO", "GSM8K 0.721 vs 0.474", "r3l", "grpo",
                     **_EVAL_AUC),
          spec.Claim("retries help", "removing reflect-retry hurts", "r3l",
                     "no_retry", **_EVAL_AUC),
          spec.Claim("pivotal credit helps", "removing pivotal credit hurts",
                     "r3l", "no_pivot", **_EVAL_AUC),
          spec.Claim("positive amplification helps",
                     "removing amplification hurts", "r3l", "no_amplify",
                     **_EVAL_AUC),
      ),
      readings=(
          spec.Reading("retry success", "rollout/retry_success"),
          spec.Reading("final accuracy", "eval/accuracy",
                       reduce="last_eval"),
      ),
      plot_metrics=("task/wrong_steps", "rollout/retry_success"),
  )


def get_config(arg: str = "r3l,0,default"):
  return spec.build_config(get_ablation(), arg)
