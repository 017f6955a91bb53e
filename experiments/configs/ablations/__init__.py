"""The ablation configs by name (`python -m experiments.ablate --ablation=`).

Each module defines `get_ablation()` and `get_config(arg)`; see
experiments/ablation/spec.py.
"""

import cajax

from experiments.configs.ablations import pure
from experiments.configs.ablations import r3l
from experiments.configs.ablations import tool
from experiments.configs.ablations import tp_grpo
from experiments.configs.ablations import ucas

__all__ = ["ABLATIONS", "pure", "r3l", "tool", "tp_grpo", "ucas"]

ABLATIONS = cajax.Registry(
    "ablation",
    {"pure": pure, "tp_grpo": tp_grpo, "ucas": ucas, "tool": tool, "r3l": r3l},
    how_to_add="Add a module to experiments/configs/ablations/ and list it "
               "in its __init__.py.")
