"""The durable alert store: alerts, lifecycle, silences, verdicts, notification log and the outbox.

One :class:`Store` speaks to SQLite (the default: one file, WAL mode, a busy timeout, foreign keys
on, every write transaction taken with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of
failing) or PostgreSQL (``postgresql+psycopg://...``; several workers may share it: alert inserts
use ``INSERT ... ON CONFLICT`` and outbox claims use ``FOR UPDATE SKIP LOCKED``).

Everything that must change together is done through one unit of work::

    with store.transaction() as tx:
        tx.add_alerts(alerts)
        tx.enqueue(outbox_entries, now=now)
        tx.save_checkpoint("engine", blob)
        tx.save_offsets("vaultwatch", {("vault-audit", 0): 1234})

The :class:`Store` methods of the same names each run in a transaction of their own. The store
implements :class:`alerts.outbox.Outbox` (``claim_due``, ``mark_delivered``, ``mark_retry``,
``mark_failed``, ``disable_endpoint``, ``depth``, ``oldest_pending_age``). Times are epoch seconds.

This module holds the connection, the migrations and the read-side queries; the unit of work is
:mod:`alerts.transaction` and the value types and row mapping are :mod:`alerts.records`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, Engine

from alerts import schema as t
from alerts.errors import MigrationError, StoreError
from alerts.outbox import Outbox, OutboxItem
from alerts.records import (
    PRIORITY_COLUMNS,
    SORT_KEYS,
    TRANSITIONS,
    VERDICTS,
    AddResult,
    AlertDetail,
    AlertPage,
    AlertQuery,
    NflogEntry,
    OutboxEntry,
    QueueSummary,
    SortKey,
    StatusChange,
    VerdictRecord,
    alert_of,
    decode_cursor,
    encode_cursor,
    merge_occurrences,
    to_epoch,
)
from alerts.silence import Matcher, Silence, labels_of
from alerts.transaction import Transaction
from detect.alert import SEVERITIES, Alert, severity_rank

# The value types live in alerts.records and the unit of work in alerts.transaction; they are
# re-exported here because ``from alerts.store import AlertQuery`` is how callers know them.
__all__ = [
    "DEFAULT_URL",
    "VERSION_TABLE",
    "TRANSITIONS",
    "VERDICTS",
    "SORT_KEYS",
    "SortKey",
    "Store",
    "Transaction",
    "AddResult",
    "AlertQuery",
    "AlertPage",
    "AlertDetail",
    "StatusChange",
    "VerdictRecord",
    "OutboxEntry",
    "NflogEntry",
    "QueueSummary",
    "merge_occurrences",
    "to_epoch",
]

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "sqlite:///vaultwatch.db"
MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
#: Alembic's bookkeeping table, named so other users of the same database schema do not clash.
VERSION_TABLE: Final = "alerts_alembic_version"

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# The store


def _normalise_url(url: str) -> str:
    # A bare postgresql:// would pick psycopg2, which is not a dependency.
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


_READ_ONLY: Final = "vaultwatch.read_only"
_ALEMBIC_LOCK: Final = threading.Lock()
_MIGRATION_LOCK: Final = 0x7661756C7477  # an arbitrary constant shared by every vaultwatch worker
_RETRIES: Final = 3
_RETRY_SQLSTATES: Final = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


def _retryable(exc: BaseException | None) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES


def _db_error(exc: sa.exc.SQLAlchemyError) -> StoreError:
    # Only the driver's first line: SQLAlchemy's full text carries statement parameters.
    orig = getattr(exc, "orig", None)
    detail = str(orig).splitlines()[0] if orig is not None and str(orig) else type(exc).__name__
    return StoreError(f"database error ({type(exc).__name__}): {detail}")


class Store:
    """The alert store over SQLite or PostgreSQL (see the module docstring).

    ``Store(url)`` connects lazily; call :meth:`migrate` once to create or upgrade the schema.
    Use it as a context manager or call :meth:`close` to release the connection pool.
    """

    def __init__(self, url: str = DEFAULT_URL, *, echo: bool = False) -> None:
        self._engine = _make_engine(_normalise_url(url), echo=echo)
        self.dialect = self._engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({self._engine.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for read-only reporting queries)."""
        return self._engine

    def migrate(self) -> str:
        """Bring the schema to the newest Alembic revision; returns that revision id."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["version_table"] = VERSION_TABLE
        try:
            # Alembic keeps its migration context in module globals: one run per process at a time.
            with _ALEMBIC_LOCK, self._engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Workers starting together: one migrates, the others wait and find it done.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            with self._engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
                revision = context.get_current_revision()
        except sa.exc.SQLAlchemyError as exc:
            raise MigrationError(f"migration failed: {_db_error(exc)}") from exc
        log.info("alert store schema at revision %s", revision)
        return revision or ""

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[Transaction]:
        """A unit of work: everything done through the yielded object commits or rolls back together.

        ``read_only`` lets SQLite readers start without the write lock, so the API never queues
        behind the pipeline (WAL readers see the last commit).
        """
        try:
            with self._engine.connect() as conn:
                conn.info[_READ_ONLY] = read_only
                with conn.begin():
                    yield Transaction(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise _db_error(exc) from exc

    def _run(self, fn: Callable[[Transaction], _T], *, read_only: bool = False) -> _T:
        # PostgreSQL may pick this transaction as a deadlock or serialisation victim under
        # concurrent writers; the whole unit of work is replayable, so try it again.
        for attempt in range(1, _RETRIES + 1):
            try:
                with self.transaction(read_only=read_only) as tx:
                    return fn(tx)
            except StoreError as exc:
                if attempt == _RETRIES or not _retryable(exc.__cause__):
                    raise
                log.info("transaction retried after %s (attempt %d)", type(exc.__cause__).__name__, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- alerts -------------------------------------------------------------------------------

    def add_alerts(
        self, alerts: Iterable[Alert], *, conn: Transaction | None = None, now: float | None = None
    ) -> AddResult:
        """See :meth:`Transaction.add_alerts`; with ``conn``, runs inside that unit of work."""
        if conn is not None:
            return conn.add_alerts(alerts, now=now)
        items = list(alerts)
        return self._run(lambda tx: tx.add_alerts(items, now=now))

    def transition(
        self, alert_id: str, to: str, actor: str, comment: str = "", *, now: float | None = None
    ) -> Alert:
        """See :meth:`Transaction.transition`."""
        return self._run(lambda tx: tx.transition(alert_id, to, actor, comment, now=now))

    def record_verdict(
        self, alert_id: str, verdict: str, actor: str, comment: str = "", *, now: float | None = None
    ) -> int:
        """See :meth:`Transaction.record_verdict`."""
        return self._run(lambda tx: tx.record_verdict(alert_id, verdict, actor, comment, now=now))

    def verdicts_since(self, since: float) -> list[VerdictRecord]:
        """Verdicts recorded at or after ``since``, oldest first, with the alert's detector and identity."""
        v, a = t.verdicts, t.alerts
        query = (
            sa.select(v, a.c.detector, a.c.identity_key, a.c.dedup_key)
            .join(a, a.c.id == v.c.alert_id)
            .where(v.c.at >= since)
            .order_by(v.c.at, v.c.id)
        )
        with self.transaction(read_only=True) as tx:
            return [
                VerdictRecord(
                    id=r.id,
                    alert_id=r.alert_id,
                    detector=r.detector,
                    identity_key=r.identity_key,
                    dedup_key=r.dedup_key,
                    verdict=r.verdict,
                    actor=r.actor,
                    comment=r.comment,
                    at=r.at,
                )
                for r in tx.conn.execute(query)
            ]

    def get_alert(self, alert_id: str) -> AlertDetail:
        """One alert with its history and verdicts (raises :class:`AlertNotFound`)."""
        h, v, a = t.status_history, t.verdicts, t.alerts
        with self.transaction(read_only=True) as tx:
            alert = tx.get_alert(alert_id)
            history = tuple(
                StatusChange(
                    alert_id=r.alert_id,
                    from_status=r.from_status,
                    to_status=r.to_status,
                    actor=r.actor,
                    comment=r.comment,
                    at=r.at,
                )
                for r in tx.conn.execute(sa.select(h).where(h.c.alert_id == alert_id).order_by(h.c.id))
            )
            verdict_rows = tx.conn.execute(
                sa.select(v, a.c.detector, a.c.identity_key, a.c.dedup_key)
                .join(a, a.c.id == v.c.alert_id)
                .where(v.c.alert_id == alert_id)
                .order_by(v.c.id)
            )
            verdicts = tuple(
                VerdictRecord(
                    id=r.id,
                    alert_id=r.alert_id,
                    detector=r.detector,
                    identity_key=r.identity_key,
                    dedup_key=r.dedup_key,
                    verdict=r.verdict,
                    actor=r.actor,
                    comment=r.comment,
                    at=r.at,
                )
                for r in verdict_rows
            )
        return AlertDetail(alert=alert, history=history, verdicts=verdicts)

    def event_alerts(self, request_id: str) -> list[str]:
        """Ids of the alerts an audit entry (Vault ``request.id``) contributed to."""
        e = t.alert_events
        with self.transaction(read_only=True) as tx:
            rows = tx.conn.execute(sa.select(e.c.alert_id).where(e.c.request_id == request_id))
            return sorted(r.alert_id for r in rows)

    def list_alerts(self, query: AlertQuery | None = None) -> AlertPage:
        """Filter, sort and page alerts with a keyset cursor (stable under concurrent inserts)."""
        q = query or AlertQuery()
        if q.sort not in SORT_KEYS:
            raise StoreError(f"unknown sort key {q.sort!r}; use one of {', '.join(SORT_KEYS)}")
        if not 1 <= q.limit <= 1000:
            raise StoreError("limit must be between 1 and 1000")
        a = t.alerts
        conds: list[sa.ColumnElement[bool]] = []
        if q.status:
            conds.append(a.c.status.in_(q.status))
        if q.severity:
            conds.append(a.c.severity.in_(q.severity))
        if q.min_severity is not None:
            conds.append(a.c.severity_rank >= severity_rank(q.min_severity))
        if q.detector:
            conds.append(a.c.detector.in_(q.detector))
        if q.identity is not None:
            conds.append(a.c.identity_key == q.identity)
        if q.since is not None:
            conds.append(a.c.last_seen >= q.since)
        if q.until is not None:
            conds.append(a.c.first_seen < q.until)
        if q.text:
            needle = q.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append(a.c.search_text.like(f"%{needle}%", escape="\\"))
        if q.sort == "priority":
            # A row value comparison (SQLite 3.15+, PostgreSQL) keeps the keyset exact.
            columns = [a.c[name] for name in PRIORITY_COLUMNS]
        elif q.sort == "severity":
            columns = [a.c.severity_rank]
        else:
            columns = [a.c[q.sort]]
        key_of = sa.tuple_(*columns, a.c.id)
        page = sa.select(a).where(*conds)
        if q.cursor:
            value, last_id = decode_cursor(q.cursor, q.sort, q.descending)
            values = list(value) if isinstance(value, list) else [value]
            if len(values) != len(columns):
                raise StoreError("invalid cursor")
            after = sa.tuple_(*(sa.literal(v) for v in values), sa.literal(last_id))
            page = page.where(key_of < after if q.descending else key_of > after)
        order = [c.desc() if q.descending else c.asc() for c in (*columns, a.c.id)]
        page = page.order_by(*order).limit(q.limit + 1)
        with self.transaction(read_only=True) as tx:
            total = int(tx.conn.execute(sa.select(sa.func.count()).select_from(a).where(*conds)).scalar_one())
            rows = tx.conn.execute(page).all()
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        cursor = None
        if more and rows:
            last = rows[-1]
            keys = [getattr(last, c.name) for c in columns]
            cursor = encode_cursor(q.sort, q.descending, keys if q.sort == "priority" else keys[0], last.id)
        return AlertPage(items=tuple(alert_of(r) for r in rows), total=total, next_cursor=cursor)

    def queue_summary(self) -> QueueSummary:
        """Open alerts counted per severity, and the open alert that has waited longest."""
        a = t.alerts
        is_open = a.c.status == "open"
        with self.transaction(read_only=True) as tx:
            counts = {
                str(r.severity): int(r.n)
                for r in tx.conn.execute(
                    sa.select(a.c.severity, sa.func.count().label("n")).where(is_open).group_by(a.c.severity)
                )
            }
            row = tx.conn.execute(
                sa.select(a)
                .where(is_open)
                .order_by(a.c.created_at.asc(), a.c.first_seen.asc(), a.c.id)
                .limit(1)
            ).first()
        return QueueSummary(
            open_by_severity={s: counts.get(s, 0) for s in reversed(SEVERITIES)},
            oldest_open=alert_of(row) if row is not None else None,
            oldest_open_at=float(row.created_at) if row is not None else None,
        )

    def active_alerts(self, statuses: Sequence[str] = ("open",)) -> list[Alert]:
        """Every alert in one of ``statuses`` (the router rebuilds its groups from these)."""
        a = t.alerts
        with self.transaction(read_only=True) as tx:
            rows = tx.conn.execute(sa.select(a).where(a.c.status.in_(statuses)).order_by(a.c.id))
            return [alert_of(r) for r in rows]

    # -- silences -----------------------------------------------------------------------------

    def create_silence(
        self,
        matchers: Iterable[str | Mapping[str, Any] | Matcher],
        *,
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str = "",
        now: float | None = None,
    ) -> Silence:
        """See :meth:`Transaction.create_silence`."""
        specs = list(matchers)
        return self._run(
            lambda tx: tx.create_silence(
                specs, starts_at=starts_at, ends_at=ends_at, created_by=created_by, comment=comment, now=now
            )
        )

    def expire_silence(self, silence_id: str, *, now: float | None = None) -> None:
        """See :meth:`Transaction.expire_silence`."""
        self._run(lambda tx: tx.expire_silence(silence_id, now=now))

    def list_silences(self, *, active_at: float | None = None) -> list[Silence]:
        """See :meth:`Transaction.list_silences`."""
        return self._run(lambda tx: tx.list_silences(active_at=active_at), read_only=True)

    def silenced_by(self, alert: Alert, now: float) -> list[str]:
        """Ids of the silences muting ``alert`` at ``now``."""
        labels = labels_of(alert)
        return [s.id for s in self.list_silences(active_at=now) if s.mutes(labels, now)]

    def is_silenced(self, alert: Alert, now: float) -> bool:
        """Whether an active silence mutes ``alert`` at ``now``."""
        return bool(self.silenced_by(alert, now))

    # -- outbox (implements alerts.outbox.Outbox) ---------------------------------------------

    def enqueue(self, entries: Iterable[OutboxEntry], *, now: float | None = None) -> int:
        """See :meth:`Transaction.enqueue`."""
        items = list(entries)
        return self._run(lambda tx: tx.enqueue(items, now=now))

    def claim_due(self, now: float, *, limit: int = 100, lease_seconds: float = 60.0) -> list[OutboxItem]:
        """See :meth:`Transaction.claim_due`."""
        return self._run(lambda tx: tx.claim_due(now, limit=limit, lease_seconds=lease_seconds))

    def mark_delivered(self, item_id: int, now: float, reason: str = "ok") -> None:
        """See :meth:`Transaction.mark_delivered`."""
        self._run(lambda tx: tx.mark_delivered(item_id, now, reason))

    def mark_retry(self, item_id: int, now: float, next_attempt_at: float, reason: str) -> None:
        """See :meth:`Transaction.mark_retry`."""
        self._run(lambda tx: tx.mark_retry(item_id, now, next_attempt_at, reason))

    def mark_failed(self, item_id: int, now: float, reason: str) -> None:
        """See :meth:`Transaction.mark_failed`."""
        self._run(lambda tx: tx.mark_failed(item_id, now, reason))

    def disable_endpoint(self, endpoint: str, now: float, reason: str) -> None:
        """See :meth:`Transaction.disable_endpoint`."""
        self._run(lambda tx: tx.disable_endpoint(endpoint, now, reason))

    def depth(self) -> int:
        """See :meth:`Transaction.depth`."""
        return self._run(lambda tx: tx.depth(), read_only=True)

    def oldest_pending_age(self, now: float) -> float | None:
        """See :meth:`Transaction.oldest_pending_age`."""
        return self._run(lambda tx: tx.oldest_pending_age(now), read_only=True)

    def outbox_items(self, *, state: str | None = None, endpoint: str | None = None) -> list[OutboxItem]:
        """See :meth:`Transaction.outbox_items`."""
        return self._run(lambda tx: tx.outbox_items(state=state, endpoint=endpoint), read_only=True)

    # -- checkpoints and offsets --------------------------------------------------------------

    def save_checkpoint(self, key: str, blob: bytes, *, now: float | None = None) -> None:
        """See :meth:`Transaction.save_checkpoint`."""
        self._run(lambda tx: tx.save_checkpoint(key, blob, now=now))

    def load_checkpoint(self, key: str) -> bytes | None:
        """See :meth:`Transaction.load_checkpoint`."""
        return self._run(lambda tx: tx.load_checkpoint(key), read_only=True)

    def save_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """See :meth:`Transaction.save_offsets`."""
        self._run(lambda tx: tx.save_offsets(group, offsets))

    def load_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """See :meth:`Transaction.load_offsets`."""
        return self._run(lambda tx: tx.load_offsets(group), read_only=True)


def _make_engine(url: str, *, echo: bool) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError("invalid database URL") from exc
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from the sqlite3 module so BEGIN IMMEDIATE below is
            # the only BEGIN: writers then queue on the busy timeout instead of failing to upgrade
            # a read lock mid-transaction.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # The flag is one-shot so a later plain engine.begin() on this pooled connection writes.
            conn.exec_driver_sql("BEGIN" if conn.info.pop(_READ_ONLY, False) else "BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
    raise StoreError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")


if TYPE_CHECKING:

    def _store_is_an_outbox(store: Store, tx: Transaction) -> tuple[Outbox, Outbox]:
        # mypy proves both satisfy the delivery seam exactly.
        return store, tx
