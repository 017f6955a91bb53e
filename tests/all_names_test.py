"""Every public module of cajax and experiments says what it exports:
`__all__` names exactly the public functions, classes and constants it
defines (a package's `__init__` names what it imports)."""

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules():
  for path in sorted([*ROOT.glob("cajax/**/*.py"),
                      *ROOT.glob("experiments/**/*.py")]):
    relative = path.relative_to(ROOT).with_suffix("")
    if any(part.startswith("_") and part != "__init__"
           for part in relative.parts):
      continue  # private modules
    yield path, ".".join(relative.parts).removesuffix(".__init__")


def _defined(path: pathlib.Path) -> set[str]:
  tree = ast.parse(path.read_text(encoding="utf-8"))
  names = set()
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, ast.Assign):
      names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target,
                                                        ast.Name):
      names.add(node.target.id)
    elif isinstance(node, ast.ImportFrom) and path.name == "__init__.py":
      names.update(a.asname or a.name for a in node.names)
  return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("path,name", list(_modules()),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_all_names_exactly_the_public_definitions(path, name):
  defined = _defined(path)
  if path.name == "__init__.py" and not defined:
    return  # a namespace-only package
  module = importlib.import_module(name)
  assert hasattr(module, "__all__"), f"{name} has no __all__"
  assert len(module.__all__) == len(set(module.__all__)), name
  assert set(module.__all__) == defined, (
      f"{name}: missing {sorted(defined - set(module.__all__))}, extra "
      f"{sorted(set(module.__all__) - defined)}")


def test_public_cajax_arguments_are_annotated():
  """Every argument of a public cajax function has a type (array arguments
  `jax.typing.ArrayLike`)."""
  missing = []
  for path, _ in _modules():
    if path.parts[-2] not in ("cajax", "losses"):
      continue
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    for cls in tree.body:
      if isinstance(cls, ast.ClassDef) and not cls.name.startswith("_"):
        functions += [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    for function in functions:
      if function.name.startswith("_"):
        continue
      args = function.args
      for arg in args.posonlyargs + args.args + args.kwonlyargs:
        if arg.annotation is None and arg.arg not in ("self", "cls"):
          missing.append(f"{path.name}:{function.name}({arg.arg})")
  assert not missing, missing
