"""Packaging basics: one version everywhere, typed packages, a licence, no module shadowing the
standard library."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import harness
import objectives

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_everywhere():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert harness.__version__ == objectives.__version__ == declared


def test_packages_are_typed_and_licensed():
    assert (ROOT / "objectives" / "py.typed").exists()
    assert (ROOT / "harness" / "py.typed").exists()
    assert "MIT License" in (ROOT / "LICENSE").read_text()


def test_no_module_named_after_the_standard_library():
    shadowing = sorted(
        str(p.relative_to(ROOT))
        for pkg in ("objectives", "harness")
        for p in (ROOT / pkg).rglob("*.py")
        if p.stem in sys.stdlib_module_names
    )
    assert not shadowing, f"modules named after standard-library modules: {shadowing}"
