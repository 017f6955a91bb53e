"""Calculator tool use: the chain-arithmetic problems, solved by tool calls.

Compact layout (m = 10, k = 3; `^` is BOS, `$` EOS, `|` marks turn
boundaries and is not a token; `=...` are observation tokens the
environment inserts):

  prompt     ^3+4*2-1?
  response   [3+4] | =7 | [7*2] | =4 | [4-1] | =3 | >3$
  mask       11111   00   11111   00   11111   00   111
  step_ids   00000   --   11111   --   22222   --   333    (-- is −1)

The policy writes a call `[x op y]`; sampling stops at "]" (a stop token),
and `observation` returns the tokens "=z" with z = (x op y) mod m (or "=!"
for a call it cannot parse), which the loop appends with observation_mask
True (loss mask False, skipped by returns). After the last call the policy
writes ">" and the answer, then EOS. "?", "=" and "!" never come from the
policy (banned), so it cannot forge an observation.

With any other tokenizer (`tokenizer`, e.g. a checkpoint's) the task writes
the lines layout of `chain_text`: an instruction as the prompt, a call per
line, `[3+4]`, the result "=7" and a newline from the tool, and a last
line "Answer: 3". A call ends at any token whose text holds "]" (so the
stop tokens are every such token: a tokenizer may merge "]" with its
neighbours, "4]" or "]\n"), and every token whose text holds "=" is
banned, so the policy cannot forge a result whatever its tokenizer merges.
Demonstrations encode each call, result and answer on its own, so the
results are exactly the tokens the tool returns.

Turns are the maximal runs of policy tokens; every turn is one step, so step
k is turn k and `batching.scores_to_arrays`'s `step_token_rewards` puts each
step reward at its turn's last token, where `cajax.agentic.matchtir` reads
turn rewards. Observation tokens are the only ones with step id −1.

Step labels: a call is checked as the step `x op y = z` with z the tool's
result (`arith.StepChecker`: correct next operation, filler identity such as
`[7+0]`, or wrong); the answer turn is CORRECT when the answer follows from
the calls (`arith.check_answer`), else WRONG. A response without an answer
turn has the answer check applied to its last call. Outcome reward: 1.0 for
the right answer ended by EOS, else 0.0 (never NaN).

Process rewards (`prm`): "oracle", "noisy", "hackable" as in `prm.py`, or
"matching": MatchTIR turn rewards (Qu et al., arXiv 2601.10712) from
`cajax.matching.trajectory_turn_rewards`: the calls of the response are
matched against the ground-truth calls of the true chain
(`extra["gt_calls"]`, name "calc", arguments x, op, y) by `assignment`
("greedy", "hungarian" or "sinkhorn"), a call turn earns its call's reward
and the answer turn the F1 of its answer. `extra["turns"]` holds the
predicted trace per turn in the format `cajax.matching` reads, so the loop
can also recompute the rewards. iStar needs only the step layout and the
outcome.
"""

import dataclasses

import numpy as np

from cajax import matching
from experiments.tasks import arith
from experiments.tasks import base
from experiments.tasks import chain_problems
from experiments.tasks import chain_text
from experiments.tasks import prm
from experiments.tasks import step_scores

__all__ = [
    "ASSIGNMENTS", "CalculatorConfig", "CalculatorTask", "SOFT_SCALES",
    "SYMBOLS", "TOOL_NAME", "call_metrics", "tool_call",
]

SYMBOLS = "0123456789+-*[]=!>?"
CALL_OPEN, CALL_CLOSE = "[", "]"
RESULT, ERROR = "=", "!"
TOOL_NAME = "calc"
ASSIGNMENTS = ("greedy", "hungarian", "sinkhorn")
SOFT_SCALES = ("matched", "plan")


