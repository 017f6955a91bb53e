"""Fused per-token log-prob / entropy / softmax-statistics kernels (JAX).

Imports only jax (and numpy); copy the folder into any JAX project.
"""

from kernels.api import BlockSizes
from kernels.api import linear_token_logprobs
from kernels.api import linear_token_stats
from kernels.api import token_logprobs
from kernels.api import token_stats
from kernels.parallel import data_parallel_linear_token_logprobs
from kernels.parallel import vocab_parallel_linear_token_logprobs
