"""Every ```python block of README.md and docs/*.md runs as written (usage examples stay true
wherever they move)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (page.relative_to(ROOT).as_posix(), i, block)
    for page in PAGES
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL))
]


def test_examples_exist_where_a_reader_looks():
    pages = {page for page, _, _ in BLOCKS}
    assert "README.md" in pages and "docs/objectives.md" in pages
    assert sum(page == "docs/objectives.md" for page, _, _ in BLOCKS) >= 9


@pytest.mark.parametrize("page,index,block", BLOCKS, ids=[f"{p}#{i}" for p, i, _ in BLOCKS])
def test_example_runs(page, index, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"{page} python block {index}", "exec"), {"__name__": "__docs__"})


def test_pages_link_only_to_files_in_the_repository():
    missing = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, f"links to files that do not exist: {missing}"
