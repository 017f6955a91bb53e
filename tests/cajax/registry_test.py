"""Tests of cajax/registry.py, cajax/validation.py, the Rollouts pytree and
the generic contract every registered estimator must meet.

The generic contract test runs every registered name on synthetic
rollouts, so estimators registered later are picked up automatically.
"""

import dataclasses
import functools
import gc
import inspect

import jax
from jax.extend import backend
import jax.numpy as jnp
import numpy as np
import pytest

import cajax
from cajax import outcome
from cajax import registry
from cajax import testing
from cajax import types

NAMES = cajax.estimator_names()
OUTCOME_NAMES = ("drgrpo", "gdpo", "gpg", "grpo", "grpo_passk", "opo",
                 "reinforce_plus_plus_baseline", "rloo")


# The estimator names README.md promises to users.
CONTRACT_NAMES = (
    "gae", "grpo", "drgrpo", "grpo_passk", "rloo", "opo", "gpg", "remax",
    "reinforce_plus_plus", "reinforce_plus_plus_baseline", "gdpo",
    "optimal_token_baseline", "prime", "pure", "sum_form_prm",
    "process_grpo", "tp_grpo", "ucas", "capo", "istar", "matchtir", "r3l",
    "slate")


def test_every_contract_name_is_registered_by_importing_cajax():
  missing = sorted(set(CONTRACT_NAMES) - set(NAMES))
  assert not missing, f"estimators missing from the registry: {missing}"


def small_rollouts(**changes):
  rewards = np.zeros((4, 3), np.float32)
  rewards[:, -1] = [1.0, 0.0, 0.5, 1.0]
  fields = dict(mask=np.ones((4, 3), bool), token_rewards=rewards,
                group_ids=np.array([0, 0, 1, 1], np.int32), num_groups=2)
  fields.update(changes)
  return cajax.Rollouts(**fields)


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------


def test_estimator_names():
  names = cajax.estimator_names()
  assert isinstance(names, tuple)
  assert list(names) == sorted(set(names))
  assert set(OUTCOME_NAMES) <= set(names)
  assert registry.required_fields("grpo") == ("token_rewards", "group_ids")
  assert registry.required_fields("gdpo") == ("reward_components",
                                              "group_ids")


def test_unknown_name_lists_registered_names():
  with pytest.raises(ValueError, match=r"unknown estimator 'grpoo'.*grpo"):
    cajax.estimate("grpoo", small_rollouts())
  with pytest.raises(ValueError, match="unknown estimator"):
    cajax.example_inputs("grpoo", small_rollouts(), np.random.default_rng())
  with pytest.raises(ValueError, match="unknown estimator"):
    registry.required_fields("grpoo")


def test_duplicate_registration_is_refused():
  with pytest.raises(ValueError, match="already registered"):
    registry.register("grpo")(lambda rollouts: None)
  assert cajax.estimator_names().count("grpo") == 1


def test_registry_type():
  sizes = cajax.Registry("model size", {"tiny": 1, "small": 2},
                         how_to_add="Add one in sizes.py.")
  assert sizes.names() == ("tiny", "small") and list(sizes) == ["tiny",
                                                                "small"]
  assert sizes["small"] == 2 and "tiny" in sizes and len(sizes) == 2
  with pytest.raises(ValueError, match=r"^model.size: unknown model size "
                     r"'smal' \(did you mean 'small'\?\); registered: tiny, "
                     r"small\. Add one in sizes\.py\.$"):
    sizes.check("smal", "model.size")
  with pytest.raises(ValueError, match=r"unknown model size 3; registered"):
    sizes[3]  # pylint: disable=pointless-statement
  with pytest.raises(ValueError, match="already registered"):
    sizes.add("tiny", 3)
  with pytest.raises(ValueError, match="non-empty string"):
    sizes.add("", 3)


def test_own_estimator_through_register(monkeypatch):
  # A copy of the registry, so the other tests see only the built-in names.
  monkeypatch.setattr(registry, "ESTIMATORS", registry.Registry(
      "estimator", {n: registry.ESTIMATORS[n] for n in registry.ESTIMATORS}))
  name = "test_constant_advantage"

  @registry.register(name, fields=("token_rewards",))
  def _constant(rollouts, *, value: float = 1.0):
    adv = jnp.where(rollouts.mask, value, 0.0)
    return types.EstimatorOutput(adv, adv, {})

  assert name in cajax.estimator_names()
  out = cajax.estimate(name, small_rollouts(), value=2.0)
  np.testing.assert_array_equal(out.advantages, np.full((4, 3), 2.0))
  assert registry.resolve(name).settings == {"value": 1.0}


