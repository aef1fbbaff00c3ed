"""Quarantine: where lines that do not parse go, with their reason. Nothing is dropped silently.

A quarantined line is kept whole because it may be the only copy of an audit entry. It may also
hold a plaintext secret (a ``log_raw`` device), so on disk it is **encrypted**: each record of a
:class:`FileQuarantine` keeps its metadata (when, source, position, reason code, size) in clear and
the line and parser detail sealed with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``)
under a key read from a file. No raw byte of a quarantined line is readable on disk.

The file quarantine is **idempotent**: a record is keyed by a keyed hash of (source, position,
line), so a run killed and rerun over the same input adds nothing twice, and a record cut short by
a kill is dropped when the file is next opened. The key file is chosen, in order, by the
``key``/``key_file`` arguments, ``$VAULTWATCH_QUARANTINE_KEY_FILE``, or
``$XDG_CONFIG_HOME/vaultwatch/quarantine.key`` (``~/.config/...``), which is created (mode 0600)
on first use. Keep it apart from the quarantine files and their backups.

The Kafka dead-letter queue (:class:`~ingest.sources.kafka.DeadLetterQueue`) seals its records
with the same key and scheme (:class:`DlqSealer`): a DLQ message's value is a Fernet token of the
zlib-compressed line and parser detail, and its headers keep the metadata readable (reason,
source, position, time, size, record id). No raw byte of a refused record is readable in the
topic. :func:`dlq_record` turns a consumed message back into a :class:`SealedRecord`, so the same
admin functions (:func:`open_records`) list, show and requeue DLQ records. A line whose sealed
form would exceed ``max_value_bytes`` (the producer's request limit) is kept cut at that size with
``vaultwatch.truncated`` set and its full size in ``vaultwatch.size``: said, never silent.

Admin functions (for ``vaultwatch quarantine list/show/requeue``): :func:`list_records` (metadata
only, no key needed), :func:`show_record` (one record, decrypted), :func:`requeue` (the decrypted
lines, to feed back to the pipeline) and :func:`discard` (drop records once requeued).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import tempfile
import threading
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

import msgspec
from cryptography.fernet import Fernet, InvalidToken

from .errors import IngestError, ParseError

__all__ = [
    "DLQ_SCHEME",
    "KEY_FILE_ENV",
    "DlqSealer",
    "FileQuarantine",
    "MemoryQuarantine",
    "Quarantine",
    "QuarantineError",
    "QuarantineRecord",
    "SealedRecord",
    "default_key_file",
    "discard",
    "dlq_record",
    "generate_key_file",
    "list_records",
    "load_key",
    "open_records",
    "requeue",
    "show_record",
]

log = logging.getLogger(__name__)

#: Environment variable naming the quarantine key file.
KEY_FILE_ENV: Final = "VAULTWATCH_QUARANTINE_KEY_FILE"
_FORMAT: Final = 2
#: Format of a sealed DLQ record: Fernet over zlib over msgpack ``{detail, line}`` (raw bytes).
_DLQ_FORMAT: Final = 3
#: The ``vaultwatch.sealed`` header value of a sealed DLQ message.
DLQ_SCHEME: Final = "fernet-zlib-v1"
_ID_LABEL: Final = b"vaultwatch quarantine record id v1"


class QuarantineError(IngestError):
    """The quarantine key is missing or wrong, or a record cannot be found or decrypted."""


class QuarantineRecord(msgspec.Struct, frozen=True):
    """One quarantined line, decrypted (memory only): origin, reason, and its bytes."""

    quarantined_at: str
    source: str
    position: str
    reason: str
    detail: str
    size: int
    line_b64: str
    id: str = ""

    def line(self) -> bytes:
        return base64.b64decode(self.line_b64)


class SealedRecord(msgspec.Struct, frozen=True):
    """One record as stored: metadata in clear, line and detail in ``sealed`` (a Fernet token)."""

    v: int
    id: str
    quarantined_at: str
    source: str
    position: str
    reason: str
    size: int
    sealed: str


class _Payload(msgspec.Struct, frozen=True):
    detail: str
    line_b64: str


class _DlqPayload(msgspec.Struct, frozen=True):
    detail: str
    line: bytes


class Quarantine(Protocol):
    """Somewhere to put a refused line. ``counts`` says how many per reason."""

    counts: Counter[str]

    def put(self, line: bytes, error: ParseError, *, source: str, position: str) -> None: ...

    def close(self) -> None: ...


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _record(line: bytes, error: ParseError, source: str, position: str) -> QuarantineRecord:
    return QuarantineRecord(
        quarantined_at=_now(),
        source=source,
        position=position,
        reason=error.reason,
        detail=error.detail,
        size=len(line),
        line_b64=base64.b64encode(line).decode("ascii"),
    )


class MemoryQuarantine:
    """Keeps records in memory (for tests and one-shot commands that report them)."""

    def __init__(self) -> None:
        self.records: list[QuarantineRecord] = []
        self.counts: Counter[str] = Counter()

    def put(self, line: bytes, error: ParseError, *, source: str, position: str) -> None:
        self.records.append(_record(line, error, source, position))
        self.counts[error.reason] += 1

    def close(self) -> None:
        pass


# -- keys ---------------------------------------------------------------------------------------
def default_key_file() -> Path:
    """``$VAULTWATCH_QUARANTINE_KEY_FILE``, else ``$XDG_CONFIG_HOME/vaultwatch/quarantine.key``."""
    env = os.environ.get(KEY_FILE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vaultwatch" / "quarantine.key"


def generate_key_file(path: str | Path) -> Path:
    """Write a new Fernet key to ``path`` (mode 0600; refuses to overwrite). Returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise QuarantineError(f"key file {p} already exists") from None
    with os.fdopen(fd, "wb") as f:
        f.write(Fernet.generate_key() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return p


def load_key(path: str | Path) -> bytes:
    """The Fernet key in ``path``; :class:`QuarantineError` when missing or malformed."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise QuarantineError(f"cannot read quarantine key file {path}: {exc.strerror}") from None
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise QuarantineError(f"{path} does not hold a Fernet key") from None
    return key


def _resolve_key(key: bytes | None, key_file: str | Path | None, *, create: bool) -> bytes:
    if key is not None:
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise QuarantineError("not a Fernet key") from None
        return key
    path = Path(key_file) if key_file is not None else default_key_file()
    if not path.exists() and create and key_file is None:
        log.warning("no quarantine key at %s: generating one (mode 0600); keep it apart from backups", path)
        try:
            generate_key_file(path)
        except QuarantineError:
            pass  # another process created it first
    return load_key(path)


class _Sealer:
    """Seals and opens records with one key; computes their keyed ids."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._id_key = hashlib.sha256(_ID_LABEL + key).digest()
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(_Payload)

    def record_id(self, source: str, position: str, line: bytes) -> str:
        mac = hmac.new(self._id_key, digestmod=hashlib.sha256)
        for part in (source.encode("utf-8", "surrogatepass"), position.encode("utf-8", "surrogatepass")):
            mac.update(len(part).to_bytes(8, "big") + part)
        mac.update(line)
        return mac.hexdigest()[:32]

    def seal(self, rec: QuarantineRecord, rid: str) -> SealedRecord:
        payload = self._enc.encode(_Payload(detail=rec.detail, line_b64=rec.line_b64))
        return SealedRecord(
            v=_FORMAT,
            id=rid,
            quarantined_at=rec.quarantined_at,
            source=rec.source,
            position=rec.position,
            reason=rec.reason,
            size=rec.size,
            sealed=self._fernet.encrypt(payload).decode("ascii"),
        )

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def open(self, s: SealedRecord) -> QuarantineRecord:
        try:
            clear = self._fernet.decrypt(s.sealed.encode("ascii"))
        except InvalidToken:
            raise QuarantineError(f"record {s.id}: wrong quarantine key or tampered record") from None
        if s.v == _DLQ_FORMAT:
            try:
                dlq = _dlq_dec.decode(zlib.decompress(clear))
            except (zlib.error, msgspec.DecodeError):
                raise QuarantineError(f"record {s.id}: not a sealed DLQ payload") from None
            detail, line_b64 = dlq.detail, base64.b64encode(dlq.line).decode("ascii")
        else:
            payload = self._dec.decode(clear)
            detail, line_b64 = payload.detail, payload.line_b64
        return QuarantineRecord(
            quarantined_at=s.quarantined_at,
            source=s.source,
            position=s.position,
            reason=s.reason,
            detail=detail,
            size=s.size,
            line_b64=line_b64,
            id=s.id,
        )


_dlq_enc: Final = msgspec.msgpack.Encoder()
_dlq_dec: Final = msgspec.msgpack.Decoder(_DlqPayload)


# -- the Kafka dead-letter queue's records ------------------------------------------------------
class DlqSealer:
    """Seals refused records for the Kafka DLQ with the quarantine key (see the module doc).

    :meth:`seal` returns the message value (a Fernet token) and the clear headers; the caller adds
    its own (the Kafka position) and produces them. The key is resolved as for
    :class:`FileQuarantine` (``key``, ``key_file``, ``$VAULTWATCH_QUARANTINE_KEY_FILE``, the
    default file, created on first use).
    """

    #: A sealed value stays below this (kafka-python's default request limit here is 4 MiB).
    DEFAULT_MAX_VALUE_BYTES: Final = 3 * 1024 * 1024

    def __init__(
        self,
        *,
        key: bytes | None = None,
        key_file: str | Path | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self._sealer = _Sealer(_resolve_key(key, key_file, create=True))
        # Fernet's base64 adds 4/3 and a 57-byte frame; keep the compressed payload below that.
        self._max_payload = max(1024, (max_value_bytes * 3) // 4 - 256)

    def __repr__(self) -> str:
        return "DlqSealer()"

    def seal(
        self, line: bytes, error: ParseError, *, source: str, position: str
    ) -> tuple[bytes, list[tuple[str, str]]]:
        """The sealed value of ``line`` and the clear headers that describe it."""
        rid = self._sealer.record_id(source, position, line)
        payload = zlib.compress(_dlq_enc.encode(_DlqPayload(detail=error.detail, line=line)), 6)
        truncated = len(payload) > self._max_payload
        if truncated:
            # Incompressible and too big for one message: keep its head (said, never silent).
            keep = self._max_payload - len(error.detail.encode("utf-8", "replace")) - 64
            payload = zlib.compress(_dlq_enc.encode(_DlqPayload(detail=error.detail, line=line[:keep])), 6)
        headers = [
            ("vaultwatch.reason", error.reason),
            ("vaultwatch.source", source),
            ("vaultwatch.position", position),
            ("vaultwatch.quarantined_at", _now()),
            ("vaultwatch.id", rid),
            ("vaultwatch.size", str(len(line))),
            ("vaultwatch.sealed", DLQ_SCHEME),
        ]
        if truncated:
            headers.append(("vaultwatch.truncated", "true"))
        return self._sealer.encrypt(payload), headers


def dlq_record(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> SealedRecord:
    """A consumed DLQ message as a :class:`SealedRecord` (nothing decrypted, no key needed).

    :class:`QuarantineError` when the message is not one :class:`DlqSealer` sealed (a record
    written before the DLQ was encrypted, or by something else).
    """
    h = {k: v.decode("utf-8", "replace") for k, v in headers}
    if h.get("vaultwatch.sealed") != DLQ_SCHEME or value is None:
        raise QuarantineError("not a sealed vaultwatch DLQ record (no vaultwatch.sealed header)")
    try:
        size = int(h.get("vaultwatch.size", ""))
        token = value.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise QuarantineError("a sealed DLQ record with a malformed size or value") from None
    return SealedRecord(
        v=_DLQ_FORMAT,
        id=h.get("vaultwatch.id", ""),
        quarantined_at=h.get("vaultwatch.quarantined_at", ""),
        source=h.get("vaultwatch.source", ""),
        position=h.get("vaultwatch.position", ""),
        reason=h.get("vaultwatch.reason", ""),
        size=size,
        sealed=token,
    )


def open_records(
    records: Sequence[SealedRecord],
    ids: Iterable[str] | None = None,
    *,
    key: bytes | None = None,
    key_file: str | Path | None = None,
    where: str = "the DLQ",
) -> Iterator[QuarantineRecord]:
    """The records ``ids`` (unique id prefixes; default: all) of ``records``, decrypted: the DLQ
    counterpart of :func:`requeue` and :func:`show_record` over records read from a topic."""
    sealer = _Sealer(_resolve_key(key, key_file, create=False))
    for rec in _pick(list(records), ids, where):
        yield sealer.open(rec)


# -- the file ----------------------------------------------------------------------------------
_sealed_dec: Final = msgspec.json.Decoder(SealedRecord)
_legacy_dec: Final = msgspec.json.Decoder(QuarantineRecord)


def _scan(path: Path) -> tuple[list[SealedRecord], list[QuarantineRecord], int]:
    """Records in ``path``: sealed ones, legacy clear ones, and the byte length of complete lines.

    A last line without its newline (a write cut short) is not counted in the length.
    """
    sealed: list[SealedRecord] = []
    legacy: list[QuarantineRecord] = []
    good = 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return sealed, legacy, 0
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break  # torn tail
        raw = data[pos:end]
        pos = end + 1
        good = pos
        if not raw.strip():
            continue
        try:
            sealed.append(_sealed_dec.decode(raw))
            continue
        except msgspec.DecodeError:
            pass
        try:
            legacy.append(_legacy_dec.decode(raw))
        except msgspec.DecodeError:
            log.warning("%s: an unreadable quarantine record at byte %d is skipped", path, pos - len(raw) - 1)
    return sealed, legacy, good


def _write_atomic(path: Path, lines: Iterable[bytes]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            for line in lines:
                f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileQuarantine:
    """Appends one sealed JSON record per refused line to a mode-0600 file, fsynced, once.

    ``counts`` counts every line put in this run (per reason), ``duplicates`` those the file
    already held (a rerun), and ``len()`` the records in the file. Legacy clear-text records
    (format 1) found on open are sealed in place.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fsync: bool = True,
        key: bytes | None = None,
        key_file: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sealer = _Sealer(_resolve_key(key, key_file, create=True))
        self._enc = msgspec.json.Encoder()
        sealed, legacy, good = _scan(self.path)
        self._ids: set[str] = {s.id for s in sealed}
        if legacy:
            for rec in legacy:
                rid = self._sealer.record_id(rec.source, rec.position, rec.line())
                if rid not in self._ids:
                    self._ids.add(rid)
                    sealed.append(self._sealer.seal(rec, rid))
            _write_atomic(self.path, (self._enc.encode(s) for s in sealed))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        if not legacy and os.fstat(fd).st_size > good:
            os.ftruncate(fd, good)  # drop a record cut short by a kill
        self._f = os.fdopen(fd, "ab")
        self._fsync = fsync
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.duplicates = 0

    def __repr__(self) -> str:
        return f"FileQuarantine({str(self.path)!r})"

    def __len__(self) -> int:
        return len(self._ids)

    def put(self, line: bytes, error: ParseError, *, source: str, position: str) -> None:
        rid = self._sealer.record_id(source, position, line)
        with self._lock:
            self.counts[error.reason] += 1
            if rid in self._ids:
                self.duplicates += 1
                return
            data = self._enc.encode(self._sealer.seal(_record(line, error, source, position), rid)) + b"\n"
            self._f.write(data)
            self._f.flush()
            if self._fsync:
                os.fsync(self._f.fileno())
            self._ids.add(rid)

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()

    @staticmethod
    def read(
        path: str | Path, *, key: bytes | None = None, key_file: str | Path | None = None
    ) -> list[QuarantineRecord]:
        """Every record in ``path``, decrypted, in file order."""
        sealer = _Sealer(_resolve_key(key, key_file, create=False))
        sealed, legacy, _ = _scan(Path(path))
        return [sealer.open(s) for s in sealed] + list(legacy)


# -- admin functions ---------------------------------------------------------------------------
def list_records(path: str | Path) -> list[SealedRecord]:
    """The records in ``path``, metadata only (nothing decrypted, no key needed)."""
    sealed, legacy, _ = _scan(Path(path))
    if legacy:
        raise QuarantineError(f"{path} holds {len(legacy)} unencrypted records: open it once to seal them")
    return sealed


def _select(path: str | Path, ids: Iterable[str] | None) -> list[SealedRecord]:
    return _pick(list_records(path), ids, str(path))


def _pick(records: list[SealedRecord], ids: Iterable[str] | None, where: str) -> list[SealedRecord]:
    if ids is None:
        return records
    out: list[SealedRecord] = []
    for want in ids:
        match = [r for r in records if r.id.startswith(want)] if want else []
        if len(match) != 1:
            what = "no record" if not match else f"{len(match)} records"
            raise QuarantineError(f"{what} with id {want!r} in {where}")
        out.append(match[0])
    return out


def show_record(
    path: str | Path, record_id: str, *, key: bytes | None = None, key_file: str | Path | None = None
) -> QuarantineRecord:
    """One record (``record_id`` or a unique prefix of it), decrypted. For an admin only."""
    sealer = _Sealer(_resolve_key(key, key_file, create=False))
    (rec,) = _select(path, [record_id])
    return sealer.open(rec)


def requeue(
    path: str | Path,
    ids: Iterable[str] | None = None,
    *,
    key: bytes | None = None,
    key_file: str | Path | None = None,
) -> Iterator[QuarantineRecord]:
    """The records ``ids`` (default: all), decrypted, for re-ingestion: feed ``rec.line()`` to
    the parser (or an :class:`~ingest.pipeline.IngestPipeline`); :func:`discard` them once done.
    Nothing is removed by this function."""
    sealer = _Sealer(_resolve_key(key, key_file, create=False))
    for rec in _select(path, ids):
        yield sealer.open(rec)


def discard(path: str | Path, ids: Iterable[str]) -> int:
    """Remove the records ``ids`` from ``path`` (atomic rewrite); returns how many were removed."""
    p = Path(path)
    drop = {r.id for r in _select(p, list(ids))}
    keep = [r for r in list_records(p) if r.id not in drop]
    enc = msgspec.json.Encoder()
    _write_atomic(p, (enc.encode(r) for r in keep))
    return len(drop)
