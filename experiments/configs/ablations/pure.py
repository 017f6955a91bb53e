"""PURE (Cheng et al., arXiv 2504.15275): min-form vs sum-form credit with a
hackable process reward model.

The PRM scores vacuous identity steps (`z+0=z`) as highly as real ones. The
paper reports that summing PRM rewards into returns collapses training
(the policy pads responses with rewarded filler and accuracy falls), that
min-form credit stays stable, and that mixing in ~10% verifiable reward
delays the hacking further. Arms: outcome-only GRPO; PURE softmin and
strict (PRM only); the sum form with raw per-token returns normalised over
the group's tokens (`sum_form_prm`) and with DeepSeekMath-style normalised
step rewards (`process_grpo`); and PURE / sum form with verifiable reward on
10% of the prompts.
"""

from experiments.ablation import spec

__all__ = ["get_ablation", "get_config"]

_PRM_ONLY = {"verifiable_reward_coef": 0.0}
_FILLER = dict(metric="eval/task/filler_steps", better="lower")


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="pure",
      description=spec.summary(__doc__),
      common={"task.prm": "hackable"},
      arms={
          "grpo": spec.GRPO,
          "pure_softmin": {"rl.estimator": "pure",
                           "rl.estimator_kwargs": {**_PRM_ONLY,
                                                   "mode": "softmin"}},
          "pure_strict": {"rl.estimator": "pure",
                          "rl.estimator_kwargs": {**_PRM_ONLY,
                                                  "mode": "strict"}},
          "sum_form": {"rl.estimator": "sum_form_prm",
                       "rl.estimator_kwargs": _PRM_ONLY},
          "process_grpo": {"rl.estimator": "process_grpo"},
          "pure_vr10": {"rl.estimator": "pure",
                        "rl.verifiable_fraction": 0.1},
          "sum_form_vr10": {"rl.estimator": "sum_form_prm",
                            "rl.verifiable_fraction": 0.1},
      },
      sizes=spec.sizes(num_steps=80, eval_every=20),
      claims=[
          spec.claim("min form beats sum form (accuracy)",
                     "sum-form credit collapses training; min-form is stable",
                     "pure_softmin", "sum_form"),
          spec.claim("sum form pads with filler (hacking)",
                     "the policy hacks the PRM with rewarded filler steps",
                     "pure_softmin", "sum_form", **_FILLER),
          spec.claim("normalised step rewards also hack",
                     "(our second sum form) DeepSeekMath-style step rewards",
                     "pure_softmin", "process_grpo", **_FILLER),
          spec.claim("10% verifiable reward curbs hacking",
                     "~10% VR alleviates reward hacking", "sum_form_vr10",
                     "sum_form", **_FILLER),
      ],
      plot_metrics=["eval/accuracy", "eval/task/filler_steps",
                    "eval/response_length"],
  )


def get_config(arg: str = "pure_softmin,0,default"):
  return spec.build_config(get_ablation(), arg)
