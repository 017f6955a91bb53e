"""Tests for cajax.matching against brute force and hand-computed values."""

import itertools

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from cajax import agentic
from cajax import matching


def call(name, **arguments):
  return {"name": name, "arguments": arguments}


# ----------------------------------------------------------------------------
# Similarity
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("pred, gt, want", [
    (call("a", x=1, y=2), call("a", x=1, y=2), 1.0),
    (call("b", x=1, y=2), call("a", x=1, y=2), 0.0),
    (call("a", x=1, y=3), call("a", x=1, y=2), (1 + 1 + 1) / 4),
    (call("a", x=1), call("a", x=1, y=2), (1 + 0.5 + 1) / 4),
    (call("a", x=1, z=5), call("a", x=1, y=2), (1 + 1 / 3 + 1) / 4),
    (call("a"), call("a"), 1.0),
    (call("a", x=1), call("a"), 0.5),
    (call("a"), call("a", x=1), 1 / 3),
    ({"name": "a", "parameters": {"x": [1, 2]}}, call("a", x=[1, 2]), 1.0),
    # Tool names match ignoring case (the authors' code); parameters do not.
    (call("weather", city="paris"), call("Weather", city="paris"), 1.0),
    (call("WEATHER", city="Paris"), call("weather", city="paris"),
     (1 + 1 + 0) / 3),
])
def test_tool_similarity(pred, gt, want):
  assert matching.tool_similarity(pred, gt) == pytest.approx(want)


def test_tool_similarity_rejects_malformed_calls():
  with pytest.raises(ValueError, match="pred"):
    matching.tool_similarity({"arguments": {}}, call("a"))
  with pytest.raises(ValueError, match="parameters"):
    matching.tool_similarity({"name": "a", "arguments": [1]}, call("a"))


# ----------------------------------------------------------------------------
# Assignments against brute force
# ----------------------------------------------------------------------------

def brute_force_best(sim):
  """Max total similarity over all one-to-one partial matchings."""
  num_p, num_g = sim.shape
  best = 0.0
  for size in range(min(num_p, num_g) + 1):
    for rows in itertools.combinations(range(num_p), size):
      for cols in itertools.permutations(range(num_g), size):
        best = max(best, sum(sim[p, g] for p, g in zip(rows, cols)))
  return best


def reference_greedy(sim):
  """Repeatedly takes the largest remaining positive entry (first in
  row-major order on ties)."""
  sim = sim.astype(np.float64).copy()
  pairs = []
  while True:
    best, where = 0.0, None
    for p in range(sim.shape[0]):
      for g in range(sim.shape[1]):
        if sim[p, g] > best:
          best, where = sim[p, g], (p, g)
    if where is None:
      return pairs
    pairs.append(where)
    sim[where[0], :] = -1.0
    sim[:, where[1]] = -1.0


matrices = st.tuples(st.integers(1, 4), st.integers(1, 4),
                     st.integers(0, 10 ** 6)).map(
                         lambda a: np.random.default_rng(a[2]).choice(
                             [0.0, 0.25, 0.5, 0.75, 1.0], size=a[:2]))


@hypothesis.given(matrices)
def test_greedy_assignment_matches_reference(sim):
  assert matching.greedy_assignment(sim) == reference_greedy(sim)


@hypothesis.given(matrices)
def test_optimal_assignment_is_optimal_and_beats_greedy(sim):
  pairs = matching.optimal_assignment(sim)
  assert len({p for p, _ in pairs}) == len(pairs)
  assert len({g for _, g in pairs}) == len(pairs)
  assert all(sim[p, g] > 0 for p, g in pairs)
  total = sum(sim[p, g] for p, g in pairs)
  assert total == pytest.approx(brute_force_best(sim))
  greedy = sum(sim[p, g] for p, g in matching.greedy_assignment(sim))
  assert total >= greedy - 1e-12


def test_greedy_is_suboptimal_on_a_known_case():
  sim = np.array([[0.9, 0.8], [0.7, 0.0]])
  assert matching.greedy_assignment(sim) == [(0, 0)]
  assert matching.optimal_assignment(sim) == [(0, 1), (1, 0)]


