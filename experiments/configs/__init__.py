"""The loop configs by name (ablations name their base config here)."""

import cajax

from experiments.configs import chain_arith
from experiments.configs import qwen_math
from experiments.configs import smoke

__all__ = ["CONFIGS", "chain_arith", "qwen_math", "smoke"]

CONFIGS = cajax.Registry(
    "loop config",
    {"chain_arith": chain_arith, "qwen_math": qwen_math, "smoke": smoke},
    how_to_add="Add a get_config() module to experiments/configs/ and list "
               "it in its __init__.py.")
