"""Turn-level credit on calculator tool use: MatchTIR hard and soft
matching (arXiv 2601.10712) vs GRPO, and iStar (arXiv 2509.19199) vs RLOO.

MatchTIR reports that per-turn rewards from matching the predicted tool
calls to the true ones beat a trajectory reward, hard (Hungarian)
assignment at least as well as soft (optimal transport); iStar reports
that implicit step rewards from a PRM trained online by trajectory DPO
raise the success of its base, RLOO. Arms: GRPO on the outcome, MatchTIR
with Hungarian and with Sinkhorn assignment (turn rewards from the task's
matching PRM), RLOO, and iStar (RLOO plus implicit step rewards). Chains
of 4-6 operations: with 2-3, every arm reached 0.97-1.0 accuracy within 50
steps, a ceiling no credit assignment can beat.
"""

from experiments.ablation import cost
from experiments.ablation import spec

__all__ = ["get_ablation", "get_config"]

_MATCHTIR = {"rl.estimator": "matchtir", "rl.reward_source": "steps",
             "task.prm": "matching"}
_CALCULATOR = dict(name="calculator", min_ops=4, max_ops=6, ops="+-*",
                   modulus=10, prm="oracle", prm_noise=0.0, prm_seed=0,
                   assignment="greedy", max_response_len=72)


# Calibrated (cost.calibrate) from a one-seed run of every arm on 2
# Intel Xeon cores, two processes at a time, on 2026-12-07.
_TIMING = cost.Timing(rl_step=1.0166, evaluation=15.8332, warm_start_step=0.2144,
                      overhead=17.4428, machine="Intel Xeon, 2 cores")


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="tool",
      description=spec.summary(__doc__),
      common={"task": _CALCULATOR, "sampling.max_new_tokens": 72},
      arms={
          "grpo": spec.GRPO,
          "matchtir_hard": {**_MATCHTIR, "task.assignment": "hungarian"},
          "matchtir_soft": {**_MATCHTIR, "task.assignment": "sinkhorn"},
          "rloo": {"rl.estimator": "rloo"},
          "istar": {"rl.estimator": "istar"},
      },
      sizes=spec.sizes(num_steps=50, evaluations=1, timing=_TIMING,
                       **spec.FULL_WARM_START),
      claims=(
          spec.Claim("hard matching beats trajectory reward",
                     "MatchTIR (KM) 36.1 vs GRPO 31.3 (Qwen3-4B)",
                     "matchtir_hard", "grpo"),
          spec.Claim("hard matching at least soft", "KM 36.1 vs OT 34.5",
                     "matchtir_hard", "matchtir_soft",
                     kind="non_inferiority"),
          spec.Claim("iStar raises RLOO's success", "WebShop 77.4 -> 86.5",
                     "istar", "rloo"),
      ),
      readings=(
          # Does the implicit PRM learn which steps are right? (iStar only.)
          spec.Reading("implicit reward vs step label (Spearman)",
                       "rollout/prm_label_correlation"),
          spec.Reading("PRM pair accuracy", "update/prm_pair_accuracy"),
          spec.Reading("final accuracy", "eval/accuracy",
                       reduce="last_eval"),
      ),
      plot_metrics=("task/wrong_steps", "eval/accuracy",
                    "rollout/prm_label_correlation"),
  )


def get_config(arg: str = "istar,0,default"):
  return spec.build_config(get_ablation(), arg)
