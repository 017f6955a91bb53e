"""What the docs quote from the code is the code: commands, flags, config
keys and defaults.

Every `python -m experiments.<main>` command in README, BUILD.md, docs/ and
the mains' docstrings names a main that exists, flags that main defines
(values parse with the flag's own parser; a list of alternatives
`--x=a|b|c` names every choice of an enum flag), and `--config.<key>`
overrides keys of the config file it loads. Every backticked config key
exists. The defaults the prose quotes (step counts, batch sizes, evaluation
size and temperature, ablation sizes) are formatted from the configs and
must appear verbatim.
"""

import importlib
import pathlib
import re
import shlex

from absl import flags
import pytest

from experiments.ablation import pipeline
from experiments.ablation import spec
from experiments.configs import chain_arith
from experiments.rl import run_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
_DOCS = sorted([ROOT / "README.md", ROOT / "BUILD.md",
                *(ROOT / "docs").glob("*.md")])
_MAINS = sorted(ROOT.glob("experiments/*.py"))
# Free-form sections: any key below them is a setting, not a config key.
_FREE_FORM = ("rl.estimator_kwargs.", "rl.policy_loss_kwargs.",
              "model.overrides.", "task.")
_PLACEHOLDER = re.compile(r"^[A-Z_]+$|<|\.\.\.")


def _text(path: pathlib.Path) -> str:
  return path.read_text(encoding="utf-8")


def _normalised(text: str) -> str:
  return re.sub(r"\s+", " ", text)


def commands(text: str) -> list[list[str]]:
  """Token lists of every `python -m experiments.…` command in `text`."""
  text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
  spans = re.findall(r"`([^`]+)`", text)  # inline code (may wrap lines)
  spans += re.findall(r"^\s*(?:cd \S+ && )?(python -m experiments\..*)$",
                      text, re.M)
  found = []
  for span in spans:
    for match in re.finditer(r"python -m (experiments[\w.]*)(.*)", span,
                             re.S):
      tokens = []
      try:
        words = shlex.split(match.group(2).split("#")[0].replace("\n", " "))
      except ValueError:  # an unbalanced quote in prose
        continue
      for word in words:
        word = word.strip("[]")
        if not word.startswith("--"):
          break
        tokens.append(word)
      if [match.group(1)] + tokens not in found:
        found.append([match.group(1)] + tokens)
  return found


def _quoted_commands():
  out = []
  for path in _DOCS + _MAINS:
    text = _text(path)
    if path.suffix == ".py":
      text = text.split('"""')[1] if '"""' in text else ""
    for command in commands(text):
      out.append((path.relative_to(ROOT).as_posix(), command))
  return out


_COMMANDS = _quoted_commands()


def test_scanner_finds_commands():
  text = ("run `python -m experiments.ablate [--ablation=pure|all]\n"
          "[--seeds=3]` and\n\n```bash\npython -m experiments.train "
          "--config=x.py \\\n    --workdir=DIR  # comment --no\n```")
  assert commands(text) == [
      ["experiments.ablate", "--ablation=pure|all", "--seeds=3"],
      ["experiments.train", "--config=x.py", "--workdir=DIR"]]
  assert len(_COMMANDS) > 30


def _flag_values(module_name: str) -> flags.FlagValues:
  module = importlib.import_module(module_name)
  values = flags.FlagValues()
  if hasattr(module, "define_flags"):
    module.define_flags(values)
  return values


def _config_of(command) -> dict | None:
  """The get_config() (as nested dicts) a command's --config loads."""
  for token in command[1:]:
    if token.startswith("--config="):
      path = token.split("=", 1)[1].split(":")[0]
      if _PLACEHOLDER.search(path) or not (ROOT / path).exists():
        return None
      module = ".".join(pathlib.Path(path).with_suffix("").parts)
      return importlib.import_module(module).get_config().to_dict()
  return chain_arith.get_config().to_dict()


def _has_key(config: dict, key: str) -> bool:
  if key.startswith(_FREE_FORM):
    return key.split(".")[0] in config
  node = config
  for part in key.split("."):
    if not isinstance(node, dict) or part not in node:
      return False
    node = node[part]
  return True


@pytest.mark.parametrize("source,command", _COMMANDS,
                         ids=lambda x: x if isinstance(x, str) else " ".join(
                             x)[:60])
