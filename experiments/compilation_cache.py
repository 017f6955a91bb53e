"""JAX's persistent compilation cache, set up the same way by every main.

Compiled programs are reused by later runs (resumes, ablation arms, repeated
benchmarks). The folder is `$JAX_COMPILATION_CACHE_DIR`, else
`~/.cache/cajax/jax`.
"""

import os

import jax

__all__ = ["enable"]


def enable(min_compile_time_secs: float = 1.0) -> str:
  """Turns the cache on for programs that take longer than
  `min_compile_time_secs` to compile; returns its folder."""
  directory = os.environ.get("JAX_COMPILATION_CACHE_DIR",
                             os.path.expanduser("~/.cache/cajax/jax"))
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    min_compile_time_secs)
  return directory
