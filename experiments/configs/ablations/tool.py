"""Turn-level credit on calculator tool use: MatchTIR hard and soft
matching (arXiv 2601.10712) and iStar (arXiv 2509.19199) vs GRPO.

MatchTIR reports that per-turn rewards from matching the predicted tool
calls to the true ones beat a trajectory reward, hard (Hungarian)
assignment at least as well as soft (optimal transport); iStar reports
that implicit step rewards raise success. Arms: GRPO on the outcome,
MatchTIR with Hungarian and with Sinkhorn assignment (turn rewards from the
task's matching PRM), and iStar.
"""

from experiments.ablation import spec


_MATCHTIR = {"rl.estimator": "matchtir", "rl.token_rewards": "steps",
             "task.prm": "matching"}
_CALCULATOR = dict(name="calculator", min_ops=2, max_ops=3, ops="+-*",
                   modulus=10, prm="oracle", prm_noise=0.0, prm_seed=0,
                   assignment="greedy", max_response_len=48)
_ACCURACY = dict(metric="accuracy", reduce="final", last_k=2,
                 better="higher")


def get_ablation() -> spec.Ablation:
  return spec.Ablation(
      name="tool",
      description=__doc__.split("\n\n")[1].replace("\n", " "),
      base="chain_arith",
      common={"task": _CALCULATOR},
      arms={
          "grpo": {"rl.estimator": "grpo"},
          "matchtir_hard": {**_MATCHTIR, "task.assignment": "hungarian"},
          "matchtir_soft": {**_MATCHTIR, "task.assignment": "sinkhorn"},
          "istar": {"rl.estimator": "istar"},
      },
      sizes={
          "default": {"rl.num_steps": 60, "rl.prompts_per_step": 8,
                      "eval_every": 15, "eval_problems": 64},
          "smoke": spec.SMOKE,
      },
      claims=[
          dict(_ACCURACY, name="hard matching beats trajectory reward",
               paper="MatchTIR (KM) 36.1 vs GRPO 31.3 (Qwen3-4B)",
               arm="matchtir_hard", baseline="grpo"),
          dict(_ACCURACY, name="hard matching at least soft",
               paper="KM 36.1 vs OT 34.5", arm="matchtir_hard",
               baseline="matchtir_soft"),
          dict(_ACCURACY, name="iStar raises success",
               paper="WebShop 77.4 -> 86.5", arm="istar", baseline="grpo"),
      ],
      plot_metrics=["accuracy", "task/wrong_steps"],
  )


def get_config(arg: str = "istar,0,default"):
  return spec.build_config(get_ablation(), arg)
