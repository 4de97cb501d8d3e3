"""Imports flow one way: cli -> engine / inference / export -> models / data -> config / utils / errors.

Every `import instaseg...` in the package, at module level or inside a function, is checked against the layer
of the module that makes it: a module may import its own layer and the ones below, never one above. Within the
middle layer the predictor's side stays free of export (exported backends read metadata through models), and
data imports nothing of ours but the bottom layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import instaseg

PACKAGE = Path(instaseg.__file__).resolve().parent
LAYER = {
    "errors": 0,
    "utils": 0,
    "config": 0,
    "version": 0,
    "__version__": 0,  # `from instaseg import __version__`
    "data": 1,
    "models": 1,
    "engine": 2,
    "inference": 2,
    "export": 2,
    "benchmark": 2,
    "autobackend": 2,
    "cli": 3,
    "__main__": 3,
    "": 3,  # instaseg/__init__.py: the public API
}
FORBIDDEN = {("inference", "export"), ("data", "models")}


def _part(module: str) -> str:
    """The top-level part of an instaseg module name ("" for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "instaseg":
            if node.module == "instaseg":
                out += [(node.lineno, f"instaseg.{alias.name}") for alias in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "instaseg"]
    return out


def layer_violations(package: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        source = "" if rel.parts == ("__init__.py",) else rel.with_suffix("").parts[0]
        for line, target in _imports(path):
            part = _part(target)
            if part not in LAYER or source not in LAYER:
                problems.append(f"{rel}:{line} imports {target}: a module no layer lists")
            elif LAYER[part] > LAYER[source] or (source, part) in FORBIDDEN:
                problems.append(f"{rel}:{line} ({source}) imports {target} ({part})")
    return problems


def test_imports_flow_downward() -> None:
    assert layer_violations() == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import from models up into inference, even inside a function, is reported."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad.py").write_text("def f():\n    from instaseg.inference import predictor\n")
    (tmp_path / "inference").mkdir()
    (tmp_path / "inference" / "worse.py").write_text("import instaseg.export.graph\n")
    (tmp_path / "inference" / "fine.py").write_text("from instaseg.models import detector\n")
    assert layer_violations(tmp_path) == [
        "inference/worse.py:1 (inference) imports instaseg.export.graph (export)",
        "models/bad.py:2 (models) imports instaseg.inference (inference)",
    ]
