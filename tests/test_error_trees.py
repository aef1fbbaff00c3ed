"""One error tree per package, drawn in its ``errors`` module's docstring, and the drawing is true.

As httpx draws its exceptions in ``_exceptions.py``: ``ingest``, ``detect``, ``alerts`` and the
``vaultwatch`` shell each have one root (``IngestError``, ``DetectError``, ``AlertsError``,
``VaultwatchError``) and a tree of the errors they raise on purpose. This test imports every
module of each package, collects every exception class defined there, and checks that

* each one derives from its package's root;
* each one is drawn in the tree, under the parent it really has (its nearest base in the same
  package); and the tree draws no class that does not exist.

Classes that do not derive from their root are listed in :data:`ALLOWED`, each with its reason;
an entry that no longer applies (the class is gone or now derives from the root) fails the test,
so the list only shrinks. An allowed class must still be named in the docstring.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> (module holding the tree, name of the root class)
TREES: dict[str, tuple[str, str]] = {
    "ingest": ("ingest.errors", "IngestError"),
    "detect": ("detect.errors", "DetectError"),
    "alerts": ("alerts.errors", "AlertsError"),
    "vaultwatch": ("vaultwatch.errors", "VaultwatchError"),
}

#: Modules that are not imported, and why.
NOT_IMPORTED: dict[str, str] = {
    "alerts.migrations": "Alembic's scripts: env.py runs only inside a migration (it needs alembic's context)",
    "vaultwatch.cli.__main__": "running it is running the CLI (argparse exits the interpreter)",
}

#: "module.Class" -> why it does not derive from its package's root.
ALLOWED: dict[str, str] = {
    "vaultwatch.demo.stack.DemoStopped": (
        "the stop signal of the demo's traffic thread, caught by the demo verb; not an error, so "
        "an `except VaultwatchError` must not swallow it"
    ),
}


def _module_names(package: str) -> list[str]:
    """Every module of ``package``, found on disk.

    Not ``pkgutil.walk_packages``: it does not descend into a directory without ``__init__.py``
    (a new one, added by mistake), and a module it misses would escape the check.
    """
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if not any(name == skip or name.startswith(skip + ".") for skip in NOT_IMPORTED):
            names.append(name)
    return names


@cache
def _exceptions(package: str) -> dict[str, type[BaseException]]:
    """Every exception class defined (not just imported) in a module of ``package``, by name."""
    found: dict[str, type[BaseException]] = {}
    for name in _module_names(package):
        module: ModuleType = importlib.import_module(name)
        for attr in vars(module).values():
            if isinstance(attr, type) and issubclass(attr, BaseException) and attr.__module__ == name:
                assert attr.__name__ not in found, (
                    f"two exception classes named {attr.__name__} in {package}: "
                    f"{found[attr.__name__].__module__} and {name}"
                )
                found[attr.__name__] = attr
    return found


_ENTRY = re.compile(r"[├└]── *(\w+)")


def parse_tree(doc: str, root: str) -> dict[str, str | None]:
    """The tree drawn in ``doc`` below the line that is just ``root``: class name -> drawn parent.

    An entry is a line with ``├──`` or ``└──`` followed by a class name; its depth is the column
    of the name, and its parent the nearest entry above it whose name starts further left. Lines
    with only ``│`` before the text continue the previous entry's description. The tree ends at
    the first blank line.
    """
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == root), None)
    assert start is not None, f"no tree rooted at {root} is drawn"
    tree: dict[str, str | None] = {root: None}
    stack: list[tuple[int, str]] = [(lines[start].index(root), root)]  # (column, name)
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        match = _ENTRY.search(line)
        if match is None:
            continue
        column, name = match.start(1), match.group(1)
        while stack and stack[-1][0] >= column:
            stack.pop()
        assert stack, f"{name} is drawn left of the root {root}"
        assert name not in tree, f"{name} is drawn twice"
        tree[name] = stack[-1][1]
        stack.append((column, name))
    return tree


def _drawn_parent(cls: type[BaseException], classes: dict[str, type[BaseException]]) -> str | None:
    """The nearest base of ``cls`` defined in the same package (mixins like ValueError skipped)."""
    for base in cls.__mro__[1:]:
        if classes.get(base.__name__) is base:
            return base.__name__
    return None


@pytest.mark.parametrize("package", sorted(TREES))
def test_every_error_derives_from_the_package_root(package: str) -> None:
    module_name, root_name = TREES[package]
    root = getattr(importlib.import_module(module_name), root_name)
    classes = _exceptions(package)
    assert classes[root_name] is root
    outside = sorted(
        f"{cls.__module__}.{name}"
        for name, cls in classes.items()
        if not issubclass(cls, root) and f"{cls.__module__}.{name}" not in ALLOWED
    )
    assert outside == [], f"these do not derive from {root_name}: {outside}"


@pytest.mark.parametrize("package", sorted(TREES))
def test_the_drawn_tree_matches_the_classes(package: str) -> None:
    module_name, root_name = TREES[package]
    doc = importlib.import_module(module_name).__doc__ or ""
    tree = parse_tree(doc, root_name)
    classes = _exceptions(package)
    in_tree = {name: cls for name, cls in classes.items() if f"{cls.__module__}.{name}" not in ALLOWED}

    assert sorted(set(in_tree) - set(tree)) == [], f"defined in {package} but not drawn in {module_name}"
    assert sorted(set(tree) - set(in_tree)) == [], f"drawn in {module_name} but not defined in {package}"
    wrong = {
        name: (drawn, _drawn_parent(in_tree[name], classes))
        for name, drawn in tree.items()
        if drawn != _drawn_parent(in_tree[name], classes)
    }
    assert wrong == {}, f"drawn under the wrong parent (drawn, real): {wrong}"
    for key in ALLOWED:
        if key.startswith(package + "."):
            name = key.rpartition(".")[2]
            assert re.search(rf"\b{name}\b", doc), f"{key} is allowed outside the tree but not named"


def test_allowed_entries_still_apply() -> None:
    stale = []
    for key in ALLOWED:
        package = key.partition(".")[0]
        module_name, root_name = TREES[package]
        root = getattr(importlib.import_module(module_name), root_name)
        cls = _exceptions(package).get(key.rpartition(".")[2])
        if cls is None or f"{cls.__module__}.{cls.__name__}" != key or issubclass(cls, root):
            stale.append(key)
    assert stale == [], f"ALLOWED lists classes that are gone or now in their tree (remove them): {stale}"


def test_the_walk_finds_what_it_must() -> None:
    # A class outside the errors modules (and one in a directory without __init__.py would be too).
    assert "QuarantineError" in _exceptions("ingest")
    assert "ShipInterrupted" in _exceptions("ingest")
    assert "AuthError" in _exceptions("vaultwatch")


def test_the_tree_parser_reads_both_drawing_styles() -> None:
    narrow = """x::

    A
    ├── B          text
    │   └── C      text
    │              more text for C
    └── D
        └── E

after
"""
    assert parse_tree(narrow, "A") == {"A": None, "B": "A", "C": "B", "D": "A", "E": "D"}
    wide = """
    A
     ├── B                 text
     │    ├── C            text
     │    └── D
     └── E
"""
    assert parse_tree(wide, "A") == {"A": None, "B": "A", "C": "B", "D": "B", "E": "A"}