def test_quoted_command_runs_a_main_with_its_flags(source, command):
  name, *tokens = command
  assert (ROOT / (name.replace(".", "/") + ".py")).exists(), (source, name)
  values = _flag_values(name)
  config = None
  for token in tokens:
    flag, _, value = token[2:].partition("=")
    if flag.startswith("config.") and "config" in values:
      config = config if config is not None else _config_of(command)
      key = flag[len("config."):]
      assert config is None or _has_key(config, key), (
          f"{source}: {name} has no config key {key}")
      continue
    assert flag in values or flag in flags.FLAGS, (
        f"{source}: {name} has no flag --{flag}")
    if not value or flag not in values or _PLACEHOLDER.search(value):
      continue
    parser = values[flag].parser
    choices = value.split("|") if "|" in value else [value]
    for choice in choices:
      parser.parse(choice)  # raises on a value the flag does not take
    enum = getattr(parser, "enum_values", None)
    if len(choices) > 1 and enum:
      assert sorted(choices) == sorted(enum), (source, flag, enum)


def test_ablation_size_alternatives_are_every_size():
  sizes = set.intersection(*(set(spec.load(n).get_ablation().sizes)
                             for n in pipeline.NAMES))
  for _, command in _COMMANDS:
    for token in command[1:]:
      if command[0] == "experiments.ablate" and token.startswith("--size="):
        assert set(token.split("=")[1].split("|")) <= sizes


def test_backticked_config_keys_exist():
  """`rl.x`, `sampling.x`, ... in the docs are keys of the loop config (or
  renamed keys, which the glossary lists with their new names)."""
  config = chain_arith.get_config().to_dict()
  sections = "|".join(k for k, v in config.items() if isinstance(v, dict))
  pattern = re.compile(rf"`((?:{sections})\.[a-z_]+(?:\.[a-z_]+)*)`")
  for path in _DOCS:
    for key in pattern.findall(_text(path)):
      if key.rsplit(".", 1)[-1] in ("json", "py", "md", "png"):
        continue  # a file name
      assert _has_key(config, key) or key in run_config.RENAMED, (
          f"{path.name} quotes `{key}`, not a key of chain_arith.py")


def _loop_quotes():
  c = run_config.validate(chain_arith.get_config())
  q = run_config.validate(importlib.import_module(
      "experiments.configs.qwen_math").get_config())
  ws, rl = c.warm_start, c.rl
  return {
      "README.md": [
          f"The default run ({ws.steps} warm-start steps at batch "
          f"{ws.batch_size}, then {rl.num_steps} RL steps of "
          f"{rl.num_groups} groups of {rl.group_size} responses with GRPO)",
          f"on {c.eval_problems} held-out problems",
          f"{rl.num_groups} x {rl.group_size} rows, "
          f"{c.sampling.max_new_tokens} new tokens",
      ],
      "docs/training.md": [
          f"({c.eval_temperature} in `chain_arith.py`",
          f"`qwen_math.py` evaluates greedily, at {q.eval_temperature})",
      ],
  }


def _ablation_quotes():
  size = spec.sizes(1, 1, spec.SMOKE.timing)["default"]
  config = chain_arith.get_config()
  spec.apply(config, size.overrides)
  c = run_config.validate(config)
  quotes = [
      f"Every default size runs RL steps of {c.rl.num_groups} groups of "
      f"{c.rl.group_size} responses, {size.seeds} seeds per arm over "
      f"{size.warm_starts} warm starts of {c.warm_start.steps} supervised "
      f"steps (batch {c.warm_start.batch_size}), and evaluations of "
      f"{c.eval_problems} held-out problems at temperature "
      f"{c.eval_temperature:g}"]
  for name in pipeline.NAMES:
    quotes.append(f"| {name} |")
  pure = spec.load("pure").get_ablation()
  readme = [f"{len(pure.arms)} arms x {size.seeds} seeds over "
            f"{size.warm_starts} supervised warm starts"]
  return {"docs/ablations.md": quotes, "README.md": readme}


@pytest.mark.parametrize("source,quote", [
    (source, quote) for quotes in (_loop_quotes(), _ablation_quotes())
    for source, texts in quotes.items() for quote in texts])
def test_quoted_defaults_are_the_code(source, quote):
  assert quote in _normalised(_text(ROOT / source)), (source, quote)


def test_ablation_sizes_table_rows_match_each_ablation():
  """Steps, evaluations after step 0 and runs (arms x seeds) of each row."""
  text = _text(ROOT / "docs" / "ablations.md")
  text = text.split("## Sizes and the cost model")[1].split("\n## ")[0]
  for name in pipeline.NAMES:
    ablation = spec.load(name).get_ablation()
    size = ablation.sizes["default"]
    steps = size.overrides["rl.num_steps"]
    (row,) = [line for line in text.splitlines()
              if line.startswith(f"| {name} |")]
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[2:5] == [str(steps),
                          str(steps // size.overrides["eval_every"]),
                          str(len(ablation.arms) * size.seeds)], (name,
                                                                   cells)