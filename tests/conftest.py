"""pytest configuration: strict numerics and a fixed hypothesis profile."""

import os

import hypothesis
import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", False)

hypothesis.settings.register_profile(
    "ci", max_examples=int(os.environ.get("CAJAX_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("ci")
