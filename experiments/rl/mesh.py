"""The device mesh: `data` and `fsdp` axes, and where arrays live on it.

Parameters and optimizer state are sharded over `fsdp` (the decoder annotates
one large axis of every matrix with that name); batches are split over both
axes (`data` x `fsdp` devices each take a slice of the rows), the usual FSDP
layout. Multi-host runs call `jax.distributed.initialize()` first.
"""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.models import decoder as decoder_lib

__all__ = [
    "AXES", "BATCH", "batch_sharding", "check_divisible",
    "initialize_distributed", "make_mesh", "place_state", "put_batch",
    "replicated",
]

AXES = ("data", "fsdp")
BATCH = P(AXES)


def initialize_distributed(enabled: bool) -> None:
  """Joins a multi-host job (reads the coordinator from the environment).

  On TPU pods and SLURM/Open MPI clusters `jax.distributed.initialize()`
  finds the coordinator, process count and index itself.
  """
  if enabled:
    jax.distributed.initialize()


def make_mesh(data: int, fsdp: int) -> jax.sharding.Mesh:
  """A (data, fsdp) mesh over every device; -1 takes the remaining devices.

  Args:
    data: size of the data-parallel axis, or -1.
    fsdp: size of the parameter-sharding axis, or -1.

  Raises:
    ValueError: when the sizes do not multiply to the device count.
  """
  count = jax.device_count()
  if data == -1 and fsdp == -1:
    raise ValueError("mesh.data and mesh.fsdp cannot both be -1.")
  if data == -1:
    data = count // fsdp if fsdp > 0 and count % fsdp == 0 else 0
  if fsdp == -1:
    fsdp = count // data if data > 0 and count % data == 0 else 0
  if data <= 0 or fsdp <= 0 or data * fsdp != count:
    raise ValueError(
        f"mesh data x fsdp must equal the {count} devices; got data={data}, "
        f"fsdp={fsdp}.")
  return decoder_lib.fsdp_mesh(data, fsdp)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Rows over every device of the mesh; the other axes replicated."""
  return NamedSharding(mesh, BATCH)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def place_state(tree, mesh: jax.sharding.Mesh):
  """Leaves not yet laid out on `mesh` (optimizer counters, the step) are
  replicated on it, so the update's inputs and outputs share shardings and
  its first call compiles once."""
  def place(x):
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
      return x
    return jax.device_put(x, replicated(mesh))
  return jax.tree.map(place, tree)


def put_batch(tree, mesh: jax.sharding.Mesh):
  """Places host arrays (leading axis = rows) row-sharded on the mesh."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def check_divisible(rows: int, mesh: jax.sharding.Mesh, name: str) -> None:
  """Rows must split evenly over the devices of the mesh."""
  if rows % mesh.size:
    raise ValueError(f"{name} ({rows} rows) must be divisible by the "
                     f"{mesh.size} devices of the mesh {dict(mesh.shape)}.")
