"""`cajax_kernels` stands alone: it imports only jax and the standard library,
and `pip install ./kernels` gives a package that runs without cajax (its
README example included).
"""

import ast
import pathlib
import re
import shutil
import site
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kernels" / "cajax_kernels"
ALLOWED = {"jax"} | set(sys.stdlib_module_names)


def _imports(path: pathlib.Path):
  """(line, top-level module) of every absolute import in a file."""
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name.split(".")[0]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      yield node.lineno, node.module.split(".")[0]


def test_package_imports_only_jax_and_the_standard_library():
  files = sorted(PACKAGE.glob("*.py"))
  assert len(files) >= 6
  bad = [f"{f.name}:{line}: {module}" for f in files
         for line, module in _imports(f) if module not in ALLOWED]
  assert not bad, f"imports outside jax and the standard library: {bad}"


_SCRIPT = textwrap.dedent("""
    import sys
    sys.path[:0] = [{target!r}, {site_packages!r}]
    import jax.numpy as jnp
    import cajax_kernels as kernels
    assert kernels.__file__.startswith({target!r}), kernels.__file__
    lp, ent = kernels.linear_token_logprobs(
        jnp.ones((3, 4)), jnp.ones((4, 5)), jnp.array([0, 4, -1]))
    assert lp.shape == ent.shape == (3,)
    assert abs(float(ent[0]) - float(jnp.log(5.0))) < 1e-5
    exec({example!r})  # kernels/README.md's example.
    assert d_weight.shape == (64, 1000) and set(stats) == {{"entropy",
                                                          "self_certainty"}}
    for name in ("cajax", "experiments", "flax", "optax"):
      assert name not in sys.modules, name + " was imported"
    for name in ("cajax", "experiments"):  # Not even on the path.
      try:
        __import__(name)
      except ImportError:
        pass
      else:
        raise AssertionError(name + " is importable")
    print("standalone ok")
""")


def _readme_example() -> str:
  text = (ROOT / "kernels" / "README.md").read_text()
  return re.search(r"## Example\n\n```python\n(.*?)```", text, re.S).group(1)


def test_pip_install_of_kernels_runs_without_cajax(tmp_path):
  # pip builds a local folder in place (build/, *.egg-info): build a copy.
  source = tmp_path / "kernels"
  shutil.copytree(ROOT / "kernels", source,
                  ignore=shutil.ignore_patterns("__pycache__", "build",
                                                "*.egg-info"))
  target = tmp_path / "target"
  subprocess.run(
      [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
       "--no-build-isolation", "--no-cache-dir", "--target", str(target),
       str(source)],
      check=True, capture_output=True, text=True, timeout=120, cwd=tmp_path)
  metadata = next(target.glob("cajax_kernels-*.dist-info")) / "METADATA"
  requires = [line for line in metadata.read_text().splitlines()
              if line.startswith("Requires-Dist:")]
  assert len(requires) == 1 and requires[0].split()[1].startswith("jax")
  site_packages = [p for p in site.getsitepackages()
                   if pathlib.Path(p, "jax").is_dir()][0]
  # -I -S: no site hooks (editable installs of cajax), no working directory
  # or PYTHONPATH; only the standard library, the target and jax's folder.
  result = subprocess.run(
      [sys.executable, "-I", "-S", "-c",
       _SCRIPT.format(target=str(target), site_packages=site_packages,
                      example=_readme_example())],
      capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "standalone ok" in result.stdout
