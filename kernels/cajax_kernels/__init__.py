"""Fused per-token log-prob / entropy / softmax-statistics kernels (JAX).

Imports only jax and the standard library: `pip install ./kernels` installs
it on its own (see kernels/README.md), or copy the folder into a project.
"""

from .api import BlockSizes
from .api import linear_token_logprobs
from .api import linear_token_stats
from .api import token_logprobs
from .api import token_stats
from .parallel import data_parallel_linear_token_logprobs
from .parallel import vocab_parallel_linear_token_logprobs