def test_resolve_binds_settings_and_fields():
  resolved = cajax.resolve("ucas", certainty="negative_entropy")
  assert resolved.name == "ucas"
  assert resolved.fields == ("token_rewards", "entropy", "token_logits",
                             "group_ids")
  # The estimator's own defaults are reported beside the given settings.
  assert resolved.settings["certainty"] == "negative_entropy"
  assert resolved.settings["beta_pos"] == 0.25
  assert cajax.resolve("pure", kl_in_reward=True).fields[-2:] == (
      "old_logprobs", "ref_logprobs")
  assert "old_logprobs" not in cajax.resolve("pure").fields
  rollouts = testing.make_rollouts(batch=8, length=8, group_size=4,
                                   num_steps=3, seed=4)
  got = jax.jit(resolved.function)(rollouts.replace(self_certainty=None))
  want = cajax.estimate("ucas", rollouts, certainty="negative_entropy")
  np.testing.assert_array_equal(got.advantages, want.advantages)
  with pytest.raises(ValueError, match=r"'grpo' got unexpected keyword "
                     r"'epsilon' \(did you mean 'eps'\?\)"):
    cajax.resolve("grpo", epsilon=1.0)
  with pytest.raises(ValueError, match=r"unknown estimator 'gpro' "
                     r"\(did you mean 'grpo'\?\)"):
    cajax.resolve("gpro")
  with pytest.raises(ValueError, match="bound by resolve"):
    cajax.resolve("grpo", eps=1.0).function(small_rollouts(), eps=2.0)


def test_missing_required_field_is_named():
  with pytest.raises(ValueError, match=r"'grpo'.*rollouts\.group_ids"):
    cajax.estimate("grpo", small_rollouts(group_ids=None))
  with pytest.raises(ValueError, match=r"rollouts\.reward_components"):
    cajax.estimate("gdpo", small_rollouts())
  with pytest.raises(ValueError, match=r"token_rewards, rollouts\.group_ids"
                                       r".*are None"):
    cajax.estimate("rloo", small_rollouts(token_rewards=None,
                                          group_ids=None))


def test_shape_errors_name_argument_and_shapes():
  with pytest.raises(ValueError, match=r"rollouts\.mask.*rank 2.*\(4,\)"):
    cajax.estimate("grpo", small_rollouts(mask=np.ones(4, bool)))
  with pytest.raises(ValueError,
                     match=r"token_rewards.*\(4, 3\).*got \(4, 2\)"):
    cajax.estimate("grpo", small_rollouts(
        token_rewards=np.zeros((4, 2), np.float32)))
  with pytest.raises(ValueError, match=r"group_ids.*\(4,\).*got \(3,\)"):
    cajax.estimate("opo", small_rollouts(group_ids=np.zeros(3, np.int32)))
  with pytest.raises(ValueError,
                     match=r"reward_components.*\(4, .*got \(3, 2\)"):
    cajax.estimate("gdpo", small_rollouts(
        reward_components=np.zeros((3, 2), np.float32)))
  with pytest.raises(ValueError, match="cajax.Rollouts"):
    cajax.estimate("grpo", {"mask": np.ones((4, 3), bool)})


def test_estimate_forwards_hyperparameters():
  rollouts = small_rollouts()
  out = cajax.estimate("grpo", rollouts, scale="none")
  direct = outcome.drgrpo(rollouts.token_rewards, rollouts.mask,
                          rollouts.group_ids, 2)
  np.testing.assert_array_equal(out.advantages, direct.advantages)
  assert cajax.example_inputs("grpo", rollouts,
                              np.random.default_rng(0)) == {}


def test_misspelled_keyword_lists_the_accepted_ones():
  with pytest.raises(ValueError, match=r"'grpo' got unexpected keyword "
                     r"'epsilon' \(did you mean 'eps'\?\); it accepts: "
                     r"center, ddof, eps, scale, singleton\."):
    cajax.estimate("grpo", small_rollouts(), epsilon=1e-6)
  with pytest.raises(ValueError, match=r"'remax' got unexpected keyword "
                     r"'gamma'.*accepts: no keywords"):
    cajax.estimate("remax", small_rollouts(
        baseline_scores=np.zeros(4, np.float32)), gamma=1.0)
  for name in NAMES:
    accepted = registry.accepted_keywords(name)
    assert accepted == tuple(sorted(set(accepted))), name
    with pytest.raises(ValueError, match=f"'{name}' got unexpected"):
      cajax.estimate(name, small_rollouts(), not_a_keyword=1)
  assert "verifiable_rewards" in registry.accepted_keywords("pure")
  assert "critique_flags" in registry.accepted_keywords("capo")


def test_num_groups_is_required_with_group_ids():
  # Defaulting it to 1 normalised group 1 with group 0's statistics.
  rewards = np.zeros((4, 3), np.float32)
  rewards[:, -1] = [1.0, 0.0, 1.0, 1.0]
  ids = np.array([0, 0, 1, 1], np.int32)
  inferred = cajax.Rollouts(mask=np.ones((4, 3), bool),
                            token_rewards=rewards, group_ids=ids)
  assert inferred.num_groups == 2
  np.testing.assert_allclose(cajax.estimate("grpo", inferred).advantages[:, 0],
                             [0.707106, -0.707106, 0.0, 0.0], atol=1e-5)
  assert cajax.Rollouts(mask=np.ones((4, 3), bool)).num_groups is None
  with pytest.raises(ValueError, match=r"group_ids must lie in "
                     r"\[0, num_groups=1\), got \[1\]"):
    cajax.estimate("grpo", inferred.replace(num_groups=1))
  with pytest.raises(ValueError, match=r"got \[-1\]"):
    outcome.grpo(rewards, np.ones((4, 3), bool),
                 np.array([0, 0, -1, 1], np.int32), 2)
  with pytest.raises(ValueError, match="num_groups is required"):
    jax.jit(lambda i: cajax.Rollouts(mask=np.ones((4, 3), bool),
                                     group_ids=i))(ids)
  # Inside jit the count is static metadata inferred before tracing.
  out = jax.jit(functools.partial(cajax.estimate, "grpo"))(inferred)
  np.testing.assert_allclose(out.advantages[:, 0],
                             [0.707106, -0.707106, 0.0, 0.0], atol=1e-5)


