"""Host-side NumPy tasks for RL of language-model policies.

`make_task(config)` builds a task by name; `register(name, cls)` adds a
task class to the names it accepts (an import path "package.module:Class"
works as a name without registering). `base.Task` is the protocol the
training loop uses, and `batching.scores_to_arrays` pads task scores into
the arrays of `cajax.Rollouts`. docs/tasks.md shows how to write a task.
"""

from experiments.tasks.base import make_task
from experiments.tasks.registry import register
from experiments.tasks.registry import task_names

__all__ = ["make_task", "register", "task_names"]
