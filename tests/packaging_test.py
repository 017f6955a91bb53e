"""The installed distribution exposes the kernels as `cajax_kernels` only."""

import os
import pathlib
import subprocess
import sys

_REPO = pathlib.Path(__file__).resolve().parents[1]

_PROBE = """
import importlib.util, json
def origin(name):
  spec = importlib.util.find_spec(name)
  return None if spec is None else (spec.origin or str(spec.submodule_search_locations))
print(json.dumps({"cajax_kernels": origin("cajax_kernels"), "kernels": origin("kernels")}))
"""


def _probe():
  # Outside the repository root, so only what is installed can be found.
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  out = subprocess.run([sys.executable, "-c", _PROBE], cwd="/", env=env,
                       check=True, capture_output=True, text=True).stdout
  import json  # pylint: disable=import-outside-toplevel
  return json.loads(out)


def test_kernels_installed_as_cajax_kernels_only():
  found = _probe()
  assert found["cajax_kernels"] is not None
  assert str(_REPO / "kernels") in found["cajax_kernels"]
  # Our distribution must not provide a top-level `kernels` (a PyPI
  # distribution owns that name); another install of it may exist.
  assert found["kernels"] is None or str(_REPO) not in found["kernels"]


def test_cajax_kernels_entry_points():
  import cajax_kernels  # pylint: disable=import-outside-toplevel
  for name in ("token_logprobs", "linear_token_logprobs",
               "linear_token_stats", "token_stats", "BlockSizes"):
    assert hasattr(cajax_kernels, name), name