def test_readme_loop_findings():
  rollouts = testing.make_rollouts(batch=8, length=8,
                                   group_size=4, num_steps=3,
                                   seed=4)
  # pure with an explicit verifiable reward (it used to clash with the one
  # the adapter derives from token_rewards).
  vr = np.linspace(-1.0, 0.0, 8).astype(np.float32)
  out = cajax.estimate("pure", rollouts, verifiable_rewards=vr)
  direct = cajax.pure(rollouts.step_rewards, rollouts.mask,
                      rollouts.step_ids, rollouts.step_mask,
                      rollouts.group_ids, rollouts.num_groups,
                      verifiable_rewards=vr)
  np.testing.assert_array_equal(out.advantages, direct.advantages)
  # ucas reads self_certainty (or entropy with certainty="negative_entropy").
  assert "self_certainty" in registry.required_fields("ucas")
  assert "entropy" in registry.required_fields(
      "ucas", certainty="negative_entropy")
  with pytest.raises(ValueError, match=r"rollouts\.self_certainty"):
    cajax.estimate("ucas", rollouts.replace(self_certainty=None))
  cajax.estimate("ucas", rollouts.replace(self_certainty=None),
                 certainty="negative_entropy")
  with pytest.raises(ValueError, match=r"rollouts\.old_logprobs"):
    cajax.estimate("pure", rollouts.replace(old_logprobs=None),
                   kl_in_reward=True)
  # example_inputs takes a JAX key (typed or raw), a Generator or a seed,
  # and works for capo before any step field is set.
  for rng in (jax.random.key(0), jax.random.PRNGKey(0),
              np.random.default_rng(0), 0):
    for name in ("capo", "r3l", "slate", "prime"):
      assert cajax.example_inputs(name, rollouts, rng), (name, rng)
  same = [cajax.example_inputs("capo", rollouts, jax.random.key(3))
          for _ in range(2)]
  np.testing.assert_array_equal(same[0]["critique_flags"],
                                same[1]["critique_flags"])
  bare = cajax.Rollouts(mask=rollouts.mask, token_rewards=rollouts.token_rewards)
  flags = cajax.example_inputs("capo", bare, jax.random.key(0))
  assert flags["critique_flags"].shape == (8, 4, 8)
  with pytest.raises(ValueError, match="rng"):
    cajax.example_inputs("capo", rollouts, "seed")


def test_sequence_scores():
  rewards = np.array([[1, 2, 0], [0, np.nan, 1], [0, 0, 3]], np.float32)
  scores, scorable = cajax.sequence_scores(rewards, np.ones((3, 3), bool))
  np.testing.assert_array_equal(scores, [3.0, 0.0, 3.0])
  np.testing.assert_array_equal(scorable, [True, False, True])
  with pytest.raises(ValueError, match="token_rewards"):
    cajax.sequence_scores(rewards[:, :2], np.ones((3, 3), bool))


# --------------------------------------------------------------------------
# Rollouts pytree
# --------------------------------------------------------------------------


def test_rollouts_is_a_pytree_with_static_num_groups():
  rollouts = small_rollouts()
  leaves, treedef = jax.tree_util.tree_flatten(rollouts)
  assert len(leaves) == 3  # None fields are empty subtrees
  rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
  assert rebuilt.num_groups == 2
  np.testing.assert_array_equal(rebuilt.group_ids, rollouts.group_ids)
  doubled = jax.tree_util.tree_map(lambda x: x * 2, rollouts)
  assert doubled.num_groups == 2
  other = rollouts.replace(num_groups=3)
  assert jax.tree_util.tree_structure(other) != treedef
  assert rollouts.num_groups == 2 and other.num_groups == 3


def test_jit_recompiles_for_each_num_groups():
  traces = []

  @jax.jit
  def step(rollouts):
    traces.append(rollouts.num_groups)
    return cajax.estimate("grpo", rollouts).advantages

  two = small_rollouts()
  three = small_rollouts(group_ids=np.array([0, 0, 1, 2], np.int32),
                         num_groups=3)
  out_two, out_three = step(two), step(three)
  step(two)
  assert traces == [2, 3]
  # Group 1 of `two` ({0.5, 1}) splits into singletons {0.5}, {1} in `three`.
  np.testing.assert_allclose(out_two[2:, -1], [-0.707106, 0.707106],
                             atol=1e-5)
  np.testing.assert_allclose(out_three[2:, -1], [0.5 / (1 + 1e-6),
                                                 1 / (1 + 1e-6)], atol=1e-6)
  np.testing.assert_array_equal(out_two[:2], out_three[:2])


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------


def good_numpy_rollouts():
  return testing.make_rollouts(batch=8, length=8, group_size=4,
                               num_steps=3, seed=2,
                               as_numpy=True)


def test_validate_passes_good_batches():
  rollouts = good_numpy_rollouts()
  assert cajax.validate(rollouts) is rollouts
  cajax.validate(testing.make_rollouts(seed=3))
  rewards = np.array(rollouts.token_rewards)
  rewards[1, 0] = np.nan  # an unscorable row is allowed
  cajax.validate(rollouts.replace(token_rewards=rewards))


