"""Read audit logs from files: a plain file, a ``.gz`` file, or a directory of them.

One-shot mode reads to the end and stops (``inspect``, ``replay``). Follow mode tails one plain
file like ``tail -F``:

* **rotation by rename** (logrotate, then SIGHUP so Vault/OpenBao reopen ``file_path``): the old
  file is read to its end, and once the new file has existed for ``rotate_grace`` seconds with the
  old one quiet, the source switches to the new file from offset 0;
* **copytruncate** (the file shrank below the read position, or its first line changed): the
  source starts again from offset 0.

Each record's position is a :class:`FilePosition` (path, device, inode, end offset, fingerprint
of the file's first line). :meth:`FileSource.commit` stores it atomically in the checkpoint file,
and only then: a restart resumes exactly after the last committed record. When the checkpointed
file has been rotated away while the source was down, the source looks for it by inode among its
siblings (``audit.log.1``), finishes it, then reads the current file.

A line over ``max_line_bytes`` is never loaded whole: its record carries only the first
:data:`~ingest.sources.checkpoint.DEFAULT_HEAD_BYTES` bytes and ``position.too_large`` holds the
line's full size (see :func:`~ingest.sources.checkpoint.too_large_size`); the caller quarantines
it with reason ``too_large``. In follow mode a last line without a newline is held back until it
is completed, or emitted as it is when its file is rotated away or truncated.
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple

from ..errors import SourceError
from ..parse import DEFAULT_MAX_LINE_BYTES
from .base import RawRecord
from .checkpoint import (
    FINGERPRINT_BYTES,
    Checkpoint,
    Line,
    LineSplitter,
    fingerprint,
    load_checkpoint,
    save_checkpoint,
)

__all__ = ["FilePosition", "FileSource", "list_files"]

log = logging.getLogger(__name__)

_CHUNK: Final = 256 * 1024


class FilePosition(NamedTuple):
    """Where a file record ends. ``too_large`` is the full line size when the line was cut."""

    path: str
    device: int
    inode: int
    offset: int
    fingerprint: str
    too_large: int = 0

    def __str__(self) -> str:
        return f"{self.path}@{self.offset}"


def list_files(path: str | Path) -> list[Path]:
    """The files a path stands for: itself, or a directory's regular files in name order
    (hidden files skipped)."""
    p = Path(path)
    if p.is_dir():
        return sorted(c for c in p.iterdir() if c.is_file() and not c.name.startswith("."))
    return [p]


def _is_gzip(path: Path) -> bool:
    if path.suffix == ".gz":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"\x1f\x8b"
    except OSError:
        return False


class _OpenFile:
    """One open input file (plain or gzip) and its identity."""

    def __init__(self, path: Path, *, offset: int = 0) -> None:
        self.path = path
        self.gz = _is_gzip(path)
        try:
            raw = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise SourceError(f"cannot open {str(path)!r}: {exc.strerror}") from exc
        self.raw = raw
        st = os.fstat(raw.fileno())
        self.device, self.inode = st.st_dev, st.st_ino
        self.stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if self.gz else raw  # type: ignore[assignment]
        self.fingerprint = self._fingerprint()
        self.pos = 0
        if offset:
            self.seek(offset)

    def _head(self) -> bytes:
        if not self.gz:
            return os.pread(self.raw.fileno(), FINGERPRINT_BYTES, 0)
        with open(self.path, "rb") as f, gzip.GzipFile(fileobj=f, mode="rb") as g:
            try:
                return g.read(FINGERPRINT_BYTES)
            except (OSError, EOFError, zlib.error):
                return b""

    def _fingerprint(self) -> str:
        try:
            return fingerprint(self._head())
        except OSError:
            return ""

    def refresh_fingerprint(self) -> str:
        if not self.fingerprint:
            self.fingerprint = self._fingerprint()
        return self.fingerprint

    def seek(self, offset: int) -> None:
        try:
            self.stream.seek(offset)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"cannot seek {str(self.path)!r} to {offset}: {exc}") from exc
        self.pos = offset

    def read(self) -> bytes:
        try:
            chunk = self.stream.read(_CHUNK)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"cannot read {str(self.path)!r} at {self.pos}: {exc}") from exc
        self.pos += len(chunk)
        return chunk

    def size(self) -> int:
        return os.fstat(self.raw.fileno()).st_size

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


class FileSource:
    """A :class:`~ingest.sources.base.Source` over files. See the module docstring.

    ``path`` is a file, a ``.gz`` file or a directory (one-shot only). ``checkpoint`` is where
    commits are stored (None: commits are kept in memory only). ``follow`` tails a single plain
    file until :meth:`close` is called (from any thread) or the caller stops iterating.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        follow: bool = False,
        checkpoint: str | Path | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        poll_interval: float = 0.2,
        rotate_grace: float = 1.0,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.follow = follow
        self.checkpoint_path = Path(checkpoint) if checkpoint is not None else None
        self.max_line_bytes = max_line_bytes
        self.poll_interval = poll_interval
        self.rotate_grace = rotate_grace
        self.name = name or f"file:{self.path}"
        self.committed: FilePosition | None = None
        self.rotations = 0
        self.truncations = 0
        self._closed = threading.Event()
        self._file: _OpenFile | None = None
        self._splitter = LineSplitter(max_line_bytes)
        self._pending: deque[RawRecord] = deque()
        self._rotated_at: float | None = None  # when a new file was first seen at the path
        if follow and (self.path.is_dir() or _is_gzip(self.path)):
            raise SourceError("follow mode needs one plain file, not a directory or a .gz file")

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r}, follow={self.follow})"

    # -- Source protocol ------------------------------------------------------------------------
    def batches(self, max_records: int = 1000, timeout: float = 1.0) -> Iterator[list[RawRecord]]:
        """Yield batches of records; see :class:`~ingest.sources.base.Source`."""
        try:
            if self.follow:
                yield from self._follow(max_records, timeout)
            else:
                yield from self._one_shot(max_records)
        finally:
            self._close_file()

    def commit(self, record: RawRecord) -> None:
        """Durably store ``record``'s position as the resume point."""
        pos = record.position
        if not isinstance(pos, FilePosition):
            raise SourceError(f"{self.name}: cannot commit a record from another source")
        self.committed = pos
        if self.checkpoint_path is not None:
            save_checkpoint(
                self.checkpoint_path,
                Checkpoint(pos.path, pos.inode, pos.offset, pos.fingerprint, pos.device),
            )

    def close(self) -> None:
        """Stop following; a running :meth:`batches` ends at its next poll."""
        self._closed.set()

    # -- one-shot -------------------------------------------------------------------------------
    def _one_shot(self, max_records: int) -> Iterator[list[RawRecord]]:
        files = list_files(self.path)
        cp = self._load()
        start = 0
        if cp is not None:
            names = [str(f) for f in files]
            if cp.path in names:
                start = names.index(cp.path)
            elif len(files) > 1:
                # The checkpointed file is gone from the directory: files sort by name, so
                # resume with the first one after it.
                start = sum(1 for n in names if n < cp.path)
        for i, path in enumerate(files[start:]):
            if self._closed.is_set():
                return
            offset = self._resume_offset(path, cp) if i == 0 and cp is not None else 0
            self._open(path, offset)
            while not self._closed.is_set():
                got = self._read_chunk(final=True)
                while len(self._pending) >= max_records:
                    yield self._take(max_records)
                if not got:
                    break
            if self._pending:
                yield self._take(len(self._pending))
            self._close_file()

    # -- follow ---------------------------------------------------------------------------------
    def _follow(self, max_records: int, timeout: float) -> Iterator[list[RawRecord]]:
        self._open_for_follow()
        idle_since = time.monotonic()
        while not self._closed.is_set():
            got = self._read_chunk(final=False)
            if self._pending and (len(self._pending) >= max_records or not got):
                yield self._take(max_records)
                idle_since = time.monotonic()
                continue
            if got:
                continue
            if self._check_file():
                continue
            if time.monotonic() - idle_since >= timeout:
                yield []
                idle_since = time.monotonic()
            self._closed.wait(self.poll_interval)

    def _open_for_follow(self) -> None:
        cp = self._load()
        if cp is None:
            self._wait_open(self.path, 0)
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_ino, st.st_dev) == (cp.inode, cp.device or st.st_dev):
            self._wait_open(self.path, self._resume_offset(self.path, cp))
            return
        old = self._find_rotated(cp)
        if old is not None:
            log.info("%s: resuming rotated file %s at offset %d", self.name, old, cp.offset)
            self._open(old, cp.offset)
            self._rotated_at = float("-inf")  # switch to the current file as soon as it is done
            return
        log.warning("%s: checkpointed file is gone; reading %s from the start", self.name, self.path)
        self._wait_open(self.path, 0)

    def _wait_open(self, path: Path, offset: int) -> None:
        """Open ``path``, waiting (until closed) for it to exist."""
        while not self._closed.is_set():
            try:
                self._open(path, offset)
                return
            except SourceError:
                if path.exists():
                    raise
            self._closed.wait(self.poll_interval)

    def _find_rotated(self, cp: Checkpoint) -> Path | None:
        """The sibling of the followed path that has the checkpointed inode and fingerprint."""
        try:
            siblings = list(self.path.parent.iterdir())
        except OSError:
            return None
        for p in sorted(siblings):
            try:
                st = os.stat(p)
            except OSError:
                continue
            if st.st_ino == cp.inode and (not cp.device or st.st_dev == cp.device) and p.is_file():
                f = _OpenFile(p)
                try:
                    if not cp.fingerprint or f.fingerprint == cp.fingerprint:
                        return p
                finally:
                    f.close()
        return None

    def _check_file(self) -> bool:
        """At end of the open file: detect truncation and rotation. True if it switched files."""
        f = self._file
        if f is None:
            self._wait_open(self.path, 0)
            return self._file is not None
        if self._check_truncated():
            return True
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed away, the new file is not there yet: keep the old one
        if (st.st_ino, st.st_dev) == (f.inode, f.device):
            self._rotated_at = None
            return False
        now = time.monotonic()
        if self._rotated_at is None:
            self._rotated_at = now
        if now - self._rotated_at < self.rotate_grace:
            return False  # the writer may still append to the old file until it reopens
        log.info("%s: %s was rotated; switching to the new file", self.name, f.path)
        self.rotations += 1
        self._flush_partial()
        self._close_file()
        self._rotated_at = None
        self._open(self.path, 0)
        return True

    def _check_truncated(self) -> bool:
        """Start over from 0 if the open file shrank below the read position or its first line
        changed (copytruncate, possibly already refilled past where we were)."""
        f = self._file
        if f is None or f.gz:
            return False
        if f.size() >= f.pos and (not f.fingerprint or f._fingerprint() in ("", f.fingerprint)):
            return False
        log.info("%s: %s was truncated; reading it again from the start", self.name, f.path)
        self.truncations += 1
        self._flush_partial()
        f.seek(0)
        f.fingerprint = f._fingerprint()
        self._splitter.reset(0)
        return True

    # -- shared ---------------------------------------------------------------------------------
    def _load(self) -> Checkpoint | None:
        return load_checkpoint(self.checkpoint_path) if self.checkpoint_path is not None else None

    def _resume_offset(self, path: Path, cp: Checkpoint) -> int:
        """Offset to resume ``path`` at: the checkpoint's, if it is still the same file."""
        if str(path) != cp.path and str(path) != str(self.path):
            return 0
        try:
            st = os.stat(path)
        except OSError:
            return 0
        if st.st_ino != cp.inode or (cp.device and st.st_dev != cp.device):
            log.warning("%s: %s is a different file than checkpointed; reading it all", self.name, path)
            return 0
        f = _OpenFile(path)
        try:
            if cp.fingerprint and f.fingerprint != cp.fingerprint:
                log.warning("%s: %s was rewritten since the checkpoint; reading it all", self.name, path)
                return 0
            if not f.gz and st.st_size < cp.offset:
                log.warning("%s: %s shrank below the checkpoint; reading it all", self.name, path)
                return 0
        finally:
            f.close()
        return cp.offset

    def _open(self, path: Path, offset: int) -> None:
        self._close_file()
        self._file = _OpenFile(path, offset=offset)
        self._splitter.reset(offset)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _read_chunk(self, *, final: bool) -> bool:
        """Read one chunk into the pending records; False at end of file."""
        f = self._file
        if f is None:
            return False
        if not final:
            # Checked before every read, not only at EOF: after a copytruncate the file may have
            # been refilled past our position, and reading on would splice two generations.
            self._check_truncated()
        chunk = f.read()
        if not chunk:
            if final:
                self._flush_partial()
            return False
        for line in self._splitter.feed(chunk):
            self._pending.append(self._record(line))
        return True

    def _flush_partial(self) -> None:
        line = self._splitter.flush()
        if line is not None:
            self._pending.append(self._record(line))

    def _record(self, line: Line) -> RawRecord:
        f = self._file
        assert f is not None
        pos = FilePosition(str(f.path), f.device, f.inode, line.end, f.refresh_fingerprint(), line.too_large)
        return RawRecord(line.data, pos, self.name)

    def _take(self, n: int) -> list[RawRecord]:
        p = self._pending
        return [p.popleft() for _ in range(min(n, len(p)))]
