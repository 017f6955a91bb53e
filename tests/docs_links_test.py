"""Every repository path that a shipped file cites exists in the repository.

Users only have what is in the repository, so README, docs, docstrings,
comments and tests may point only at files that ship. The scan reads every
tracked text file (every file under the root when git is unavailable).
"""

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_TEXT_SUFFIXES = {".py", ".md", ".ini", ".txt", ".cfg", ".toml", ".yaml",
                  ".yml", ".sh", ""}
_TOP_DIRS = ("cajax", "kernels", "experiments", "tests", "docs", ".ci")
# A path right after "=" is a command's output argument, not a citation.
_BOUNDARY = r"(?<![\w./=-])({})(?![\w/-])"
# A path into one of the top-level folders.
_FOLDER_PATH = re.compile(_BOUNDARY.format(
    "(?:" + "|".join(re.escape(d) for d in _TOP_DIRS) + r")/[\w./-]*[\w/]"))
# Bare file names cite only in README.md style; lower-case ones (credit.md,
# report.md) are files that commands write. Markdown links always cite.
_UPPER_MD_NAME = re.compile(_BOUNDARY.format(r"[A-Z][A-Z_]*\.md"))
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
# Private material of the developers that users never have.
_PRIVATE = ("DESIGN" + ".md", "../" + "shared", "reference" + "/",
            "seed_methods" + ".md", "peers" + ".md", "style" + ".md")


def tracked_files() -> list[pathlib.Path]:
  try:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
  except (OSError, subprocess.CalledProcessError):
    names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
             if p.is_file() and ".git" not in p.parts]
  return [ROOT / name for name in names
          if pathlib.Path(name).suffix in _TEXT_SUFFIXES
          and (ROOT / name).is_file()]


def cited_paths(text: str, markdown: bool = True) -> set[str]:
  """Repository-looking paths in `text` (links, folders, *.md names)."""
  found = set(_FOLDER_PATH.findall(text)) | set(_UPPER_MD_NAME.findall(text))
  if markdown:
    found.update(link for link in _LINK.findall(text)
                 if "://" not in link and not link.startswith("mailto:"))
  return {path.rstrip(".") for path in found
          if not any(c in path for c in "<>*{}$")}


def exists(path: str, source: pathlib.Path) -> bool:
  path = path.split("::")[0]
  return any((base / path).exists() for base in (ROOT, source.parent))


def test_scanner_finds_citations():
  text = ("see docs/nowhere.md, cajax/returns.py::gae, [x](gone.md) and "
          "README.md; not https://a.b/docs/x.md, --output=docs/new.png or "
          "report.md")
  assert cited_paths(text) == {"docs/nowhere.md", "cajax/returns.py",
                               "gone.md", "README.md"}
  assert cited_paths(text, markdown=False) == {
      "docs/nowhere.md", "cajax/returns.py", "README.md"}
  assert exists("cajax/returns.py::gae", ROOT / "README.md")
  assert not exists("docs/nowhere.md", ROOT / "README.md")


@pytest.mark.parametrize("source", tracked_files(),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_paths_exist(source):
  if source == pathlib.Path(__file__).resolve():
    pytest.skip("this file's examples cite missing paths on purpose")
  text = source.read_text(encoding="utf-8", errors="replace")
  private = [name for name in _PRIVATE if name in text]
  assert not private, f"{source.name} cites private material {private}"
  missing = sorted(path for path in cited_paths(text, source.suffix == ".md")
                   if not exists(path, source))
  assert not missing, f"{source.name} cites missing paths {missing}"
