"""Tests for the task table: register, import paths, the how-to error."""

import textwrap

import pytest

import cajax

import experiments.tasks
from experiments.tasks import base
from experiments.tasks import chain_arith
from experiments.tasks import registry

# A task in a module outside the repository: a chain task renamed.
_MODULE = textwrap.dedent("""
    from experiments.tasks import chain_arith

    class OutsideTask(chain_arith.ChainArithTask):
      name = "outside"

    class NotATask:
      def __init__(self, config):
        self.name = "broken"

    NOT_A_CLASS = 3
""")


@pytest.fixture(name="outside_module")
def fixture_outside_module(tmp_path, monkeypatch):
  """A module `outside_tasks_<n>` in tmp_path, importable, and a private
  copy of the task table so that registrations do not leak."""
  name = f"outside_tasks_{abs(hash(str(tmp_path))) % 10**8}"
  (tmp_path / f"{name}.py").write_text(_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  tasks = cajax.Registry("task", {n: registry.TASKS[n] for n in registry.TASKS},
                         how_to_add=registry.HOW_TO_ADD)
  monkeypatch.setattr(registry, "TASKS", tasks)
  return name


def test_import_path_builds_a_task_from_outside_the_repository(
    outside_module):
  task = base.make_task({"name": f"{outside_module}:OutsideTask",
                         "max_ops": 3})
  assert type(task).__module__ == outside_module
  assert task.name == "outside" and task.config.max_ops == 3
  assert task.max_tool_calls == 0
  assert f"{outside_module}:OutsideTask" not in registry.task_names()


def test_register_adds_a_name(outside_module):
  module = __import__(outside_module)
  experiments.tasks.register("outside", module.OutsideTask)
  assert "outside" in experiments.tasks.task_names()
  task = experiments.tasks.make_task({"name": "outside", "min_ops": 1})
  assert isinstance(task, module.OutsideTask)
  # Registering the same class again is harmless; another class is not.
  experiments.tasks.register("outside", module.OutsideTask)
  with pytest.raises(ValueError, match="already registered"):
    experiments.tasks.register("outside", chain_arith.ChainArithTask)
  # By import path, resolved on first use.
  experiments.tasks.register("outside2", f"{outside_module}:OutsideTask")
  assert isinstance(base.make_task({"name": "outside2"}), module.OutsideTask)


@pytest.mark.parametrize("name, cls, match", [
    ("", chain_arith.ChainArithTask, "non-empty"),
    ("a:b", chain_arith.ChainArithTask, "without ':'"),
    ("x", "no_colon", "import path"),
    ("x", 3, "class or an import path"),
    ("chain_arith", chain_arith.ChainArithTask.__mro__[1], "already"),
])
def test_register_rejects_bad_input(outside_module, name, cls, match):
  del outside_module
  with pytest.raises(ValueError, match=match):
    registry.register(name, cls)


@pytest.mark.parametrize("name, match", [
    ("sudoku", "To add a task"),
    (None, "To add a task"),
    ("no_such_module_xyz:Task", "cannot import module"),
    ("{mod}:Missing", "no class 'Missing'"),
    ("{mod}:NOT_A_CLASS", "no class 'NOT_A_CLASS'"),
    ("{mod}:", "must look like"),
])
def test_unknown_names_say_how_to_add_a_task(outside_module, name, match):
  if name is not None:
    name = name.format(mod=outside_module)
  with pytest.raises(ValueError, match=match) as error:
    base.make_task({"name": name})
  assert "docs/tasks.md" in str(error.value)


def test_missing_protocol_members_are_named(outside_module):
  with pytest.raises(ValueError, match="max_tool_calls") as error:
    base.make_task({"name": f"{outside_module}:NotATask"})
  assert "tokenizer" in str(error.value)
  assert "name'" not in str(error.value).split("members")[1]
