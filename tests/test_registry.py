"""The objective registry: one declaration beside each class, read by every consumer.

The scan at the end fails when a list of objective names is written anywhere in the product code,
the workflow or its schema: every consumer must read objectives.registry instead.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import objectives
from objectives import registry

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = sorted(registry.builtin())


def test_every_module_of_the_package_declares_its_classes():
    # a new built-in objective is found by importing its module: no list to extend
    assert len(BUILTIN) >= 9 and set(BUILTIN) <= set(objectives.available())
    for name, entry in registry.builtin().items():
        assert entry.cls.name == name and entry.source == "built in"
        assert entry.cls.__module__.startswith("objectives.") and entry.label
        assert getattr(objectives, entry.cls.__name__) is entry.cls  # still exported by the package
        assert entry.retrieval_rule in registry.RETRIEVAL_RULES
        known = entry.parameters()
        assert set(entry.search) <= set(known), name  # a search space names real parameters
    assert objectives.build("infonce", temperature=0.2).temperature.value() == pytest.approx(0.2)


def test_declared_values_are_the_ones_consumers_see():
    from harness.bench.impls import matmul_flops
    from harness.experiment import keys
    from harness import style

    assert keys.retrieval_rule("gram") == registry.get("gram").retrieval_rule == "gram_volume"
    assert keys.retrieval_rule("infonce") == "cosine_sum"
    for name, entry in registry.builtin().items():
        assert style.display_name(name) == entry.label
        assert style.series_style(name) == {"color": entry.colour, "marker": entry.marker}
    # closed forms of the declared FLOPs: one B x B x d product is 2 B^2 d
    B, d = 64, 16
    unit = 2.0 * B * B * d
    assert matmul_flops("infonce", 4, B, d) == 3 * unit * 6
    assert matmul_flops("infonce_anchor", 4, B, d) == 3 * unit * 3
    assert matmul_flops("unialign", 4, B, d, {"uniformity": "union"}) == 2 * 2.0 * (4 * B) ** 2 * d
    assert matmul_flops("symile", 3, B, d, {"negatives": "n_squared"}) is None


def test_search_spaces_match_the_default_sweep_budget():
    # the spaces the default sweep tuned before they moved beside the classes
    assert registry.get("infonce").search == {"temperature": {"low": 0.03, "high": 0.3, "log": True}}
    assert registry.get("unialign").search == {"bandwidth": {"low": 0.25, "high": 1.5, "log": True},
                                               "lam_uni": {"low": 0.1, "high": 3.0, "log": True}}
    assert registry.get("dcl").search == {}


def test_docs_table_is_the_registry():
    text = (ROOT / "docs" / "objectives.md").read_text()
    assert registry.markdown_table() in text


@pytest.fixture()
def outside_module(tmp_path, monkeypatch):
    """A module outside the repository with a good, a broken, a NaN and a gradient-free loss."""
    (tmp_path / "outside_losses.py").write_text(textwrap.dedent('''
        import torch
        from objectives import Objective, declare

        @declare(label="Mine", colour="#123456", search={"w": [0.5, 1.0]})
        class Mine(Objective):
            name = "mine"
            roles = {"alignment": "alignment"}
            def __init__(self, w: float = 1.0):
                super().__init__()
                if w <= 0:
                    raise RuntimeError("w must be positive")
                self.w = w
            def compute(self, z, rows):
                return {"alignment": -self.w * (z[0] * z[1]).sum() / z.shape[1]}

        class NanLoss(Mine):
            name = "nan_loss"
            check_finite = False
            def compute(self, z, rows):
                return {"alignment": (z.sum() * float("nan"))}

        class Detached(Mine):
            name = "detached"
            def compute(self, z, rows):
                return {"alignment": z.detach().sum() * 0 + torch.tensor(1.0, requires_grad=True)}

        class Nameless(Objective):
            pass

        class NotAnObjective:
            name = "nope"
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "outside_losses"
    sys.modules.pop("outside_losses", None)
    registry.refresh()


def test_module_path_objective(outside_module):
    entry = registry.get(f"{outside_module}:Mine")
    assert (entry.name, entry.label, entry.colour, entry.search) == ("mine", "Mine", "#123456", {"w": [0.5, 1.0]})
    assert entry.source == f"module {outside_module}:Mine"
    out = objectives.build(f"{outside_module}:Mine", w=2.0)([objectives_input() for _ in range(2)])
    assert out.loss.requires_grad
    undeclared = registry.get(f"{outside_module}:NanLoss")  # a subclass does not inherit a declaration
    assert undeclared.label == "nan_loss" and undeclared.colour is None and undeclared.search == {}


def objectives_input():
    import torch

    return torch.randn(8, 4, requires_grad=True)


@pytest.mark.parametrize("path, needle", [
    ("outside_losses:Nameless", "has no `name`"),
    ("outside_losses:NotAnObjective", "not a subclass of objectives.Objective"),
    ("outside_losses:Missing", "cannot be loaded"),
    ("no_such_package.losses:X", "cannot be loaded"),
])
def test_bad_module_paths_name_the_objective(outside_module, path, needle):
    with pytest.raises(registry.ObjectiveError, match=needle) as info:
        registry.get(path)
    assert path in str(info.value) or path.split(":")[1] in str(info.value)


def test_outside_constructor_errors_name_the_objective(outside_module):
    with pytest.raises(registry.ObjectiveError, match=r"objective 'mine' \(module outside_losses:Mine\) failed "
                                                      r"to build with \{'w': -1\}: RuntimeError: w must be positive"):
        registry.get(f"{outside_module}:Mine").build(w=-1)
    with pytest.raises(TypeError, match=r"mine got unknown parameter\(s\) \['v'\]"):
        registry.get(f"{outside_module}:Mine").build(v=1)


@pytest.mark.parametrize("cls, needle", [
    ("NanLoss", "objective 'outside_losses:NanLoss' returned a non-finite loss"),
    ("Detached", "objective 'outside_losses:Detached' gave the encoders no finite, non-zero gradient at step 1"),
])
def test_training_names_an_objective_that_returns_nan_or_no_gradient(outside_module, tiny_data, tmp_path, cls,
                                                                    needle, capsys):
    from harness.cli import main

    argv = ["train", "--quiet", "--data", str(tiny_data), "--objective", f"{outside_module}:{cls}",
            "--n-modalities", "2", "--steps", "2", "--batch-size", "32", "--dim", "4", "--hidden", "8",
            "--depth", "1", "--out", str(tmp_path / "run")]
    assert main(argv) == 1
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_entry_points_are_listed_without_importing_them(monkeypatch):
    from importlib import metadata

    ep = metadata.EntryPoint(name="lazy_loss", value="not_imported_yet.module:Loss", group=registry.ENTRY_POINT_GROUP)
    clash = metadata.EntryPoint(name="infonce", value="x:Y", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [ep] if group == ep.group else [])
    registry.refresh()
    try:
        assert "lazy_loss" in objectives.available() and "not_imported_yet" not in sys.modules
        with pytest.raises(registry.ObjectiveError, match=r"objective 'lazy_loss' \(entry point "
                                                          r"not_imported_yet.module:Loss of \?\) cannot be loaded"):
            registry.get("lazy_loss")
        monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [clash])
        registry.refresh()
        with pytest.raises(registry.ObjectiveError, match="names a built-in objective"):
            objectives.available()
    finally:
        monkeypatch.undo()
        registry.refresh()


# ----------------------------------------------------------------------------- no second list of names
PRODUCT = [p for folder in ("objectives", "harness", "workflow") for p in sorted((ROOT / folder).rglob("*"))
           if p.suffix in (".py", ".smk", ".yaml") and p.is_file()] + [ROOT / "Snakefile"]


def _python_lists(path: Path) -> list[tuple[int, list[str]]]:
    """(line, names) of every list / tuple / set / dict literal (and chain of comparisons) in a file
    whose string constants or keys name built-in objectives."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        else:
            continue
        names = [e.value for e in items if isinstance(e, ast.Constant) and e.value in BUILTIN]
        found.append((node.lineno, names))
    return found


