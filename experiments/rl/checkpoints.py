"""Resumable training state on disk with orbax.

A checkpoint is one orbax step directory under `workdir/checkpoints` holding
three items: `params` (model, and value head when there is one), `opt_state`
(optax state) and `meta` (JSON: step, samples seen, the data cursor, the RNG
key data and the config that wrote it), plus one item per extra state
trained beside the policy (`extra_items`, e.g. iStar's implicit PRM), saved
at the same step. The last `keep` steps are kept.
Restoring places every array straight onto the shardings of an abstract
target, so no full host copy of the parameters is ever made.
"""

import os
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = [
    "CheckpointError", "Checkpointer", "Restored", "key_from_json",
    "key_to_json", "restore_params",
]


class CheckpointError(RuntimeError):
  """A checkpoint directory exists but cannot be used."""


def _abstract(tree):
  """ShapeDtypeStructs (with shardings) of a pytree of arrays."""
  def leaf(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x
  return jax.tree.map(leaf, tree)


class Restored(NamedTuple):
  """What `Checkpointer.restore` returns."""
  params: Any
  opt_state: Any
  meta: dict
  extra: dict  # {extra item name: its state}


class Checkpointer:
  """Saves and restores (params, opt_state, meta, extra items) under one
  directory."""

  def __init__(self, directory: str, *, keep: int = 3,
               save_every: int = 1, extra_items: Sequence[str] = ()):
    self.directory = os.path.abspath(directory)
    self._extra = tuple(extra_items)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every, create=True,
        enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_names=("params", "opt_state", "meta") + self._extra)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def _check_extra(self, extra: Mapping) -> dict:
    if set(extra) != set(self._extra):
      raise ValueError(f"extra items {sorted(extra)} are not this "
                       f"checkpointer's {sorted(self._extra)}.")
    return dict(extra)

  def save(self, step: int, params, opt_state, meta: dict,
           force: bool = False, extra: Mapping | None = None) -> bool:
    """Starts an asynchronous save; `force` ignores `save_every`; `extra`
    holds a state per extra item."""
    extra = self._check_extra(extra or {})
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        meta=ocp.args.JsonSave(_json_safe(meta)),
        **{name: ocp.args.StandardSave(tree) for name, tree in extra.items()})
    return self._manager.save(step, args=args, force=force)

  def restore(self, params_target, opt_state_target,
              step: int | None = None,
              extra_targets: Mapping | None = None) -> Restored:
    """Restores onto the shapes and shardings of the given live targets
    (`extra_targets`: one per extra item).

    Raises:
      CheckpointError: when no step exists or the files do not match the
        targets (a different model or optimizer, or a corrupt directory).
        The directory is left untouched.
    """
    extra_targets = self._check_extra(extra_targets or {})
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}.")
    args = ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(params_target)),
        opt_state=ocp.args.StandardRestore(_abstract(opt_state_target)),
        meta=ocp.args.JsonRestore(),
        **{name: ocp.args.StandardRestore(_abstract(tree))
           for name, tree in extra_targets.items()})
    try:
      out = self._manager.restore(step, args=args)
    except Exception as e:  # orbax raises many types for bad directories.
      raise CheckpointError(
          f"cannot restore step {step} from {self.directory}: "
          f"{type(e).__name__}: {e}. The directory was left as it is; "
          "point --workdir elsewhere to start a new run.") from e
    return Restored(out.params, out.opt_state, out.meta,
                    {name: out[name] for name in self._extra})

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def restore_params(directory: str, params_target, step: int | None = None):
  """Only the `params` item of a checkpoint (warm starts, evaluation)."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise CheckpointError(f"checkpoint directory {directory} does not exist.")
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True,
                                                      create=False),
      item_names=("params", "opt_state", "meta"))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f"no checkpoint step in {directory}.")
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(params_target))))
  except Exception as e:  # orbax raises many types for bad directories.
    raise CheckpointError(f"cannot restore params of step {step} from "
                          f"{directory}: {type(e).__name__}: {e}") from e
  finally:
    manager.close()
  return out.params


def key_to_json(key: jax.Array) -> list[int]:
  """A typed PRNG key as plain integers (its raw uint32 data)."""
  return np.asarray(jax.random.key_data(key)).astype(np.uint32).tolist()


def key_from_json(data) -> jax.Array:
  return jax.random.wrap_key_data(np.asarray(data, np.uint32))


def _json_safe(value):
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if isinstance(value, (np.generic, np.ndarray)):
    return np.asarray(value).tolist()
  return value
