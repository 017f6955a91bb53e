"""docs/tasks.md: the "write your own task" example runs as printed, and the
settings the page quotes match the code."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from experiments.configs.ablations import pure
from experiments.configs.ablations import tool as tool_ablation
from experiments.configs.ablations import ucas
from experiments.tasks import base
from experiments.tasks import calculator

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "tasks.md").read_text()


def _example_files() -> dict[str, str]:
  """The page's python blocks whose first line is "# <file>.py"."""
  blocks = re.findall(r"```python\n# (\w+\.py)\n(.*?)```", DOC, re.S)
  return {name: body for name, body in blocks}


@pytest.fixture(name="example_dir")
def fixture_example_dir(tmp_path, monkeypatch):
  files = _example_files()
  assert set(files) == {"reverse_digits.py", "reverse_config.py"}
  for name, body in files.items():
    (tmp_path / name).write_text(body)
  monkeypatch.syspath_prepend(str(tmp_path))
  return tmp_path


def test_example_task_is_short_and_scores_its_demonstrations(example_dir):
  assert len(_example_files()["reverse_digits.py"].splitlines()) <= 90
  task = base.make_task({"name": "reverse_digits:ReverseDigits"})
  rng = np.random.default_rng(0)
  for problem in task.sample_problems(rng, 50):
    assert len(problem.prompt_ids) <= task.max_prompt_len
    demo = np.array(task.demonstration(problem, rng))
    assert len(demo) <= task.max_response_len
    score = task.score(problem, demo)
    assert score.outcome == 1.0
    assert np.all(score.step_labels == base.CORRECT)
    assert len(score.step_labels) == len(problem.answer)
    assert task.retry_prefix(problem, demo, score) is None
    # Each step is a digit and its separator; EOS joins the last step.
    want = np.repeat(np.arange(len(problem.answer)), 2).tolist()
    assert score.step_ids.tolist() == want + [want[-1]]
  problem = task.sample_problems(rng, 1)[0]
  wrong = "".join(str((int(d) + 1) % 10) + ";" for d in problem.answer)
  ids = task.tokenizer.encode(wrong) + [task.tokenizer.eos_id]
  score = task.score(problem, np.array(ids))
  assert score.outcome == 0.0 and np.all(score.step_rewards == -1)
  assert task.retry_prefix(problem, ids, score) == []
  with pytest.raises(ValueError, match="warm_start.filler_rate"):
    task.demonstration(problem, rng, filler_rate=0.1)
  del example_dir


def test_example_trains_through_experiments_train(example_dir):
  workdir = example_dir / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
      [str(example_dir), str(ROOT), str(ROOT / "kernels")]))
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       f"--config={example_dir / 'reverse_config.py'}",
       "--config.task.name=reverse_digits:ReverseDigits",
       f"--workdir={workdir}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in
             (workdir / "train_metrics.jsonl").read_text().splitlines()]
  assert len(records) == 3  # the smoke config's RL steps
  assert "task/wrong_digits" in records[-1]
  assert (workdir / "warm_start" / "warm_start_metrics.jsonl").exists()
  evals = (workdir / "eval_metrics.jsonl").read_text().splitlines()
  assert json.loads(evals[0])["step"] == 0


def test_quoted_settings_match_the_code():
  # The tool-call limit: one setting, quoted once.
  assert calculator.CalculatorConfig().max_tool_calls is None
  assert "(default `None`: two per operation, 2 × `max_ops`)" in DOC
  for max_ops in (2, 6):
    task = base.make_task({"name": "calculator", "max_ops": max_ops})
    assert task.max_tool_calls == 2 * max_ops
  tool = base.make_task(tool_ablation.get_config("grpo,0,default").task)
  assert (f"up to {tool.max_tool_calls} calculator calls"
          in (ROOT / "docs" / "ablations.md").read_text())
  # The PURE and UCAS ablations' budgets.
  config = pure.get_config("sum_form,0,default")
  assert config.task.max_response_len == config.sampling.max_new_tokens
  assert f"`sampling.max_new_tokens` to {config.task.max_response_len}" in DOC
  config = ucas.get_config("ucas,0,default")
  assert config.task.free_length
  assert f"with a {config.task.max_response_len}-token budget" in DOC
  # The length variant's demonstration rate and the soft-scale default.
  assert calculator.CalculatorConfig().check_rate == 0.5
  assert "(default 0.5)" in DOC
  assert calculator.CalculatorConfig().soft_scale == "matched"
  assert 'The default `soft_scale="matched"`' in DOC
