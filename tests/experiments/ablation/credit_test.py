"""The runner refuses arms that are one method under two names."""

import dataclasses

import numpy as np
import pytest

from experiments.ablation import credit
from experiments.ablation import spec


def test_a_duplicated_arm_fails_naming_both_arms():
  base = spec.load("ucas").get_ablation()
  ablation = dataclasses.replace(
      base, arms={**base.arms, "grpo_again": dict(spec.GRPO)},
      claims=base.claims + (spec.Claim("again", "-", "grpo_again", "grpo",
                                       primary=False),))
  with pytest.raises(ValueError, match=r"arms 'grpo' and 'grpo_again' give "
                     r"identical advantages × loss mask"):
    credit.check_distinct(ablation, "smoke")


def test_identical_pairs():
  def arm(values):
    return credit.ArmCredit(np.asarray(values, np.float32), None, None, None,
                            [])
  arms = {"a": arm([[0.0, 1.0]]), "b": arm([[0.0, 1.0]]),
          "c": arm([[0.0, -1.0]]), "d": arm([[0.0, 1.0]])}
  assert credit.identical_pairs(arms) == [("a", "b"), ("a", "d"),
                                          ("b", "d")]
