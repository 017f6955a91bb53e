"""Host-side tool-call matching rewards for MatchTIR (NumPy; scipy lazily).

A trajectory's predicted tool calls are matched against the ground-truth
calls of its task; each predicted call earns the similarity of its match, a
turn earns the mean over its calls, and the answer turn earns the token F1 of
its answer. `place_turn_rewards` writes those turn rewards at the last token
of each turn of a padded `[B, T]` batch, where `cajax.agentic.matchtir`
reads them.

A tool call is a mapping with a "name" and its parameters under "arguments"
(or "parameters"), e.g. `{"name": "search", "arguments": {"q": "x"}}`.

See "MatchTIR: Fine-Grained Supervision for Tool-Integrated Reasoning via
Bipartite Matching" (Qu et al., arXiv 2601.10712).
"""

import re
import string
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "ToolCall", "answer_f1", "call_rewards", "greedy_assignment",
    "optimal_assignment", "place_turn_rewards", "similarity_matrix",
    "sinkhorn_plan", "tool_similarity", "trajectory_turn_rewards",
]

ToolCall = Mapping[str, Any]

_ASSIGNMENTS = ("greedy", "hungarian", "sinkhorn")
_SOFT_SCALES = ("matched", "plan")
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def _call_parts(call: ToolCall, name: str) -> tuple[Any, dict]:
  if not isinstance(call, Mapping) or "name" not in call:
    raise ValueError(f"{name} must be a mapping with a 'name' key, got "
                     f"{call!r}.")
  params = call.get("arguments", call.get("parameters")) or {}
  if not isinstance(params, Mapping):
    raise ValueError(f"{name} parameters must be a mapping, got {params!r}.")
  return call["name"], dict(params)


def _key_jaccard(gt_keys: Sequence[str], pred_keys: Sequence[str]) -> float:
  """Multiset Jaccard ∩/(|a|+|b|−∩): 1 for identical lists, 0 if one empty."""
  if sorted(gt_keys) == sorted(pred_keys):
    return 1.0
  if not gt_keys or not pred_keys:
    return 0.0
  remaining = list(pred_keys)
  common = 0
  for key in gt_keys:
    if key in remaining:
      remaining.remove(key)
      common += 1
  return common / (len(gt_keys) + len(pred_keys) - common)


def tool_similarity(pred: ToolCall, gt: ToolCall) -> float:
  """Similarity in [0, 1] of a predicted tool call to a ground-truth call.

  sim(p, g) = 1[name_p ≅ name_g] · (1 + J(keys_g, keys_p) + #{k ∈ g: p[k] =
  g[k]}) / (1 + 1[name_p ≅ name_g] · (1 + |params_g|)),

  J the multiset Jaccard of the parameter names and ≅ equality of the tool
  names ignoring case ("weather" matches "Weather"), as in the authors' code;
  parameter names and values are compared exactly. A name mismatch gives 0;
  an identical call gives 1.

  Args:
    pred: predicted call.
    gt: ground-truth call.

  Returns:
    The similarity.

  Raises:
    ValueError: a call is not a mapping with a name and parameter mapping.
  """
  pred_name, pred_params = _call_parts(pred, "pred")
  gt_name, gt_params = _call_parts(gt, "gt")
  if str(pred_name).lower() != str(gt_name).lower():
    return 0.0
  jaccard = _key_jaccard(list(gt_params), list(pred_params))
  equal = sum(1 for key, value in gt_params.items()
              if key in pred_params and pred_params[key] == value)
  return (1.0 + jaccard + equal) / (2.0 + len(gt_params))


def similarity_matrix(preds: Sequence[ToolCall],
                      gts: Sequence[ToolCall]) -> np.ndarray:
  """f64[P, G] matrix of `tool_similarity(preds[p], gts[g])`."""
  sim = np.zeros((len(preds), len(gts)), np.float64)
  for p, pred in enumerate(preds):
    for g, gt in enumerate(gts):
      sim[p, g] = tool_similarity(pred, gt)
  return sim


def _check_matrix(sim) -> np.ndarray:
  sim = np.asarray(sim, np.float64)
  if sim.ndim != 2:
    raise ValueError(f"sim must have rank 2, got shape {sim.shape}.")
  if not np.all(np.isfinite(sim)):
    raise ValueError("sim must be finite.")
  return sim


def greedy_assignment(sim: ArrayLike) -> list[tuple[int, int]]:
  """The repo's "Hungarian" matcher, which is greedy.

  Visits (p, g) pairs by decreasing similarity (ties in row-major order) and
  keeps a pair when both sides are still free and sim > 0.

  Args:
    sim: [P, G] similarities.

  Returns:
    Matched (p, g) pairs, in the order they were chosen.
  """
  sim = _check_matrix(sim)
  order = np.argsort(-sim, axis=None, kind="stable")
  used_p, used_g, pairs = set(), set(), []
  for flat in order:
    p, g = divmod(int(flat), sim.shape[1])
    if sim[p, g] > 0 and p not in used_p and g not in used_g:
      used_p.add(p)
      used_g.add(g)
      pairs.append((p, g))
  return pairs


