"""Durable, atomic checkpoints for sources, and the line splitter they share.

A checkpoint is written with the classic sequence *write a temp file in the same directory,
fsync it, rename it over the old one, fsync the directory*: after a crash the file holds either
the old checkpoint or the new one, never a torn mix.

:class:`LineSplitter` cuts a byte stream into lines without ever holding more than
``max_line_bytes`` (plus one read chunk) of a single line in memory. A line longer than the
limit is not returned whole: the splitter keeps its first ``head_bytes`` and its full size, and
the source hands it on flagged as too large (see :func:`too_large_size`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Final, NamedTuple

import msgspec

from ..errors import CheckpointError
from ..parse import DEFAULT_MAX_LINE_BYTES
from .base import RawRecord

__all__ = [
    "DEFAULT_HEAD_BYTES",
    "FINGERPRINT_BYTES",
    "Checkpoint",
    "Line",
    "LineSplitter",
    "atomic_write",
    "fingerprint",
    "load_checkpoint",
    "save_checkpoint",
    "too_large_size",
]

log = logging.getLogger(__name__)

#: How much of a too-large line is kept (for the quarantine record) when the rest is skipped.
DEFAULT_HEAD_BYTES: Final = 64 * 1024
#: How many leading bytes of a file identify it (its first line, capped at this many bytes).
FINGERPRINT_BYTES: Final = 4096


class Checkpoint(msgspec.Struct, frozen=True):
    """Where a file source stands: the file (path, device, inode, fingerprint of its first line)
    and the byte offset just after the last committed record."""

    path: str
    inode: int
    offset: int
    fingerprint: str = ""
    device: int = 0


def atomic_write(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (temp file + fsync + rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {str(path)!r}: {exc.strerror}") from exc


_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(Checkpoint)


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically."""
    atomic_write(path, _ENC.encode(checkpoint) + b"\n")


def load_checkpoint(path: str | Path) -> Checkpoint | None:
    """The checkpoint stored at ``path``, or None when there is none yet."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {exc.strerror}") from exc
    try:
        return _DEC.decode(raw)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: {exc}") from exc


def fingerprint(head: bytes) -> str:
    """Identify a file by its first line (capped at :data:`FINGERPRINT_BYTES`).

    Returns "" while the first line is still incomplete and shorter than the cap: such a file
    cannot be told apart yet, and a checkpoint with an empty fingerprint matches any content.
    """
    head = head[:FINGERPRINT_BYTES]
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return ""
    return hashlib.sha256(head).hexdigest()[:32]


def too_large_size(record: RawRecord) -> int:
    """The full size in bytes of a line that was cut because it exceeded the size limit, else 0.

    Every source in this package marks such a record through its position's ``too_large``
    field; ``record.data`` then holds only the line's first bytes. The caller quarantines it with
    reason ``too_large`` instead of parsing it.
    """
    return int(getattr(record.position, "too_large", 0) or 0)


class Line(NamedTuple):
    """One line cut from a stream: its bytes (no newline), the stream offset just after it,
    and ``too_large``, the full size when the line exceeded the limit (``data`` is then a head)."""

    data: bytes
    end: int
    too_large: int = 0


class LineSplitter:
    """Incremental newline splitter with a per-line memory bound.

    >>> s = LineSplitter(max_line_bytes=4, head_bytes=2)
    >>> s.feed(b"ab\\nlonger line\\ncd")
    [Line(data=b'ab', end=3, too_large=0), Line(data=b'lo', end=15, too_large=11)]
    >>> s.pending, s.flush()
    (2, Line(data=b'cd', end=17, too_large=0))
    """

    def __init__(
        self,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        *,
        head_bytes: int = DEFAULT_HEAD_BYTES,
        offset: int = 0,
    ) -> None:
        if max_line_bytes <= 0:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self.head_bytes = min(head_bytes, max_line_bytes)
        self.offset = offset  # stream offset just after the last complete line
        self._partial = bytearray()
        self._dropped = 0  # bytes of an over-limit line skipped so far (0: not skipping)

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line seen so far."""
        return len(self._partial) + self._dropped

    def reset(self, offset: int = 0) -> None:
        """Forget any unfinished line and restart counting at ``offset``."""
        self.offset = offset
        self._partial = bytearray()
        self._dropped = 0

    def feed(self, chunk: bytes) -> list[Line]:
        """Split ``chunk``; return the lines it completes. Blank lines are skipped."""
        out: list[Line] = []
        start = 0
        n = len(chunk)
        while start < n:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                self._add_partial(chunk[start:])
                break
            if self._partial or self._dropped:
                self._add_partial(chunk[start:nl])
                self._emit_partial(True, out)
            else:
                length = nl - start
                end = self.offset + length + 1
                if length > self.max_line_bytes:
                    out.append(Line(chunk[start : start + self.head_bytes], end, length))
                else:
                    data = chunk[start:nl]
                    if data.endswith(b"\r"):
                        data = data[:-1]
                    if data.strip():
                        out.append(Line(data, end))
                self.offset = end
            start = nl + 1
        return out

    def flush(self) -> Line | None:
        """Return the unfinished line as a final one (at end of input), if there is one."""
        out: list[Line] = []
        if self._partial or self._dropped:
            self._emit_partial(False, out)
        return out[0] if out else None

    def _add_partial(self, data: bytes) -> None:
        if self._dropped:
            self._dropped += len(data)
            return
        self._partial += data
        if len(self._partial) > self.max_line_bytes:
            # Over the limit: keep a head for the quarantine, count and skip the rest.
            self._dropped = len(self._partial) - self.head_bytes
            del self._partial[self.head_bytes :]

    def _emit_partial(self, newline: bool, out: list[Line]) -> None:
        size = len(self._partial) + self._dropped
        end = self.offset + size + (1 if newline else 0)
        data = bytes(self._partial)
        if self._dropped:
            out.append(Line(data, end, size))
        else:
            if data.endswith(b"\r"):
                data = data[:-1]
            if data.strip():
                out.append(Line(data, end))
        self.offset = end
        self._partial = bytearray()
        self._dropped = 0
