"""Tests of cajax/validation.py beyond the batch checks of registry_test.py:
`validate` under jit, estimator-aware checks (step layouts that defeat an
estimator's settings), `checkify_estimate`, and the step-order audit of
every estimator that reads `step_ids`."""

import functools

import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np
import pytest

import cajax
from cajax import registry
from cajax import testing
from cajax import validation

STEP_END = ("pure", "sum_form_prm")


def _digits(step_tokens, rows=4, steps=5, token_rewards=True):
  """Rollouts of `steps` steps of `step_tokens` tokens per row (the digit
  task of issue 24 has one-token steps), EOS in the last step."""
  length = steps * step_tokens
  ids = np.repeat(np.arange(steps), step_tokens)[None, :].repeat(rows, 0)
  rng = np.random.default_rng(0)
  rewards = np.zeros((rows, length), np.float32)
  rewards[:, -1] = rng.integers(0, 2, size=rows)
  return cajax.Rollouts(
      mask=np.ones((rows, length), bool),
      token_rewards=rewards if token_rewards else None,
      group_ids=np.repeat(np.arange(rows // 2), 2).astype(np.int32),
      num_groups=rows // 2, step_ids=ids.astype(np.int32),
      step_rewards=rng.choice([-1.0, 1.0], size=(rows, steps)).astype(
          np.float32),
      step_mask=np.ones((rows, steps), bool),
      logprobs=rng.normal(-1.0, 0.3, size=(rows, length)).astype(np.float32),
      old_logprobs=np.full((rows, length), -1.0, np.float32))


def _nonzero_fraction(name, rollouts, **settings):
  out = jax.jit(functools.partial(cajax.estimate, name, **settings))(rollouts)
  mask = np.asarray(rollouts.mask)
  return np.mean(np.asarray(out.advantages)[mask] != 0)


# --------------------------------------------------------------------------
# validate: host only
# --------------------------------------------------------------------------


def test_validate_under_jit_says_it_is_a_host_side_check():
  rollouts = jax.tree_util.tree_map(jnp.asarray, _digits(2))
  stacked = jax.tree_util.tree_map(lambda x: x[None], rollouts)
  for traced, batch in (
      (jax.jit(cajax.validate), rollouts),
      (jax.vmap(cajax.validate), stacked),
      (jax.jit(functools.partial(validation.estimator_problems, "pure")),
       rollouts)):
    with pytest.raises(ValueError, match="is a host-side check; call it "
                       "outside jit"):
      traced(batch)


def test_validate_needs_rollouts_and_an_estimator_for_settings():
  with pytest.raises(ValueError, match="takes a cajax.Rollouts, got dict"):
    cajax.validate({"mask": np.ones((2, 2), bool)})
  with pytest.raises(ValueError, match=r"settings \['mask_step_end'\] "
                     r"without estimator="):
    cajax.validate(_digits(2), mask_step_end=False)


# --------------------------------------------------------------------------
# step layouts that defeat an estimator's settings (issue 24)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", STEP_END)
def test_one_token_steps_are_flagged_naming_mask_step_end(name):
  one = _digits(1)
  with pytest.raises(ValueError, match=rf"'{name}' with mask_step_end=True"
                     r".*1\.0 valid tokens per step.*only 0% .*set "
                     r"mask_step_end=False"):
    cajax.validate(one, estimator=name)
  # The flag is true to the estimator: almost every advantage is 0 ...
  assert _nonzero_fraction(name, one) < validation.MIN_KEPT_FRACTION
  # ... and the remedies it names work.
  assert not validation.estimator_problems(name, one, mask_step_end=False)
  assert _nonzero_fraction(name, one, mask_step_end=False) > 0.5
  two = _digits(2)  # a digit and a separator per step
  assert not validation.estimator_problems(name, two)
  assert _nonzero_fraction(name, two) >= validation.MIN_KEPT_FRACTION
  cajax.validate(two, estimator=name)


def test_estimators_without_step_end_masking_accept_one_token_steps():
  one = _digits(1)
  for name in ("process_grpo", "tp_grpo", "istar", "capo", "grpo"):
    assert not validation.estimator_problems(name, one), name


STEP_READERS = tuple(name for name in cajax.estimator_names()
                     if "step_ids" in registry.required_fields(name))


@pytest.mark.parametrize("name", STEP_READERS)
def test_a_batch_without_steps_is_flagged(name):
  rollouts = _digits(2)
  no_step_mask = rollouts.replace(step_mask=np.zeros((4, 5), bool))
  if "step_mask" not in registry.required_fields(name):  # istar
    assert not validation.estimator_problems(name, no_step_mask)
    no_step_mask = rollouts.replace(step_ids=np.full((4, 10), 7, np.int32))
  for no_steps in (no_step_mask,
                   rollouts.replace(step_ids=np.full((4, 10), -1,
                                                     np.int32))):
    problems = validation.estimator_problems(name, no_steps)
    assert len(problems) == 1, (name, problems)
    assert ("no valid token of the batch belongs to a valid step"
            in problems[0]), problems
    assert ("leave-one-out verifiable reward alone" in problems[0]) == (
        name in STEP_END), problems


@pytest.mark.parametrize("name", STEP_END)
def test_no_step_rewards_and_no_verifiable_reward_raises(name):
  """"No step rewards" is no valid step in the batch; without a verifiable
  reward too, every advantage would be 0."""
  rollouts = _digits(2, token_rewards=False)
  empty = rollouts.replace(step_mask=np.zeros((4, 5), bool))
  message = rf"{name} has no step rewards and no verifiable reward"
  with pytest.raises(ValueError, match=message + ".*verifiable_rewards is "
                     "None"):
    cajax.estimate(name, empty)
  with pytest.raises(ValueError, match=message + ".*verifiable_reward_coef="
                     "0"):
    cajax.estimate(name, empty, verifiable_rewards=np.ones(4, np.float32),
                   verifiable_reward_coef=0.0)
  function = getattr(cajax, name)
  with pytest.raises(ValueError, match=message):
    function(empty.step_rewards, empty.mask, empty.step_ids, empty.step_mask,
             empty.group_ids, 2)
  with pytest.raises(ValueError, match=r"without a verifiable reward every "
                     r"advantage is 0"):
    cajax.validate(empty, estimator=name)
  # Under jit nothing can raise: all zeros, and checkify reports it;
  # steps alone, or a verifiable reward alone, are enough.
  step = cajax.checkify_estimate(name)
  error, zeros = step(empty)
  np.testing.assert_array_equal(zeros.advantages, 0.0)
  with pytest.raises(checkify.JaxRuntimeError, match=message):
    error.throw()
  step(rollouts)[0].throw()
  error, out = step(empty, verifiable_rewards=jnp.array([1.0, 0.0, 1.0, 1.0]))
  error.throw()
  assert np.any(np.asarray(out.advantages) != 0)


def test_unknown_settings_and_missing_fields_are_reported():
  rollouts = _digits(2)
  problems = validation.estimator_problems("pure", rollouts,
                                           mask_step_ends=False)
  assert problems == [
      "estimator 'pure' got unexpected keyword 'mask_step_ends' (did you "
      "mean 'mask_step_end'?); it accepts: "
      + ", ".join(registry.accepted_keywords("pure")) + "."]
  problems = validation.estimator_problems("gae", rollouts)
  assert problems == ["estimator 'gae' reads rollouts.values, which is "
                      "None."]
  with pytest.raises(ValueError, match="unknown estimator 'puer'"):
    validation.estimator_problems("puer", rollouts)


# --------------------------------------------------------------------------
# checkify_estimate
# --------------------------------------------------------------------------


def test_checkify_estimate_reports_out_of_range_group_ids():
  rollouts = testing.make_rollouts(batch=8, length=6, group_size=4, seed=3)
  step = cajax.checkify_estimate("grpo", eps=1e-4)
  error, out = step(rollouts)
  error.throw()
  expected = jax.jit(functools.partial(cajax.estimate, "grpo", eps=1e-4))(
      rollouts)
  np.testing.assert_array_equal(out.advantages, expected.advantages)
  bad = rollouts.replace(group_ids=rollouts.group_ids.at[6].set(-2))
  error, out = step(bad)
  with pytest.raises(checkify.JaxRuntimeError, match=r"group_ids must lie "
                     r"in \[0, num_groups=2\), got -2 at index 6"):
    error.throw()
  np.testing.assert_array_equal(out.advantages[6], 0.0)  # unscorable


def test_checkify_estimate_names_the_callers_ids_and_takes_inputs():
  rollouts = testing.make_rollouts(batch=4, length=6, group_size=2, seed=3)
  step = cajax.checkify_estimate("slate", num_branches=2)
  error, _ = step(rollouts, sibling_ids=jnp.array([0, 0, 1, 2]))
  with pytest.raises(checkify.JaxRuntimeError, match=r"sibling_ids must lie "
                     r"in \[0, num_branches=2\), got 2 at index 3"):
    error.throw()


def test_checkify_estimate_checks_its_arguments():
  with pytest.raises(ValueError, match="unknown estimator 'grpoo'"):
    cajax.checkify_estimate("grpoo")
  with pytest.raises(ValueError, match=r"'epsilon' \(did you mean 'eps'"):
    cajax.checkify_estimate("grpo", epsilon=1.0)


# --------------------------------------------------------------------------
# step order: every estimator that reads step_ids
# --------------------------------------------------------------------------

# Estimators that read the steps' order in time from their ids; capo looks
# each token's step up by id and takes any order.
ORDERED = ("istar", "process_grpo", "pure", "sum_form_prm", "tp_grpo")


def test_every_step_reader_is_audited():
  assert set(STEP_READERS) == set(ORDERED) | {"capo"}


def _reversed_steps(rollouts, num_steps):
  """Rows numbered last step first: the same steps, ids decreasing."""
  ids = np.asarray(rollouts.step_ids)
  return rollouts.replace(step_ids=jnp.asarray(
      np.where(ids >= 0, num_steps - 1 - ids, -1).astype(np.int32)))


@pytest.mark.parametrize("name", ORDERED)
def test_unordered_steps_raise_eagerly_and_under_checkify(name):
  rollouts = testing.make_rollouts(batch=8, length=8, group_size=4,
                                   num_steps=3, seed=2)
  kwargs = cajax.example_inputs(name, rollouts, np.random.default_rng(0))
  reversed_ = _reversed_steps(rollouts, 3)
  with pytest.raises(ValueError, match=r"step_ids must not decrease along "
                     r"a row.*rows \[0, 1, 3"):
    cajax.estimate(name, reversed_, **kwargs)
  step = cajax.checkify_estimate(name)
  error, _ = step(rollouts, **kwargs)
  error.throw()
  error, out = step(reversed_, **kwargs)
  with pytest.raises(checkify.JaxRuntimeError,
                     match=r"step_ids must not decrease along a row.*row 0 "
                     r"decreases"):
    error.throw()
  # Plain jit cannot check (documented): the result is finite.
  assert np.all(np.isfinite(np.asarray(out.advantages)))


def test_istar_first_step_baseline_no_longer_depends_on_labels_silently():
  # The case: the same steps labelled 2, 1, 0 changed istar's
  # advantages by up to 0.28 without an error.
  token_rewards = np.array([[0, 0, 0, 1.0], [0, 0, 0, 0]], np.float32)
  prm = np.array([[-1.0, -0.5, -1.0, -0.2], [-1.0, -2.0, -1.0, -1.0]],
                 np.float32)
  old = np.full((2, 4), -1.0, np.float32)
  args = (token_rewards, prm, old, np.ones((2, 4), bool))
  with pytest.raises(ValueError, match=r"step_ids.*rows \[0, 1\] decrease"):
    cajax.istar(*args, np.array([[1, 1, 0, 0]] * 2), np.array([0, 0]), 1,
                num_steps=2)
  with pytest.raises(ValueError, match="step_ids must not decrease"):
    cajax.istar_prm_dpo_loss(prm, old, token_rewards, np.ones((2, 4), bool),
                             np.array([[1, 1, 0, 0]] * 2), np.array([0, 0]),
                             1, num_steps=2)
  with pytest.raises(ValueError, match="step_ids must not decrease"):
    cajax.tokens_to_steps(prm, np.array([[1, 1, 0, 0]] * 2), 2)
  cajax.tokens_to_steps(prm, np.array([[1, 1, 0, 0]] * 2), 2, ordered=False)


def test_capo_takes_steps_in_any_order():
  rollouts = testing.make_rollouts(batch=8, length=8, group_size=4,
                                   num_steps=3, seed=2)
  flags = cajax.example_inputs("capo", rollouts,
                               np.random.default_rng(0))["critique_flags"]
  permutation = np.array([2, 0, 1])  # step k is relabelled permutation[k]
  ids = np.asarray(rollouts.step_ids)
  relabelled = rollouts.replace(
      step_ids=jnp.asarray(np.where(ids >= 0, permutation[ids], -1)),
      step_mask=jnp.asarray(np.asarray(rollouts.step_mask)[
          :, np.argsort(permutation)]))
  moved = jnp.asarray(np.asarray(flags)[:, :, np.argsort(permutation)])
  want = cajax.estimate("capo", rollouts, critique_flags=flags)
  got = cajax.estimate("capo", relabelled, critique_flags=moved)
  np.testing.assert_array_equal(got.advantages, want.advantages)
  assert not np.array_equal(relabelled.step_ids, rollouts.step_ids)
