"""Pre-registration the code enforces: the plan is hashed before any run.

`register` writes `preregistration.json` into an ablation's output folder
before its runs start: the plan (claims, metrics, reductions, directions,
smallest effects, the descriptive readings, α, correction, test, power and
version; the arms, base, common and size overrides; seeds and warm starts;
the command line's config overrides and the identity of a `model_path`
checkpoint), its SHA-256, the git
commit, the time and the machine. Re-running with the same plan resumes.
Once runs have started, a different plan is refused, by the runner before
it trains and by the report before it gives verdicts, naming what changed:
re-run in a new folder, or raise the ablation's `version` (which moves its
runs to a new folder).
"""

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import subprocess

import jax
import jaxlib

from experiments.ablation import spec
from experiments.models import hf

__all__ = [
    "FILE", "PreregistrationError", "check", "commit", "digest", "environment",
    "plan", "processor", "register",
]

FILE = "preregistration.json"


class PreregistrationError(RuntimeError):
  """The ablation's plan differs from the one its runs started under."""


def plan(ablation: spec.Ablation, size: str, seeds: int,
         overrides: dict | None = None) -> dict:
  """Everything the verdicts depend on that must be fixed before the runs
  (the cost model's timing is not: it plans, it does not decide).

  Command-line `overrides` join the plan when there are any, and a
  `model_path` checkpoint's identity with them (`hf.checkpoint_identity`),
  so runs on different models, or on a checkpoint changed in place, never
  share a registration.
  """
  chosen = spec.check_size(ablation, size)
  extra = {}
  if overrides:
    extra["overrides"] = dict(overrides)
  if (overrides or {}).get("model_path"):
    extra["model"] = hf.checkpoint_identity(overrides["model_path"])
  return {
      **extra,
      "ablation": ablation.name, "version": ablation.version,
      "claims": [dataclasses.asdict(c) for c in ablation.claims],
      "readings": [dataclasses.asdict(r) for r in ablation.readings],
      "alpha": ablation.alpha, "correction": ablation.correction,
      "test": ablation.test, "power": ablation.power,
      "arms": ablation.arms, "base": ablation.base,
      "common": ablation.common, "size": size,
      "size_overrides": chosen.overrides, "seeds": seeds,
      "warm_starts": chosen.warm_starts,
  }


def digest(registered: dict) -> str:
  """SHA-256 of the plan's canonical JSON."""
  text = json.dumps(registered, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def commit() -> str:
  """The repository's git commit, "+dirty" with uncommitted changes,
  "unknown" outside git."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root,
                           check=True, capture_output=True,
                           text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + ("+dirty" if dirty else "")


def processor() -> str:
  """The CPU model from /proc/cpuinfo, else what `platform` knows."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment(xla_flags: str) -> dict:
  """What the numbers depend on: the commit, CPU model, cores, jax and
  jaxlib versions, the backend and the runs' XLA flags."""
  return {"commit": commit(), "cpu": processor(), "cores": os.cpu_count(),
          "jax": jax.__version__, "jaxlib": jaxlib.__version__,
          "backend": jax.default_backend(), "xla_flags": xla_flags,
          "python": platform.python_version()}


def _changes(old, new, path: str = "") -> list[str]:
  """Dotted paths where two JSON-like values differ."""
  if isinstance(old, dict) and isinstance(new, dict):
    return [c for k in sorted(set(old) | set(new), key=str)
            for c in _changes(old.get(k), new.get(k), f"{path}.{k}"
                              if path else str(k))]
  if (isinstance(old, list) and isinstance(new, list)
      and len(old) == len(new)):
    return [c for i, (a, b) in enumerate(zip(old, new))
            for c in _changes(a, b, f"{path}[{i}]")]
  return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def _canonical(value):
  return json.loads(json.dumps(value, default=str))


def check(outdir: str, registered: dict) -> dict:
  """The stored registration if it matches `registered`.

  Raises:
    PreregistrationError: none is stored, or it differs (what changed is
      listed).
  """
  path = os.path.join(outdir, FILE)
  if not os.path.exists(path):
    raise PreregistrationError(f"{path} is missing: runs without a "
                               f"pre-registration get no verdicts.")
  with open(path, encoding="utf-8") as f:
    stored = json.load(f)
  if stored["hash"] != digest(registered):
    changes = _changes(stored["plan"], _canonical(registered))
    raise PreregistrationError(
        f"{stored['plan']['ablation']}'s plan changed after its runs "
        f"started (registered {stored['registered_at']} at commit "
        f"{stored['commit']}): " + "; ".join(changes) + ". Re-run in a new "
        "--workdir, or raise the ablation's `version` and record why in "
        "docs/ablations.md's changelog.")
  return stored


def register(outdir: str, registered: dict, run_dirs, xla_flags: str) -> dict:
  """Writes the registration before any run starts, or checks the stored
  one; returns it.

  Raises:
    PreregistrationError: runs exist without a registration, or the
      stored plan differs from `registered`.
  """
  if os.path.exists(os.path.join(outdir, FILE)):
    return check(outdir, registered)
  started = [d for d in run_dirs if os.path.isdir(d) and os.listdir(d)]
  if started:
    raise PreregistrationError(
        f"{len(started)} run folder(s) under {outdir} (e.g. {started[0]}) "
        f"started before any pre-registration; use a new --workdir.")
  stored = {"hash": digest(registered), "commit": commit(),
            "registered_at": datetime.datetime.now(
                datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(xla_flags),
            "plan": _canonical(registered)}
  os.makedirs(outdir, exist_ok=True)
  with open(os.path.join(outdir, FILE), "w", encoding="utf-8") as f:
    json.dump(stored, f, indent=1, sort_keys=True)
  return stored
