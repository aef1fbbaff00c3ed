"""The import layers, checked on the source (AST), so a violation fails here and not in review.

Data flows one way: ``ingest`` → ``detect`` → ``alerts``, and the ``vaultwatch`` shell wires
them. Concretely:

* ``ingest`` imports nothing of ``detect``, ``alerts`` or ``vaultwatch``;
* ``detect`` imports nothing of ``alerts`` or ``vaultwatch``;
* ``alerts`` imports nothing of ``vaultwatch``, and of ``detect`` only the public alert contract,
  ``detect.alert`` (the engine, rules, baselines and errors are ``detect``'s internals);
* the demo (``vaultwatch/demo/``: stack, traffic, servers, scenarios, dataset generation) is
  imported only by the demo itself, by the CLI's ``demo`` verb and by tests. The old flat
  locations of those modules (``vaultwatch.traffic`` and friends) count as demo too, so the rule
  holds before and after the move;
* ``ingest``, ``detect`` and ``alerts`` import at module level only: an import inside a function
  hides a dependency (or an import cycle) from the reader and from this check. A lazily imported
  heavy library is not an exception: these packages need their dependencies to work at all.

Every violation is reported with its file and line. ``KNOWN`` lists violations that exist today
and are being fixed elsewhere; an entry that no longer occurs fails the test too, so the list
only shrinks and never hides a new violation.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "detect", "alerts", "vaultwatch")
#: Where the demo lives, and where its modules lived before ``vaultwatch/demo/`` existed.
DEMO = (
    "vaultwatch.demo",
    "vaultwatch.traffic",
    "vaultwatch.scenarios",
    "vaultwatch.demo_stack",
    "vaultwatch.servers",
    "vaultwatch.datasets",
)
#: The CLI verb that starts the demo (its module, at either location).
DEMO_VERB = ("vaultwatch.cli.demo", "vaultwatch.commands.demo")
#: Packages whose imports must all be at module level.
MODULE_LEVEL_ONLY = ("ingest", "detect", "alerts")

#: (importing module, imported module or name) -> why it exists today and the change that removes
#: it. Keep it short; never add to it to make a new
#: violation pass.
_KAFKA_LAZY = (
    "kafka-python imported inside import_kafka()/keyed_partitioner() for start-up time and to mute "
    "its DeprecationWarning; to fix: import it at the top of ingest/kafka_config.py (the warning "
    "is already filtered in pytest's config, and is hidden by default outside tests)"
)
KNOWN: dict[tuple[str, str], str] = {
    ("ingest.kafka_config", "kafka"): _KAFKA_LAZY,
    ("ingest.kafka_config", "kafka.errors"): _KAFKA_LAZY,
    ("ingest.kafka_config", "kafka.partitioner.default.DefaultPartitioner"): _KAFKA_LAZY,
    ("ingest.kafka_config", "kafka.partitioner.default.murmur2"): _KAFKA_LAZY,
}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Iterator[tuple[str, Path]]:
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield module_name(path), path


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module, or module.name for ``from module import name``
    line: int
    in_function: bool


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer if is_package else importer.rpartition(".")[0]
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(name: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(name, alias.name, child.lineno, in_function)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(name, is_package, child)
                for alias in child.names:
                    yield Import(
                        name, f"{base}.{alias.name}" if alias.name != "*" else base, child.lineno, in_function
                    )
            yield from visit(child, inside)

    yield from visit(tree, False)


def rule_broken(imp: Import) -> str | None:
    """Why ``imp`` breaks a layer rule, or None."""
    src, dst = imp.module, imp.target
    if within(src, "ingest"):
        for pkg in ("detect", "alerts", "vaultwatch"):
            if within(dst, pkg):
                return f"ingest imports {pkg}"
    if within(src, "detect"):
        for pkg in ("alerts", "vaultwatch"):
            if within(dst, pkg):
                return f"detect imports {pkg}"
    if within(src, "alerts"):
        if within(dst, "vaultwatch"):
            return "alerts imports vaultwatch"
        if within(dst, "detect") and not within(dst, "detect.alert"):
            return "alerts imports detect beyond the alert contract (detect.alert)"
    src_is_demo = any(within(src, d) for d in DEMO) or src in DEMO_VERB
    if not src_is_demo and any(within(dst, d) for d in DEMO):
        return "production code imports the demo"
    if imp.in_function and any(within(src, p) for p in MODULE_LEVEL_ONLY):
        return "function-level import"
    return None


def violations() -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for name, path in modules():
        for imp in imports(name, path):
            why = rule_broken(imp)
            if why is not None:
                key = (name, imp.target)
                where = f"{path.relative_to(ROOT)}:{imp.line}"
                found[key] = f"{where}: {why} ({imp.target})"
    return found


def test_import_layers() -> None:
    found = violations()
    new = {k: v for k, v in found.items() if k not in KNOWN}
    stale = sorted(set(KNOWN) - set(found))
    assert not new, "layer violations:\n" + "\n".join(sorted(new.values()))
    assert not stale, f"fixed violations still listed in KNOWN (remove them): {stale}"


# -- the checker itself --------------------------------------------------------------------------------
def _check(src: str, module: str, tmp_path: Path, *, package: bool = False) -> list[str]:
    path = tmp_path / ("__init__.py" if package else "m.py")
    path.write_text(src)
    return [w for imp in imports(module, path) if (w := rule_broken(imp)) is not None]


def test_the_rules_catch_what_they_say(tmp_path: Path) -> None:
    assert _check("import detect.engine\n", "ingest.parse", tmp_path) == ["ingest imports detect"]
    assert _check("from alerts.model import X\n", "detect.engine", tmp_path) == ["detect imports alerts"]
    assert _check("from ..settings import S\n", "detect.sub.x", tmp_path) == []
    assert (
        _check("from detect.alert import Alert\nfrom detect import alert\n", "alerts.store", tmp_path) == []
    )
    assert _check("from detect import Engine\n", "alerts.store", tmp_path) == [
        "alerts imports detect beyond the alert contract (detect.alert)"
    ]
    assert _check("from detect.engine import Engine\n", "alerts.store", tmp_path) != []
    assert _check("from ..settings import S\n", "alerts.channels.x", tmp_path) == []
    assert _check("from ...vaultwatch import x\n", "alerts.channels.x", tmp_path) == [
        "alerts imports vaultwatch"
    ]
    assert _check("from ..demo.traffic import T\n", "vaultwatch.report", tmp_path, package=True) == [
        "production code imports the demo"
    ]
    assert _check("from .. import traffic\n", "vaultwatch.cli.run", tmp_path) == [
        "production code imports the demo"
    ]
    assert _check("from ..demo import stack\n", "vaultwatch.cli.demo", tmp_path) == []
    assert _check("from .traffic import T\n", "vaultwatch.demo.stack", tmp_path) == []
    assert _check("def f():\n    import json\n", "detect.rules", tmp_path) == ["function-level import"]
    assert _check("def f():\n    import json\n", "vaultwatch.cli.run", tmp_path) == []
    assert (
        _check("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import json\n", "detect.x", tmp_path)
        == []
    )