def test_empty_and_bad_matrices():
  assert matching.greedy_assignment(np.zeros((0, 3))) == []
  assert matching.optimal_assignment(np.zeros((2, 0))) == []
  with pytest.raises(ValueError, match="sim"):
    matching.greedy_assignment(np.zeros(3))
  with pytest.raises(ValueError, match="sim"):
    matching.sinkhorn_plan(np.zeros((0, 2)))


# ----------------------------------------------------------------------------
# Sinkhorn
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape, seed", [((3, 3), 0), ((2, 4), 1),
                                         ((4, 2), 2), ((1, 3), 3)])
def test_sinkhorn_plan_is_the_entropic_optimum(shape, seed):
  sim = np.random.default_rng(seed).uniform(size=shape)
  plan = matching.sinkhorn_plan(sim, reg=0.1)
  np.testing.assert_allclose(plan.sum(1), 1 / shape[0], atol=1e-8)
  np.testing.assert_allclose(plan.sum(0), 1 / shape[1], atol=1e-8)
  # The entropic optimum has the Gibbs form T = diag(u) exp(S/reg) diag(v):
  # log T − S/reg is a sum of a row term and a column term.
  residual = np.log(plan) - sim / 0.1
  residual = residual - residual[:, :1] - residual[:1, :] + residual[0, 0]
  np.testing.assert_allclose(residual, 0.0, atol=1e-6)


def test_sinkhorn_tends_to_the_optimal_assignment():
  sim = np.array([[0.9, 0.8, 0.1], [0.7, 0.0, 0.2], [0.1, 0.3, 0.6]])
  plan = matching.sinkhorn_plan(sim, reg=0.005, max_iters=20000)
  rows, cols = zip(*matching.optimal_assignment(sim))
  permutation = np.zeros_like(sim)
  permutation[rows, cols] = 1 / 3
  np.testing.assert_allclose(plan, permutation, atol=1e-3)


# ----------------------------------------------------------------------------
# Call, answer and turn rewards
# ----------------------------------------------------------------------------

GT = [call("search", q="paris"), call("weather", city="paris", day=1)]


def test_call_rewards_hard_assignments():
  preds = [call("weather", city="paris", day=2), call("search", q="paris"),
           call("search", q="lyon"), call("book")]
  # sims to GT: [0, (1+1+1)/4], [1, 0], [(1+1+0)/3, 0], [0, 0]
  greedy = matching.call_rewards(preds, GT)
  np.testing.assert_allclose(greedy, [0.75, 1.0, 0.0, 0.0])
  penalised = matching.call_rewards(preds, GT, unmatched_penalty=-0.5)
  np.testing.assert_allclose(penalised, [0.75, 1.0, -0.5, -0.5])
  optimal = matching.call_rewards(preds, GT, assignment="hungarian")
  np.testing.assert_allclose(optimal, [0.75, 1.0, 0.0, 0.0])


def test_call_rewards_soft_and_degenerate():
  preds = [call("search", q="paris"), call("book")]
  raw = matching.call_rewards(preds, GT, assignment="sinkhorn",
                              soft_scale="plan")
  sim = matching.similarity_matrix(preds, GT)
  plan = matching.sinkhorn_plan(sim)
  np.testing.assert_allclose(raw, (plan * sim).sum(1))
  assert raw[0] <= 0.5 + 1e-9                      # the plan: like 1/P
  # The default scales the plan by min(P, G) = 2.
  soft = matching.call_rewards(preds, GT, assignment="sinkhorn")
  np.testing.assert_allclose(soft, 2 * raw)
  with pytest.raises(ValueError, match="soft_scale"):
    matching.call_rewards(preds, GT, assignment="sinkhorn", soft_scale="x")
  np.testing.assert_allclose(
      matching.call_rewards(preds, [], assignment="sinkhorn",
                            unmatched_penalty=-1.0), [-1.0, -1.0])
  assert matching.call_rewards([], GT).shape == (0,)
  with pytest.raises(ValueError, match="assignment"):
    matching.call_rewards(preds, GT, assignment="auction")


