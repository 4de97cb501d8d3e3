"""Every architecture package has one shape and stands alone.

- It imports nothing from another architecture's package, and from the rest of instaseg only the contract
  (`instaseg.models.detector`), the shared parts (`instaseg.models.common`), errors and utils: editing one
  architecture never changes another, and none reaches into the registry, recipes, weights or anything above.
- It follows the template (docs/adding-an-architecture.md): ``__init__.py`` exports only ``ARCHITECTURE``;
  ``recipe.py`` holds the model section's defaults and value rules, ``build.py`` the builder, ``model.py`` the
  detector; a role has one file name in every package (``heads.py``, never ``head.py``; ``decode.py``, never
  ``detect.py`` or ``postprocess.py``).
- No stretch of six or more lines stands in two architecture packages: what two need lives in `common/` once.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import instaseg
from instaseg.models.registry import ARCHITECTURES

MODELS = Path(instaseg.__file__).resolve().parent / "models"
ALLOWED = ("instaseg.models.detector", "instaseg.models.common", "instaseg.errors", "instaseg.utils")
REQUIRED = {"__init__.py": ["ARCHITECTURE"], "recipe.py": ["DEFAULTS", "validate"], "build.py": ["build"]}
# other names seen for a role -> the template's name for it
SYNONYMS = {
    "head.py": "heads.py",
    "roi_heads.py": "heads.py",
    "decoder.py": "heads.py",
    "detect.py": "decode.py",
    "inference.py": "decode.py",
    "postprocess.py": "decode.py",
    "targets.py": "assigner.py",
    "matcher.py": "assigner.py",
    "config.py": "recipe.py",
    "defaults.py": "recipe.py",
}
MIN_SHARED = 6


def package_dirs(models: Path = MODELS) -> dict[str, Path]:
    """Architecture name -> its package folder, as the registry lists them."""
    return {name: models / module.rsplit(".", 1)[1] for name, module in ARCHITECTURES.items()}


def _imported(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("instaseg"):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("instaseg")]
    return found


def import_violations(packages: dict[str, Path]) -> list[str]:
    problems = []
    for folder in packages.values():
        own = f"instaseg.models.{folder.name}"
        for path in sorted(folder.rglob("*.py")):
            for line, module in _imported(path):
                fine = module == own or module.startswith(own + ".")
                fine = fine or any(module == a or module.startswith(a + ".") for a in ALLOWED)
                if not fine:
                    problems.append(f"{folder.name}/{path.name}:{line} imports {module}")
    return problems


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def template_violations(packages: dict[str, Path]) -> list[str]:
    problems = []
    for folder in packages.values():
        for file, names in REQUIRED.items():
            path = folder / file
            if not path.is_file():
                problems.append(f"{folder.name}: no {file}")
                continue
            missing = [n for n in names if n not in _top_level_names(path)]
            if missing:
                problems.append(f"{folder.name}/{file} lacks {', '.join(missing)}")
        init = folder / "__init__.py"
        if init.is_file():
            public = {n for n in _top_level_names(init) if not n.startswith("_")}
            if public - {"ARCHITECTURE"}:
                problems.append(f"{folder.name}/__init__.py defines {', '.join(sorted(public - {'ARCHITECTURE'}))}")
        for path in folder.glob("*.py"):
            if path.name in SYNONYMS:
                problems.append(f"{folder.name}/{path.name} should be named {SYNONYMS[path.name]}")
    return problems


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines that carry code: blank lines, comments, imports and lone punctuation out."""
    out = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = " ".join(raw.split())
        if not text or text.startswith(("#", "import ", "from ")) or not any(c.isalnum() for c in text):
            continue
        out.append((number, text))
    return out


def shared_stretches(packages: dict[str, Path], size: int = MIN_SHARED) -> list[str]:
    """Runs of ``size`` or more identical code lines that stand in files of two different packages, one line per
    run: where it starts, and where it stood first."""
    seen: dict[tuple[str, ...], tuple[str, str]] = {}
    problems = []
    for folder in packages.values():
        for path in sorted(folder.rglob("*.py")):
            lines = _code_lines(path)
            in_run = False
            for i in range(len(lines) - size + 1):
                key = tuple(text for _, text in lines[i : i + size])
                where = f"{folder.name}/{path.name}:{lines[i][0]}"
                first = seen.setdefault(key, (folder.name, where))
                repeated = first[0] != folder.name
                if repeated and not in_run:
                    problems.append(f"{where} repeats {first[1]}")
                in_run = repeated
    return problems


def test_no_architecture_imports_another_or_anything_above_the_shared_parts() -> None:
    assert import_violations(package_dirs()) == []


def test_every_architecture_package_follows_the_template() -> None:
    assert template_violations(package_dirs()) == []


def test_no_stretch_of_lines_stands_in_two_architecture_packages() -> None:
    assert shared_stretches(package_dirs()) == []


@pytest.fixture
def crafted(tmp_path: Path) -> dict[str, Path]:
    """Two packages in the template's shape that share one helper and misbehave in every way checked."""
    shared = "".join(f"    value_{i} = compute(value_{i - 1})\n" for i in range(1, 8))
    for name in ("alpha", "beta"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "__init__.py").write_text("ARCHITECTURE = None\n")
        (folder / "recipe.py").write_text("DEFAULTS = {}\n\n\ndef validate(cfg, source):\n    pass\n")
        (folder / "build.py").write_text(f"def build():\n{shared}")
    (tmp_path / "alpha" / "head.py").write_text("from instaseg.models.beta.build import build\n")
    (tmp_path / "beta" / "__init__.py").write_text("ARCHITECTURE = None\nDEFAULTS = {}\n")
    (tmp_path / "beta" / "model.py").write_text("from instaseg.models.registry import ARCHITECTURES\n")
    return {"alpha": tmp_path / "alpha", "beta": tmp_path / "beta"}


def test_the_checks_see_what_they_forbid(crafted: dict[str, Path]) -> None:
    assert import_violations(crafted) == [
        "alpha/head.py:1 imports instaseg.models.beta.build",
        "beta/model.py:1 imports instaseg.models.registry",
    ]
    assert template_violations(crafted) == [
        "alpha/head.py should be named heads.py",
        "beta/__init__.py defines DEFAULTS",
    ]
    assert shared_stretches(crafted) == ["beta/build.py:1 repeats alpha/build.py:1"]
