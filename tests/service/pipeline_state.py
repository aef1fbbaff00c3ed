"""What the store says of the cross-identity stage of a ``vaultwatch run`` group (for the tests)."""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa

from vaultwatch.service.cross import describe
from vaultwatch.service.worker import _Checkpoint


def cross_states(db: str, group: str) -> list[dict[str, Any]]:
    """:func:`~vaultwatch.service.cross.describe` of each stage-2 partition's checkpoint."""
    eng = sa.create_engine(db)
    try:
        with eng.connect() as c:
            cps = c.execute(
                sa.text("SELECT key, blob FROM checkpoints WHERE key LIKE :k"), {"k": f"cross/{group}.xid/%"}
            ).all()
    except sa.exc.SQLAlchemyError:
        return []
    finally:
        eng.dispose()
    return [describe(msgspec.msgpack.decode(bytes(blob), type=_Checkpoint).engine) for _, blob in cps]


def cross_done(db: str, group: str, ends: dict[int, int]) -> bool:
    """Every stage-2 partition has heard every source up to its end offset in ``ends`` (source
    partition -> end), heard it go idle there, and holds nothing back. (Idle alone is not enough:
    a state restored from before a restart is idle until the sources' new records reach it.)"""
    states = cross_states(db, group)
    return bool(states) and all(
        len(st["idle"]) >= len(ends)
        and not st["pending"]
        and all(st["heard"].get(src, -1) >= end - 1 for src, end in ends.items())
        for st in states
    )
