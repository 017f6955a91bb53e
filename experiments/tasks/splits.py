"""Held-out evaluation problems, disjoint from training by construction.

Every task splits its problem space in two by a salted 64-bit hash of each
problem's identity (a chain's text, a JSONL line's question): problems in
the "eval" split are never drawn for warm-start demonstrations or RL
prompts, and evaluations draw only from it. The split is a property of the
problem, not of the sampler or the seed, so no seed, step or run can leak an
evaluation problem into training.

* Generated tasks (chain arithmetic, calculator) hold out the problems
  whose hash falls in the lowest `EVAL_FRACTION` of the hash range, and
  sample a split by rejection (the split is a uniform random subset of the
  space, so the difficulty mix stays the same).
* A file of problems (`jsonl_math`) holds out the ⌈EVAL_FRACTION · N⌉ of
  its N lines with the smallest hashes (at least one when N ≥ 2, never all),
  so both splits are non-empty whenever the file can be split.
"""

import hashlib
import math
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "EVAL_FRACTION", "SPLITS", "check_split", "partition", "sample",
    "split_hash", "split_of",
]

SPLITS = ("train", "eval")
# Share of the problem space held out for evaluation.
EVAL_FRACTION = 0.125
_SALT = b"cajax-split"
_TRIES_PER_PROBLEM = 1000


def check_split(split: str) -> str:
  """Returns `split` after checking it is one of `SPLITS`."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  return split


def split_hash(identity: str) -> int:
  """A salted 64-bit hash of a problem's identity, stable across runs."""
  digest = hashlib.blake2b(identity.encode(), digest_size=8, person=_SALT)
  return int.from_bytes(digest.digest(), "little")


def split_of(identity: str) -> str:
  """The split of a generated problem: "eval" for the lowest
  `EVAL_FRACTION` of the hash range, else "train"."""
  return ("eval" if split_hash(identity) < EVAL_FRACTION * 2.0**64
          else "train")


def sample(draw: Callable[[np.random.Generator], object],
           identity: Callable[[object], str], rng: np.random.Generator,
           n: int, split: str) -> list:
  """n draws of `draw(rng)` whose identity lies in `split` (rejection).

  Raises:
    ValueError: an unknown split, or no draw in `split` after many tries
      (a problem space too small to hold problems in both splits).
  """
  check_split(split)
  out, tries = [], 0
  while len(out) < n:
    item = draw(rng)
    tries += 1
    if split_of(identity(item)) == split:
      out.append(item)
    elif tries > _TRIES_PER_PROBLEM * (len(out) + 1):
      raise ValueError(
          f"no {split!r} problem in {tries} draws: the problem space is too "
          f"small to hold out {EVAL_FRACTION:.1%} of it for evaluation; "
          f"widen it (more operations, operators or a larger modulus).")
  return out


def partition(identities: Sequence[str]) -> dict[str, list[int]]:
  """{split: indices} of a finite list of problems (a file's lines).

  The ⌈EVAL_FRACTION · N⌉ smallest hashes are held out, at least one when
  N ≥ 2 and never all; identical identities (a repeated question) fall in
  the same split.
  """
  keys = sorted({split_hash(i) for i in identities})
  held = min(max(math.ceil(EVAL_FRACTION * len(keys)), 1), len(keys) - 1)
  held_out = set(keys[:held])
  out = {split: [] for split in SPLITS}
  for index, identity in enumerate(identities):
    out["eval" if split_hash(identity) in held_out else "train"].append(index)
  return out