@pytest.mark.parametrize("pred, gold, want", [
    ("The Eiffel Tower!", "eiffel tower", 2 * (2 / 3) * 1 / (2 / 3 + 1)),
    ("Paris", "paris", 1.0),
    ("", "paris", 0.0),
    ("london", "paris", 0.0),
    ("a a b", "a b c", 2 * 1.0 * (2 / 3) / (1 + 2 / 3)),
    # Punctuation becomes a space (the authors' normalisation), so these
    # match exactly; deleting it would give 0.4 and 0.
    ("New-York City", "new york city", 1.0),
    ("U.S.A.", "u s a", 1.0),
    ("rock'n'roll", "rock n roll", 1.0),
])
def test_answer_f1(pred, gold, want):
  assert matching.answer_f1(pred, gold) == pytest.approx(want)


def test_trajectory_turn_rewards_golden():
  turns = [
      {"tool_calls": [call("search", q="paris"), call("search", q="lyon")]},
      {"tool_calls": []},
      {"tool_calls": [call("weather", city="paris", day=1)]},
      {"answer": "Sunny in Paris", "tool_calls": [call("book")]},
  ]
  got = matching.trajectory_turn_rewards(turns, GT, "sunny")
  # Turn 0: greedy gives search(paris) 1.0, search(lyon) unmatched 0.
  np.testing.assert_allclose(got, [0.5, 0.0, 1.0, 2 * (1 / 3) / (4 / 3)])


def test_place_turn_rewards_feeds_matchtir():
  mask = np.array([[1, 1, 0, 0, 1, 0, 1], [0, 1, 1, 1, 0, 0, 0]], bool)
  rewards = matching.place_turn_rewards([[0.5, 0.25, 1.0], [0.75]], mask)
  want = np.zeros((2, 7), np.float32)
  want[0, [1, 4, 6]] = [0.5, 0.25, 1.0]
  want[1, 3] = 0.75
  np.testing.assert_array_equal(rewards, want)
  turns, valid, _ = agentic.turn_rewards(rewards, mask, num_turns=3)
  np.testing.assert_allclose(turns, [[0.5, 0.25, 1.0], [0.75, 0, 0]])
  np.testing.assert_array_equal(valid, [[1, 1, 1], [1, 0, 0]])
  with pytest.raises(ValueError, match="row 1"):
    matching.place_turn_rewards([[0.5, 0.25, 1.0], [0.1, 0.2]], mask)


def test_soft_call_rewards_share_the_hard_scale():
  # P = G with a clear permutation: as the plan concentrates, the default
  # soft rewards approach the hard ones, the raw plan's approach 1/P.
  gts = [call("calc", x=1, y=2), call("calc", x=3, y=4),
         call("calc", x=5, y=6)]
  preds = [gts[2], gts[0], gts[1]]
  hard = matching.call_rewards(preds, gts, assignment="hungarian")
  np.testing.assert_allclose(hard, [1.0, 1.0, 1.0])
  soft = matching.call_rewards(preds, gts, assignment="sinkhorn", reg=0.01)
  np.testing.assert_allclose(soft, hard, atol=1e-6)
  raw = matching.call_rewards(preds, gts, assignment="sinkhorn", reg=0.01,
                              soft_scale="plan")
  np.testing.assert_allclose(raw, hard / 3, atol=1e-6)
  # P > G: three copies of the one true call. The hard matching pays one of
  # them; the scaled plan shares the same unit of mass among all three.
  copies = [gts[0]] * 3
  np.testing.assert_allclose(
      matching.call_rewards(copies, gts[:1], assignment="greedy"),
      [1.0, 0.0, 0.0])
  np.testing.assert_allclose(
      matching.call_rewards(copies, gts[:1], assignment="sinkhorn"),
      [1 / 3, 1 / 3, 1 / 3])
  # The answer turn keeps its full F1 under either assignment, so calls
  # weigh the same against it.
  turns = [{"tool_calls": [p], "answer": None} for p in preds] + [
      {"tool_calls": [], "answer": "7"}]
  for assignment in ("hungarian", "sinkhorn"):
    np.testing.assert_allclose(matching.trajectory_turn_rewards(
        turns, gts, "7", assignment=assignment, reg=0.01), [1, 1, 1, 1],
                               atol=1e-6)