def _smk_lists(path: Path) -> list[tuple[int, list[str]]]:
    found = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        found.append((i, [s for s in re.findall(r"""["']([a-z_]+)["']""", code) if s in BUILTIN]))
    return found


def _yaml_lists(path: Path) -> list[tuple[int, list[str]]]:
    found = []

    def walk(node):
        if isinstance(node, list):
            found.append((0, [x for x in node if isinstance(x, str) and x in BUILTIN]))
            for x in node:
                walk(x)
        elif isinstance(node, dict):
            found.append((0, [k for k in node if isinstance(k, str) and (k in BUILTIN or k.removeprefix("params_") in BUILTIN)]))
            for v in node.values():
                walk(v)
    walk(yaml.safe_load(path.read_text()))
    return found


def name_lists(path: Path, at_least: int = 3) -> list[str]:
    """Lists of ``at_least`` or more distinct built-in objective names in one file."""
    reader = {".py": _python_lists, ".yaml": _yaml_lists}.get(path.suffix, _smk_lists)
    return [f"{path.name}:{line}: {sorted(set(names))}" for line, names in reader(path) if len(set(names)) >= at_least]


def test_the_scan_finds_planted_lists(tmp_path):
    (tmp_path / "planted.py").write_text('"""infonce, unialign, gram in prose"""\n'
                                         'KNOWN = ("infonce", "unialign", "gram")\nOK = ("infonce", "gram_direct")\n')
    assert name_lists(tmp_path / "planted.py") == ["planted.py:2: ['gram', 'infonce', 'unialign']"]
    (tmp_path / "schema.yaml").write_text("objective: {enum: [infonce, dcl, symile]}\n")
    assert len(name_lists(tmp_path / "schema.yaml")) == 1
    (tmp_path / "rules.smk").write_text('X = ["infonce", "dcl", "symile"]  # and a comment: "gram"\n')
    assert name_lists(tmp_path / "rules.smk") == ["rules.smk:1: ['dcl', 'infonce', 'symile']"]


def test_no_list_of_objective_names_outside_the_registry():
    hits = [hit for path in PRODUCT for hit in name_lists(path)]
    assert not hits, "objective names listed outside objectives.registry:\n" + "\n".join(hits)


def test_schema_leaves_objectives_to_the_registry():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    variant = schema["$defs"]["variant"]["properties"]
    assert "enum" not in variant["objective"] and "module" in variant
    assert not [k for k in schema["$defs"] if k.startswith("params_")]