def optimal_assignment(sim: ArrayLike) -> list[tuple[int, int]]:
  """Maximum-total-similarity one-to-one matching (true Hungarian).

  Solved with `scipy.optimize.linear_sum_assignment(maximize=True)`; pairs
  with sim ≤ 0 are dropped, as in the greedy matcher.

  Args:
    sim: [P, G] similarities.

  Returns:
    Matched (p, g) pairs sorted by p.
  """
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  sim = _check_matrix(sim)
  if sim.size == 0:
    return []
  rows, cols = optimize.linear_sum_assignment(sim, maximize=True)
  return [(int(p), int(g)) for p, g in zip(rows, cols) if sim[p, g] > 0]


def sinkhorn_plan(sim: ArrayLike, reg: float = 0.1, max_iters: int = 1000,
                  tol: float = 1e-9) -> np.ndarray:
  """Entropic optimal-transport plan between uniform marginals.

  T = argmin_{T1=μ, Tᵀ1=ν} ⟨T, −S⟩ − reg·H(T),  μ = 1/P, ν = 1/G, solved by
  Sinkhorn–Knopp scaling T = diag(u) K diag(v), K = exp(S/reg) (POT's
  `ot.sinkhorn` defaults: 1000 iterations, stop at marginal error 1e-9).

  Args:
    sim: [P, G] similarities (P, G ≥ 1).
    reg: entropic regularisation, default 0.1.
    max_iters: iteration cap.
    tol: stop when the column marginal error (L2) is below it.

  Returns:
    f64[P, G] plan whose entries sum to 1.
  """
  sim = _check_matrix(sim)
  if sim.size == 0:
    raise ValueError(f"sim must be non-empty, got shape {sim.shape}.")
  if reg <= 0:
    raise ValueError(f"reg must be positive, got {reg}.")
  num_p, num_g = sim.shape
  kernel = np.exp((sim - sim.max()) / reg)
  row_marginal = np.full(num_p, 1.0 / num_p)
  col_marginal = np.full(num_g, 1.0 / num_g)
  u = np.full(num_p, 1.0 / num_p)
  for _ in range(max_iters):
    v = col_marginal / (kernel.T @ u)
    u = row_marginal / (kernel @ v)
    cols = v * (kernel.T @ u)
    if np.linalg.norm(cols - col_marginal) < tol:
      break
  return u[:, None] * kernel * v[None, :]


def call_rewards(preds: Sequence[ToolCall], gts: Sequence[ToolCall], *,
                 assignment: str = "greedy", unmatched_penalty: float = 0.0,
                 reg: float = 0.1, soft_scale: str = "matched") -> np.ndarray:
  """Reward of each predicted tool call from its match to the ground truth.

  Hard assignments ("greedy", the authors' matcher, which their code calls
  Hungarian; "hungarian", the optimum): a matched call earns its similarity,
  an unmatched one `unmatched_penalty` (0 as `compute_process_KM` calls it).

  Soft ("sinkhorn"): reward_p = c·Σ_g T_pg·S_pg with the `sinkhorn_plan` T.
  T has uniform marginals and sums to 1, so with c = 1 (`soft_scale="plan"`,
  the authors' code) each call's reward is about 1/P of a hard one while an
  answer turn keeps its full F1, and hard vs soft would also change how
  calls weigh against the answer. The default `soft_scale="matched"` takes
  c = min(P, G): a one-to-one matching pairs min(P, G) calls with mass 1
  each, and c·T then has that total mass, every row (P ≤ G) or column
  (P ≥ G) of the smaller side summing to 1 like a matched row or column. A
  plan that concentrates on a permutation (P = G, small reg) then gives the
  hard rewards exactly, and with P > G the G units of mass are shared by
  all P calls, as the hard matching shares them by leaving P − G calls out.

  With no ground-truth call every prediction gets `unmatched_penalty` (the
  soft case would divide by zero).

  Args:
    preds: the P predicted calls of a trajectory (all turns).
    gts: the G ground-truth calls of the task.
    assignment: "greedy" (default), "hungarian" or "sinkhorn".
    unmatched_penalty: reward of an unmatched call in hard assignments.
    reg: Sinkhorn regularisation, default 0.1.
    soft_scale: "matched" (default, c = min(P, G)) or "plan" (c = 1).

  Returns:
    f64[P] rewards.
  """
  if assignment not in _ASSIGNMENTS:
    raise ValueError(f"assignment must be one of {_ASSIGNMENTS}, got "
                     f"{assignment!r}.")
  if soft_scale not in _SOFT_SCALES:
    raise ValueError(f"soft_scale must be one of {_SOFT_SCALES}, got "
                     f"{soft_scale!r}.")
  rewards = np.full(len(preds), float(unmatched_penalty), np.float64)
  if not preds or not gts:
    return rewards
  sim = similarity_matrix(preds, gts)
  if assignment == "sinkhorn":
    scale = min(sim.shape) if soft_scale == "matched" else 1.0
    return scale * np.sum(sinkhorn_plan(sim, reg=reg) * sim, axis=1)
  match = greedy_assignment if assignment == "greedy" else optimal_assignment
  for p, g in match(sim):
    rewards[p] = sim[p, g]
  return rewards