def _with(name, mutate):
  rollouts = good_numpy_rollouts()
  value = np.array(getattr(rollouts, name))
  return rollouts.replace(**{name: mutate(value)})


def _set(index, value):
  def mutate(array):
    array[index] = value
    return array
  return mutate


PROBLEMS = [
    ("group_id_out_of_range",
     _with("group_ids", _set(0, 2)), r"group_ids has values \[2\] outside"),
    ("negative_group_id",
     _with("group_ids", _set(3, -1)), r"group_ids has values \[-1\]"),
    ("float_group_ids",
     _with("group_ids", lambda a: a.astype(np.float32)),
     "group_ids has dtype float32"),
    ("unused_group",
     good_numpy_rollouts().replace(num_groups=3), r"groups \[2\]"),
    ("nan_values",
     _with("values", _set((0, 1), np.nan)), "values contains NaN"),
    ("inf_token_rewards",
     _with("token_rewards", _set((2, 0), np.inf)),
     "token_rewards contains inf"),
    ("inf_step_rewards",
     _with("step_rewards", _set((0, 0), -np.inf)),
     "step_rewards contains inf"),
    ("split_step",  # step 0 of row 0 comes back after step 1
     _with("step_ids", _set((0, 6), 0)), r"split a step.*rows \[0\]"),
    ("decreasing_steps",
     _with("step_ids", lambda a: np.where(a >= 0, 2 - a, -1)),
     r"decrease along rows \[0, 1"),
    ("reward_components_batch",
     good_numpy_rollouts().replace(
         reward_components=np.zeros((7, 2), np.float32)),
     r"reward_components has shape \(7, 2\), expected \(8, K\)"),
    ("baseline_scores_batch",
     good_numpy_rollouts().replace(
         baseline_scores=np.zeros((8, 1), np.float32)),
     r"baseline_scores has shape \(8, 1\), expected \(8,\)"),
    ("step_rewards_batch",
     _with("step_rewards", lambda a: a[:7]),
     r"step_rewards has shape \(7, 3\), expected \(8, S\)"),
    ("non_binary_float_mask",
     _with("mask", lambda a: np.where(a, 0.5, 0.0).astype(np.float32)),
     "mask has dtype float32 with values other than 0/1"),
    ("step_ids_beyond_steps",
     _with("step_ids", _set((0, 0), 3)), "step_ids reaches 3"),
    ("float_step_ids",
     _with("step_ids", lambda a: a.astype(np.float32)),
     "step_ids has dtype float32"),
    ("values_shape",
     _with("values", lambda a: a[:, :5]), r"values has shape \(8, 5\)"),
]


@pytest.mark.parametrize("rollouts,message", [p[1:] for p in PROBLEMS],
                         ids=[p[0] for p in PROBLEMS])
def test_validate_catches(rollouts, message):
  with pytest.raises(ValueError, match=message):
    cajax.validate(rollouts)


def test_validate_allows_nan_scores_like_the_estimators():
  # NaN marks an unscorable row (a missing component for gdpo) in every
  # score field; validate must not reject what the estimators document.
  rollouts = good_numpy_rollouts()
  comps = np.ones((8, 2), np.float32)
  comps[3, 1] = np.nan
  baseline = np.zeros(8, np.float32)
  baseline[2] = np.nan
  steps = np.array(rollouts.step_rewards)
  steps[1, 0] = np.nan
  checked = rollouts.replace(reward_components=comps,
                             baseline_scores=baseline, step_rewards=steps)
  assert cajax.validate(checked) is checked
  cajax.estimate("gdpo", checked)  # the documented use


def test_validate_accepts_binary_float_mask_and_lists_all_problems():
  rollouts = _with("mask", lambda a: a.astype(np.float32))
  cajax.validate(rollouts)
  both = rollouts.replace(values=_with("values", _set((0, 0), np.nan)).values,
                          group_ids=np.full(8, 5, np.int32))
  with pytest.raises(ValueError, match=r"(?s)outside.*values contains NaN"):
    cajax.validate(both)


# --------------------------------------------------------------------------
# generic contract over every registered estimator
# --------------------------------------------------------------------------

B, T, PAD, STEPS = 8, 8, 3, 3
# Padded values of float fields other than token_rewards: masked entries
# are ignored whatever they hold, NaN included.
PAD_FILL = np.nan


def _pad_tokens(x, fill):
  x = np.asarray(x)
  widths = [(0, 0)] * x.ndim
  widths[1] = (0, PAD)
  return np.pad(x, widths, constant_values=np.asarray(fill).astype(x.dtype))


def _padded(rollouts):
  """Appends PAD masked columns; only token_rewards must be 0 there."""
  changes = {}
  for field in ("mask", "token_rewards", "values", "old_logprobs",
                "ref_logprobs", "logprobs", "entropy", "self_certainty",
                "token_logits", "sum_pi_squared", "step_ids"):
    value = getattr(rollouts, field)
    fill = {"mask": False, "token_rewards": 0.0, "step_ids": -1}.get(
        field, PAD_FILL)
    changes[field] = jnp.asarray(_pad_tokens(value, fill))
  return rollouts.replace(**changes)


def _pad_kwargs(kwargs):
  """Pads [B, T] example inputs with zeros (False) along T."""
  out = {}
  for key, value in kwargs.items():
    if np.ndim(value) >= 2 and np.shape(value)[:2] == (B, T):
      value = jnp.asarray(_pad_tokens(value, 0))
    out[key] = value
  return out


