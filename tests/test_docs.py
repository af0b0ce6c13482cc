"""The documentation works: its examples run, its docstrings' examples pass,
and the MkDocs site builds with --strict.

Convention for docs/*.md and docs/guides/*.md: every ```python block runs,
in page order, in one namespace per page (a block may use what an earlier
block of the same page defined), in a temporary working directory. A block
that must not run (a long training, a download) is preceded by a line
`<!-- skip -->`; it is still compiled, so it cannot rot into a syntax
error. Keep skipped blocks rare.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import keras_lottery

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_MARK = "<!-- skip -->"
FENCE = re.compile(r"^(\s*)```python\s*$")

# Public names whose docstrings need no example: plain records and errors.
NO_EXAMPLE_NEEDED = {
    "Dataset",
    "Group",
    "NMReport",
    "PruneReport",
    "PruningEvent",
    "PruningSummary",
    "RoundRecord",
    "SearchError",
    "WeightSummary",
}


def python_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """(first line number, code, skipped) of each ```python block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent = len(match.group(1))
        previous = next(
            (line.strip() for line in reversed(lines[:i]) if line.strip()), ""
        )
        start, i = i + 1, i + 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path}:{start}: unclosed ```python block")
        code = "\n".join(line[indent:] for line in lines[start:i])
        blocks.append((start + 1, code, previous == SKIP_MARK))
        i += 1
    return blocks


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md")) + sorted((DOCS / "guides").glob("*.md"))


PAGES = [p for p in doc_pages() if python_blocks(p)]


def test_docs_exist_and_have_examples():
    assert (DOCS / "getting-started.md").is_file()
    assert len(PAGES) >= 8, [p.name for p in PAGES]


def test_skipped_blocks_are_rare():
    blocks = [b for page in doc_pages() for b in python_blocks(page)]
    skipped = [b for b in blocks if b[2]]
    assert len(skipped) <= max(2, len(blocks) // 10), (
        f"{len(skipped)} of {len(blocks)} python blocks are marked {SKIP_MARK}"
    )


@pytest.mark.parametrize(
    "page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES]
)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for line, code, skipped in python_blocks(page):
        name = f"{page.relative_to(ROOT)}:{line}"
        compiled = compile(code, name, "exec")  # skipped blocks too
        if skipped:
            continue
        try:
            exec(compiled, namespace)
        except Exception as error:
            raise AssertionError(
                f"The example at {name} failed: {type(error).__name__}: {error}"
            ) from error


# ---------------------------------------------------------------- doctests
def package_modules() -> list[str]:
    names = ["keras_lottery"]
    for info in pkgutil.walk_packages(keras_lottery.__path__, "keras_lottery."):
        if not info.name.split(".")[-1].startswith("_"):
            names.append(info.name)
    return sorted(names)


def public(test_name: str, module_name: str) -> bool:
    rest = test_name[len(module_name):].lstrip(".")
    return not any(part.startswith("_") for part in rest.split(".") if part)


@pytest.mark.parametrize("module_name", package_modules())
def test_docstring_examples(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, module_name)
             if t.examples and public(t.name, module_name)]
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    report: list[str] = []
    for test in sorted(tests, key=lambda t: t.name):
        # Each docstring starts fresh, as in a new session: layer names
        # (dense, dense_1, ...) restart and seeds are fixed.
        keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(1234)
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)


def test_public_names_have_examples():
    missing = []
    for name in keras_lottery.__all__:
        if name in NO_EXAMPLE_NEEDED:
            continue
        doc = getattr(keras_lottery, name).__doc__ or ""
        if ">>>" not in doc:
            missing.append(name)
    assert not missing, f"Public names without a docstring example: {missing}"


# ------------------------------------------------------------------ mkdocs
def test_mkdocs_build_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(
                f"{module} is not installed; `make docs` installs mkdocs, "
                "mkdocs-material and mkdocstrings[python] (the docs extra)."
            )
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