@dataclasses.dataclass(frozen=True)
class CalculatorConfig(arith.ChainConfig):
  """`arith.ChainConfig` plus the tool budget and the matching reward.

  Attributes:
    prm: also "matching" (MatchTIR turn rewards).
    max_tool_calls: the one limit on tool calls: calls answered per
      response; after that `observation` returns None, the sampler stops
      asking and the episode ends without an answer. None: two per
      operation (2 × max_ops).
    assignment: "greedy" (the authors' matcher), "hungarian" (the optimal
      one-to-one matching) or "sinkhorn" (soft; prm="matching").
    unmatched_penalty: reward of an unmatched call (prm="matching").
    soft_scale: "matched" (default) or "plan": the scale of the soft call
      rewards (`cajax.matching.call_rewards`; prm="matching").
  """
  max_tool_calls: int | None = None
  assignment: str = "greedy"
  unmatched_penalty: float = 0.0
  soft_scale: str = "matched"

  def __post_init__(self):
    super().__post_init__()
    if self.assignment not in ASSIGNMENTS:
      raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got "
                       f"{self.assignment!r}.")
    if self.soft_scale not in SOFT_SCALES:
      raise ValueError(f"soft_scale must be one of {SOFT_SCALES}, got "
                       f"{self.soft_scale!r}.")
    if self.free_length:
      raise ValueError("free_length is a chain_arith option; in calculator "
                       "a repeated call is a redundant call.")
    base.check_optional_positive_int(self.max_tool_calls, "max_tool_calls")

def tool_call(x: int, op: str, y: int) -> dict:
  """A call in the format of `cajax.matching`."""
  return {"name": TOOL_NAME, "arguments": {"x": x, "op": op, "y": y}}


