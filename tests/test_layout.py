"""The package's shape: no import cycles (imports inside functions count), no oversized module,
no function with more than 10 parameters (ruff PLR0913), ruff clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "hazardseg"
MAX_MODULE_LINES = 400
DATA_TABLES: frozenset[str] = frozenset()
"""Modules allowed above MAX_MODULE_LINES because they are tables of data (none today)."""


def module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every .py file under the package ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = name.split(".") if is_package else name.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, base] if base else parts)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body (inside functions too;
    ``if TYPE_CHECKING:`` blocks excluded). ``from pkg import mod`` points at ``pkg.mod``."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        deps: set[str] = set()
        stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
        while stack:
            node = stack.pop()
            for child in ast.iter_child_nodes(node):
                if _is_type_checking(child):
                    continue
                if isinstance(child, ast.Import | ast.ImportFrom):
                    targets = _targets(child, name, is_package)
                    if isinstance(child, ast.ImportFrom):
                        # `from a import b`: the submodule a.b when it is one, else module a
                        subs = [t for t in targets[1:] if t in modules]
                        targets = subs + ([targets[0]] if len(subs) < len(targets) - 1 else [])
                    for target in targets:
                        while target not in modules and "." in target:
                            target = target.rsplit(".", 1)[0]
                        if target in modules and target != name:
                            deps.add(target)
                stack.append(child)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (each one an import circle),
    plus modules importing themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 50
    assert "hazardseg.evaluation.run" in graph["hazardseg.evaluation"]
    cycles = import_cycles(graph)
    assert not cycles, "import circles (imports inside functions count):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_cycle_finder_finds_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import b  # noqa\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub.b import g\n    return g\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\n\ndef g():\n    return a\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.sub"] == {"pkg.sub.b"}
    assert graph["pkg.c"] == set()
    assert import_cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_no_module_above_the_size_limit() -> None:
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, (path, _) in module_names(PACKAGE).items()
    }
    too_big = {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES and n not in DATA_TABLES}
    assert not too_big, f"modules above {MAX_MODULE_LINES} lines: {too_big}"


def _ruff() -> list[str]:
    if shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists():
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    exe = Path(sys.executable).parent / "ruff"
    return [str(exe) if exe.exists() else "ruff"]


def test_ruff_lint_and_format_clean() -> None:
    """pyproject selects PLR0913 (max-args 10): no function takes more than 10 parameters."""
    lint = subprocess.run(
        [*_ruff(), "check", "--no-cache", "src", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", "src", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_ruff_enforces_the_parameter_limit(tmp_path: Path) -> None:
    params = ", ".join(f"a{i}" for i in range(11))
    (tmp_path / "many.py").write_text(f"def f({params}):\n    return a0\n")
    res = subprocess.run(
        [*_ruff(), "check", "--no-cache", "--config", str(REPO / "pyproject.toml"), "many.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "PLR0913" in res.stdout, res.stdout + res.stderr


LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "hazardseg",
        "hazardseg.__main__",
        "hazardseg.errors",
        "hazardseg.io",
        "hazardseg.optional",
        "hazardseg.progress",
        "hazardseg.precision",
        "hazardseg.run_folder",
        "hazardseg.typed_config",
        "hazardseg.config",
        "hazardseg.distributed",
    ),
    ("hazardseg.data",),
    ("hazardseg.models",),
    ("hazardseg.metrics", "hazardseg.anomaly"),
    ("hazardseg.training", "hazardseg.evaluation"),
    ("hazardseg.reports", "hazardseg.inference"),
    ("hazardseg.deploy", "hazardseg.workflows"),
    ("hazardseg.cli",),
)
"""The layers of docs/DESIGN.md, lowest first: a module may import its own layer and those
below, never one above (``hazardseg.__main__`` runs the CLI and is exempt)."""


def layer_of(module: str) -> int:
    """The layer of a module: the longest package prefix listed in :data:`LAYERS`."""
    best, found = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), i
    if found < 0:
        raise AssertionError(f"{module} is in no layer of LAYERS (add it)")
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a module from a layer above the importer's."""
    out = []
    for module, deps in sorted(graph.items()):
        if module == "hazardseg.__main__":
            continue
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(module):
                out.append(f"{module} (layer {layer_of(module)}) -> {dep} (layer {layer_of(dep)})")
    return out


def test_no_module_imports_from_a_layer_above_it() -> None:
    graph = import_graph(PACKAGE)
    problems = upward_imports(graph)
    assert not problems, "imports that run against the layers of docs/DESIGN.md:\n" + "\n".join(
        problems
    )
    # and no two packages import each other, even within a layer
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        top = ".".join(module.split(".")[:2])
        packages.setdefault(top, set()).update(".".join(d.split(".")[:2]) for d in deps)
    pairs = sorted(
        f"{a} <-> {b}" for a in packages for b in packages[a] if a < b and a in packages.get(b, ())
    )
    assert not pairs, "packages that import each other: " + ", ".join(pairs)


def test_the_layer_check_finds_an_upward_import() -> None:
    graph = {"hazardseg.metrics.ood": {"hazardseg.evaluation.run"}, "hazardseg.cli": set()}
    assert upward_imports(graph) == [
        "hazardseg.metrics.ood (layer 3) -> hazardseg.evaluation.run (layer 4)"
    ]


def test_design_md_names_modules_that_exist() -> None:
    """docs/DESIGN.md names only modules and packages that exist, and every layer."""
    import re

    text = (REPO / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    modules = module_names(PACKAGE)
    named = set(re.findall(r"`(hazardseg(?:\.\w+)+)", text))
    missing = sorted(n for n in named if n not in modules and n.rsplit(".", 1)[0] not in modules)
    assert not missing, f"docs/DESIGN.md names modules that do not exist: {missing}"
    for names in LAYERS:
        for name in names:
            if name not in ("hazardseg", "hazardseg.__main__"):
                assert name.split(".")[-1] in text, f"docs/DESIGN.md does not mention {name}"
