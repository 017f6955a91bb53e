"""pytest configuration: strict numerics and a fixed hypothesis profile."""

import importlib.util
import os
import pathlib
import sys

# Compiled programs are reused across tests and test subprocesses (the
# training-loop tests build the same jitted steps many times).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.expanduser("~"), ".cache", "cajax", "jax-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import hypothesis  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top

# Test the kernels/ folder of this checkout under its installed name, even when
# the editable install points at another checkout (a git worktree).
_KERNELS = (pathlib.Path(__file__).resolve().parents[1] / "kernels"
            / "cajax_kernels")
_spec = importlib.util.spec_from_file_location(
    "cajax_kernels", _KERNELS / "__init__.py",
    submodule_search_locations=[str(_KERNELS)])
sys.modules["cajax_kernels"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sys.modules["cajax_kernels"])

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", False)

hypothesis.settings.register_profile(
    "ci", max_examples=int(os.environ.get("CAJAX_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("ci")
