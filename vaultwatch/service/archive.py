"""The event archive: every normalised audit event, in hourly Parquet partitions.

Layout (hive-style, so pandas/pyarrow dataset filters prune partitions by path)::

    <root>/date=2026-11-28/hour=13/part-<writer>-<seq>.parquet

The archive keeps *who did what, where, from where and how it went*: identity (and the AppRole
role name, which tells AppRole clients apart: they all share the display name ``approle``), path
and its template (``detect.templates``: UUIDs, numbers and random ids folded), operation, mount,
namespace, address, outcome, a short error, and the HMACs of the caller's token and accessor
(``hmac-sha256:...`` values only, so "what did this token touch" can be answered). It never keeps
request or response data; a token or accessor that the audit device wrote in plaintext
(``log_raw``) reaches it only as the parser's pseudonym (``hmac-sha256:vw:...``). Files written
before a column was added (``role_name``) are read with it null: queries read every file with
:data:`SCHEMA`.

Writes are buffered per partition and flushed when a partition's buffer reaches ``max_rows``,
when ``flush_interval`` seconds have passed since the last flush, and on :meth:`close`. Each
file is written to a dot-prefixed temporary name and renamed, so a reader never sees half a file
(pyarrow ignores dot- and underscore-prefixed files). Rows are sorted by identity, then time,
inside each file, which keeps row-group min/max statistics tight for identity filters.

**Idempotent under crashes.** A stream consumer passes each event's source position
(``append(event, position=(topic, partition, offset))``). Its rows are then buffered and written
per source partition, into files named by the partition and the first offset they hold
(``part-k<topic>-<partition>-o<offset>.parquet``). The consumer flushes the archive before each
checkpoint commit, so nothing a checkpoint covers is only in memory; when a partition resumes from
a checkpoint at offset ``c`` (after a crash, or on another worker), :meth:`EventArchive.rewind`
deletes that partition's files whose first offset is ``c`` or later and drops its buffered rows
from ``c``: the events are processed again and written again, once. No file straddles a
checkpoint (every checkpoint flushes first), so a reader never sees a duplicate row.

Queries never list the whole archive: the hour directories to open are derived from the time
range, and the remaining filters are pushed down to the Parquet reader as dataset expressions.

The module is long (about 600 lines) because writing, the crash rewind, retention, compaction
and the queries all depend on the one file layout and naming scheme above; kept in one class, a
change to the layout changes them together.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from detect.templates import template_path
from ingest.event import AuditEvent
from ingest.redact import HMAC_PREFIX

from ..errors import ArchiveError

__all__ = ["EventArchive", "ArchiveError", "ScanStats", "SCHEMA", "event_row"]

log = logging.getLogger(__name__)

#: Columns of every archive file. ``date``/``hour`` live in the directory names only.
SCHEMA: Final = pa.schema(
    [
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("ts", pa.float64(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("type", pa.string(), nullable=False),
        pa.field("identity_key", pa.string(), nullable=False),
        pa.field("identity_kind", pa.string(), nullable=False),
        pa.field("entity_id", pa.string()),
        pa.field("display_name", pa.string()),
        # The AppRole role (``identity.role_name``): AppRole clients all share the display name
        # ``approle``. Absent from files written before it was added; they read as null.
        pa.field("role_name", pa.string()),
        pa.field("policies", pa.list_(pa.string())),
        pa.field("path", pa.string(), nullable=False),
        pa.field("path_template", pa.string(), nullable=False),
        pa.field("operation", pa.string()),
        pa.field("mount_point", pa.string()),
        pa.field("mount_type", pa.string()),
        pa.field("namespace", pa.string()),
        pa.field("remote_ip", pa.string()),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("accessor_hmac", pa.string()),
        pa.field("client_token_hmac", pa.string()),
        pa.field("plaintext_fields", pa.list_(pa.string())),
    ]
)
_ERROR_MAX: Final = 200
_PART_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_HOUR_DIR = re.compile(r"^hour=(\d{2})$")
_WRITER_OK = re.compile(r"^[A-Za-z0-9_.]+$")


@dataclass
class ScanStats:
    """What the last query touched: hour partitions and files opened, rows returned."""

    partitions: int = 0
    files: int = 0
    rows: int = 0


def _hmac_only(value: str | None) -> str | None:
    return value if value and value.startswith(HMAC_PREFIX) else None


def event_row(ev: AuditEvent) -> dict[str, Any]:
    """The archive row of one event: metadata and HMACs only, never request/response data."""
    ident = ev.identity
    # Vault's multi-error text ("1 error occurred:\n\t* permission denied\n\n") on one line.
    error = " ".join(ev.error.split()) if ev.error else None
    if error is not None and len(error) > _ERROR_MAX:
        error = error[: _ERROR_MAX - 1] + "…"
    t = ev.time if ev.time.tzinfo is not None else ev.time.replace(tzinfo=UTC)
    return {
        "time": t.astimezone(UTC),
        "ts": ev.ts,
        "request_id": ev.request_id,
        "type": ev.type,
        "identity_key": ident.key,
        "identity_kind": ident.kind,
        "entity_id": ident.entity_id,
        "display_name": ident.display_name,
        "role_name": ident.role_name,
        "policies": list(ident.policies),
        "path": ev.path,
        # Cached in detect.templates: audit paths repeat enormously, so this is a dict lookup.
        "path_template": template_path(ev.path),
        "operation": ev.operation,
        "mount_point": ev.mount_point,
        "mount_type": ev.mount_type,
        "namespace": ev.namespace,
        "remote_ip": ev.remote_ip,
        "outcome": ev.outcome,
        "error": error,
        "accessor_hmac": _hmac_only(ev.auth.accessor),
        "client_token_hmac": _hmac_only(ev.auth.client_token),
        "plaintext_fields": list(ev.plaintext_fields),
    }


def _source_key(topic: str, partition: int) -> str:
    """A source partition as a file-name part (letters, digits, ``_`` and ``.`` only)."""
    return f"{re.sub(r'[^A-Za-z0-9_.]', '_', topic)}-{partition}"


def _hour_start(t: datetime) -> datetime:
    t = t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return t.replace(minute=0, second=0, microsecond=0)


def _aware(t: datetime) -> datetime:
    return t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _prefix_upper(prefix: str) -> str | None:
    """Smallest string greater than every string starting with ``prefix`` (None: unbounded)."""
    chars = list(prefix)
    while chars:
        c = ord(chars[-1])
        if c < 0x10FFFF and not (0xD7FF <= c < 0xE000):
            chars[-1] = chr(c + 1)
            return "".join(chars)
        chars.pop()
    return None


class EventArchive:
    """Append-only Parquet archive of audit events with retention and pruned queries.

    ``writer_id`` goes into file names so several workers can write the same root; it defaults
    to ``<host>_<pid>``. ``clock`` (monotonic seconds) is only used for the flush interval.

    >>> arch = EventArchive("/tmp/vw-archive-doctest", retention_days=30)  # doctest: +SKIP
    >>> arch.append(event); arch.close()                                     # doctest: +SKIP
    >>> arch.query(identity="entity:42", start=monday, end=sunday)           # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | Path,
        *,
        retention_days: int = 90,
        writer_id: str | None = None,
        max_rows: int = 50_000,
        max_pending: int = 200_000,
        flush_interval: float = 60.0,
        row_group_size: int = 64 * 1024,
        compression: str = "zstd",
        clock: Callable[[], float] = _time.monotonic,
    ) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        writer = writer_id or f"{socket.gethostname()}_{os.getpid()}"
        writer = re.sub(r"[^A-Za-z0-9_.]", "_", writer)
        if not _WRITER_OK.match(writer):
            raise ValueError("writer_id must contain letters, digits, '_' or '.'")
        self.root = Path(root)
        self.retention_days = retention_days
        self.writer_id = writer
        self.max_rows = max_rows
        self.max_pending = max_pending
        self._pending = 0
        self.flush_interval = flush_interval
        self.row_group_size = row_group_size
        self.compression = compression
        self._clock = clock
        #: (hour, source partition or "") -> rows; a sourced buffer's rows carry ``_off``.
        self._buffers: dict[tuple[datetime, str], list[dict[str, Any]]] = {}
        self._last_flush = clock()
        # A restart with the same writer id must not overwrite earlier files.
        self._run = f"{_time.time_ns():x}"
        self._seq = 0
        self._closed = False
        self.last_scan = ScanStats()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"EventArchive(root={str(self.root)!r}, writer_id={self.writer_id!r})"

    # -- writing ------------------------------------------------------------------------------
    def append(self, event: AuditEvent, position: tuple[str, int, int] | None = None) -> None:
        """Buffer one event; flushes its partition when full and everything when due.

        ``position`` is the event's ``(topic, partition, offset)`` when it comes from a stream
        that may deliver it again after a crash (see the module: :meth:`rewind`).
        """
        if self._closed:
            raise ArchiveError("archive is closed")
        row = event_row(event)
        src = ""
        if position is not None:
            src = _source_key(position[0], position[1])
            row["_off"] = position[2]
        key = (_hour_start(event.time), src)
        buf = self._buffers.setdefault(key, [])
        buf.append(row)
        self._pending += 1
        if len(buf) >= self.max_rows:
            self._flush_partition(key)
        # A replay touches many hours at once: bound the memory held across all of them.
        if self._pending >= self.max_pending:
            self.flush()
        else:
            self.tick()

    def tick(self) -> bool:
        """Flush everything if ``flush_interval`` has passed; call it when the stream is idle."""
        if self._clock() - self._last_flush >= self.flush_interval:
            self.flush()
            return True
        return False

    def extend(self, events: Iterable[AuditEvent]) -> None:
        """Buffer many events (see :meth:`append`)."""
        for ev in events:
            self.append(ev)

    @property
    def pending(self) -> int:
        """Rows buffered and not yet written."""
        return self._pending

    def flush(self) -> None:
        """Write every buffered partition now."""
        for key in sorted(self._buffers):
            self._flush_partition(key)
        self._last_flush = self._clock()

    def close(self) -> None:
        """Flush and refuse further appends. Safe to call twice."""
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> EventArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _partition_dir(self, hour: datetime) -> Path:
        return self.root / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"

    def rewind(self, topic: str, partition: int, offset: int, *, since: float | None = None) -> int:
        """Forget what was archived of ``(topic, partition)`` from ``offset`` on (it is about to be
        processed again): buffered rows and written files. ``since`` (event time, seconds) bounds
        the hour directories searched: files of rows after a checkpoint are no older than an hour
        before the checkpoint's event time. Returns the number of files deleted."""
        src = _source_key(topic, partition)
        for key in [k for k in self._buffers if k[1] == src]:
            rows = self._buffers[key]
            keep = [r for r in rows if r["_off"] < offset]
            self._pending -= len(rows) - len(keep)
            if keep:
                self._buffers[key] = keep
            else:
                del self._buffers[key]
        start = datetime.fromtimestamp(since - 3600.0, UTC) if since is not None else None
        prefix = f"part-k{src}-o"
        deleted = 0
        for _, pdir in self._hour_dirs(start, None):
            try:
                names = os.listdir(pdir)
            except OSError:
                continue
            for name in names:
                if not name.startswith(prefix) or not name.endswith(".parquet"):
                    continue
                first = name[len(prefix) : -len(".parquet")].split("-", 1)[0]
                if first.isdigit() and int(first) >= offset:
                    (pdir / name).unlink(missing_ok=True)
                    deleted += 1
        if deleted:
            log.info("archive: %d file(s) of %s:%d from offset %d removed", deleted, topic, partition, offset)
        return deleted

    def drop_buffered(self, topic: str, partition: int) -> int:
        """Drop the rows of ``(topic, partition)`` not written yet (the partition was lost: its
        new owner processes them again from its checkpoint). Returns how many were dropped."""
        src = _source_key(topic, partition)
        dropped = 0
        for key in [k for k in self._buffers if k[1] == src]:
            dropped += len(self._buffers.pop(key))
        self._pending -= dropped
        return dropped

    def _flush_partition(self, key: tuple[datetime, str]) -> None:
        rows = self._buffers.pop(key, None)
        if not rows:
            return
        self._pending -= len(rows)
        hour, src = key
        kept = rows
        if src:
            first = min(r["_off"] for r in rows)
            name = f"part-k{src}-o{first:015d}-{len(rows)}.parquet"
            rows = [{k: v for k, v in r.items() if k != "_off"} for r in rows]
        else:
            self._seq += 1
            name = f"part-{self.writer_id}-{self._run}{self._seq:06d}.parquet"
        # Sorted by identity then time: identity filters then skip whole row groups by statistics.
        rows.sort(key=lambda r: (r["identity_key"], r["time"]))
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        pdir = self._partition_dir(hour)
        tmp = pdir / f".{name}.tmp"
        try:
            pdir.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp, row_group_size=self.row_group_size, compression=self.compression)
            os.replace(tmp, pdir / name)
        except OSError as exc:
            # Keep the rows: a later flush may succeed (disk full, permissions fixed).
            self._buffers.setdefault(key, []).extend(kept)
            self._pending += len(rows)
            tmp.unlink(missing_ok=True)
            raise ArchiveError(f"cannot write archive partition {pdir}: {exc.strerror}") from exc
        log.debug("archived %d events to %s", len(rows), pdir / name)

    # -- retention ----------------------------------------------------------------------------
    def _hour_dirs(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[tuple[datetime, Path]]:
        """Hour partitions (start time, directory) overlapping [start, end), oldest first.

        Only the root (one entry per day) and the date directories inside the range are listed,
        so a week's query looks at seven date directories whatever the archive's size.
        """
        if not self.root.is_dir():
            return
        lo = _hour_start(start) if start is not None else None
        hi = _aware(end) if end is not None else None
        for ddir in sorted(self.root.iterdir()):
            m = _PART_DIR.match(ddir.name)
            if not m:
                continue
            day = date.fromisoformat(m.group(1))
            if lo is not None and day < lo.date():
                continue
            if hi is not None and datetime(day.year, day.month, day.day, tzinfo=UTC) >= hi:
                continue
            if not ddir.is_dir():
                continue
            for hdir in sorted(ddir.iterdir()):
                hm = _HOUR_DIR.match(hdir.name)
                if not hm or not hdir.is_dir():
                    continue
                hour = datetime(day.year, day.month, day.day, int(hm.group(1)), tzinfo=UTC)
                if (lo is None or hour >= lo) and (hi is None or hour < hi):
                    yield hour, hdir

    def partitions(self) -> list[datetime]:
        """Start times of the hour partitions on disk, oldest first."""
        return [h for h, _ in self._hour_dirs()]

    def prune(self, now: datetime) -> int:
        """Delete hour partitions that ended more than ``retention_days`` before ``now``.

        ``now`` is passed in (event time in replay, wall clock in the service). Returns how
        many hour partitions were removed; emptied date directories are removed too.
        """
        cutoff = _aware(now) - timedelta(days=self.retention_days)
        removed = 0
        for hour, hdir in list(self._hour_dirs()):
            if hour + timedelta(hours=1) <= cutoff:
                shutil.rmtree(hdir, ignore_errors=False)
                removed += 1
                parent = hdir.parent
                if not any(parent.iterdir()):
                    parent.rmdir()
        if removed:
            log.info("archive retention removed %d hour partitions older than %s", removed, cutoff)
        return removed

    def compact(self, before: datetime, *, min_files: int = 2) -> int:
        """Merge each hour partition that ended by ``before`` into one sorted file.

        Interval flushes leave one small file per flush in the current hour; merging closed
        hours keeps a week's query at about one file per hour. The merged file is written and
        renamed before the old files are removed, so a concurrent reader may briefly see rows
        twice but never misses any. Run it from one process only (the one that prunes).
        Returns how many partitions were merged.
        """
        merged = 0
        cutoff = _aware(before)
        for hour, hdir in list(self._hour_dirs(end=cutoff)):
            files = sorted(hdir.glob("part-*.parquet"))
            if hour + timedelta(hours=1) > cutoff or len(files) < min_files:
                continue
            try:
                table = ds.dataset([str(f) for f in files], schema=SCHEMA, format="parquet").to_table()
                table = table.sort_by([("identity_key", "ascending"), ("time", "ascending")])
                self._seq += 1
                name = f"part-{self.writer_id}-{self._run}{self._seq:06d}.parquet"
                tmp = hdir / f".{name}.tmp"
                pq.write_table(table, tmp, row_group_size=self.row_group_size, compression=self.compression)
                os.replace(tmp, hdir / name)
            except (OSError, pa.ArrowInvalid) as exc:
                raise ArchiveError(f"cannot compact archive partition {hdir}: {exc}") from exc
            for f in files:
                f.unlink(missing_ok=True)
            merged += 1
        if merged:
            log.info("archive compaction merged %d hour partitions", merged)
        return merged

    # -- reading ------------------------------------------------------------------------------
    def query(
        self,
        *,
        identity: str | None = None,
        path_prefix: str | None = None,
        path_template: str | None = None,
        role_name: str | None = None,
        operation: str | Sequence[str] | None = None,
        remote_ip: str | None = None,
        outcome: str | Sequence[str] | None = None,
        request_ids: Sequence[str] | None = None,
        accessor: str | None = None,
        client_token_hmac: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
        descending: bool = False,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Events matching every given filter, ordered by time, as a DataFrame.

        ``identity`` is an identity key (``entity:<id>``, ``token:<name>``...); ``accessor`` and
        ``client_token_hmac`` are ``hmac-sha256:`` values as the audit device wrote them;
        ``role_name`` is an AppRole role name (files written before the archive kept it read as
        null there, so their rows never match it); ``start`` is inclusive and ``end`` exclusive.
        Only the hour partitions inside the range are opened, the other filters are pushed down
        to the Parquet reader, and with ``limit`` the scan stops as soon as enough rows were
        found. Written-but-unflushed events are not visible.
        """
        expr = self._filter(
            identity=identity,
            path_prefix=path_prefix,
            path_template=path_template,
            role_name=role_name,
            operation=operation,
            remote_ip=remote_ip,
            outcome=outcome,
            request_ids=request_ids,
            accessor=accessor,
            client_token_hmac=client_token_hmac,
            start=start,
            end=end,
        )
        cols = list(columns) if columns is not None else SCHEMA.names
        for must in ("time", "request_id", "type"):
            if must not in cols:
                cols.append(must)
        dirs = list(self._hour_dirs(start, end))
        if descending:
            dirs.reverse()
        stats = ScanStats()
        want = None if limit is None else offset + limit
        tables: list[pa.Table] = []
        got = 0
        # One dataset per batch of hours lets pyarrow scan files in parallel; with a limit the
        # batches start small and grow, so a "latest 50" opens an hour or two, not a week.
        batch = len(dirs) if want is None else 1
        pos = 0
        while pos < len(dirs):
            chunk = dirs[pos : pos + batch]
            pos += batch
            batch = min(batch * 4, 96)
            files = [str(f) for _, d in chunk for f in sorted(d.glob("part-*.parquet"))]
            if not files:
                continue
            stats.partitions += len(chunk)
            stats.files += len(files)
            try:
                dataset = ds.dataset(files, schema=SCHEMA, format="parquet")
                t = dataset.to_table(columns=cols, filter=expr)
            except (OSError, pa.ArrowInvalid) as exc:
                raise ArchiveError(f"cannot read archive under {chunk[0][1].parent}: {exc}") from exc
            if t.num_rows:
                tables.append(t)
                got += t.num_rows
            # Partitions are disjoint hours visited in order, so enough rows means done.
            if want is not None and got >= want:
                break
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table().select(cols)
        order = "descending" if descending else "ascending"
        table = table.sort_by([("time", order), ("request_id", order), ("type", order)])
        if offset or limit is not None:
            table = table.slice(offset, limit)
        stats.rows = table.num_rows
        self.last_scan = stats
        df: pd.DataFrame = table.to_pandas()
        return df

    def events_by_request_ids(
        self, ids: Sequence[str], *, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame:
        """The archived entries of these request ids (an alert's ``event_ids``), oldest first.

        Pass the alert's ``first_seen``/``last_seen`` (widened a little) as ``start``/``end`` so
        only those hours are opened.
        """
        if not ids:
            empty: pd.DataFrame = SCHEMA.empty_table().to_pandas()
            return empty
        return self.query(request_ids=list(dict.fromkeys(ids)), start=start, end=end)

    @staticmethod
    def _filter(
        *,
        identity: str | None,
        path_prefix: str | None,
        path_template: str | None,
        role_name: str | None,
        operation: str | Sequence[str] | None,
        remote_ip: str | None,
        outcome: str | Sequence[str] | None,
        request_ids: Sequence[str] | None,
        accessor: str | None,
        client_token_hmac: str | None,
        start: datetime | None,
        end: datetime | None,
    ) -> ds.Expression | None:
        parts: list[ds.Expression] = []
        ts_type = SCHEMA.field("time").type
        if start is not None:
            parts.append(ds.field("time") >= pa.scalar(_aware(start), ts_type))
        if end is not None:
            parts.append(ds.field("time") < pa.scalar(_aware(end), ts_type))
        if identity is not None:
            parts.append(ds.field("identity_key") == identity)
        if path_prefix:
            # The range lets row-group statistics prune; starts_with makes it exact.
            parts.append(ds.field("path") >= path_prefix)
            upper = _prefix_upper(path_prefix)
            if upper is not None:
                parts.append(ds.field("path") < upper)
            parts.append(pc.starts_with(ds.field("path"), pattern=path_prefix))
        if path_template is not None:
            parts.append(ds.field("path_template") == path_template)
        if role_name is not None:
            parts.append(ds.field("role_name") == role_name)
        for name, value in (("operation", operation), ("outcome", outcome)):
            if value is None:
                continue
            if isinstance(value, str):
                parts.append(ds.field(name) == value)
            else:
                parts.append(ds.field(name).isin(list(value)))
        if remote_ip is not None:
            parts.append(ds.field("remote_ip") == remote_ip)
        if request_ids is not None:
            parts.append(ds.field("request_id").isin(list(request_ids)))
        if accessor is not None:
            parts.append(ds.field("accessor_hmac") == accessor)
        if client_token_hmac is not None:
            parts.append(ds.field("client_token_hmac") == client_token_hmac)
        if not parts:
            return None
        expr = parts[0]
        for p in parts[1:]:
            expr = expr & p
        return expr

    def files(self) -> list[Path]:
        """Every archive file on disk (for tooling and tests)."""
        return sorted(p for _, d in self._hour_dirs() for p in d.glob("part-*.parquet"))