def _normalize_answer(text: str) -> str:
  """Lower-cases, turns ASCII punctuation into spaces, collapses whitespace.

  As in the MatchTIR authors' reward, a punctuation character is *replaced*
  by a space, not deleted: "New-York" becomes "new york" and "U.S.A." becomes
  "u s a". Unlike SQuAD's normalisation (`text_rewards.normalize_answer`,
  which deletes punctuation) articles are kept.
  """
  return " ".join(_PUNCTUATION.sub(" ", str(text).lower()).split())


def answer_f1(prediction: str, gold: str) -> float:
  """Token-set F1 of two answers (0 if they share no token).

  Both are lower-cased, have every punctuation character replaced by a space
  (the authors' normalisation: "New-York City" and "new york city" score 1)
  and are split on whitespace; precision and recall are over the sets of
  tokens.

  Args:
    prediction: the predicted answer.
    gold: the reference answer.

  Returns:
    F1 in [0, 1].
  """
  pred_tokens = set(_normalize_answer(prediction).split())
  gold_tokens = set(_normalize_answer(gold).split())
  common = len(pred_tokens & gold_tokens)
  if common == 0:
    return 0.0
  precision = common / len(pred_tokens)
  recall = common / len(gold_tokens)
  return 2.0 * precision * recall / (precision + recall)


def trajectory_turn_rewards(turns: Sequence[Mapping[str, Any]],
                            gt_calls: Sequence[ToolCall], gold_answer: str,
                            *, assignment: str = "greedy",
                            unmatched_penalty: float = 0.0,
                            reg: float = 0.1,
                            soft_scale: str = "matched") -> np.ndarray:
  """MatchTIR turn rewards of one trajectory.

  All predicted calls of the trajectory are matched jointly against
  `gt_calls` (`call_rewards`). A turn with an answer (key "answer" not None)
  earns `answer_f1(answer, gold_answer)`; otherwise a turn with calls (key
  "tool_calls") earns the mean of its calls' rewards; otherwise 0.

  Args:
    turns: the assistant turns, each a mapping with optional "tool_calls"
      (sequence of calls) and "answer" (str or None).
    gt_calls: ground-truth calls of the task.
    gold_answer: the reference answer.
    assignment, unmatched_penalty, reg, soft_scale: as in `call_rewards`.

  Returns:
    f64[num_turns] rewards; place them with `place_turn_rewards`.
  """
  calls = [list(turn.get("tool_calls") or ()) for turn in turns]
  flat = [call for turn_calls in calls for call in turn_calls]
  per_call = call_rewards(flat, gt_calls, assignment=assignment,
                          unmatched_penalty=unmatched_penalty, reg=reg,
                          soft_scale=soft_scale)
  rewards = np.zeros(len(turns), np.float64)
  start = 0
  for k, (turn, turn_calls) in enumerate(zip(turns, calls)):
    stop = start + len(turn_calls)
    if turn.get("answer") is not None:
      rewards[k] = answer_f1(turn["answer"], gold_answer)
    elif turn_calls:
      rewards[k] = float(np.mean(per_call[start:stop]))
    start = stop
  return rewards


def place_turn_rewards(rewards: Sequence[Sequence[float]],
                       mask: ArrayLike) -> np.ndarray:
  """Writes per-turn rewards at the last token of each turn of each row.

  Turns are the maximal runs of True in `mask` (tool observations masked),
  the layout `cajax.agentic.matchtir` reads.

  Args:
    rewards: B sequences; row b holds one reward per turn of row b.
    mask: bool[B, T].

  Returns:
    f32[B, T] token rewards, 0 away from turn ends.

  Raises:
    ValueError: a row's reward count differs from its number of turns.
  """
  mask = np.asarray(mask, bool)
  if mask.ndim != 2 or len(rewards) != mask.shape[0]:
    raise ValueError(f"need one reward list per row of mask "
                     f"{mask.shape}, got {len(rewards)}.")
  out = np.zeros(mask.shape, np.float32)
  following = np.zeros_like(mask)
  following[:, :-1] = mask[:, 1:]
  for row in range(mask.shape[0]):
    ends = np.flatnonzero(mask[row] & ~following[row])
    if len(ends) != len(rewards[row]):
      raise ValueError(f"row {row} has {len(ends)} turns but "
                       f"{len(rewards[row])} rewards.")
    out[row, ends] = np.asarray(rewards[row], np.float32)
  return out
