"""bench_peers: the shared work, the cajax worker's task, and the table."""

import json

import numpy as np
import pytest

from experiments import bench_peers
from experiments.peers import run_cajax
from experiments.peers import work as work_lib


def test_the_toy_model_has_the_issues_parameter_count():
  assert run_cajax.model_config(work_lib.Work()).num_params == 100_160


def test_work_round_trips_and_rejects_bad_values():
  work = work_lib.Work(num_groups=3, checkpoint="/x")
  assert work_lib.Work.from_json(work.to_json()) == work
  with pytest.raises(ValueError, match="unknown keys"):
    work_lib.Work.from_json(json.dumps({"groups": 2}))
  with pytest.raises(ValueError, match="Work.model"):
    work_lib.Work.from_json(json.dumps({"model": "gpt"}))
  with pytest.raises(ValueError, match="group_size >= 2"):
    work_lib.Work.from_json(json.dumps({"group_size": 1}))


def test_prompts_and_rewards_are_the_same_for_every_system():
  work = work_lib.Work(num_groups=4, group_size=2)
  vocab = work_lib.task().tokenizer
  texts = work_lib.prompt_texts(work, 3)
  for text, problem in zip(texts, work_lib.problems(work, 3)):
    assert [vocab.bos_id] + vocab.encode(text) == problem.prompt_ids
  np.testing.assert_array_equal(work_lib.rewards(work, 3, 8),
                                work_lib.rewards(work, 3, 8))
  assert set(work_lib.rewards(work, 3, 64).tolist()) == {0.0, 1.0}


def test_cajax_workers_task_gives_the_steps_problems_and_rewards():
  work = work_lib.Work(num_groups=2, group_size=3)
  task = run_cajax.WorkTask(work_lib.task(), work)
  for step in range(2):
    problems = task.sample_problems(None, 2)
    assert [p.prompt_ids for p in problems] == [
        p.prompt_ids for p in work_lib.problems(work, step)]
    want = work_lib.rewards(work, step, 6).tolist()
    for _ in range(2):  # Scoring the batch again restarts at row 0.
      got = [task.score(None, np.array([5, 6])).outcome for _ in range(6)]
      assert got == want
  assert task.max_prompt_len == work_lib.task().max_prompt_len


def _record(system, groups, steps, first=10.0):
  return dict(system=system, version="1", work=dict(num_groups=groups,
                                                     group_size=8),
              first_step_s=first, peak_rss_mb=100.0, load_1min=2.0,
              steps=[dict(step_s=s, sample_s=s / 4, tokens=480)
                     for s in steps])


def test_summary_takes_medians_and_the_ratio_to_the_faster_peer():
  records = [_record("trl", 2, [0.9, 1.0]), _record("cajax", 2, [0.2, 0.6]),
             _record("tunix", 2, [0.8, 0.8]),
             _record("cajax", 2, [0.4], first=20.0)]
  rows = bench_peers.summarize(records)
  assert [r["system"] for r in rows] == ["cajax", "tunix", "trl"]
  cajax = rows[0]
  assert cajax["step_s"] == pytest.approx(0.4)
  assert cajax["first_step_s"] == pytest.approx(15.0)
  assert cajax["vs_faster_peer"] == pytest.approx(0.4 / 0.8)
  assert cajax["tokens_per_s"] == pytest.approx(480 / 0.1)
  text = bench_peers.table(rows)
  assert "| 2x8 (16) | cajax 1 | 0.400 | 0.50x |" in text
  assert len(text.splitlines()) == 2 + 3


def test_outputs_are_written_where_the_flags_say(tmp_path):
  records = [_record("cajax", 2, [0.4]), _record("tunix", 2, [0.8])]
  rows = bench_peers.summarize(records)
  table_path, json_path = tmp_path / "t.md", tmp_path / "r.json"
  text = bench_peers.write_outputs("header", rows, records,
                                   output=str(table_path),
                                   json_output=str(json_path))
  assert table_path.read_text(encoding="utf-8") == text
  assert text.startswith("header\n\n| rows |")
  saved = json.loads(json_path.read_text(encoding="utf-8"))
  assert saved["rows"] == json.loads(json.dumps(rows))
  assert saved["header"] == "header"
  assert bench_peers.write_outputs("h", rows, records, output=None,
                                   json_output=None).startswith("h\n\n")
