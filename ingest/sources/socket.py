"""Listen as Vault's / OpenBao's ``socket`` audit device (TCP or unix socket).

Vault blocks client requests while an audit device cannot write, so this listener must never make
Vault wait on vaultwatch. One selector thread accepts connections and reads every one of them as
soon as bytes arrive; complete lines go to a bounded in-memory queue. When the queue is full the
lines go to an append-only spool file on disk instead (fsynced every ``fsync_interval`` seconds),
and keep going there, in order, until the consumer has read the spool back to its end.

Durability, honestly: a line in the in-memory queue that was not yet committed is lost if the
process dies (Vault considers it delivered once it was written to the socket). A spooled line
survives: :meth:`SocketSource.commit` stores the spool read position atomically, and a restart
with the same ``spool_dir`` first hands out the spooled lines not yet committed. Lines spooled
within the last ``fsync_interval`` seconds before a machine crash may be lost.

A line over ``max_line_bytes`` is never held whole: its record carries only its head and
``position.too_large`` its full size (see :func:`~ingest.sources.checkpoint.too_large_size`).
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

import msgspec

from ..errors import CheckpointError, SourceError
from ..parse import DEFAULT_MAX_LINE_BYTES
from .base import RawRecord
from .checkpoint import Line, LineSplitter, atomic_write

__all__ = ["SocketPosition", "SocketSource", "SocketStats"]

log = logging.getLogger(__name__)

_RECV: Final = 256 * 1024
# Spool frame: kind (0 = line, 1 = cut too-large line), data length, full line size.
_FRAME: Final = struct.Struct(">BIQ")


def _frame(data: bytes, too_large: int) -> bytes:
    return _FRAME.pack(1 if too_large else 0, len(data), too_large or len(data)) + data


class SocketPosition(NamedTuple):
    """``seq`` counts records since start; ``spool_gen``/``spool_offset`` is how far the spool
    has been read once this record is handled; ``too_large`` as in the file source."""

    seq: int
    spool_gen: int
    spool_offset: int
    too_large: int = 0

    def __str__(self) -> str:
        return f"socket#{self.seq}"


class SocketStats(msgspec.Struct, frozen=True):
    """Counters for metrics: lines received, lines spilled to disk, lines now in memory, bytes
    waiting in the spool, open connections, connections accepted, too-large lines."""

    received: int
    spilled: int
    queue_depth: int
    spool_pending_bytes: int
    connections: int
    accepted: int
    too_large: int


class _SpoolState(msgspec.Struct):
    gen: int
    offset: int


class SocketSource:
    """A :class:`~ingest.sources.base.Source` that receives audit lines over a socket.

    ``address`` is ``"host:port"`` (port 0 picks a free one; see :attr:`address` after
    :meth:`start`) for ``socket_type="tcp"``, or a filesystem path for ``"unix"`` (created
    with ``unix_mode``; widen it, e.g. ``0o660``, when Vault runs as another user). Commit what
    you handled before :meth:`close`: lines still queued in memory are moved to the spool then.
    One thread consumes (:meth:`batches`, :meth:`commit`); :meth:`close` and :meth:`stats` may be
    called from any thread.
    """

    def __init__(
        self,
        address: str,
        *,
        socket_type: str = "tcp",
        spool_dir: str | Path,
        queue_size: int = 10_000,
        fsync_interval: float = 1.0,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        unix_mode: int = 0o600,
        name: str | None = None,
    ) -> None:
        if socket_type not in ("tcp", "unix"):
            raise SourceError(f"socket_type must be 'tcp' or 'unix', not {socket_type!r}")
        if queue_size <= 0:
            raise ValueError("queue_size must be positive")
        self.socket_type = socket_type
        self.address = address
        self.queue_size = queue_size
        self.fsync_interval = fsync_interval
        self.max_line_bytes = max_line_bytes
        self.unix_mode = unix_mode
        self.name = name or f"socket:{address}"
        self.spool_dir = Path(spool_dir)
        self._spool_path = self.spool_dir / "spool.bin"
        self._state_path = self.spool_dir / "spool.state"
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[tuple[bytes, int]] = deque()
        self._spilling = False
        self._write_off = 0  # end of the spool file
        self._read_off = 0  # how far the consumer has read the spool
        self._committed = _SpoolState(0, 0)
        self._last_fsync = 0.0
        self._dirty = False
        self._seq = 0
        self._received = self._spilled = self._accepted = self._too_large = 0
        self._conns: dict[socket.socket, LineSplitter] = {}
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._wfd = self._rfd = -1

    def __repr__(self) -> str:
        return f"SocketSource({self.address!r}, socket_type={self.socket_type!r})"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> SocketSource:
        """Open the spool, bind and listen, and start the reader thread."""
        self._open_spool()
        try:
            self._listener = self._bind()
        except OSError as exc:
            self._close_spool()
            raise SourceError(f"cannot listen on {self.address!r}: {exc.strerror}") from exc
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name=f"vaultwatch-{self.name}", daemon=True)
        self._thread.start()
        log.info("%s: listening (%s)", self.name, self.socket_type)
        return self

    def __enter__(self) -> SocketSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bind(self) -> socket.socket:
        if self.socket_type == "unix":
            path = self.address
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(path)
                os.chmod(path, self.unix_mode)
                s.listen(64)
            except OSError:
                s.close()
                raise
            return s
        host, _, port = self.address.rpartition(":")
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host.strip("[]"), int(port)))
            s.listen(64)
        except (OSError, ValueError) as exc:
            s.close()
            if isinstance(exc, ValueError):
                raise OSError(errno.EINVAL, f"bad address {self.address!r}") from exc
            raise
        self.address = f"{host}:{s.getsockname()[1]}"
        return s

    def close(self) -> None:
        """Stop listening, close every connection, fsync and close the spool."""
        self._closed.set()
        with self._ready:
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        sel = self._selector
        if sel is not None:
            for conn in list(self._conns):
                self._drop(conn, flush=True)
            sel.close()
            self._selector = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            if self.socket_type == "unix":
                try:
                    os.unlink(self.address)
                except FileNotFoundError:
                    pass
        with self._lock:
            if self._wfd >= 0:
                try:
                    self._persist_queue()
                except OSError as exc:
                    log.error("%s: could not spool unconsumed lines at close: %s", self.name, exc.strerror)
            self._close_spool()

    # -- counters -------------------------------------------------------------------------------
    def stats(self) -> SocketStats:
        """A snapshot of the counters."""
        with self._lock:
            return SocketStats(
                received=self._received,
                spilled=self._spilled,
                queue_depth=len(self._queue),
                spool_pending_bytes=self._write_off - self._read_off,
                connections=len(self._conns),
                accepted=self._accepted,
                too_large=self._too_large,
            )

    # -- Source protocol ------------------------------------------------------------------------
    def batches(self, max_records: int = 1000, timeout: float = 1.0) -> Iterator[list[RawRecord]]:
        """Yield what has arrived, oldest first; ``[]`` after ``timeout`` idle seconds; ends on
        :meth:`close`."""
        if self._listener is None and not self._closed.is_set():
            self.start()
        while not self._closed.is_set():
            batch = self._take(max_records, timeout)
            if self._closed.is_set() and not batch:
                return
            yield batch

    def commit(self, record: RawRecord) -> None:
        """Durably acknowledge the spool up to ``record`` (memory-only records need nothing)."""
        pos = record.position
        if not isinstance(pos, SocketPosition):
            raise SourceError(f"{self.name}: cannot commit a record from another source")
        with self._lock:
            cur = self._committed
            if pos.spool_gen != cur.gen or pos.spool_offset <= cur.offset:
                return  # an older generation was wholly committed before it was discarded
            self._committed = _SpoolState(pos.spool_gen, pos.spool_offset)
            self._save_state()
            self._maybe_reset_spool()

    # -- consumer side --------------------------------------------------------------------------
    def _take(self, n: int, timeout: float) -> list[RawRecord]:
        deadline = time.monotonic() + timeout
        with self._ready:
            while not self._queue and self._read_off >= self._write_off:
                if self._spilling:
                    self._spilling = False  # caught up: new lines may go to memory again
                    self._maybe_reset_spool()
                left = deadline - time.monotonic()
                if left <= 0 or self._closed.is_set():
                    return []
                self._ready.wait(left)
            out: list[RawRecord] = []
            gen = self._committed.gen
            while self._queue and len(out) < n:
                data, too_large = self._queue.popleft()
                out.append(self._record(data, gen, self._read_off, too_large))
            end = self._write_off
        # Spool reads happen outside the lock: only this thread moves ``_read_off``.
        while len(out) < n and self._read_off < end:
            frame = self._read_frame(end)
            if frame is None:
                break
            data, too_large, new_off = frame
            self._read_off = new_off
            out.append(self._record(data, gen, new_off, too_large))
        return out

    def _record(self, data: bytes, gen: int, spool_offset: int, too_large: int) -> RawRecord:
        self._seq += 1
        return RawRecord(data, SocketPosition(self._seq, gen, spool_offset, too_large), self.name)

    def _read_frame(self, end: int) -> tuple[bytes, int, int] | None:
        off = self._read_off
        try:
            head = os.pread(self._rfd, _FRAME.size, off)
            if len(head) < _FRAME.size or off + _FRAME.size > end:
                return None
            kind, length, size = _FRAME.unpack(head)
            data = os.pread(self._rfd, length, off + _FRAME.size)
        except OSError as exc:
            if self._closed.is_set():
                return None  # closed under a consumer still reading: the spool keeps the rest
            raise SourceError(f"{self.name}: cannot read the spool: {exc.strerror}") from exc
        if len(data) < length:
            return None
        return data, (size if kind == 1 else 0), off + _FRAME.size + length

    # -- spool ----------------------------------------------------------------------------------
    def _open_spool(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._wfd = os.open(self._spool_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            self._rfd = os.open(self._spool_path, os.O_RDONLY)
        except OSError as exc:
            raise SourceError(f"cannot open spool in {str(self.spool_dir)!r}: {exc.strerror}") from exc
        size = os.fstat(self._wfd).st_size
        state = self._load_state()
        offset = state.offset if state.offset <= size else 0
        end = self._valid_end(offset, size)
        if end < size:
            log.warning("%s: dropping a torn record at the end of the spool", self.name)
            os.ftruncate(self._wfd, end)
        self._committed = _SpoolState(state.gen, offset)
        self._read_off = offset
        self._write_off = end
        # Lines spooled but never committed come first; new lines queue behind them on disk.
        self._spilling = end > offset
        if self._spilling:
            log.info("%s: %d uncommitted spooled bytes; handing them out first", self.name, end - offset)
        else:
            self._maybe_reset_spool()  # all of it was committed before the last stop

    def _valid_end(self, offset: int, size: int) -> int:
        """Offset after the last whole frame at or after ``offset``."""
        while offset + _FRAME.size <= size:
            _, length, _ = _FRAME.unpack(os.pread(self._rfd, _FRAME.size, offset))
            if offset + _FRAME.size + length > size:
                break
            offset += _FRAME.size + length
        return offset

    def _load_state(self) -> _SpoolState:
        try:
            return msgspec.json.decode(self._state_path.read_bytes(), type=_SpoolState)
        except FileNotFoundError:
            return _SpoolState(0, 0)
        except (OSError, msgspec.DecodeError) as exc:
            raise CheckpointError(f"spool state {str(self._state_path)!r} unreadable: {exc}") from exc

    def _save_state(self) -> None:
        atomic_write(self._state_path, msgspec.json.encode(self._committed))

    def _maybe_reset_spool(self) -> None:
        """Empty the spool once it is wholly read and committed (caller holds the lock)."""
        c = self._committed
        if self._spilling or self._write_off == 0 or c.offset != self._write_off:
            return
        # Truncate before saving the state: a crash in between leaves an empty spool with a
        # stale offset, which loading treats as "nothing pending".
        os.ftruncate(self._wfd, 0)
        self._write_off = self._read_off = 0
        self._committed = _SpoolState(c.gen + 1, 0)
        self._save_state()

    def _spill(self, line: Line) -> None:
        frame = _frame(line.data, line.too_large)
        os.write(self._wfd, frame)
        self._write_off += len(frame)
        self._spilled += 1
        self._dirty = True

    def _fsync(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._dirty and (force or now - self._last_fsync >= self.fsync_interval):
            os.fsync(self._wfd)
            self._dirty = False
            self._last_fsync = now

    def _persist_queue(self) -> None:
        """On a graceful close, move lines that are only in memory into the spool, in order.

        The new spool is: uncommitted lines already handed out from the spool, then the memory
        queue, then spooled lines not yet read (only present while spilling, and newer than the
        queue). The state is saved first: a crash in between re-delivers, it never skips.
        """
        if not self._queue or self._wfd < 0:
            return
        start, mid, end = self._committed.offset, self._read_off, self._write_off
        tmp = self._spool_path.with_name(self._spool_path.name + ".tmp")
        with open(tmp, "wb") as out:
            self._copy(start, mid, out.fileno())
            out.write(b"".join(_frame(data, too_large) for data, too_large in self._queue))
            out.flush()
            self._copy(mid, end, out.fileno())
            os.fsync(out.fileno())
        log.info("%s: kept %d unconsumed lines in the spool at close", self.name, len(self._queue))
        self._queue.clear()
        self._committed = _SpoolState(self._committed.gen + 1, 0)
        self._save_state()
        os.replace(tmp, self._spool_path)

    def _copy(self, start: int, end: int, out_fd: int) -> None:
        while start < end:
            chunk = os.pread(self._rfd, min(_RECV, end - start), start)
            if not chunk:
                break
            os.write(out_fd, chunk)
            start += len(chunk)

    def _close_spool(self) -> None:
        if self._wfd >= 0:
            self._fsync(force=True)
            os.close(self._wfd)
            os.close(self._rfd)
            self._wfd = self._rfd = -1

    # -- reader thread --------------------------------------------------------------------------
    def _run(self) -> None:
        sel = self._selector
        assert sel is not None
        wait = max(0.05, min(self.fsync_interval, 0.5))
        while not self._closed.is_set():
            for key, _ in sel.select(timeout=wait):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._read(sock)
            with self._lock:
                self._fsync()

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("%s: accept failed: %s", self.name, exc.strerror)
                return
            conn.setblocking(False)
            self._conns[conn] = LineSplitter(self.max_line_bytes)
            self._selector.register(conn, selectors.EVENT_READ)
            self._accepted += 1

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.info("%s: connection error: %s", self.name, exc.strerror)
            data = b""
        if not data:
            self._drop(conn, flush=True)
            return
        self._deliver(self._conns[conn].feed(data))

    def _drop(self, conn: socket.socket, *, flush: bool) -> None:
        splitter = self._conns.pop(conn, None)
        if self._selector is not None:
            try:
                self._selector.unregister(conn)
            except (KeyError, ValueError):
                pass
        conn.close()
        if flush and splitter is not None:
            # The peer went away mid-line: hand the fragment on so it is quarantined, not lost.
            last = splitter.flush()
            if last is not None:
                self._deliver([last])

    def _deliver(self, lines: list[Line]) -> None:
        if not lines:
            return
        with self._ready:
            for line in lines:
                self._received += 1
                if line.too_large:
                    self._too_large += 1
                if not self._spilling and len(self._queue) >= self.queue_size:
                    self._spilling = True
                    log.warning("%s: consumer is behind; spilling to %s", self.name, self._spool_path)
                if self._spilling:
                    try:
                        self._spill(line)
                    except OSError as exc:
                        # Never block the audit device: keep the line in memory over the bound
                        # (it may then be handed out ahead of older spooled lines).
                        log.error("%s: spool write failed (%s); keeping in memory", self.name, exc.strerror)
                        self._queue.append((line.data, line.too_large))
                else:
                    self._queue.append((line.data, line.too_large))
            self._ready.notify()
