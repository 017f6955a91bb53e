"""Tests of cajax/losses/policy.py: `make_policy_loss` and the checks of
every loss hyperparameter (and of `aggregate`'s) where it enters."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cajax import losses

_INPUTS = ("logprobs", "old_logprobs", "advantages", "mask")
# Values outside each setting's domain (beyond strings, NaN and tracers).
_OUT_OF_DOMAIN = {
    "clip_low": (-0.1, 1.0), "clip_high": (-0.1,), "clip_ratio_c": (1.0,),
    "log_ratio_clip": (0.0,), "log_ratio_max": (0.0,), "ratio_cap": (0.0,),
    "tau_pos": (0.0,), "tau_neg": (-1.0,), "tau": (0.0,), "beta": (0.0,),
    "clip_cov_ratio": (0.0, 1.5), "kl_cov_ratio": (0.0, 1.5),
    "ppo_kl_coef": (-0.5,),
}
# The domain text each setting's error must show.
_DOMAIN = {
    "clip_low": "in [0, 1)", "clip_cov_ratio": "in (0, 1]",
    "kl_cov_ratio": "in (0, 1]", "clip_ratio_c": "> 1",
    "ppo_kl_coef": ">= 0", "clip_high": ">= 0",
}


def _batch(seed=0, shape=(3, 5)):
  rng = np.random.default_rng(seed)
  lp = rng.normal(-1.0, 0.3, shape).astype(np.float32)
  old = lp + rng.normal(0.0, 0.2, shape).astype(np.float32)
  adv = rng.normal(size=shape).astype(np.float32)
  mask = rng.random(shape) < 0.8
  return lp, old, adv, mask


def _numeric_settings(name):
  """{setting: default} of every float setting of the loss `name`."""
  fn = losses.POLICY_LOSSES[name]
  return {p.name: p.default
          for p in inspect.signature(fn).parameters.values()
          if p.name in _OUT_OF_DOMAIN or (isinstance(p.default, float)
                                         and p.name not in _INPUTS)}


@pytest.mark.parametrize("name", losses.policy_loss_names())
def test_every_loss_binds_alone_with_its_own_defaults(name):
  loss = losses.make_policy_loss(name)
  fn = losses.POLICY_LOSSES[name]
  defaults = {p.name: p.default
              for p in inspect.signature(fn).parameters.values()
              if p.name not in _INPUTS + ("rng", "return_metrics")}
  assert dict(loss.settings) == defaults
  lp, old, adv, mask = _batch(1)
  key = jax.random.key(3)
  extra = {"rng": key} if loss.takes_rng else {}
  want, want_metrics = fn(lp, old, adv, mask, return_metrics=True, **extra)
  got, metrics = jax.jit(functools.partial(loss, return_metrics=True))(
      lp, old, adv, mask, rng=key)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert metrics.keys() == want_metrics.keys()
  assert loss.takes_rng == (name == "clip_cov")


def test_bound_loss_is_hashable_and_equal_by_value():
  a = losses.make_policy_loss("vanilla", clip_high=0.28)
  b = losses.make_policy_loss("vanilla", clip_high=0.28, clip_low=0.2)
  c = losses.make_policy_loss("vanilla", clip_high=0.3)
  assert a == b and hash(a) == hash(b) and a != c
  assert {a: 1}[b] == 1
  with pytest.raises(TypeError):
    a.settings["clip_high"] = 0.5  # read-only
  with pytest.raises(AttributeError):
    a.name = "gpg"  # pylint: disable=attribute-defined-outside-init
  # A static argument of jit: equal losses share one compilation.
  calls = []

  @functools.partial(jax.jit, static_argnums=0)
  def run(loss, lp, old, adv, mask):
    calls.append(1)
    return loss(lp, old, adv, mask)

  batch = _batch(2)
  run(a, *batch)
  run(b, *batch)
  assert len(calls) == 1
  np.testing.assert_array_equal(
      run(a, *batch), losses.policy_loss("vanilla", *batch, clip_high=0.28))


def test_unknown_names_and_settings_name_the_closest():
  with pytest.raises(ValueError, match=r"policy_loss: unknown policy loss "
                     r"'vanila' \(did you mean 'vanilla'\?\)"):
    losses.make_policy_loss("vanila")
  with pytest.raises(ValueError, match=r"'gpg' does not take 'clip_low'; it "
                     r"takes: no settings"):
    losses.make_policy_loss("gpg", clip_low=0.2)
  with pytest.raises(ValueError, match=r"'clip_hig' \(did you mean "
                     r"'clip_high'\?\)"):
    losses.make_policy_loss("vanilla", clip_hig=0.2)
  with pytest.raises(ValueError, match=r"does not take 'rng'"):
    losses.make_policy_loss("clip_cov", rng=jax.random.key(0))
  with pytest.raises(ValueError, match="static Python value"):
    losses.make_policy_loss("vanilla", clip_high=[0.2])


@pytest.mark.parametrize("name", losses.policy_loss_names())
def test_every_setting_is_checked_where_it_enters(name):
  """A string, NaN, a traced value or an out-of-domain value of any setting
  raises ValueError naming the setting, its domain and the value, both in
  make_policy_loss and in a direct call (eager and under jit)."""
  lp, old, adv, mask = _batch(4)
  fn = losses.POLICY_LOSSES[name]
  extra = {"rng": jax.random.key(0)} if name == "clip_cov" else {}
  for setting, default in _numeric_settings(name).items():
    bad = list(_OUT_OF_DOMAIN.get(setting, ())) + [
        str(default if default is not None else 1.0), float("nan")]
    for value in bad:
      with pytest.raises(ValueError) as error:
        losses.make_policy_loss(name, **{setting: value})
      message = str(error.value)
      assert message.startswith(f"{setting} must be"), message
      assert setting not in _DOMAIN or _DOMAIN[setting] in message, message
      if not (isinstance(value, float) and np.isnan(value)):
        assert repr(value) in message, message
      with pytest.raises(ValueError, match=f"^{setting} must be"):
        fn(lp, old, adv, mask, **{setting: value}, **extra)
    # A traced setting names itself and says how to pass it.
    with pytest.raises(ValueError, match=f"^{setting} must be.*traced"):
      jax.jit(lambda v, s=setting: fn(lp, old, adv, mask, **{s: v},
                                      **extra))(jnp.float32(0.5))


def test_aggregate_and_value_settings_are_checked():
  per_token = np.ones((2, 3), np.float32)
  mask = np.ones((2, 3), bool)
  for value in ("3", 0.0, float("nan")):
    with pytest.raises(ValueError, match="^loss_scale_factor must be"):
      losses.aggregate(per_token, mask, "token-mean",
                       loss_scale_factor=value)
  with pytest.raises(ValueError, match="^loss_scale_factor must be.*traced"):
    jax.jit(lambda c: losses.aggregate(
        per_token, mask, "seq-mean-token-sum-norm", loss_scale_factor=c))(
            jnp.float32(2.0))
  with pytest.raises(ValueError, match="^num_micro_batches must be.*'2'"):
    losses.aggregate(per_token, mask, "token-sum", num_micro_batches="2")
  with pytest.raises(ValueError, match=r"^mode: unknown aggregation mode "
                     r"'token_mean' \(did you mean 'token-mean'\?\)"):
    losses.aggregate(per_token, mask, "token_mean")
  with pytest.raises(ValueError, match=r"^mode: unknown aggregation mode 1;"):
    losses.aggregate(per_token, mask, 1)
  with pytest.raises(ValueError, match="^clip must be.*'0.5'"):
    losses.value_loss(per_token, per_token, per_token, mask, clip="0.5")
  with pytest.raises(ValueError, match=r"^kind: unknown KL kind 'k3 '"):
    losses.kl_penalty("k3 ", per_token, per_token)
  with pytest.raises(ValueError, match=r"^kind: unknown KL kind \['k3'\]"):
    losses.kl_penalty(["k3"], per_token, per_token)


def test_registries_list_the_contract_names():
  assert losses.policy_loss_names() == (
      "vanilla", "gspo", "gspo_token", "cispo", "sapo", "gpg", "geo_mean",
      "clip_cov", "kl_cov", "dro", "opmd")
  assert losses.AGGREGATION_MODES == losses.AGGREGATORS.names() == (
      "token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum",
      "seq-mean-token-sum-norm")
  assert losses.KL_KINDS == losses.KL_PENALTIES.names()
