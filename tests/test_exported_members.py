"""Every package states its public surface in ``__all__``, and everything it lists exists.

As httpx's ``tests/test_exported_members.py``: a name in ``__all__`` that the package does not
define breaks ``from pkg import *`` and lies to the reader. Every package directory under the four
top-level packages must be a regular package whose ``__init__.py`` declares ``__all__``, except the
few in :data:`EXEMPT`, each with its reason. Every ``__all__`` found (packages and ``detect``'s
modules) is checked.

A package whose submodules are imported by name, so that a caller loads only what it uses
(``vaultwatch.service``, ``vaultwatch.vault``, ``vaultwatch.demo``, ``vaultwatch.api.routes``),
lists those submodules in ``__all__`` instead of re-exporting their contents: importing the
package loads none of them. Such a package must list every public submodule it has.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

import detect
import detect.alert

ROOT = Path(__file__).resolve().parents[1]
TOP = ("ingest", "detect", "alerts", "vaultwatch")

#: Package directories that need not declare ``__all__``, and why. An entry that no longer
#: applies (the directory is gone, or now declares ``__all__``) fails the test.
EXEMPT: dict[str, str] = {
    "alerts.migrations": "Alembic's script directory (package data run by Store.migrate()), no API",
    "alerts.migrations.versions": "Alembic's revision scripts, loaded by Alembic by file, no API",
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_dirs() -> list[Path]:
    """Every directory under the top-level packages that holds Python modules."""
    dirs = {p.parent for top in TOP for p in (ROOT / top).rglob("*.py")}
    return sorted(d for d in dirs if "__pycache__" not in d.parts)


def _declares_all(directory: Path) -> bool:
    init = directory / "__init__.py"
    return init.is_file() and "__all__" in init.read_text(encoding="utf-8")


def _declaring() -> list[str]:
    """Packages (and ``detect``'s modules) whose source declares ``__all__``."""
    paths = [p for top in TOP for p in (ROOT / top).rglob("__init__.py")]
    paths += [p for p in (ROOT / "detect").glob("*.py") if p.name != "__init__.py"]
    return sorted(_name(p) for p in paths if "__all__" in p.read_text(encoding="utf-8"))


def _submodules(package: ModuleType) -> set[str]:
    """Names of the modules and subpackages directly inside ``package`` (from its directory)."""
    directory = Path(package.__file__ or "").parent
    found = {p.stem for p in directory.glob("*.py") if p.name != "__init__.py"}
    found |= {d.name for d in directory.iterdir() if (d / "__init__.py").is_file()}
    return found


@pytest.mark.parametrize("package", TOP)
def test_top_level_packages_declare_all(package: str) -> None:
    module = importlib.import_module(package)
    assert isinstance(getattr(module, "__all__", None), list), f"{package} declares no __all__"
    assert module.__all__, package


@pytest.mark.parametrize(
    "directory",
    [d for d in _package_dirs() if _name(d / "__init__.py") not in EXEMPT],
    ids=lambda d: _name(d / "__init__.py"),
)
def test_every_package_declares_all(directory: Path) -> None:
    name = _name(directory / "__init__.py")
    assert (directory / "__init__.py").is_file(), f"{name} has no __init__.py (a namespace package)"
    assert _declares_all(directory), f"{name}/__init__.py declares no __all__"
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name}.__all__ is not a list"


def test_exemptions_still_apply() -> None:
    dirs = {_name(d / "__init__.py"): d for d in _package_dirs()}
    stale = sorted(name for name in EXEMPT if name not in dirs or _declares_all(dirs[name]))
    assert stale == [], f"EXEMPT lists packages that are gone or now declare __all__ (remove them): {stale}"


@pytest.mark.parametrize("name", _declaring())
def test_exported_members_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert isinstance(exported, list) and all(isinstance(m, str) for m in exported), name
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    submodules = _submodules(module) if hasattr(module, "__path__") else set()
    # A package may export a submodule by name; it need not be imported yet, but it must exist.
    missing = [m for m in exported if not hasattr(module, m) and m not in submodules]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"
    for member in sorted(set(exported) & submodules - set(vars(module))):
        assert importlib.util.find_spec(f"{name}.{member}") is not None, f"{name}.{member}"


@pytest.mark.parametrize("name", _declaring())
def test_a_package_exporting_submodules_lists_them_all(name: str) -> None:
    module = importlib.import_module(name)
    if not hasattr(module, "__path__"):
        return
    submodules = _submodules(module)
    exported = {m for m in module.__all__ if m in submodules and not hasattr(module, m)}
    if not exported:
        return  # it re-exports names, not submodules
    public = {m for m in submodules if not m.startswith("_")}
    assert sorted(public - set(module.__all__)) == [], f"{name}.__all__ leaves out public submodules"


@pytest.mark.parametrize(
    "name", ["vaultwatch.service", "vaultwatch.vault", "vaultwatch.demo", "vaultwatch.api.routes"]
)
def test_submodule_packages_import_nothing(name: str) -> None:
    # Their __all__ names submodules so that importing the package loads none of them (pyarrow,
    # the Kafka client, hvac, the demo's generators): the __init__.py imports nothing.
    init = ROOT.joinpath(*name.split(".")) / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    imports = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and node.module != "__future__")
    ]
    assert imports == [], f"{init.relative_to(ROOT)} imports at lines {imports}"
    assert set(importlib.import_module(name).__all__) <= _submodules(importlib.import_module(name))


def test_detect_exports_the_alert_contract() -> None:
    assert set(detect.alert.__all__) <= set(detect.__all__)
    for name in detect.alert.__all__:
        assert getattr(detect, name) is getattr(detect.alert, name)
