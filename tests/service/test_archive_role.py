"""The archive keeps each entry's AppRole role name, from a real OpenBao AppRole login.

AppRole clients all share the display name ``approle``; the ``role_name`` column is what lets an
investigator filter the archive by role. Files written before the column existed are still read:
their rows have a null role name.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.service.archive import SCHEMA, EventArchive, event_row

ROLES = ("deployer", "billing")

#: The archive's columns before ``role_name`` was added.
OLD_SCHEMA = pa.schema([f for f in SCHEMA if f.name != "role_name"])


def _approle_traffic(openbao: Any) -> list[AuditEvent]:
    """Two AppRole roles log in and look their tokens up; root works alongside (no role).

    Every entry is one the server wrote to its audit log; the role and secret ids stay in memory.
    """
    root = openbao.client()
    root.sys.enable_auth_method("approle")
    for role in ROLES:
        root.write(f"auth/approle/role/{role}", token_policies="default", token_ttl="10m")
    for role in ROLES:
        role_id = root.read(f"auth/approle/role/{role}/role-id")["data"]["role_id"]
        secret_id = root.write(f"auth/approle/role/{role}/secret-id")["data"]["secret_id"]
        client = openbao.client(token="")
        client.auth.approle.login(role_id=role_id, secret_id=secret_id)
        for _ in range(2):
            client.auth.token.lookup_self()
        client.adapter.close()
    root.sys.list_enabled_audit_devices()
    root.adapter.close()
    parser = Parser()
    return [parser.parse(line) for line in openbao.audit_log.read_bytes().splitlines() if line.strip()]


def _key(request_id: Any, type_: str, ts: float) -> tuple[str, str, float]:
    """An entry's identity in the archive (a few entries, such as the audit device's test
    entry, have no request id)."""
    return (request_id if isinstance(request_id, str) else "", type_, ts)


def _keys(frame: Any) -> set[tuple[str, str, float]]:
    return set(_roles(frame))


def _roles(frame: Any) -> dict[tuple[str, str, float], str | None]:
    """Each archived entry's role name, by (request id, entry type, time)."""
    names = [n if isinstance(n, str) else None for n in frame["role_name"]]  # NaN is null
    keys = [_key(*k) for k in zip(frame["request_id"], frame["type"], frame["ts"], strict=True)]
    return dict(zip(keys, names, strict=True))


def _role_of(events: list[AuditEvent]) -> dict[tuple[str, str, float], str | None]:
    return {_key(e.request_id, e.type, e.ts): e.identity.role_name for e in events}


def _expected(events: list[AuditEvent], role: str | None) -> set[tuple[str, str, float]]:
    return {k for k, r in _role_of(events).items() if r == role}


def _hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.mark.integration
def test_rows_carry_the_approle_role_and_filter_by_it(openbao: Any, tmp_path: Path) -> None:
    events = _approle_traffic(openbao)
    # The audit log itself says which entries are whose (the parser reads auth.metadata.role_name).
    for role in ROLES:
        assert _expected(events, role), f"no audit entries of AppRole role {role}"
    assert _expected(events, None), "root's entries should have no role"
    with EventArchive(tmp_path / "arch", writer_id="w1") as arch:
        arch.extend(events)
    everything = arch.query()
    assert len(everything) == len(events)
    assert _roles(everything) == _role_of(events)
    for role in ROLES:
        rows = everything[everything["role_name"] == role]
        # What the column is for: the display name alone does not tell the two roles apart.
        assert set(rows["display_name"].dropna()) == {"approle"}
        assert (rows["path"] == "auth/token/lookup-self").sum() == 4  # 2 requests, 2 entries each
    # The filter returns that role's entries and nothing else, alone or with other filters.
    for role in ROLES:
        only = arch.query(role_name=role, columns=["ts", "role_name"])
        assert set(only["role_name"]) == {role}
        assert _keys(only) == _expected(events, role)
    lookups = arch.query(role_name="deployer", path_prefix="auth/token/lookup-self", descending=True, limit=3)
    assert len(lookups) == 3 and set(lookups["role_name"]) == {"deployer"}
    assert arch.query(role_name="approle").empty and arch.query(role_name="nobody").empty
    assert len(arch.query(role_name="billing", columns=["path"])) == len(_expected(events, "billing"))


@pytest.mark.integration
def test_files_written_before_the_column_read_as_null(openbao: Any, tmp_path: Path) -> None:
    events = _approle_traffic(openbao)
    # Split so that both halves hold AppRole entries: the old files' must read as null.
    first_role = min(i for i, e in enumerate(events) if e.identity.role_name)
    half = first_role + 4
    old_events, new_events = events[:half], events[half:]
    assert any(e.identity.role_name for e in old_events) and any(e.identity.role_name for e in new_events)
    root = tmp_path / "arch"
    # The first part as an earlier vaultwatch wrote it: the same layout, no role_name column. Its
    # name sorts before the new files' (a reader that took the schema from the first file would
    # not see the column at all).
    by_hour: dict[datetime, list[dict[str, Any]]] = defaultdict(list)
    for ev in old_events:
        row = event_row(ev)
        del row["role_name"]
        by_hour[_hour(ev.time)].append(row)
    for hour, rows in by_hour.items():
        pdir = root / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
        pdir.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=OLD_SCHEMA), pdir / "part-a_old_writer-1.parquet")
    old_files = list(root.rglob("part-a_old_writer-*.parquet"))
    assert old_files and all("role_name" not in pq.read_schema(f).names for f in old_files)
    with EventArchive(root, writer_id="z_new_writer") as arch:
        arch.extend(new_events)
    assert len(arch.files()) > len(old_files)  # old and new files side by side

    everything = arch.query()
    assert len(everything) == len(events)
    expected = {**dict.fromkeys(_role_of(old_events)), **_role_of(new_events)}
    assert _roles(everything) == expected
    # The filter reads both kinds of file: only the new files' rows can match a role.
    for role in ROLES:
        assert _keys(arch.query(role_name=role)) == _expected(new_events, role)
    assert len(arch.query(columns=["role_name"])) == len(events)
    # Compaction merges old and new files of a closed hour into one file that has the column.
    arch.compact(max(e.time for e in events) + timedelta(hours=2))
    assert _roles(arch.query()) == expected
    files = arch.files()
    assert len(files) == len({f.parent for f in files})  # one file per hour
    assert all("role_name" in pq.read_schema(f).names for f in files if "old_writer" not in f.name)
