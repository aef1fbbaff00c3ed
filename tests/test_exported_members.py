"""Every package states its public surface in ``__all__``, and everything it lists exists.

As httpx's ``tests/test_exported_members.py``: a name in ``__all__`` that the package does not
define breaks ``from pkg import *`` and lies to the reader. The four top-level packages must
declare ``__all__``; every subpackage (and every ``detect`` module) that declares one is checked.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import detect
import detect.alert

ROOT = Path(__file__).resolve().parents[1]
TOP = ("ingest", "detect", "alerts", "vaultwatch")


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _declaring() -> list[str]:
    """Packages (and ``detect``'s modules) whose source declares ``__all__``."""
    paths = [p for top in TOP for p in (ROOT / top).rglob("__init__.py")]
    paths += [p for p in (ROOT / "detect").glob("*.py") if p.name != "__init__.py"]
    return sorted(_name(p) for p in paths if "__all__" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("package", TOP)
def test_top_level_packages_declare_all(package: str) -> None:
    module = importlib.import_module(package)
    assert isinstance(getattr(module, "__all__", None), list), f"{package} declares no __all__"
    assert module.__all__, package


@pytest.mark.parametrize("name", _declaring())
def test_exported_members_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    missing = [member for member in exported if not hasattr(module, member)]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"


def test_detect_exports_the_alert_contract() -> None:
    assert set(detect.alert.__all__) <= set(detect.__all__)
    for name in detect.alert.__all__:
        assert getattr(detect, name) is getattr(detect.alert, name)
