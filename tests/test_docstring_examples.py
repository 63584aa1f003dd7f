"""The runnable examples in the docstrings (``>>>``) run and print what they say.

Every public loss module carries one (a user copies it first), so an example that rots is a bug.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import harness
import objectives

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    names = []
    for package in (objectives, harness):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return sorted(names)


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module, name) if t.examples]


WITH_EXAMPLES = [name for name in _modules() if _examples(name)]


def test_every_public_loss_module_has_an_example():
    files = (ROOT / "objectives").glob("*.py")
    public = sorted(f"objectives.{p.stem}" for p in files if not p.stem.startswith("_"))
    assert public, "no loss modules found"
    assert [name for name in public if name not in WITH_EXAMPLES] == []


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_run(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _examples(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see above)"
