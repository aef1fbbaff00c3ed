"""Outputs that are whole or absent: written beside the target, renamed on success.

A command writing ``alerts.jsonl`` writes ``alerts.jsonl.partial`` in the same directory,
flushes and fsyncs it, and renames it over ``alerts.jsonl`` (``os.replace``: atomic on POSIX
within a filesystem), then fsyncs the directory. A run killed before the rename leaves the
previous ``alerts.jsonl`` (or none) untouched, plus the ``.partial`` file: the next run finds it
(:func:`leftover`), says the last write was interrupted, and replaces it. A Python exception
inside the block leaves the ``.partial`` file for the same reason.

Two runs writing the same target at once share the ``.partial`` name: do not do that.

::

    previous = leftover(out)
    if previous is not None:
        warn(f"the last write of {out} was interrupted ({previous} left behind)")
    with atomic_writer(out) as f:
        f.write(b"...")
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

__all__ = ["PARTIAL_SUFFIX", "partial_path", "leftover", "atomic_writer", "write_bytes_atomic"]

PARTIAL_SUFFIX: Final = ".partial"


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where the output for ``path`` is written before it is renamed into place."""
    p = Path(path)
    return p.with_name(p.name + PARTIAL_SUFFIX)


def leftover(path: str | os.PathLike[str]) -> Path | None:
    """The ``.partial`` file an interrupted earlier write of ``path`` left behind, if any."""
    p = partial_path(path)
    return p if p.exists() else None


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` when the block ends without an exception.

    The parent directory is created if needed. The file is created with the process umask
    (like ``open``); an existing ``.partial`` file is truncated.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    with open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """``Path(path).write_bytes(data)``, whole or not at all (see :func:`atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(data)
