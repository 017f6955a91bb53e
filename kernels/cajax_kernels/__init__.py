"""Fused per-token log-prob / entropy / softmax-statistics kernels (JAX).

Imports only jax (and numpy); copy the folder into any JAX project.
"""

from .api import BlockSizes
from .api import linear_token_logprobs
from .api import linear_token_stats
from .api import token_logprobs
from .api import token_stats
from .parallel import data_parallel_linear_token_logprobs
from .parallel import vocab_parallel_linear_token_logprobs
