"""One router per resource; ``create_app`` mounts them under ``/api/v1``.

Each submodule holds one resource's ``router``: :mod:`.alerts`, :mod:`.auth`, :mod:`.events`,
:mod:`.exposure`, :mod:`.health`, :mod:`.identities`, :mod:`.keys`, :mod:`.reports`,
:mod:`.silences` and :mod:`.stream`. They are imported by name (``from .routes import alerts``),
so the public surface in ``__all__`` is the submodules themselves; importing this package loads none.
"""

__all__ = [
    "alerts",
    "auth",
    "events",
    "exposure",
    "health",
    "identities",
    "keys",
    "reports",
    "silences",
    "stream",
]
