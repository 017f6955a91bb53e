r"""cajax's RL step against Tunix and TRL on the same work, side by side.

  pip install -e '.[peers]'
  python -m experiments.bench_peers --output=/tmp/peer_step.md

Every system runs the work of `experiments.peers.work` (a random
~100k-parameter Qwen2 decoder, the chain_arith prompts, exactly
`--new_tokens` tokens per row at temperature 1, random 0/1 rewards, GRPO
with beta 0 and one Adam step) in its own process (`run_cajax`,
`run_tunix`, `run_trl`), starting from the same weights: cajax's random
decoder, written once in Hugging Face format and loaded by the others.
Processes are pinned to one core (`--cpu`) with single-threaded XLA and
torch, and run one at a time; each round runs every system once per shape,
in an order that rotates from round to round. Each process times
`--steps` steps after `--warmup` untimed ones.

The table gives, per shape and system: the median step, its ratio to the
faster peer, the median sampling and non-sampling (score, advantages,
update) time, sampling tokens/s, the time from building the model to the
end of the first step (compilation included, imports excluded), the peak
resident memory, and the 1-minute load average seen when the processes
started.

The GPU variant (one process at a time on the first GPU, no pinning):

  python -m experiments.bench_peers --preset=gpu --output=/tmp/peer_step_gpu.md
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

from experiments import timing
from experiments.peers import work as work_lib

__all__ = [
    "PRESETS", "SYSTEMS", "define_flags", "main", "summarize", "table",
    "write_outputs",
]

SYSTEMS = ("cajax", "tunix", "trl")
PRESETS = {
    "cpu": dict(systems="cajax,tunix,trl", shapes="8x8,16x8,64x8",
                new_tokens=48, model="toy", dtype="float32", device="cpu"),
    # Qwen2.5-0.5B shapes, 64 x 8 rows, 512 new tokens, against Tunix on
    # the same card.
    "gpu": dict(systems="cajax,tunix", shapes="64x8", new_tokens=512,
                model="qwen2_5_0_5b", dtype="bfloat16", device="gpu"),
}

def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--preset and the work, repetition, pinning and output flags."""
  def enum(name, values, help_):
    flags.DEFINE_enum(name, None, values, help_, flag_values=flag_values)

  flags.DEFINE_enum("preset", "cpu", list(PRESETS),
                    "Defaults for the flags below left unset.",
                    flag_values=flag_values)
  flags.DEFINE_list("systems", None, f"Systems to run, from {SYSTEMS}.",
                    flag_values=flag_values)
  flags.DEFINE_list("shapes", None,
                    "GROUPSxSAMPLES per step, e.g. 16x8,64x8.",
                    flag_values=flag_values)
  flags.DEFINE_integer("new_tokens", None, "Tokens sampled per row, exactly.",
                       flag_values=flag_values)
  enum("model", list(work_lib.MODELS), "Decoder shapes.")
  enum("dtype", ["float32", "bfloat16"], "Parameter and compute dtype.")
  enum("device", ["cpu", "gpu"], "cpu: pinned, single-threaded; gpu: the "
       "first GPU (TRL is CPU-only here and is skipped).")
  flags.DEFINE_integer("rounds", 3, "Rounds over every system.",
                       flag_values=flag_values)
  flags.DEFINE_integer("steps", 5, "Timed steps per process.",
                       flag_values=flag_values)
  flags.DEFINE_integer("warmup", 1, "Untimed first steps.",
                       flag_values=flag_values)
  flags.DEFINE_integer("cpu", -1, "Core to pin every process to (-1: the "
                       "last core this process may use).",
                       flag_values=flag_values)
  flags.DEFINE_list("python", [], "SYSTEM=INTERPRETER pairs, for a system "
                    "installed in a venv of its own (default: this "
                    "interpreter).", flag_values=flag_values)
  flags.DEFINE_integer("timeout", 1800, "Seconds per process.",
                       flag_values=flag_values)
  flags.DEFINE_string("output", None, "Also write the table here.",
                      flag_values=flag_values)
  flags.DEFINE_string("json_output", None,
                      "Write every process's record here.",
                      flag_values=flag_values)


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setting(f: flags.FlagValues, name: str):
  """The flag `name`, or the preset's value when it is unset."""
  value = f[name].value
  return value if value is not None else PRESETS[f.preset][name]


