"""The package's shape, held by tests: no import cycle, sizes a newcomer can hold, one reader of the
environment, and a bench/ that is a package of its own."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "lookalike"
# A function or a class longer than this is a defect (the targets are 60 and 250).
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 300


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every lookalike module ``module`` imports, anywhere in it: at the top, inside functions
    (lazy imports) and under ``if TYPE_CHECKING:``. ``from pkg import name`` imports ``pkg.name``
    when that is a module, and ``pkg`` (its ``__init__``) itself."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
    return {_owner(name, modules) for name in found if name.startswith("lookalike")} - {module, None}  # type: ignore[misc]


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_lazy_and_type_checking_imports_included():
    modules = _modules()
    graph = {m: _imports(m, p, modules) & set(modules) for m, p in modules.items()}
    assert _cycles(graph) == []
    # The checker sees a cycle where there is one.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_or_class_too_long_to_hold_in_mind():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if lines > limit:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_only_the_settings_read_the_environment():
    reads = re.compile(r"\bos\.environ\b|\bgetenv\b|\benviron\.get\b|\bputenv\b")
    readers = [
        str(path.relative_to(REPO))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "settings.py" and reads.search(path.read_text())
    ]
    assert readers == []


def test_bench_is_a_package_with_no_path_edits_and_no_test_imports():
    bench = REPO / "bench"
    assert (bench / "__init__.py").is_file()
    for path in sorted(bench.glob("*.py")):
        text = path.read_text()
        assert "sys.path" not in text, path.name
        tree = ast.parse(text)
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m == "tests" or m.startswith(("tests.", "conftest"))}, path.name


def test_the_cli_and_the_library_import_no_model_runtime_until_a_model_runs():
    """`info`, `list`-like reads and tag search start fast: onnx (most of a second to import) and
    onnxruntime are imported only where a model is built or run."""
    code = (
        "import sys, lookalike.cli, lookalike.library.core, lookalike.server.app; "
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'matplotlib', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_core_install_holds_no_test_only_or_optional_package():
    """`make demo` installs the core dependencies alone: what only tests or an optional feature use
    stays in an extra (docs/benchmarks.md, "A fresh clone to a served page")."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    optional = {"ray", "dlib-bin", "playwright", "schemathesis", "scikit-image", "ruff", "mypy", "matplotlib"}
    assert core & (optional | {"pytest", "httpx"}) == set()
    extras = project["optional-dependencies"]
    assert extras["plot"] == ["matplotlib>=3.7,<4"] and extras["remote"] == ["httpx>=0.27,<1"]
    makefile = (REPO / "Makefile").read_text()
    assert "install-venv.sh $(PYTHON) $(VENV) .\n" in makefile  # demo: the package alone