def _bf16(rollouts):
  return jax.tree_util.tree_map(
      lambda x: x.astype(jnp.bfloat16)
      if jnp.issubdtype(x.dtype, jnp.floating) else x, rollouts)


def _stacked_output(out):
  """[2, B, T]: advantages and returns of an `EstimatorOutput`."""
  return jnp.stack([out.advantages, out.returns])


def _check_contract(name, out, mask):
  for index, field in enumerate(("advantages", "returns")):
    value = out[index]
    assert value.shape == (B, T) and value.dtype == np.float32, (
        f"{name}.{field}: {value.shape} {value.dtype}")
    assert np.all(np.isfinite(value)), f"{name}.{field} not finite"
    assert np.all(value[~mask] == 0.0), f"{name}.{field} nonzero at mask"


# Float inputs an estimator may read, and those in reward units (scaled by
# the scale-robustness check). `rm_scores` is prime's example keyword input.
FLOAT_FIELDS = ("token_rewards", "values", "old_logprobs", "ref_logprobs",
                "logprobs", "entropy", "self_certainty", "token_logits",
                "sum_pi_squared", "step_rewards", "reward_components",
                "baseline_scores")
REWARD_UNITS = ("token_rewards", "values", "step_rewards",
                "reward_components", "baseline_scores", "rm_scores")
POISON_ROW = 1
POISONS = (np.nan, np.inf, -np.inf)
LARGE_SCALES = (1e10, 1e20, 1e30)
SMALL_SCALES = (1e-10, 1e-20, 1e-30)

# How each estimator's outputs respond to scaling every reward-unit input by
# c (with the listed static keywords, which keep it homogeneous: thresholds
# and constant penalties are the knobs that do not scale). "invariant": the
# same advantages at every c ≥ 1e10 (σ ≫ eps), and no entry that was
# non-zero underflows to 0 at c ≤ 1e-10; "invariant_large": only the
# former (UCAS clamps tiny positive advantages against its logit penalty);
# "linear": out(c) = c·out(1) at every c. A singleton group passes its raw
# score through (verl's μ=0, σ=1), which scales linearly, so matchtir keeps
# only the first turn (later turns of this batch have singleton turn
# groups).
SCALING = {
    "grpo": ("invariant", "invariant", {}),
    "drgrpo": ("linear", "linear", {}),
    "grpo_passk": ("invariant", "invariant", {}),
    "rloo": ("linear", "linear", {}),
    "opo": ("linear", "linear", {}),
    "gpg": ("linear", "linear", {}),
    "reinforce_plus_plus_baseline": ("invariant", "invariant", {}),
    "gdpo": ("invariant", "invariant", {}),
    "gae": ("invariant", "linear", {}),
    "reinforce_plus_plus": ("invariant", "linear", {}),
    "remax": ("linear", "linear", {}),
    "optimal_token_baseline": ("linear", "linear", {}),
    "prime": ("invariant", "linear", {}),
    "pure": ("invariant", "linear", {"mode": "strict"}),
    "sum_form_prm": ("invariant", "linear", {}),
    "process_grpo": ("invariant", "invariant", {}),
    "tp_grpo": ("invariant", "invariant", {"correct_threshold": 0.0}),
    "ucas": ("invariant_large", "invariant_large", {}),
    "capo": ("invariant", "linear", {"process_weight": 0.0}),
    "istar": ("linear", "linear", {"step_weight": 0.0}),
    "matchtir": ("invariant", "invariant", {"num_turns": 1}),
    "r3l": ("linear", "linear", {"r_max": float("inf")}),
    "slate": ("invariant", "invariant", {}),
}


def test_every_estimator_has_a_scaling_rule():
  assert set(SCALING) == set(NAMES)


def _stack(trees):
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _poison_at(value, mask, step_ids, row, poison):
  """`value` with one valid entry of `row` (every entry for [B, K] and [B])
  set to `poison`: the last valid token, or that token's step."""
  value = np.array(value)
  last = np.flatnonzero(mask[row])[-1]
  if value.shape == mask.shape:
    value[row, last] = poison
  elif value.ndim == 2 and step_ids is not None and (
      value.shape[1] == STEPS):
    value[row, step_ids[row, last]] = poison
  else:
    value[row] = poison
  return jnp.asarray(value)


def _without_row(tree, row):
  """Drops `row` from every [B, ...] leaf (the batch without that row)."""
  def drop(x):
    if np.ndim(x) and np.shape(x)[0] == B:
      return jnp.asarray(np.delete(np.asarray(x), row, axis=0))
    return x
  return jax.tree_util.tree_map(drop, tree)


def _poison_variants(name, rollouts, kwargs):
  """(field, rollouts, kwargs) with one valid entry of POISON_ROW set to
  each non-finite value, for every float input the estimator may read."""
  mask = np.asarray(rollouts.mask)
  step_ids = np.asarray(rollouts.step_ids)
  labels, variants = [], []
  fields = [f for f in FLOAT_FIELDS if getattr(rollouts, f) is not None]
  keys = [k for k, v in kwargs.items()
          if jnp.issubdtype(jnp.result_type(v), jnp.floating)]
  for field in fields + keys:
    for poison in POISONS:
      if field in keys:
        value = _poison_at(kwargs[field], mask, step_ids, POISON_ROW, poison)
        variants.append((rollouts, {**kwargs, field: value}))
      else:
        value = _poison_at(getattr(rollouts, field), mask, step_ids,
                           POISON_ROW, poison)
        variants.append((rollouts.replace(**{field: value}), kwargs))
      labels.append(field)
  return labels, variants


