"""The task table: every task name the loop accepts, filled explicitly.

`register(name, cls)` adds a task class under a name; `task_class(name)`
finds it again. A name may also be an import path "package.module:Class",
which needs no registration: `--config.task.name=my_tasks.reverse:Reverse`
trains a task defined outside this repository (its folder must be on
`sys.path`, e.g. the working directory of `python -m experiments.train`).

The built-in tasks are registered by import path, so that this module
imports none of them until one is asked for (they import `base`, which
imports this module).
"""

import importlib
import re

import cajax

__all__ = [
    "HOW_TO_ADD", "TASKS", "register", "task_class", "task_names",
]

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

HOW_TO_ADD = (
    "To add a task, pass its import path as the name "
    "(--config.task.name=my_package.my_module:MyTask) or call "
    "experiments.tasks.register('my_task', MyTask) from code that runs "
    "before the loop builds the task; docs/tasks.md shows a complete one.")

# Name -> the task class, or its "module:Class" import path (imported when
# the task is built).
TASKS: cajax.Registry = cajax.Registry("task", how_to_add=HOW_TO_ADD)


def register(name: str, cls: type | str) -> None:
  """Adds a task class under `name`.

  Args:
    name: the value of `task.name` that selects the task; not an import
      path (no ":").
    cls: the task class (called with the task's config mapping), or its
      import path "package.module:Class" (imported on first use).

  Raises:
    ValueError: an empty name, a name with ":", a name already registered
      to another class, or a `cls` that is neither a class nor an import
      path.
  """
  if not isinstance(name, str) or not name or ":" in name:
    raise ValueError(f"name must be a non-empty string without ':' (that "
                     f"form is an import path), got {name!r}.")
  if isinstance(cls, str):
    if not _IMPORT_PATH.match(cls):
      raise ValueError(f"cls must be a class or an import path like "
                       f"'package.module:Class', got {cls!r}.")
  elif not isinstance(cls, type):
    raise ValueError(f"cls must be a class or an import path, got "
                     f"{type(cls).__name__} {cls!r}.")
  if name in TASKS:
    if _path(TASKS[name]) == _path(cls):
      return  # registering the same class again changes nothing
    raise ValueError(f"task name {name!r} is already registered to "
                     f"{_path(TASKS[name])}; choose another name.")
  TASKS.add(name, cls)


def task_names() -> tuple[str, ...]:
  """Every registered task name, sorted."""
  return tuple(sorted(TASKS.names()))


def task_class(name: str) -> type:
  """The task class of a registered name or of an import path.

  Raises:
    ValueError: a name that is neither registered nor an import path, or an
      import path whose module or class cannot be found (the message says
      how to add a task).
  """
  if isinstance(name, str) and ":" in name:
    return _import(name)
  cls = TASKS.lookup(name, "task.name")
  return _import(cls) if isinstance(cls, str) else cls


def _import(path: str) -> type:
  if not _IMPORT_PATH.match(path):
    raise ValueError(f"task import path must look like "
                     f"'package.module:Class', got {path!r}. {HOW_TO_ADD}")
  module_name, class_name = path.split(":")
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    raise ValueError(f"task import path {path!r}: cannot import module "
                     f"{module_name!r} ({e}); its folder must be on sys.path "
                     f"(run from the folder that holds it, or set "
                     f"PYTHONPATH). {HOW_TO_ADD}") from e
  cls = getattr(module, class_name, None)
  if not isinstance(cls, type):
    raise ValueError(f"task import path {path!r}: module {module_name!r} has "
                     f"no class {class_name!r}. {HOW_TO_ADD}")
  return cls


def _path(cls: type | str) -> str:
  """The import path of a class (or the path itself)."""
  if isinstance(cls, str):
    return cls
  return f"{cls.__module__}:{cls.__qualname__}"


register("chain_arith", "experiments.tasks.chain_arith:ChainArithTask")
register("calculator", "experiments.tasks.calculator:CalculatorTask")
register("jsonl_math", "experiments.tasks.jsonl_math:JsonlMathTask")
