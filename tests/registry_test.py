"""Tests of cajax/registry.py, cajax/validation.py, the Rollouts pytree and
the generic contract every registered estimator must meet.

The generic contract test runs every registered name on synthetic
rollouts, so estimators registered later are picked up automatically.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cajax
from cajax import outcome
from cajax import registry
from experiments import synthetic_rollouts

NAMES = cajax.estimator_names()
OUTCOME_NAMES = ("drgrpo", "gdpo", "gpg", "grpo", "grpo_passk", "opo",
                 "reinforce_plus_plus_baseline", "rloo")


# The names DESIGN.md §3 promises to users.
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
  rollouts = synthetic_rollouts.make_rollouts(batch=8, length=8,
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
  return synthetic_rollouts.make_rollouts(batch=8, length=8, group_size=4,
                                          num_steps=3, seed=2,
                                          as_numpy=True)


def test_validate_passes_good_batches():
  rollouts = good_numpy_rollouts()
  assert cajax.validate(rollouts) is rollouts
  cajax.validate(synthetic_rollouts.make_rollouts(seed=3))
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

B, T, PAD = 8, 8, 3
PAD_FILL = 0.37  # padded values of float fields other than token_rewards


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


def _check_contract(name, out, mask):
  for field in ("advantages", "returns"):
    value = np.asarray(getattr(out, field))
    assert value.shape == (B, T) and value.dtype == np.float32, (
        f"{name}.{field}: {value.shape} {value.dtype}")
    assert np.all(np.isfinite(value)), f"{name}.{field} not finite"
    assert np.all(value[~mask] == 0.0), f"{name}.{field} nonzero at mask"


@pytest.mark.parametrize("name", NAMES)
def test_estimator_contract(name):
  rollouts = synthetic_rollouts.make_rollouts(batch=B, length=T,
                                              group_size=4, num_steps=3,
                                              seed=1)
  kwargs = cajax.example_inputs(name, rollouts, np.random.default_rng(0))
  padded_kwargs = _pad_kwargs(kwargs)

  def run(base, low, wide):
    return (cajax.estimate(name, base, **kwargs),
            cajax.estimate(name, low, **kwargs),
            cajax.estimate(name, wide, **padded_kwargs))

  inputs = (rollouts, _bf16(rollouts), _padded(rollouts))
  # One jit per estimator; XLA's backend optimisation is turned down because
  # this test checks values, not speed, and it compiles every estimator.
  compiled = jax.jit(run).lower(*inputs).compile(
      compiler_options={"xla_backend_optimization_level": 0})
  out, out_bf16, out_wide = compiled(*inputs)
  mask = np.asarray(rollouts.mask)
  _check_contract(name, out, mask)
  # A stub returning zeros would pass every check above.
  assert np.any(np.asarray(out.advantages)[mask] != 0), name
  _check_contract(f"{name}[bf16]", out_bf16, mask)
  for field in ("advantages", "returns"):
    base = np.asarray(getattr(out, field))
    scale = max(1.0, float(np.max(np.abs(base))))
    np.testing.assert_allclose(np.asarray(getattr(out_bf16, field)), base,
                               rtol=0, atol=5e-2 * scale,
                               err_msg=f"{name}.{field} bf16")
    wide = np.asarray(getattr(out_wide, field))
    assert wide.shape == (B, T + PAD), f"{name}.{field} padded shape"
    np.testing.assert_allclose(wide[:, :T], base, rtol=1e-5,
                               atol=1e-5 * scale,
                               err_msg=f"{name}.{field} padding")
    np.testing.assert_array_equal(wide[:, T:], 0.0,
                                  err_msg=f"{name}.{field} padding")
