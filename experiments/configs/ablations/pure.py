"""PURE (Cheng et al., arXiv 2504.15275): min-form vs sum-form credit with a
hackable process reward model.

The PRM scores vacuous identity steps (`z+0=z`) as highly as real ones and,
like a learned PRM, never checks the final answer; the 96-token budget
leaves room to pad. The
paper reports that summing PRM rewards into returns collapses training
(the policy pads responses with rewarded filler and accuracy falls), that
min-form credit stays stable, and that mixing in ~10% verifiable reward
delays the hacking further. Arms: PURE softmin (PRM only); the sum form
with raw per-token returns normalised over the group's tokens (`sum_form`);
and the sum form with verifiable reward on 10% of the prompts.
"""

from experiments.ablation import cost
from experiments.ablation import spec

__all__ = ["get_ablation", "get_config"]

_PRM_ONLY = {"verifiable_reward_coef": 0.0}
# Filler steps per response over the last 25% of training steps; 0.05 is
# one filler step in twenty responses.
_FILLER = dict(metric="task/filler_steps", better="lower",
               smallest_effect=0.05)


# Measured on 2 idle AMD EPYC cores (RL and warm-start steps); the
# evaluation time is estimated from the sampling share of a step.
_TIMING = cost.Timing(rl_step=0.33, evaluation=3.5, warm_start_step=0.3,
                      machine="AMD EPYC, 2 idle cores")


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="pure",
      description=spec.summary(__doc__),
      # Twice the default 48-token budget: room to pad with filler steps.
      common={"task.prm": "hackable", "task.max_response_len": 96,
              "sampling.max_new_tokens": 96},
      arms={
          "pure_softmin": {"rl.estimator": "pure",
                           "rl.estimator_kwargs": {**_PRM_ONLY,
                                                   "mode": "softmin"}},
          "sum_form": {"rl.estimator": "sum_form_prm",
                       "rl.estimator_kwargs": _PRM_ONLY},
          "sum_form_vr10": {"rl.estimator": "sum_form_prm",
                            "rl.verifiable_fraction": 0.1},
      },
      sizes=spec.sizes(num_steps=40, evaluations=1, timing=_TIMING),
      claims=(
          spec.Claim("min form beats sum form (accuracy)",
                     "sum-form credit collapses training; min-form is stable",
                     "pure_softmin", "sum_form"),
          spec.Claim("sum form pads with filler (hacking)",
                     "the policy hacks the PRM with rewarded filler steps",
                     "pure_softmin", "sum_form", **_FILLER),
          spec.Claim("10% verifiable reward curbs hacking",
                     "~10% VR alleviates reward hacking", "sum_form_vr10",
                     "sum_form", **_FILLER),
      ),
      plot_metrics=("rollout/response_length", "eval/accuracy"),
  )


def get_config(arg: str = "pure_softmin,0,default"):
  return spec.build_config(get_ablation(), arg)
