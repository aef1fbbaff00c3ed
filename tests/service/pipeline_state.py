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


def cross_done(db: str, group: str, sources: int) -> bool:
    """Every stage-2 partition has heard every source go idle and holds nothing back."""
    states = cross_states(db, group)
    return bool(states) and all(len(st["idle"]) >= sources and not st["pending"] for st in states)
