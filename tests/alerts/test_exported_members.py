"""The public surface of ``alerts`` exists, and the package's imports form a DAG.

As httpx's ``tests/test_exported_members.py``: every name a package lists in ``__all__`` must be
there. The import graph is read from the source (every ``import`` anywhere in a module, including
``TYPE_CHECKING`` blocks and function bodies) and must be acyclic; each module must also import on
its own in a fresh interpreter, whatever order the others were loaded in.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import alerts
import alerts.channels

PACKAGE_DIR = Path(alerts.__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def _module_files() -> dict[str, Path]:
    """Every module of the ``alerts`` package by dotted name (packages by their ``__init__``)."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(REPO_ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found[".".join(parts)] = path
    return found


MODULES = _module_files()
# Alembic's scripts: env.py runs only inside a migration (it needs alembic's context).
IMPORTABLE = sorted(m for m in MODULES if not m.startswith("alerts.migrations"))


@pytest.mark.parametrize("package", [alerts, alerts.channels], ids=lambda m: m.__name__)
def test_every_exported_name_exists(package: ModuleType) -> None:
    names = package.__all__
    assert names, f"{package.__name__} exports nothing"
    assert len(names) == len(set(names)), f"{package.__name__}.__all__ has duplicates"
    missing = [name for name in names if not hasattr(package, name)]
    assert missing == []


def test_every_module_all_is_truthful() -> None:
    for name in IMPORTABLE:
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{name} states no __all__"
        missing = [n for n in exported if not hasattr(module, n)]
        assert missing == [], f"{name}.__all__ names missing attributes: {missing}"


def test_main_entry_points_are_reexported() -> None:
    for name in (
        "Store",
        "AlertQuery",
        "Router",
        "RouterConfig",
        "DeliveryWorker",
        "Silence",
        "SecretResolver",
        "build_channels",
        "load_config",
        "AlertsError",
    ):
        assert name in alerts.__all__, name
    assert alerts.Store is importlib.import_module("alerts.store").Store
    assert alerts.channels.classify_status is importlib.import_module("alerts.channels._http").classify_status


def test_every_alerts_error_is_in_the_one_tree() -> None:
    errors = importlib.import_module("alerts.errors")
    classes = {n: getattr(errors, n) for n in errors.__all__}
    assert all(issubclass(c, errors.AlertsError) for c in classes.values())
    for name in errors.__all__:
        assert name in (errors.__doc__ or ""), f"{name} is not drawn in the errors docstring"
    # no other alerts module defines an exception class of its own
    for name in IMPORTABLE:
        module = importlib.import_module(name)
        for attr in vars(module).values():
            if isinstance(attr, type) and issubclass(attr, BaseException) and attr.__module__ == name:
                assert name == "alerts.errors", f"{name} defines {attr.__name__}; it belongs in alerts.errors"


def _imports(module: str, path: Path) -> tuple[set[str], list[str]]:
    """(in-repo modules ``module`` imports, and any such import not at module level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    nested: list[str] = []
    top_level = {id(node) for node in tree.body}
    # imports under a module-level ``if TYPE_CHECKING:`` count as module level
    for stmt in tree.body:
        if isinstance(stmt, ast.If):
            top_level.update(id(n) for n in ast.walk(stmt))

    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            # ``from alerts import schema`` imports the submodule alerts.schema
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin for a in node.names]
        for name in names:
            if name.split(".")[0] in {"alerts", "detect", "ingest", "vaultwatch"}:
                targets.add(name)
                if id(node) not in top_level:
                    nested.append(f"{module}:{node.lineno} imports {name}")
    return targets, nested


def _graph() -> dict[str, set[str]]:
    """Edges between alerts modules. Importing ``a.b.c`` also runs the ``a.b`` package unless the
    importer is itself inside it (Python initialises a package before its submodules)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        targets, _ = _imports(module, path)
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in MODULES and dep not in own_packages and dep != module:
                    graph[module].add(dep)
    return graph


def test_import_graph_is_acyclic() -> None:
    graph = _graph()
    assert graph["alerts.deliver"] >= {"alerts.channels", "alerts.channels.base"}  # the walk sees edges
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_function_level_imports_of_project_code() -> None:
    nested = [line for module, path in MODULES.items() for line in _imports(module, path)[1]]
    assert nested == []


def test_alerts_uses_only_the_public_contract_of_detect() -> None:
    allowed = {"detect.alert"}
    offending = []
    for module, path in MODULES.items():
        for target in _imports(module, path)[0]:
            root = target.split(".")[0]
            if root in {"vaultwatch", "ingest"} or (root == "detect" and target not in allowed):
                offending.append(f"{module} imports {target}")
    assert offending == []


_ISOLATED = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "alerts" or m.startswith("alerts.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failures[name] = traceback.format_exc(limit=3)
print(json.dumps(failures))
"""


def test_each_module_imports_first_in_a_fresh_interpreter() -> None:
    # One interpreter, alerts.* dropped from sys.modules before each module, so every module is
    # the first alerts module imported exactly once (third-party libraries stay cached: fast).
    proc = subprocess.run(
        [sys.executable, "-c", _ISOLATED, json.dumps(IMPORTABLE)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}


def test_the_module_list_is_complete() -> None:
    found = {m.name for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="alerts.")}
    assert found <= set(MODULES)
    assert {"alerts.store", "alerts.deliver", "alerts.channels._http", "alerts.errors"} <= found
