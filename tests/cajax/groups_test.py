"""Tests of the group-id range rule (cajax/groups.py) in the primitives and
in every registered estimator with groups.

Concrete ids outside [0, num_groups) raise; traced ids make their row
unscorable: advantage 0, and every other row is what the batch without that
row gives.
"""

import functools

import hypothesis
from hypothesis import strategies as st
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np
import pytest

import cajax
from cajax import groups
from cajax import registry
from cajax import testing

B, T, STEPS, GROUP_SIZE = 8, 8, 3, 4
NUM_GROUPS = B // GROUP_SIZE
# Method-specific inputs that are group ids themselves (slate's branch
# points), with the static count that goes with them.
ID_INPUTS = {"sibling_ids": "num_branches"}
GROUPED = tuple(
    name for name in cajax.estimator_names()
    if "group_ids" in registry.required_fields(name)
    or set(ID_INPUTS) & set(registry.accepted_keywords(name)))


def test_every_estimator_but_three_has_groups():
  assert set(cajax.estimator_names()) - set(GROUPED) == {
      "gae", "reinforce_plus_plus", "remax"}


def test_in_range():
  ids = np.array([[0, 1, 2], [-1, 3, 1]])
  np.testing.assert_array_equal(groups.in_range(jnp.asarray(ids), 2),
                                (ids >= 0) & (ids < 2))


def test_concrete_out_of_range_ids_still_raise():
  scores = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
  for bad in (2, -1):
    ids = np.array([0, 0, 1, bad])
    with pytest.raises(ValueError, match=rf"group_ids must lie in \[0, "
                       rf"num_groups=2\), got \[{bad}\]"):
      cajax.group_normalize(scores, ids, 2)
    with pytest.raises(ValueError, match=r"group_ids must lie in"):
      cajax.grpo(np.tile(scores[:, None], (1, 2)), np.ones((4, 2), bool),
                 ids, 2)


def _reference_normalize(values, ids, num_groups):
  """GRPO std normalisation in float64 with loops; out-of-range ids give 0
  and count in no group."""
  out = np.zeros(len(values))
  for i, g in enumerate(ids):
    if not 0 <= g < num_groups:
      continue
    members = [values[j] for j in range(len(values)) if ids[j] == g]
    if len(members) == 1:
      out[i] = values[i] / (1 + 1e-6)
    elif max(members) == min(members):
      out[i] = 0.0
    else:
      out[i] = (values[i] - np.mean(members)) / (np.std(members, ddof=1)
                                                   + 1e-6)
  return out


def test_traced_out_of_range_ids_are_left_out_of_the_primitives():
  # The example: ids [0, 0, 1, 2] with two groups once gave the
  # last row group 1's statistics (its raw score, 1).
  values = np.array([1.0, 0.0, 1.0, 1.0, 0.0], np.float32)
  ids = np.array([0, 0, 1, 2, -3], np.int32)
  normalize = jax.jit(functools.partial(cajax.group_normalize, num_groups=2))
  np.testing.assert_allclose(normalize(values, ids),
                             _reference_normalize(values, ids, 2), atol=1e-6)
  np.testing.assert_array_equal(normalize(values, ids)[3:], 0.0)
  moments = jax.jit(functools.partial(cajax.group_moments,
                                      num_groups=2))(values, ids)
  np.testing.assert_allclose(moments.count, [2, 1])
  np.testing.assert_allclose(moments.mean, [0.5, 1.0])
  np.testing.assert_allclose(
      jax.jit(functools.partial(cajax.group_sum, num_groups=2))(values, ids),
      [1.0, 1.0])
  np.testing.assert_allclose(
      jax.jit(functools.partial(cajax.group_max, num_groups=2))(
          values, np.array([0, 0, 1, 2, -1], np.int32)), [1.0, 1.0])