def _scaled(rollouts, kwargs, scale):
  changes = {f: getattr(rollouts, f) * scale for f in REWARD_UNITS
             if getattr(rollouts, f, None) is not None}
  kwargs = {k: v * scale if k in REWARD_UNITS else v
            for k, v in kwargs.items()}
  return rollouts.replace(**changes), kwargs



def _check_unscorable_rule(name, labels, poisoned, clean, reduced, required):
  """Non-finite inputs: finite outputs, NaN ≡ ±inf, and either nothing
  changes (the entry is not read) or the row is 0 and every other row is
  what the batch without that row gives."""
  others = np.delete(np.arange(B), POISON_ROW)
  scale = max(1.0, float(np.max(np.abs(clean))))
  for i in range(0, len(labels), len(POISONS)):
    field = labels[i]
    where = f"{name}: non-finite {field}"
    group = poisoned[i:i + len(POISONS)]
    assert np.all(np.isfinite(group)), f"{where} leaks a non-finite value"
    for other in group[1:]:
      np.testing.assert_array_equal(other, group[0],
                                    err_msg=f"{where}: inf differs from NaN")
    unscorable = not np.any(group[0][:, POISON_ROW]) and np.allclose(
        group[0][:, others], reduced, rtol=1e-5, atol=1e-5 * scale)
    if unscorable:
      continue
    if np.array_equal(group[0], clean):
      assert field not in required, f"{where} is ignored"
      continue
    assert not np.any(group[0][:, POISON_ROW]), (
        f"{where}: the unscorable row is not 0")
    np.testing.assert_allclose(
        group[0][:, others], reduced, rtol=1e-5, atol=1e-5 * scale,
        err_msg=f"{where}: other rows differ from the batch without it")


def _check_scaling(name, scaled, scales):
  """`scaled[k]` holds the outputs at `scales[k]`; scales[0] is 1."""
  reference = scaled[0].astype(np.float64)
  kinds = SCALING[name][:2]
  for index, kind in enumerate(kinds):
    want = reference[index]
    peak = max(float(np.max(np.abs(want))), 1e-30)
    field = ("advantages", "returns")[index]
    for k, scale in enumerate(scales[1:], start=1):
      got = scaled[k][index].astype(np.float64)
      where = f"{name}.{field} at scale {scale:g}"
      assert np.all(np.isfinite(got)), f"{where} not finite"
      if kind == "linear":
        np.testing.assert_allclose(got / scale, want, rtol=1e-4,
                                   atol=1e-4 * peak, err_msg=where)
      elif scale > 1:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * peak,
                                   err_msg=where)
      elif kind == "invariant":
        lost = (want != 0) & (got == 0)
        assert not np.any(lost), f"{where} underflows to 0"


@pytest.mark.parametrize("name", NAMES)
def test_estimator_contract(name):
  """Shapes, dtypes, masking, bf16, padding, the unscorable-row rule and
  scale robustness of one estimator, all from one compile."""
  rollouts = testing.make_rollouts(batch=B, length=T, group_size=4,
                                   num_steps=STEPS, seed=1)
  kwargs = cajax.example_inputs(name, rollouts, np.random.default_rng(0))
  padded_kwargs = _pad_kwargs(kwargs)
  labels, variants = _poison_variants(name, rollouts, kwargs)
  scales = (1.0,) + LARGE_SCALES + SMALL_SCALES
  scale_kwargs = SCALING[name][2]
  scaled_inputs = [_scaled(rollouts, kwargs, c) for c in scales]

  def estimate(rollouts, kwargs, **static):
    return _stacked_output(cajax.estimate(name, rollouts, **kwargs,
                                          **static))

  def run(base, low, wide, poisoned, reduced, scaled):
    return (estimate(*base), estimate(*low), estimate(*wide),
            jax.vmap(estimate)(*poisoned), estimate(*reduced),
            jax.vmap(functools.partial(estimate, **scale_kwargs))(*scaled))

  inputs = ((rollouts, kwargs), (_bf16(rollouts), kwargs),
            (_padded(rollouts), padded_kwargs),
            _stack(variants), _without_row((rollouts, kwargs), POISON_ROW),
            _stack(scaled_inputs))
  # One jit per estimator; XLA's backend optimisation is turned down because
  # this test checks values, not speed, and it compiles every estimator.
  compiled = jax.jit(run).lower(*inputs).compile(
      compiler_options={"xla_backend_optimization_level": 0})
  out, out_bf16, out_wide, poisoned, reduced, scaled = (
      np.asarray(x) for x in compiled(*inputs))
  mask = np.asarray(rollouts.mask)
  _check_contract(name, out, mask)
  # A stub returning zeros would pass every check above.
  assert np.any(out[0][mask] != 0), name
  _check_contract(f"{name}[bf16]", out_bf16, mask)
  scale = max(1.0, float(np.max(np.abs(out))))
  for index, field in enumerate(("advantages", "returns")):
    np.testing.assert_allclose(out_bf16[index], out[index], rtol=0,
                               atol=5e-2 * scale,
                               err_msg=f"{name}.{field} bf16")
    wide = out_wide[index]
    assert wide.shape == (B, T + PAD), f"{name}.{field} padded shape"
    np.testing.assert_allclose(wide[:, :T], out[index], rtol=1e-5,
                               atol=1e-5 * scale,
                               err_msg=f"{name}.{field} padding")
    np.testing.assert_array_equal(wide[:, T:], 0.0,
                                  err_msg=f"{name}.{field} padding")
  required = set(registry.required_fields(name)) | set(kwargs)
  _check_unscorable_rule(name, labels, poisoned, out, reduced, required)
  _check_scaling(name, scaled, scales)


