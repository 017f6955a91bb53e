"""TP-GRPO (arXiv 2507.23317) vs GRPO: samples needed to reach a target,
and each of its two parts removed.

The paper reports higher accuracy with significantly fewer training
samples from thought-level process rewards with capability-adaptive
shaping. Chains of 3-6 operations over +, − and × make the task hard
enough for the methods to separate. The thought rewards are credited as
returns (`credit="return"`), where merging equally-labelled steps into
one thought changes the credit: a run of k right steps in a wrong answer
pays once, not k times. Arms: GRPO; TP-GRPO; TP-GRPO with one thought per
step (`tp_grpo_steps`: no merge); TP-GRPO without capability scaling
(`tp_grpo_fixed`: `adapt="none"`). Metric: samples seen when the training
batches' accuracy (a trailing mean over 10 steps) first reaches the target.
"""

from experiments.ablation import cost
from experiments.ablation import spec

__all__ = ["get_ablation", "get_config"]


# Calibrated (cost.calibrate) from a one-seed run of every arm on 2
# Intel Xeon cores, two processes at a time, on 2026-12-07.
_TIMING = cost.Timing(rl_step=0.1243, evaluation=1.8809, warm_start_step=0.1401,
                      overhead=28.1736, machine="Intel Xeon, 2 cores")
_STEPS = 160
_TP = {"credit": "return"}
# Samples seen until the 10-step mean accuracy reaches 0.6; the smallest
# effect is a tenth of the budget's samples.
_TO_TARGET = dict(reduce="samples_to_target", target=0.6, window=10,
                  better="lower", smallest_effect=_STEPS * 64 / 10)


def _tp_grpo(**settings) -> dict:
  return {"rl.estimator": "tp_grpo",
          "rl.estimator_kwargs": {**_TP, **settings}}


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="tp_grpo",
      description=spec.summary(__doc__),
      common={"task.min_ops": 3, "task.max_ops": 6,
              "task.max_response_len": 64, "sampling.max_new_tokens": 64},
      arms={"grpo": spec.GRPO, "tp_grpo": _tp_grpo(),
            "tp_grpo_steps": _tp_grpo(merge_thoughts=False),
            "tp_grpo_fixed": _tp_grpo(adapt="none")},
      # The smoke size keeps 3-4 operations: with 1-2, no run of two
      # equally-labelled steps earns a thought reward, and tp_grpo_steps
      # would be tp_grpo.
      sizes=spec.sizes(num_steps=_STEPS, evaluations=2, timing=_TIMING,
                       **spec.FULL_WARM_START,
                       smoke={"task.min_ops": 3, "task.max_ops": 4,
                              "task.max_response_len": 40,
                              "sampling.max_new_tokens": 40}),
      claims=(
          spec.Claim("fewer samples to the target accuracy",
                     "higher accuracy with significantly fewer samples",
                     "tp_grpo", "grpo", **_TO_TARGET),
          spec.Claim("higher final accuracy", "higher accuracy", "tp_grpo",
                     "grpo"),
          spec.Claim("thought-level credit helps",
                     "rewards per thought, not per step, reduce over-dense "
                     "rewards", "tp_grpo", "tp_grpo_steps", **_TO_TARGET),
          spec.Claim("capability-adaptive scaling helps",
                     "reward size follows the model's ability on the "
                     "problem", "tp_grpo", "tp_grpo_fixed", **_TO_TARGET),
      ),
      readings=(
          spec.Reading("final accuracy", "eval/accuracy",
                       reduce="last_eval"),
          spec.Reading("final wrong steps", "task/wrong_steps"),
      ),
      plot_metrics=("task/wrong_steps", "eval/accuracy"),
  )


def get_config(arg: str = "tp_grpo,0,default"):
  return spec.build_config(get_ablation(), arg)
