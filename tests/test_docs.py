"""Every Python example in the README and docs/ runs as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [
    pytest.param(block, id=f"{page.name}:{number}")
    for page in PAGES
    for number, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL))
]


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example, monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "1")  # no progress bars
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "example", "exec"), {})


def test_examples_were_found():
    assert len(EXAMPLES) >= 3