# --------------------------------------------------------------------------
# hyperparameter domains over every registered estimator
# --------------------------------------------------------------------------

# Values outside each knob's domain (beyond the generic probes below).
OUT_OF_DOMAIN = {
    "eps": (-1e-6,), "gamma": (-0.1, 1.5), "lambda_": (-0.1, 1.5),
    "f_norm": (0.0, -1.0), "tau": (0.0, -1.0), "temperature": (0.0, -0.1),
    "threshold": (1.5, -0.1), "alpha": (-1.0,), "beta_pos": (-0.1,),
    "beta_neg": (-0.1,), "token_coef": (-0.1,), "positive_scale": (-0.1,),
    "negative_scale": (-0.1,), "adapt_power": (-1.0,),
    "whole_weight": (-1.0,), "process_weight": (-1.0,), "ddof": (-1,),
    "num_turns": (0,), "num_steps": (0,), "num_branches": (0,),
}
# Knobs that also take per-token arrays, hence traced values.
ARRAY_KNOBS = {("gae", "gamma"), ("gae", "lambda_"),
               ("reinforce_plus_plus", "gamma")}
# Per-estimator domains that differ from the generic one.
DOMAIN_OVERRIDES = {("capo", "correct_threshold"): (1.5, -0.1)}


def _knob_defaults(name):
  """{keyword: default} of every knob of `name` with a scalar default."""
  defaults = {}
  functions = [registry.ESTIMATORS[name].adapter]
  if registry.plain_function(name) is not None:
    functions.insert(0, registry.plain_function(name))
  for function in functions:
    for param in inspect.signature(function).parameters.values():
      if param.name in registry.accepted_keywords(name) and (
          param.default is not param.empty):
        defaults.setdefault(param.name, param.default)
  return defaults


def _probes(name, knob, default):
  """(value, traced) pairs every knob must reject with a ValueError."""
  bad = list(DOMAIN_OVERRIDES.get((name, knob), OUT_OF_DOMAIN.get(knob, ())))
  if isinstance(default, bool):
    bad += ["yes", 1]
  elif isinstance(default, str):
    bad += ["not-an-option", 1.0]
  elif isinstance(default, int) or knob in ("num_turns", "num_steps",
                                            "num_branches"):
    bad += ["2", 1.5]
  elif isinstance(default, float):
    bad += [str(default), float("nan")]
  return bad


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameter_domains(name):
  """Every knob rejects strings, wrong types, NaN and out-of-domain values
  with a ValueError naming the knob, its domain and the value, and a traced
  value either raises that way too (static knobs) or works (array knobs),
  never failing deep inside jax."""
  rollouts = testing.make_rollouts(batch=B, length=T,
                                   group_size=4, num_steps=STEPS,
                                   seed=1)
  kwargs = cajax.example_inputs(name, rollouts, np.random.default_rng(0))
  defaults = _knob_defaults(name)
  for knob in ("num_turns", "num_steps", "num_branches"):
    if knob in registry.accepted_keywords(name):
      defaults.setdefault(knob, None)
  assert defaults or name == "remax", name

  def trace(knob, value):
    def run(rollouts, kwargs, value):
      return cajax.estimate(name, rollouts, **kwargs, **{knob: value})
    traced = not isinstance(value, (str, type(None)))
    fn = functools.partial(run, value=value) if not traced else run
    args = (rollouts, kwargs) + ((jnp.asarray(value),) if traced else ())
    return jax.eval_shape(fn, *args)

  for knob, default in defaults.items():
    for value in _probes(name, knob, default):
      with pytest.raises(ValueError) as error:
        jax.eval_shape(lambda r, k, v=value, n=knob: cajax.estimate(
            name, r, **k, **{n: v}), rollouts, kwargs)
      message = str(error.value)
      assert knob in message and "must be" in message, (name, knob, message)
      if not isinstance(value, float) or not np.isnan(value):
        assert repr(value) in message or str(value) in message, (
            name, knob, value, message)
    if default is None or isinstance(default, str):
      continue
    try:  # a traced value of a scalar knob
      trace(knob, default)
    except ValueError as error:
      assert (name, knob) not in ARRAY_KNOBS, (name, knob, str(error))
      assert knob in str(error) and "traced" in str(error), (
          name, knob, str(error))
    else:
      assert (name, knob) in ARRAY_KNOBS, f"{name}: traced {knob} accepted"


# --------------------------------------------------------------------------
# error messages name the caller's arguments
# --------------------------------------------------------------------------

