"""The code's shape that issue 18 fixed, checked with ``ast`` so that it cannot drift back (``gradcam.py`` holding the
CAM maths only: ``tests/test_gradcam.py::test_gradcam_module_holds_cam_maths_only``)."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import code_stats  # noqa: E402

MAX_DOCSTRING_SHARE = 0.20
GUARDED = ("spectral3d.ops", "spectral3d.layers")


def _py_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _module_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> module name, for every import in ``tree`` that binds a module."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if _is_module(full):
                    aliases[a.asname or a.name] = full
    return aliases


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """The dotted module path an expression such as ``ops._switch`` names, through ``aliases``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(parts)])


def _guarded(module: str | None) -> bool:
    return module is not None and any(module == g or module.startswith(g + ".") for g in GUARDED)


def module_attribute_assignments(path: Path, root: Path = ROOT) -> list[str]:
    """Assignments to an attribute of a ``spectral3d.ops`` / ``spectral3d.layers`` module in ``path``:
    ``mod.X = ...``, ``setattr(mod, ...)`` and ``monkeypatch.setattr(mod or "spectral3d.ops...", ...)``."""
    tree = ast.parse(path.read_text())
    aliases = _module_aliases(tree)
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            targets = [t.value for t in targets if isinstance(t, ast.Attribute)]
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            if name == "setattr":
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    if _guarded(first.value.rsplit(".", 1)[0]) or _guarded(first.value):
                        found.append(f"{path.relative_to(root)}:{node.lineno}")
                    continue
                targets = [first]
        for t in targets:
            if _guarded(_dotted(t, aliases)):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_module_attribute_assignment_detector_sees_the_three_forms(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import spectral3d.ops as ops\n"
        "from spectral3d.layers import samb\n"
        "ops._switch.X = 1\n"
        "setattr(samb, 'Y', 2)\n"
        "def t(monkeypatch):\n"
        "    monkeypatch.setattr('spectral3d.ops.spectral.Z', 3)\n"
        "samb_obj = object()\n"
    )
    assert [hit.split(":")[1] for hit in module_attribute_assignments(probe, tmp_path)] == ["3", "4", "6"]


def test_no_test_or_benchmark_assigns_to_ops_or_layers_modules() -> None:
    found = [hit for p in _py_files("tests", "benchmarks") for hit in module_attribute_assignments(p)]
    assert not found, f"switch implementations through spectral3d.ops.use_kernels, not module globals: {found}"


def test_no_underscore_imports_from_the_data_package() -> None:
    found = []
    for path in _py_files("spectral3d", "backbones3d", "tests", "benchmarks", "examples", "tools"):
        if (ROOT / "spectral3d" / "data") in path.parents:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spectral3d.data"):
                parts = (node.module or "").split(".")[2:]
                if any(p.startswith("_") for p in parts) or any(a.name.startswith("_") for a in node.names):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


@pytest.fixture(scope="module")
def stats() -> dict:
    return code_stats.library_stats(ROOT)


def test_docstrings_are_at_most_a_fifth_of_the_library(stats: dict) -> None:
    assert stats["docstring_lines"] > 0
    assert stats["docstring_share"] <= MAX_DOCSTRING_SHARE, f"{stats['docstring_share']:.1%}"


def test_no_library_function_over_80_lines(stats: dict) -> None:
    assert any(n > 20 for f in stats["files"].values() for _, n in f["functions"])  # lengths are counted
    assert not stats["long_functions"], stats["long_functions"]


def test_the_contributing_map_matches_the_tree() -> None:
    text = (ROOT / "docs" / "CONTRIBUTING.md").read_text()
    section = text.split("## Map", 1)[1].split("\n## ", 1)[0]
    paths = set(re.findall(r"`((?:spectral3d|backbones3d|tests|benchmarks|docs)/[\w/.<>-]*)`", section))
    concrete = {p for p in paths if "<" not in p}
    assert len(concrete) > 20
    assert not [p for p in sorted(concrete) if not (ROOT / p).exists()]
    # every code name the map points at is defined where it says
    for name, where in [
        ("spectral_modulation_reference", "spectral3d/ops/spectral_modulation.py"),
        ("_train_step", "spectral3d/train/trainer.py"),
        ("OPS", "spectral3d/ops/_switch.py"),
        ("_ADD_PARSERS", "spectral3d/cli.py"),
        ("gradcam_target_layers", "backbones3d/_contract.py"),
        ("gradcam_reshape", "backbones3d/vit3d.py"),
    ]:
        assert re.search(rf"^\s*(def |class )?{name}\b", (ROOT / where).read_text(), re.M), (name, where)
        assert f"`{name}" in section, name
