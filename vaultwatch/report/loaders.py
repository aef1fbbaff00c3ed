"""Reading vaultwatch's data for reports, analyst notebooks and tests: the archive, the alert store, a log.

Everything here returns pandas DataFrames (or plain objects) so notebooks and the report read
the same data the same way:

* :func:`load_events` — archived audit events for a time range
  (:class:`~vaultwatch.service.archive.EventArchive`);
* :func:`load_requests` — the same, one row per request (the response entry, which has the outcome);
* :func:`load_alerts`, :func:`load_status_history`, :func:`load_verdicts` — the alert store's tables;
* :func:`parse_log` — an audit log file, parsed into :class:`ingest.event.AuditEvent` objects.

Nothing here writes: the archive is opened read-only and a missing store is an error, not a new file.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from alerts import schema as t
from alerts.errors import StoreError
from alerts.store import Store
from ingest.errors import ParseError
from ingest.event import AuditEvent
from ingest.parse import Parser

from ..service.archive import EventArchive

__all__ = [
    "load_alerts",
    "load_events",
    "load_requests",
    "load_status_history",
    "load_verdicts",
    "one_per_request",
    "open_archive",
    "parse_log",
]

log = logging.getLogger(__name__)

_ALERT_COLUMNS = (
    "id",
    "detector",
    "severity",
    "severity_rank",
    "score",
    "identity_key",
    "dedup_key",
    "status",
    "title",
    "first_seen",
    "last_seen",
    "count",
    "created_at",
    "updated_at",
)


def _utc(t: datetime | str | None) -> datetime | None:
    if t is None:
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC)


# -- the archive --------------------------------------------------------------------------------
def load_events(
    archive_path: str | Path,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Archived audit entries (request and response) with ``start <= time < end``, oldest first.

    ``start``/``end`` are datetimes or ISO 8601 strings (naive means UTC); ``filters`` are passed
    to :meth:`EventArchive.query` (``identity=``, ``path_prefix=``, ``outcome=``...).
    """
    with open_archive(archive_path) as archive:
        return archive.query(start=_utc(start), end=_utc(end), **filters)


def open_archive(archive_path: str | Path) -> EventArchive:
    """The archive at ``archive_path`` for read-only use (e.g. by :mod:`vaultwatch.vault.exposure`).

    Use it as a context manager; nothing is written and retention never prunes through it.
    """
    root = Path(archive_path)
    if not root.is_dir():
        raise FileNotFoundError(f"no event archive at {root}")
    return EventArchive(root, retention_days=3650)


def one_per_request(df: pd.DataFrame) -> pd.DataFrame:
    """One row per request: its response entry (which carries the outcome), else the request entry."""
    if df.empty:
        return df.reset_index(drop=True)
    resp = df["type"].astype(str).str.endswith("response")
    ordered = pd.concat([df[resp], df[~resp]])
    with_id = ordered[ordered["request_id"].notna()].drop_duplicates("request_id")
    out = pd.concat([with_id, ordered[ordered["request_id"].isna()]])
    return out.sort_values(["time", "request_id"], kind="stable").reset_index(drop=True)


def load_requests(
    archive_path: str | Path,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """:func:`load_events` reduced to one row per request (see :func:`one_per_request`)."""
    return one_per_request(load_events(archive_path, start, end, **filters))


# -- the alert store ----------------------------------------------------------------------------
def _read_sql(store_url: str, query: Any) -> pd.DataFrame:
    if store_url.startswith("sqlite:///") and not store_url.endswith(":memory:"):
        # Reading must not leave an empty database file behind a typo.
        db = Path(store_url.removeprefix("sqlite:///"))
        if not db.is_file():
            raise StoreError(f"no alert store at {db}")
    try:
        with Store(store_url) as store, store.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    except sa.exc.SQLAlchemyError as exc:
        # The driver's message names the problem (missing table...), never the URL's password.
        reason = str(getattr(exc, "orig", None) or type(exc).__name__).splitlines()[0]
        raise StoreError(f"cannot read the alert store: {reason}") from exc


def load_alerts(store_url: str) -> pd.DataFrame:
    """Every stored alert: one row each, times as UTC timestamps, plus ``alert`` (the full JSON dict).

    Columns: id, detector, severity, severity_rank, score, identity_key, dedup_key, status, title,
    first_seen, last_seen, count, created_at, updated_at, alert.
    """
    cols = [t.alerts.c[c] for c in _ALERT_COLUMNS] + [t.alerts.c.alert_json]
    df = _read_sql(store_url, sa.select(*cols).order_by(t.alerts.c.first_seen, t.alerts.c.id))
    for c in ("first_seen", "last_seen", "created_at", "updated_at"):
        df[c] = pd.to_datetime(df[c], unit="s", utc=True)
    df["alert"] = [json.loads(s) for s in df.pop("alert_json")]
    return df


def load_status_history(store_url: str) -> pd.DataFrame:
    """Every status change: alert_id, from_status, to_status, actor, comment, at (UTC), oldest first."""
    h = t.status_history
    df = _read_sql(store_url, sa.select(h).order_by(h.c.at, h.c.id))
    df["at"] = pd.to_datetime(df["at"], unit="s", utc=True)
    return df


def load_verdicts(store_url: str) -> pd.DataFrame:
    """Every analyst verdict: alert_id, verdict, actor, comment, at (UTC), oldest first."""
    v = t.verdicts
    df = _read_sql(store_url, sa.select(v).order_by(v.c.at, v.c.id))
    df["at"] = pd.to_datetime(df["at"], unit="s", utc=True)
    return df


# -- audit log files ---------------------------------------------------------------------------
def parse_log(path: str | Path) -> list[AuditEvent]:
    """Parse an audit log file (one JSON entry a line); bad lines are skipped and counted in the log."""
    parser = Parser()
    events: list[AuditEvent] = []
    bad = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                events.append(parser.parse(line))
            except ParseError:
                bad += 1
    if bad:
        log.warning("%s: %d lines could not be parsed", path, bad)
    return events