def _environment(device: str) -> dict:
  """Workers import this checkout (and its kernels); on CPU every thread
  pool has one thread."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [_ROOT, os.path.join(_ROOT, "kernels"), env.get("PYTHONPATH", "")])
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  if device == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                        "intra_op_parallelism_threads=1")
    env["CUDA_VISIBLE_DEVICES"] = ""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS"):
      env[name] = "1"
  else:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = "0.9"
  return env


def _core(device: str, cpu: int) -> int | None:
  """The core every process is pinned to (None on GPU): `cpu`, or the last
  core this process may use when it is negative."""
  if device == "gpu":
    return None
  allowed = sorted(os.sched_getaffinity(0))
  return allowed[-1] if cpu < 0 else cpu


def _run(system: str, work: work_lib.Work, python: str, env: dict,
         core: int | None, timeout: int, extra=()) -> dict:
  """Runs one worker process; returns its record (with the load average
  when it started)."""
  load = os.getloadavg()[0]
  cmd = [python, "-m", f"experiments.peers.run_{system}",
         f"--work={work.to_json()}", *extra]
  done = subprocess.run(
      cmd, env=env, cwd=_ROOT, capture_output=True, text=True,
      timeout=timeout,
      preexec_fn=(None if core is None else
                  lambda: os.sched_setaffinity(0, {core})))
  lines = [l for l in done.stdout.splitlines()
           if l.startswith(work_lib.RESULT_PREFIX)]
  if done.returncode or not lines:
    raise RuntimeError(f"{' '.join(cmd[:3])} failed ({done.returncode}):\n"
                       f"{done.stderr[-4000:]}")
  record = json.loads(lines[-1][len(work_lib.RESULT_PREFIX):])
  record["load_1min"] = load
  return record


def _median(values) -> float:
  return statistics.median(values)


def summarize(records: list[dict]) -> list[dict]:
  """One row per (shape, system): medians over every timed step of every
  round, with the step's ratio to the faster peer of the same shape."""
  rows = {}
  for r in records:
    key = (r["work"]["num_groups"], r["work"]["group_size"], r["system"])
    rows.setdefault(key, []).append(r)
  out = []
  for (groups, size, system), runs in rows.items():
    steps = [s for r in runs for s in r["steps"]]
    out.append(dict(
        groups=groups, group_size=size, system=system,
        version=runs[0]["version"],
        step_s=_median([s["step_s"] for s in steps]),
        sample_s=_median([s["sample_s"] for s in steps]),
        rest_s=_median([s["step_s"] - s["sample_s"] for s in steps]),
        tokens_per_s=_median([s["tokens"] / s["sample_s"] for s in steps]),
        first_step_s=_median([r["first_step_s"] for r in runs]),
        peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
        device_peak_mb=max((r.get("device_peak_mb") or 0) for r in runs)
        or None,
        load=(min(r["load_1min"] for r in runs),
              max(r["load_1min"] for r in runs)),
        processes=len(runs), steps=len(steps)))
  for row in out:
    peers = [o["step_s"] for o in out
             if (o["groups"], o["group_size"]) == (row["groups"],
                                                   row["group_size"])
             and o["system"] != "cajax"]
    row["vs_faster_peer"] = (row["step_s"] / min(peers) if peers else None)
  order = {s: i for i, s in enumerate(SYSTEMS)}
  return sorted(out, key=lambda o: (o["groups"] * o["group_size"],
                                    order[o["system"]]))


def table(rows: list[dict]) -> str:
  """The markdown table of `summarize`'s rows."""
  gpu = any(r["device_peak_mb"] for r in rows)
  head = ("| rows | system | step s | / faster peer | sampling s | "
          "rest s | sampling tokens/s | first step s | peak RSS MiB | "
          + ("peak device MiB | " if gpu else "") + "load (1 min) |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    ratio = ("" if r["vs_faster_peer"] is None
             else f"{r['vs_faster_peer']:.2f}x")
    lines.append(
        f"| {r['groups']}x{r['group_size']} ({r['groups'] * r['group_size']}) "
        f"| {r['system']} {r['version']} "
        f"| {r['step_s']:.3f} | {ratio} | {r['sample_s']:.3f} | "
        f"{r['rest_s']:.3f} | {r['tokens_per_s']:,.0f} | "
        f"{r['first_step_s']:.1f} | {r['peak_rss_mb']:,.0f} | "
        + (f"{r['device_peak_mb'] or 0:,.0f} | " if gpu else "")
        + f"{r['load'][0]:.1f}–{r['load'][1]:.1f} |")
  return "\n".join(lines)


