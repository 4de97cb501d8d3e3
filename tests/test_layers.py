"""Imports flow one way, with no loops, and only cli/ prints.

Layers, bottom to top (a module may import its own part, the layers below, and the other parts of its own layer
except the pairs kept apart):
    0  errors, utils, version, config
    1  data, models                      (apart: neither imports the other)
    2  inference, evaluation             (apart)
    3  engine, export                    (apart)
    4  deploy                            (backend chooser, benchmark: built on inference and export)
    5  cli, __main__, instaseg/__init__ (the public API)

Every `import instaseg...` in the package, at module level or inside a function, is checked. A direct import can
look fine while the module it names reaches further (``inference -> X -> export``), so everything a module reaches
through any chain of imports is checked too, and the whole graph must be free of cycles.

Library code returns data and cli/ renders it: outside cli/ no module calls ``print(`` or ``<console>.print(``,
imports rich or defines a ``print_*`` function, except rich's progress bars in utils/progress.py and the public
``Result.print()``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import instaseg

PACKAGE = Path(instaseg.__file__).resolve().parent
LAYER = {
    "errors": 0,
    "utils": 0,
    "version": 0,
    "config": 0,
    "data": 1,
    "models": 1,
    "inference": 2,
    "evaluation": 2,
    "engine": 3,
    "export": 3,
    "deploy": 4,
    "cli": 5,
    "__main__": 5,
    "": 5,  # instaseg/__init__.py: the public API
}
APART = {frozenset(("data", "models")), frozenset(("inference", "evaluation")), frozenset(("engine", "export"))}
# the only places outside cli/ that may write to the terminal: rich's progress bars behind one helper, and the
# public `Result.print()` (PaddleX-style), which prints because the user asks it to
RICH_ALLOWED = {"utils/progress.py"}
PRINT_ALLOWED = {("inference/result.py", "Result.print")}


# ---- the import graph ----------------------------------------------------------------------------------------


def _module_name(rel: Path) -> str:
    parts = rel.with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("instaseg", *parts))


def _modules(package: Path) -> dict[str, Path]:
    """instaseg module name -> its file, for every .py file under ``package``."""
    return {_module_name(p.relative_to(package)): p for p in sorted(package.rglob("*.py"))}


def _part(module: str) -> str:
    """The top-level part of an instaseg module name ("" for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _shown(part: str) -> str:
    return part or "instaseg/__init__"


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, module) of every instaseg import in the file, anywhere in it. ``from instaseg.a import b`` names
    module ``instaseg.a.b`` where that is a module, else ``instaseg.a`` (``b`` is then a name inside it; for
    ``from instaseg import X``, the package's ``__init__``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "instaseg":
                continue
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                out.append((node.lineno, child if child in modules else node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "instaseg"]
    return sorted(set(out))


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the instaseg modules it imports (those that exist in ``package``)."""
    modules = _modules(package)
    graph = {}
    for name, path in modules.items():
        graph[name] = {target for _, target in _imports(path, modules) if target in modules and target != name}
    return graph


def _allowed(source: str, target: str, layers: dict[str, int], apart: set[frozenset]) -> bool:
    if source == target:
        return True
    return layers[target] <= layers[source] and frozenset((source, target)) not in apart


# ---- the checks --------------------------------------------------------------------------------------------


def layer_violations(package: Path = PACKAGE, layers: dict = LAYER, apart: set = APART) -> list[str]:
    """Every direct import of a module from a layer above, or from a part kept apart from its own."""
    modules = _modules(package)
    problems = []
    for name, path in modules.items():
        rel, source = path.relative_to(package), _part(name)
        for line, target in _imports(path, modules):
            part = _part(target)
            if part not in layers or source not in layers:
                problems.append(f"{rel}:{line} imports {target}: a module no layer lists")
            elif not _allowed(source, part, layers, apart):
                problems.append(f"{rel}:{line} ({_shown(source)}) imports {target} ({_shown(part)})")
    return problems


def _paths_from(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module reachable from ``start``, with one shortest import chain to it (breadth first)."""
    paths = {start: [start]}
    queue = [start]
    for module in queue:
        for target in sorted(graph.get(module, ())):
            if target not in paths:
                paths[target] = [*paths[module], target]
                queue.append(target)
    return paths


def transitive_violations(package: Path = PACKAGE, layers: dict = LAYER, apart: set = APART) -> list[str]:
    """Every module reached through a chain of imports that the module at the chain's start may not import."""
    graph = import_graph(package)
    problems = []
    for module in sorted(graph):
        source = _part(module)
        for target, path in sorted(_paths_from(graph, module).items()):
            part = _part(target)
            if source in layers and part in layers and not _allowed(source, part, layers, apart):
                chain = " -> ".join(path)
                problems.append(f"{module} ({_shown(source)}) reaches {target} ({_shown(part)}): {chain}")
    return problems


def _strongly_connected(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit on a deep chain)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                yield sorted(component)


def _cycle_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One import loop inside a strongly connected component: from its first module back to it."""
    start, inside = component[0], set(component)
    paths = _paths_from({m: graph[m] & inside for m in component}, start)
    back = min((paths[m] for m in component if start in graph[m]), key=len)
    return [*back, start]


def import_cycles(package: Path = PACKAGE) -> list[str]:
    """Each group of modules that import one another in a loop: one loop through it, then all its members."""
    graph = import_graph(package)
    cycles = []
    for component in _strongly_connected(graph):
        if len(component) > 1:
            loop = " -> ".join(_cycle_through(graph, component))
            cycles.append(f"loop {loop} (all in loops together: {', '.join(component)})")
    return sorted(cycles)


def _nodes_with_scope(tree: ast.AST, scope: str = "") -> Iterator[tuple[ast.AST, str]]:
    """Every node of the tree with the qualified name of the class/function it sits in ("Result.print")."""
    for node in ast.iter_child_nodes(tree):
        yield node, scope
        inner = scope
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = f"{scope}.{node.name}" if scope else node.name
        yield from _nodes_with_scope(node, inner)


def printing_outside_cli(package: Path = PACKAGE) -> list[str]:
    """`print(`, `<console>.print(`, rich imports and `print_*` functions anywhere but cli/ (and the exceptions)."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] == "cli":
            continue
        for node, scope in _nodes_with_scope(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{rel.as_posix()}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                names = []
            if any(n.split(".")[0] == "rich" for n in names) and rel.as_posix() not in RICH_ALLOWED:
                problems.append(f"{where} imports rich")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("print_"):
                problems.append(f"{where} defines {node.name}")
            if isinstance(node, ast.Call):
                func = node.func
                printing = (isinstance(func, ast.Name) and func.id == "print") or (
                    isinstance(func, ast.Attribute) and func.attr == "print"
                )
                if printing and (rel.as_posix(), scope) not in PRINT_ALLOWED:
                    problems.append(f"{where} prints ({scope or 'module level'})")
    return problems


# ---- the package ---------------------------------------------------------------------------------------------


def test_imports_flow_downward() -> None:
    assert layer_violations() == []


def test_no_module_reaches_a_layer_above_through_others() -> None:
    assert transitive_violations() == []


def test_no_import_loops() -> None:
    assert import_cycles() == []


def test_only_cli_prints() -> None:
    assert printing_outside_cli() == []


# ---- the checker itself, on crafted packages -------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


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


def test_the_check_follows_chains_of_imports(tmp_path: Path) -> None:
    """inference -> helper -> export: each step is allowed by this table, the chain is not."""
    _write(
        tmp_path,
        {
            "inference/run.py": "from instaseg.helper import go\n",
            "helper.py": "def go():\n    from instaseg.export import onnx\n",
            "export/onnx.py": "from instaseg.models import detector\n",
            "models/detector.py": "",
        },
    )
    layers = {"models": 0, "inference": 1, "helper": 1, "export": 1}
    apart = {frozenset(("inference", "export"))}
    assert layer_violations(tmp_path, layers, apart) == []
    assert transitive_violations(tmp_path, layers, apart) == [
        "instaseg.inference.run (inference) reaches instaseg.export.onnx (export): "
        "instaseg.inference.run -> instaseg.helper -> instaseg.export.onnx"
    ]


def test_the_check_finds_import_loops(tmp_path: Path) -> None:
    """A loop closed by an import inside a function, through `from package import name`, is found; a chain is not."""
    _write(
        tmp_path,
        {
            "__init__.py": "def api():\n    from instaseg.data import a\n",
            "data/a.py": "import instaseg.data.b\n",
            "data/b.py": "def f():\n    from instaseg import __version__\n",
            "data/c.py": "from instaseg.data.a import thing\n",
            "utils.py": "",
            "data/d.py": "from instaseg import utils\n",
        },
    )
    assert import_cycles(tmp_path) == [
        "loop instaseg -> instaseg.data.a -> instaseg.data.b -> instaseg "
        "(all in loops together: instaseg, instaseg.data.a, instaseg.data.b)"
    ]


def test_the_check_sees_printing(tmp_path: Path) -> None:
    """print, console.print, rich and print_* outside cli/ are reported; cli/, the progress helper and
    Result.print are not."""
    _write(
        tmp_path,
        {
            "cli/show.py": "from rich.table import Table\n\ndef print_it():\n    print('fine here')\n",
            "utils/progress.py": "def bar():\n    from rich.progress import Progress\n",
            "inference/result.py": "class Result:\n    def print(self):\n        print(self)\n",
            "engine/run.py": "import rich\n\ndef print_metrics(console):\n    console.print('x')\n",
            "data/check.py": "def check():\n    print('done')\n",
        },
    )
    assert printing_outside_cli(tmp_path) == [
        "data/check.py:2 prints (check)",
        "engine/run.py:1 imports rich",
        "engine/run.py:3 defines print_metrics",
        "engine/run.py:4 prints (print_metrics)",
    ]