class CalculatorTask(chain_problems.ChainProblems):
  """The calculator tool-use task (see the module docstring)."""

  name = "calculator"

  def __init__(self, config=None):
    """Builds the task from a mapping of `CalculatorConfig` fields."""
    self.config = base.build_config(CalculatorConfig, config or {},
                                    self.name)
    if self.config.prm != "matching":
      prm.check_kind(self.config.prm)
    self._set_up(SYMBOLS, chain_text.PROMPT_END + RESULT + ERROR, tool=True)
    tok = self.tokenizer
    if self.layout is chain_text.COMPACT:
      self.banned_tokens = tok.banned_tokens
    else:
      self.banned_tokens = tuple(sorted(
          set(chain_problems.special_bans(tok))
          | set(self.text.ids_containing(RESULT))))
    # Every token that holds the call's end ends a call ("]" alone in the
    # compact layout), unless it is banned ("]=").
    self._closes = frozenset(self.text.ids_containing(CALL_CLOSE)) - set(
        self.banned_tokens)
    self.stop_tokens = (tok.eos_id,) + tuple(sorted(self._closes))
    self.max_tool_calls = (self.config.max_tool_calls
                           or 2 * self.config.max_ops)

  # -- problems --------------------------------------------------------------

  def gt_calls(self, problem: base.Problem) -> list[dict]:
    """The calls of the true chain, in order."""
    calls, value = [], problem.start
    for op, y in problem.operations:
      calls.append(tool_call(value, op, y))
      value = arith.apply(value, op, y, self.config.modulus)
    return calls

  # -- environment -----------------------------------------------------------

  def _parse_call(self, ids) -> tuple[int, str, int] | None:
    match = chain_text.CALL_PATTERN.match(self.tokenizer.decode(ids))
    if not match:
      return None
    x, op, y = match.groups()
    return int(x), op, int(y)

  def _result(self, ids) -> list[int]:
    call = self._parse_call(ids)
    text = ERROR if call is None else str(
        arith.apply(*call, self.config.modulus))
    return self.tokenizer.encode(RESULT + text + self.layout.result_end)

  def _turns(self, ids) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Replays the environment: policy turns and the observation mask.

    Raises:
      ValueError: the tokens after a call are not the tool's result.
    """
    observed = np.zeros(len(ids), bool)
    turns, start = [], 0
    while start < len(ids):
      stop = start
      while stop < len(ids) and ids[stop] not in self._closes:
        stop += 1
      stop = min(stop + 1, len(ids))  # past the "]" (or at the end)
      turns.append((start, stop))
      start = stop
      if (ids[stop - 1] not in self._closes
          or len(turns) > self.max_tool_calls):
        continue
      result = self._result(ids[turns[-1][0]:stop])
      got = [int(t) for t in ids[stop:stop + len(result)]]
      if got != result[:len(got)]:
        raise ValueError(
            f"response_ids[{stop}:{stop + len(result)}] = {got} must be the "
            f"tool's result {result} after the call at "
            f"[{turns[-1][0]}, {stop}).")
      observed[stop:stop + len(got)] = True
      start = stop + len(got)
    return turns, observed

  def observation(self, problem: base.Problem,
                  response_ids) -> list[int] | None:
    """"=z" after a call (response ends with "]"), "=!" for a malformed
    call; None when the response does not end with a call or the call
    budget `max_tool_calls` is spent (the episode then ends)."""
    del problem
    ids = [int(t) for t in response_ids]
    if not ids or ids[-1] not in self._closes:
      return None
    turns, _ = self._turns(ids)
    if len(turns) > self.max_tool_calls:
      return None
    start, stop = turns[-1]
    return self._result(ids[start:stop])

  def observation_mask(self, problem: base.Problem,
                       response_ids) -> np.ndarray:
    """bool[T_resp], True on the tool results (replays the environment)."""
    del problem
    return self._turns([int(t) for t in response_ids])[1]

  # -- scoring ---------------------------------------------------------------

  def score(self, problem: base.Problem, response_ids,
            observation_mask=None) -> base.Score:
    """Checks every call and the answer; see the module docstring.

    Args:
      problem: the problem.
      response_ids: the response with the observations, up to EOS.
      observation_mask: bool[T_resp] True on observations; None replays
        the environment to find them.

    Returns:
      The score; extra also holds "turns", "gt_calls" and "gold_answer".
    """
    ids = base.check_response(response_ids, self.tokenizer)
    if observation_mask is None:
      observed = self._turns(ids.tolist())[1]
    else:
      observed = np.asarray(observation_mask, bool)
      if observed.shape != ids.shape:
        raise ValueError(f"observation_mask must have shape {ids.shape}, "
                         f"got {observed.shape}.")
    has_eos = bool(ids.size) and ids[-1] == self.tokenizer.eos_id
    runs = _runs(~observed)
    checker = arith.StepChecker(self.config, problem.start,
                                problem.operations)
    labels, reasons, vacuous, turns, texts = [], [], [], [], []
    predicted = []  # (x, op, y) of each call, None when malformed
    answer_text, calls = None, 0
    for start, stop in runs:
      texts.append(self.tokenizer.decode(ids[start:stop]))
      is_call = ids[stop - 1] in self._closes
      if is_call or stop < ids.size:
        call = self._parse_call(ids[start:stop]) if is_call else None
        calls += 1
        step = None if call is None else call + (
            arith.apply(*call, self.config.modulus),)
        label, reason = checker.check(step)
        labels.append(label)
        reasons.append(reason)
        vacuous.append(step is not None and arith.is_identity(*step))
        turns.append({"tool_calls": [] if call is None
                      else [tool_call(*call)], "answer": None})
        predicted.append(call)
      else:  # the final turn: the answer
        text = texts[-1].strip()
        mark = self.layout.answer_mark
        answer_text = (text[len(mark):].strip() if text.startswith(mark)
                       else None)
        reason = arith.check_answer(checker, answer_text, has_eos)
        labels.append(base.WRONG if reason else base.CORRECT)
        reasons.append(reason)
        vacuous.append(False)
        turns.append({"tool_calls": [], "answer": answer_text or ""})
    # The hackable PRM judges calls only: an answer turn scores as filler.
    step_only = [base.FILLER if turn["answer"] is not None else label
                 for turn, label in zip(turns, labels)]
    if turns and turns[-1]["answer"] is None:  # no answer turn
      reason = arith.check_answer(checker, None, has_eos)
      if not reasons[-1]:
        labels[-1], reasons[-1] = base.WRONG, reason
    if not runs:
      runs, labels, reasons, vacuous, texts = [(0, 0)], [base.WRONG], [
          "no_answer"], [False], [""]
      step_only = list(labels)
    token_steps = np.full(ids.size, -1, np.int32)
    for k, (start, stop) in enumerate(runs):
      token_steps[start:stop] = k
    rewards = None
    gt = self.gt_calls(problem)
    if self.config.prm == "matching":
      rewards = np.zeros(len(runs), np.float32)
      if turns:
        rewards[:] = matching.trajectory_turn_rewards(
            turns, gt, problem.answer, assignment=self.config.assignment,
            unmatched_penalty=self.config.unmatched_penalty,
            soft_scale=self.config.soft_scale)
    steps = step_scores.CheckedSteps(
        token_steps=token_steps, prefixes=[start for start, _ in runs],
        texts=texts, labels=labels, reasons=reasons, vacuous=vacuous,
        step_only_labels=step_only)
    return step_scores.make_score(
        self.config, problem, ids, steps,
        outcome=arith.answer_outcome(problem, answer_text, has_eos),
        answer=answer_text, answered=arith.is_number(answer_text),
        has_eos=has_eos, rewards=rewards,
        metrics={"tool_calls": float(calls), **call_metrics(predicted, gt)},
        extra={"turns": turns, "gt_calls": gt,
               "gold_answer": problem.answer})

  # -- demonstrations and retries ---------------------------------------------

  def demonstration(self, problem: base.Problem, rng: np.random.Generator,
                    wrong_rate: float = 0.0,
                    filler_rate: float = 0.0) -> list[int]:
    """A worked response with the tool's results in it.

    Wrong calls use a wrong operand x (the tool computes correctly), see
    `arith.demo_steps`; later calls continue from the tool's result. Use
    `observation_mask` to find the result tokens. Filler calls that would
    overflow `max_response_len` are left out.
    """
    steps = arith.demo_steps(self.config, problem.start, problem.operations,
                             rng, wrong_rate, filler_rate,
                             wrong_kind="operand")
    return self._fit_demo(steps, problem.start)

  def _demo_ids(self, steps, answer: int) -> list[int]:
    # Each call, result and the answer encoded on its own: the results are
    # then exactly the tokens `observation` returns, whatever the tokenizer
    # would merge across them.
    tok, end = self.tokenizer, self.layout.result_end
    ids = []
    for s in steps:
      ids += tok.encode(f"{CALL_OPEN}{s.x}{s.op}{s.y}{CALL_CLOSE}")
      ids += tok.encode(f"{RESULT}{s.z}{end}")
    ids += tok.encode(self.layout.answer_format.format(z=answer))
    return ids + [tok.eos_id]

  def retry_prefix(self, problem: base.Problem, response_ids,
                   score: base.Score) -> list[int] | None:
    """The response (results included) before its first wrong turn."""
    del problem
    return step_scores.retry_prefix(response_ids, score)


def call_metrics(predicted, gt_calls) -> dict[str, float]:
  """Call precision, call recall and redundant calls of one response.

  Predicted calls are matched one-to-one to the ground-truth calls by exact
  equality of (x, op, y), whatever `assignment` the PRM uses, so the metrics
  mean the same in every arm.

  Args:
    predicted: (x, op, y) of each call made, None for a malformed one.
    gt_calls: the true chain's calls (`CalculatorTask.gt_calls`).

  Returns:
    "call_precision": matched / calls made (0 with no call);
    "call_recall": matched / ground-truth calls (0 with none);
    "redundant_calls": well-formed unmatched calls that repeat a matched
    ground-truth call or are identities (x+0, x-0, x*1): calls that change
    nothing. Wrong calls are neither matched nor redundant.
  """
  free = [tuple(c["arguments"][k] for k in ("x", "op", "y"))
          for c in gt_calls]
  truth = set(free)
  matched = redundant = 0
  for call in predicted:
    if call is not None and call in free:
      free.remove(call)
      matched += 1
    elif call is not None and (call in truth or arith.is_identity(
        call[0], call[1], call[2], call[0])):
      redundant += 1
  return {"call_precision": matched / len(predicted) if predicted else 0.0,
          "call_recall": matched / len(gt_calls) if gt_calls else 0.0,
          "redundant_calls": float(redundant)}


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
  """[start, stop) of each maximal run of True."""
  padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
  edges = np.flatnonzero(np.diff(padded))
  return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