def _machine(device: str, records: list[dict]) -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f
                 if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  kinds = sorted({r.get("device", "") for r in records})
  return (f"{cpu}, {os.cpu_count()} cores"
          + (f", {', '.join(kinds)}" if device == "gpu" else ""))


def main(argv):
  del argv
  f = flags.FLAGS
  systems = _setting(f, "systems")
  systems = systems.split(",") if isinstance(systems, str) else systems
  unknown = sorted(set(systems) - set(SYSTEMS))
  if unknown:
    raise ValueError(f"--systems: unknown {unknown}; choose from {SYSTEMS}")
  shapes = _setting(f, "shapes")
  shapes = shapes.split(",") if isinstance(shapes, str) else shapes
  shapes = [timing.parse_shape(s) for s in shapes]
  if any(len(s) != 2 for s in shapes):
    raise ValueError(f"--shapes must be GROUPSxSAMPLES, got {shapes}")
  device = _setting(f, "device")
  if device == "gpu" and "trl" in systems:
    raise ValueError("--device=gpu: the peers extra installs CPU PyTorch; "
                     "leave trl out of --systems")
  pythons = dict(p.split("=", 1) for p in f.python)
  env, core = _environment(device), _core(device, f.cpu)
  records = []
  with tempfile.TemporaryDirectory() as tmp:
    base = work_lib.Work(
        new_tokens=_setting(f, "new_tokens"),
        model=_setting(f, "model"), dtype=_setting(f, "dtype"),
        steps=f.steps, warmup=f.warmup,
        checkpoint=os.path.join(tmp, "checkpoint"))
    # On CPU, so that no GPU memory is held while the workers run.
    written = subprocess.run(
        [pythons.get("cajax", sys.executable), "-m",
         "experiments.peers.run_cajax", f"--work={base.to_json()}",
         f"--write_checkpoint={base.checkpoint}"],
        env=_environment("cpu"), cwd=_ROOT, capture_output=True, text=True,
        check=False)
    if written.returncode:
      raise RuntimeError(f"writing the checkpoint failed:\n"
                         f"{written.stderr[-4000:]}")
    for rnd in range(f.rounds):
      order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
      for groups, size in shapes:
        work = work_lib.Work(**{**json.loads(base.to_json()),
                                "num_groups": groups, "group_size": size})
        for system in order:
          record = _run(system, work, pythons.get(system, sys.executable),
                        env, core, f.timeout,
                        ("--threads=1",) if system == "trl" else ())
          records.append(record)
          step = _median([s["step_s"] for s in record["steps"]])
          print(f"round {rnd + 1}/{f.rounds} {groups}x{size} {system}: "
                f"step {step:.3f} s, first {record['first_step_s']:.1f} s, "
                f"load {record['load_1min']:.1f}", flush=True)
  rows = summarize(records)
  header = (
      f"bench_peers --preset={f.preset}: {_machine(device, records)}; "
      f"{'pinned to core ' + str(core) if core is not None else 'GPU'}; "
      f"model {base.model} ({base.dtype}), {base.new_tokens} new tokens; "
      f"{f.rounds} rounds x {f.steps} timed steps after "
      f"{f.warmup} warm-up; {datetime.date.today().isoformat()}")
  print(write_outputs(header, rows, records, output=f.output,
                      json_output=f.json_output))


def write_outputs(header: str, rows: list[dict], records: list[dict], *,
                  output: str | None, json_output: str | None) -> str:
  """Writes the table (`output`) and the raw records (`json_output`)."""
  text = header + "\n\n" + table(rows) + "\n"
  if output:
    with open(output, "w", encoding="utf-8") as out:
      out.write(text)
  if json_output:
    with open(json_output, "w", encoding="utf-8") as out:
      json.dump(dict(header=header, rows=rows, records=records), out,
                indent=1)
  return text


if __name__ == "__main__":
  define_flags()
  app.run(main)
