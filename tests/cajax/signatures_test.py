"""Every registered estimator follows docs/glossary.md: names and order."""

import inspect
import pathlib
import re

import pytest

import cajax

_GLOSSARY = pathlib.Path(__file__).resolve().parents[2] / "docs" / "glossary.md"
_LAYOUT_ORDER = ("mask", "step_ids", "step_mask", ("group_ids", "sibling_ids"),
                 ("num_groups", "num_branches"))


def glossary_sections() -> dict[str, set[str]]:
  """Backticked names in the first column of each `## section`'s table."""
  sections, current = {}, None
  for line in _GLOSSARY.read_text(encoding="utf-8").splitlines():
    if line.startswith("## "):
      current = line[3:].strip()
      sections[current] = set()
    elif current and line.startswith("| `"):
      first_cell = line.split("|")[1]
      sections[current].update(re.findall(r"`([^`]+)`", first_cell))
  return sections


def _section(sections, prefix):
  (name,) = [key for key in sections if key.startswith(prefix)]
  return sections[name]


def _layout_rank(name):
  for rank, names in enumerate(_LAYOUT_ORDER):
    if name == names or name in names:
      return rank
  return None


def test_glossary_sections_parse():
  sections = glossary_sections()
  assert "token_rewards" in _section(sections, "Values")
  assert "group_ids" in _section(sections, "Layout")
  assert "ddof" in _section(sections, "Settings")
  assert "pivot_turns" in _section(sections, "Optional inputs")


@pytest.mark.parametrize("name", cajax.estimator_names())
def test_signature_follows_glossary(name):
  sections = glossary_sections()
  values = _section(sections, "Values")
  layout = _section(sections, "Layout")
  keyword = _section(sections, "Optional inputs") | _section(
      sections, "Settings")
  function = getattr(cajax, name)
  assert callable(function) and function.__name__ == name
  parameters = inspect.signature(function).parameters.values()
  positional = [p.name for p in parameters
                if p.kind is p.POSITIONAL_OR_KEYWORD]
  keyword_only = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]
  assert len(positional) + len(keyword_only) == len(parameters), (
      f"{name} takes *args or **kwargs")
  for parameter in positional:
    assert parameter in values | layout, (
        f"{name}: positional {parameter!r} is not a value or layout name of "
        f"docs/glossary.md (knobs must be keyword-only)")
  for parameter in keyword_only:
    assert parameter in keyword, (
        f"{name}: keyword {parameter!r} is not a setting or optional input "
        f"of docs/glossary.md")
  # Values first, then the layout names in canonical order.
  ranks = [_layout_rank(p) for p in positional]
  first_layout = next(i for i, rank in enumerate(ranks) if rank is not None)
  assert all(rank is None for rank in ranks[:first_layout])
  layout_ranks = ranks[first_layout:]
  assert None not in layout_ranks, f"{name}: a value after the layout"
  assert layout_ranks == sorted(layout_ranks), (
      f"{name}: layout order {positional[first_layout:]}")


def test_order_checker_rejects_a_wrong_order():
  ranks = [_layout_rank(p) for p in ("step_mask", "step_ids")]
  assert ranks != sorted(ranks)


@pytest.mark.parametrize("name", cajax.estimator_names())
def test_docstring_has_a_doctested_example(name):
  doc = getattr(cajax, name).__doc__
  assert "\n  Examples:\n" in doc and ">>> " in doc.split("Examples:")[1], (
      f"{name} needs an `Examples:` block (run by --doctest-modules)")


def test_readme_table_names_module_and_test_of_every_estimator():
  readme = (_GLOSSARY.parents[1] / "README.md").read_text(encoding="utf-8")
  rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines()
          if line.startswith("| `")}
  for name in cajax.estimator_names():
    assert name in rows, f"README's estimator table lacks {name}"
    module = getattr(cajax, name).__module__.replace(".", "/") + ".py"
    assert f"]({module})" in rows[name], (name, module)
    test = "tests/cajax/" + module.split("/")[-1].replace(".py", "_test.py")
    assert f"]({test})" in rows[name], (name, test)


@pytest.mark.parametrize("name", cajax.estimator_names())
def test_registry_keywords_are_glossary_names(name):
  known = set().union(*glossary_sections().values())
  unknown = set(cajax.registry.accepted_keywords(name)) - known
  assert not unknown, f"{name}: {sorted(unknown)} not in docs/glossary.md"