def test_checkify_reports_traced_out_of_range_ids():
  values = jnp.array([1.0, 0.0, 1.0, 1.0])
  checked = jax.jit(checkify.checkify(
      functools.partial(cajax.group_normalize, num_groups=2)))
  error, _ = checked(values, jnp.array([0, 0, 1, 1]))
  error.throw()  # in range: no error
  error, _ = checked(values, jnp.array([0, 0, 1, 5]))
  with pytest.raises(checkify.JaxRuntimeError,
                     match=r"group_ids must lie in \[0, num_groups=2\), got "
                     r"5 at index 3"):
    error.throw()


# --------------------------------------------------------------------------
# every estimator with groups: an out-of-range row changes no other row
# --------------------------------------------------------------------------


def _insert_row(tree, position, source, batch):
  """Inserts a copy of row `source` at `position` in every [batch, ...]
  leaf."""
  def insert(x):
    if np.ndim(x) and np.shape(x)[0] == batch:
      x = np.asarray(x)
      return jnp.asarray(np.insert(x, position, x[source], axis=0))
    return x
  return jax.tree_util.tree_map(insert, tree)


def _with_bad_id(rollouts, kwargs, position, bad):
  """The batch with row `position`'s group (and sibling) id set to `bad`."""
  ids = np.array(rollouts.group_ids)
  ids[position] = bad
  kwargs = dict(kwargs)
  for key in ID_INPUTS:
    if key in kwargs:
      sibling = np.array(kwargs[key])
      sibling[position] = bad
      kwargs[key] = jnp.asarray(sibling)
  return rollouts.replace(group_ids=jnp.asarray(ids)), kwargs


_COMPILED = {}


def _run(name, extended, base, statics):
  """Outputs on the batch with the extra row and on the batch without it,
  from one compile per estimator (every example has the same shapes)."""
  if name not in _COMPILED:
    def run(extended, base):
      return tuple(cajax.estimate(name, r, **kw, **dict(statics))
                   for r, kw in (extended, base))
    _COMPILED[name] = jax.jit(run).lower(extended, base).compile(
        compiler_options={"xla_backend_optimization_level": 0})
  return _COMPILED[name](extended, base)


def _base(name):
  rollouts = testing.make_rollouts(batch=B, length=T,
                                   group_size=GROUP_SIZE, num_steps=STEPS,
                                   seed=5)
  kwargs = cajax.example_inputs(name, rollouts, np.random.default_rng(1))
  statics = tuple((count, NUM_GROUPS) for key, count in ID_INPUTS.items()
                  if key in kwargs)
  return rollouts, kwargs, statics


def _compare(name, extended, base, position):
  """Row `position` of `extended` is 0; the others equal `base`."""
  for field in ("advantages", "returns"):
    got = np.asarray(getattr(extended, field))
    want = np.asarray(getattr(base, field))
    assert np.all(got[position] == 0), f"{name}.{field}: the row is not 0"
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(np.delete(got, position, axis=0), want,
                               rtol=1e-5, atol=1e-5 * scale,
                               err_msg=f"{name}.{field}")
  for key, value in base.info.items():
    got = np.asarray(extended.info[key])
    if got.ndim and got.shape[0] == B + 1:
      got = np.delete(got, position, axis=0)
    np.testing.assert_allclose(got, np.asarray(value), rtol=1e-5, atol=1e-5,
                               err_msg=f"{name}.info[{key!r}]")


@pytest.mark.parametrize("name", GROUPED)
@hypothesis.settings(max_examples=6)
@hypothesis.given(position=st.integers(0, B), source=st.integers(0, B - 1),
                  bad=st.one_of(st.integers(-40, -1),
                                st.integers(NUM_GROUPS, NUM_GROUPS + 40)))
def test_out_of_range_row_changes_no_other_row(name, position, source, bad):
  """Under jit, a row whose group id is out of range gets 0 and leaves
  every other output (advantages, returns, info, batch statistics
  included) as the batch without that row gives them."""
  rollouts, kwargs, statics = _base(name)
  extended = _with_bad_id(
      *_insert_row((rollouts, kwargs), position, source, B), position, bad)
  out_extended, out_base = _run(name, extended, (rollouts, kwargs), statics)
  _compare(name, out_extended, out_base, position)
