"""generate's tool-call limit is the task's `max_tool_calls`."""

import jax
import numpy as np
import pytest

from experiments.models import sampler as sampler_lib
from experiments.rl import rollouts
from experiments.tasks import calculator
from experiments.tasks import chain_arith


def _fake_sampler(text_tokens):
  """A sampler that writes `text_tokens` (ending in a stop token) each
  turn, on every row."""

  def sample(decoder, prompt_tokens, prompt_valid, config, rng, pad_id):
    del decoder, prompt_valid, rng
    rows, budget = prompt_tokens.shape[0], config.max_new_tokens
    tokens = np.full((rows, budget), pad_id, np.int32)
    tokens[:, :len(text_tokens)] = text_tokens
    mask = np.zeros((rows, budget), bool)
    mask[:, :len(text_tokens)] = True
    return sampler_lib.SampleOutput(
        tokens=tokens, logprobs=np.where(mask, -0.5, 0.0).astype(np.float32),
        mask=mask, stopped=np.ones(rows, bool),
        stop_token=np.full(rows, text_tokens[-1], np.int32))

  return sample


# 10 is above the 8 observations the sampler once allowed on its own.
@pytest.mark.parametrize("max_tool_calls, want",
                         [(3, 3), (None, 4), (10, 10)])
def test_generate_stops_after_the_tasks_tool_calls(monkeypatch,
                                                   max_tool_calls, want):
  task = calculator.CalculatorTask(dict(min_ops=2, max_ops=2,
                                        max_tool_calls=max_tool_calls,
                                        max_response_len=200))
  assert task.max_tool_calls == want
  call = task.tokenizer.encode("[1+0]")
  monkeypatch.setattr(rollouts.sampler_lib, "sample", _fake_sampler(call))
  problems = task.sample_problems(np.random.default_rng(0), 2)
  out = rollouts.generate(
      task, None, problems,
      sampling=sampler_lib.SamplingConfig(max_new_tokens=200),
      key=jax.random.key(0))
  for row in range(2):
    text = task.tokenizer.decode(out.response_ids(row))
    # `want` calls answered, one more made and left without an answer.
    assert text == "[1+0]=1" * want + "[1+0]"
    observed = out.observation[row, :len(out.response_ids(row))]
    assert observed.sum() == 2 * want
  assert not out.finished.any()


def test_generate_appends_nothing_for_a_task_without_tools(monkeypatch):
  task = chain_arith.ChainArithTask({})
  assert task.max_tool_calls == 0
  monkeypatch.setattr(rollouts.sampler_lib, "sample", _fake_sampler(
      task.tokenizer.encode(">3") + [task.tokenizer.eos_id]))
  problems = task.sample_problems(np.random.default_rng(0), 3)
  out = rollouts.generate(
      task, None, problems,
      sampling=sampler_lib.SamplingConfig(max_new_tokens=8),
      key=jax.random.key(0))
  assert out.finished.all() and not out.observation.any()
