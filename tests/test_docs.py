"""Every Python example in the README and docs/ runs as written.

Top-level pages (README.md, docs/*.md) run block by block, each block on its own. Pages in
subfolders of docs/ (theory/, tutorials/) are read as scripts: their blocks run in order in one
namespace, so a tutorial can build up step by step.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
SCRIPTS = sorted(page for page in DOCS.glob("*/**/*.md"))


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


EXAMPLES = [
    pytest.param(block, id=f"{page.name}:{number}")
    for page in PAGES
    for number, block in enumerate(python_blocks(page))
]
SCRIPT_PAGES = [pytest.param(page, id=str(page.relative_to(DOCS))) for page in SCRIPTS if python_blocks(page)]


@pytest.fixture
def sandbox(monkeypatch, tmp_path, one_thread):
    monkeypatch.setenv("CI", "1")  # no progress bars
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example, sandbox):
    exec(compile(example, "example", "exec"), {})


@pytest.mark.parametrize("page", SCRIPT_PAGES)
def test_page_runs_as_a_script(page, sandbox):
    namespace = {"__name__": "__main__"}
    for number, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page.relative_to(DOCS)}:{number}", "exec"), namespace)


def test_examples_were_found():
    assert len(EXAMPLES) >= 3
    assert {page.parent.name for page in SCRIPTS} >= {"theory", "tutorials"}
    assert sum(1 for page in SCRIPTS if page.parent.name == "tutorials" and python_blocks(page)) >= 4
