r"""Times the pieces of a turn-aware estimator (`matchtir`) side by side.

Each piece is timed against a masked copy of the token rewards (one fused
pass over `[B, T]`), interleaved in rounds as `bench_advantages` does, so
the ratios say how many passes a piece costs. The prefix-sum alternatives
are there because the turn index of every token is a prefix count.

  python -m experiments.bench_turns --clock=process --rounds=5 --repeats=5

Takes the shared benchmark flags of `experiments.timing` (--shapes,
--rounds, --repeats, --clock).
"""

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from cajax import agentic
from cajax import sequences
from cajax import testing
from experiments import bench_advantages
from experiments import timing

__all__ = ["define_flags", "main", "pieces"]


def pieces(rollouts) -> dict:
  """{name: (jitted function, its arguments)} of the pieces timed."""
  mask, rewards = rollouts.mask, rollouts.token_rewards
  num_turns = bench_advantages.static_options("matchtir", rollouts)[
      "num_turns"]
  turn_ids = sequences.contiguous_runs(mask)[0]

  def turn_values(rewards, mask):
    values, _, ids = agentic.turn_rewards(rewards, mask, num_turns=num_turns)
    return sequences.steps_to_tokens(values, ids)

  counts = mask.astype(jnp.int32)
  table = {
      "prefix_count (chunked product)": (sequences.prefix_count, (mask,)),
      "jnp.cumsum": (lambda x: jnp.cumsum(x, axis=1), (counts,)),
      "lax.associative_scan": (
          lambda x: jax.lax.associative_scan(jnp.add, x, axis=1), (counts,)),
      "contiguous_runs (turn index)": (sequences.contiguous_runs, (mask,)),
      "turn_rewards": (lambda r, m: agentic.turn_rewards(
          r, m, num_turns=num_turns), (rewards, mask)),
      "steps_to_tokens (gather)": (sequences.steps_to_tokens, (
          jnp.zeros((mask.shape[0], num_turns)), turn_ids)),
      "turn_rewards + steps_to_tokens": (turn_values, (rewards, mask)),
      "matchtir": (lambda r, m, g: agentic.matchtir(
          r, m, g, rollouts.num_groups, num_turns=num_turns).advantages,
                   (rewards, mask, rollouts.group_ids)),
  }
  return {name: (jax.jit(fn), args) for name, (fn, args) in table.items()}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The shared timing flags (experiments/timing.py)."""
  timing.define_flags(shapes=["512x4096", "64x32768"], rounds=9, repeats=7,
                      flag_values=flag_values)


def main(argv):
  del argv
  f = flags.FLAGS
  copy = jax.jit(lambda r, m: jnp.where(m, r * 2.0, 0.0))
  lines = ["| piece | shape (BxT) | ms | masked copy ms | ratio |",
           "|---|---|---:|---:|---:|"]
  for text in f.shapes:
    batch, length = timing.parse_shape(text)
    rollouts = testing.make_rollouts(batch=batch, length=length,
                                     group_size=8, num_steps=16, seed=0)
    for name, (fn, args) in pieces(rollouts).items():
      ms, copy_ms = timing.time_pair(
          fn, args, copy, (rollouts.token_rewards, rollouts.mask), f.rounds,
          f.repeats, timing.CLOCKS[f.clock])
      lines.append(f"| {name} | {text} | {ms:.2f} | {copy_ms:.2f} | "
                   f"{ms / copy_ms:.1f} |")
      print(lines[-1], flush=True)
      jax.clear_caches()  # one piece's executables at a time (performance.md)
  print("\n".join(lines))


if __name__ == "__main__":
  define_flags()
  app.run(main)
