"""The kernels install as `cajax_kernels` only, and never shadow `kernels`.

A PyPI distribution named `kernels` exists (transformers depends on it).
The repository's `kernels/` folder is a distribution root with no
`__init__.py`, so neither the installed package nor the repository root on
`sys.path` (as `python -m ...` and pytest put it there) can answer
`import kernels`.
"""

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys

_REPO = pathlib.Path(__file__).resolve().parents[1]

_PROBE = """
import importlib.util, json
def origin(name):
  # A namespace package (a folder without __init__.py) has no origin and
  # runs no code; only a module or regular package can shadow another.
  spec = importlib.util.find_spec(name)
  return None if spec is None else spec.origin
print(json.dumps({"cajax_kernels": origin("cajax_kernels"), "kernels": origin("kernels")}))
"""


def _probe(cwd: pathlib.Path, *args: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  out = subprocess.run([sys.executable, *args, "-c", _PROBE], cwd=cwd,
                       env=env, check=True, capture_output=True,
                       text=True).stdout
  return json.loads(out)


def _pypi_kernels_installed() -> bool:
  try:
    importlib.metadata.distribution("kernels")
  except importlib.metadata.PackageNotFoundError:
    return False
  return True


def test_no_kernels_init_at_the_distribution_root():
  assert not (_REPO / "kernels" / "__init__.py").exists()
  assert (_REPO / "kernels" / "pyproject.toml").exists()
  assert (_REPO / "kernels" / "cajax_kernels" / "__init__.py").exists()


def test_kernels_installed_as_cajax_kernels_only():
  # Outside the repository root, so only what is installed can be found.
  found = _probe(pathlib.Path("/"))
  assert found["cajax_kernels"] is not None
  assert found["cajax_kernels"].endswith(
      os.path.join("cajax_kernels", "__init__.py"))
  assert found["kernels"] is None or str(_REPO) not in found["kernels"]


def test_repository_root_does_not_shadow_kernels():
  # What `python -m pytest` and `python -m experiments.<main>` see: the
  # repository root first on sys.path.
  found = _probe(_REPO)
  assert found["kernels"] is None or str(_REPO) not in found["kernels"], (
      f"`import kernels` resolves into the repository: {found['kernels']}")
  if _pypi_kernels_installed():
    files = importlib.metadata.distribution("kernels").locate_file("kernels")
    assert str(files) in found["kernels"]


def test_cajax_kernels_entry_points():
  import cajax_kernels  # pylint: disable=import-outside-toplevel
  for name in ("token_logprobs", "linear_token_logprobs",
               "linear_token_stats", "token_stats", "BlockSizes"):
    assert hasattr(cajax_kernels, name), name