# Plain-function inputs by parameter name, built from one synthetic batch.
def _plain_inputs():
  r = testing.make_rollouts(batch=B, length=T, group_size=4,
                            num_steps=STEPS, seed=1,
                            as_numpy=True)
  inputs = {f: getattr(r, f) for f in (
      "token_rewards", "values", "mask", "group_ids", "old_logprobs",
      "ref_logprobs", "sum_pi_squared", "baseline_scores", "step_rewards",
      "step_ids", "step_mask", "reward_components", "self_certainty",
      "token_logits")}
  inputs.update(
      num_groups=2, prm_logprobs=r.logprobs, rm_scores=0.1 * r.values,
      outcome_rewards=r.token_rewards.sum(axis=1),
      step_labels=r.step_rewards, sibling_ids=r.group_ids, num_branches=2,
      critique_flags=np.random.default_rng(0).random((B, 4, STEPS)) < 0.3)
  return inputs


def _wrong_shapes(x):
  """A batch one row short, and a trailing axis one entry short (or added
  for 1-D inputs); shapes that are valid for the input are filtered out by
  the caller's expectations."""
  return [x[:-1], x[:, :-1] if np.ndim(x) >= 2 else x[:, None]]


# Shapes that are valid: K = 1 components, a mask of another length for
# gdpo (it reads only rows), N − 1 critiques.
_VALID_SHAPES = {("gdpo", "reward_components", (B, 1)),
                 ("gdpo", "mask", (B, T - 1)),
                 ("capo", "critique_flags", (B, 3, STEPS))}


@pytest.mark.parametrize("name", [n for n in NAMES
                                  if registry.plain_function(n)])
def test_shape_errors_name_the_callers_argument(name):
  function = registry.plain_function(name)
  inputs = _plain_inputs()
  params = [p.name for p in inspect.signature(function).parameters.values()
            if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is p.empty]
  args = {p: inputs[p] for p in params}
  extra = {"num_steps": STEPS} if name == "istar" else {}
  for param in params:
    if np.ndim(args[param]) == 0:
      continue
    for wrong in _wrong_shapes(args[param]):
      if (name, param, wrong.shape) in _VALID_SHAPES:
        continue
      with pytest.raises(ValueError, match=param):
        jax.eval_shape(lambda w=wrong, p=param: function(
            **{**args, p: w}, **extra))


def test_registry_shape_errors_name_the_rollouts_field():
  rollouts = testing.make_rollouts(batch=B, length=T,
                                   group_size=4, num_steps=STEPS,
                                   seed=1, as_numpy=True)
  for name in NAMES:
    kwargs = cajax.example_inputs(name, rollouts, 0)
    for field in registry.required_fields(name):
      for wrong in _wrong_shapes(np.asarray(getattr(rollouts, field))):
        if field == "reward_components" and wrong.shape == (B, 1):
          continue
        with pytest.raises(ValueError, match=field):
          jax.eval_shape(lambda r, w=wrong, f=field: cajax.estimate(
              name, r.replace(**{f: w}), **kwargs), rollouts)


@pytest.mark.parametrize("loss", sorted(cajax.losses.POLICY_LOSSES))
def test_policy_loss_shape_errors_name_the_argument(loss):
  logprobs = np.zeros((4, 5), np.float32)
  mask = np.ones((4, 5), bool)
  args = dict(logprobs=logprobs, old_logprobs=logprobs,
              advantages=logprobs, mask=mask)
  for param in args:
    for wrong in _wrong_shapes(args[param]) + [args[param][:, 0]]:
      if param == "advantages" and wrong.shape == (4,):
        continue  # per-row advantages are broadcast over the tokens
      with pytest.raises(ValueError, match=param):
        cajax.losses.policy_loss(loss, **{**args, param: wrong})


def test_field_groups_cover_rollouts():
  fields = {f.name for f in dataclasses.fields(cajax.Rollouts)}
  groups = types.FLOAT_FIELDS + types.LAYOUT_FIELDS + ("num_groups",)
  assert sorted(groups) == sorted(fields)
  assert set(types.SCORE_FIELDS) <= set(types.FLOAT_FIELDS)


# --------------------------------------------------------------------------
# compiled executables do not accumulate across configurations
# --------------------------------------------------------------------------


def _live_executables() -> int:
  gc.collect()
  return len(backend.get_backend().live_executables())


def test_compiled_estimators_are_freed_between_configurations():
  """Each live executable holds memory maps (about 12 on XLA:CPU) and Linux
  allows a process 65,530 (docs/performance.md): compiling many estimator
  configurations in one process must not keep them all alive. A dropped
  jitted estimator frees its executable (cajax caches none), and
  `jax.clear_caches()` (what the benchmarks call between configurations)
  frees those of jitted functions still referenced."""
  names = ("remax", "reinforce_plus_plus", "slate", "r3l")  # quick ones
  rollouts = testing.make_rollouts(batch=4, length=4, group_size=2,
                                   num_steps=2, seed=0)
  inputs = {name: cajax.example_inputs(name, rollouts, 0) for name in names}
  options = {"xla_backend_optimization_level": 0}

  def compiled(name):
    step = jax.jit(functools.partial(cajax.estimate, name),
                   compiler_options=options)
    jax.block_until_ready(step(rollouts, **inputs[name]))
    return step

  jax.clear_caches()
  baseline = _live_executables()
  for name in names:
    compiled(name)
    assert _live_executables() <= baseline + 1, name
  held = [compiled(name) for name in names]
  assert _live_executables() >= baseline + len(names)  # the count sees them
  jax.clear_caches()
  assert _live_executables() <= baseline
  del held
