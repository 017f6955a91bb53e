"""PURE (Cheng et al., arXiv 2504.15275): min-form vs sum-form credit with a
hackable process reward model.

The PRM scores vacuous identity steps (`z+0=z`) as highly as real ones and,
like a learned PRM, never checks the final answer; the 96-token budget
leaves room to pad. The paper reports that summing PRM rewards into returns
collapses training (the policy pads responses with rewarded filler and
accuracy falls), that min-form credit is stable, and that mixing in
verifiable reward on ~10% of the prompts (PRM+VR, its best) alleviates
hacking further. Arms: PURE softmin (PRM only); the sum form with raw
per-token returns normalised over the group's tokens (`sum_form`); and
PURE softmin plus the verifiable reward on one group in eight
(`pure_vr`, 12.5%: the nearest share to 10% that 8 groups allow).
"""

from experiments.ablation import cost
from experiments.ablation import spec

__all__ = ["get_ablation", "get_config"]

_PRM_ONLY = {"verifiable_reward_coef": 0.0}
# Filler steps per response; 0.25 is one filler step in four responses.
_FILLER = dict(metric="task/filler_steps", smallest_effect=0.25)


# Calibrated (cost.calibrate) from a one-seed run of every arm on 2
# Intel Xeon cores, two processes at a time, on 2026-12-07.
_TIMING = cost.Timing(rl_step=0.2072, evaluation=2.0198, warm_start_step=0.2564,
                      overhead=18.7278, machine="Intel Xeon, 2 cores")


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
          "pure_vr": {"rl.estimator": "pure",
                      "rl.estimator_kwargs": {"mode": "softmin"},
                      "rl.verifiable_fraction": 0.125},
      },
      sizes=spec.sizes(num_steps=40, evaluations=1, timing=_TIMING),
      claims=(
          spec.Claim("sum form pads with filler (hacking)",
                     "the policy hacks a sum-form PRM with rewarded steps",
                     "sum_form", "sum_form", versus_start=True, **_FILLER),
          spec.Claim("min form pads less than sum form",
                     "min-form credit removes the incentive to farm "
                     "rewarded steps", "pure_softmin", "sum_form",
                     better="lower", **_FILLER),
          # Accuracy averaged over the whole run (tail 1): both forms can
          # collapse, the paper's sum form "even at the beginning".
          spec.Claim("min form keeps accuracy longer",
                     "sum-form credit collapses training; min-form is stable",
                     "pure_softmin", "sum_form", tail=1.0),
          spec.Claim("verifiable reward keeps the min form's accuracy",
                     "PRM+VR is the best setting (53.3 vs 49.3 average)",
                     "pure_vr", "pure_softmin"),
      ),
      readings=(
          spec.Reading("hacking onset (step)", "task/filler_steps",
                       kind="onset", margin=0.5),
          spec.Reading("accuracy collapse onset (step)", "rollout/accuracy",
                       kind="onset", margin=0.05, rising=False),
          spec.Reading("final accuracy", "eval/accuracy",
                       reduce="last_eval"),
          spec.Reading("final filler steps", "eval/task/filler_steps",
                       reduce="last_eval"),
          spec.Reading("final response length", "eval/response_length",
                       reduce="last_eval"),
      ),
      plot_metrics=("rollout/response_length", "task/num_steps",
                    "eval/accuracy"),
  )


def get_config(arg: str = "pure_softmin,0,default"):
  return spec.build_config(get_ablation(), arg)
