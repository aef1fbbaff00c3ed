"""The one exception tree of ``ingest``.

::

    IngestError
    ├── ParseError          a raw audit line could not become an AuditEvent (has ``.reason``)
    ├── SourceError         a source could not be opened, read or committed
    │   └── CheckpointError a durable checkpoint could not be read or written
    ├── ShipError           the shipper could not hand an entry to Kafka
    │   └── ShipInterrupted asked to stop while a batch was undelivered; the source was not
    │                       committed (ingest.ship)
    └── QuarantineError     the quarantine key is missing or wrong, or a record cannot be found or
                            decrypted (ingest.quarantine)

``ShipInterrupted`` and ``QuarantineError`` live beside the code that raises them; the rest are
defined here. ``tests/test_error_trees.py`` checks that this drawing matches the classes.

Messages never carry the offending line's content, only its position and a reason code:
an unparseable line may hold a plaintext secret.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CheckpointError", "IngestError", "ParseError", "ShipError", "SourceError", "REASONS"]

#: Reason codes a :class:`ParseError` can carry. Stable: metrics and the quarantine use them.
REASONS: Final = (
    "too_large",  # over the configured line size limit
    "not_utf8",  # bytes that are not valid UTF-8
    "no_json",  # no JSON object found after stripping any prefix
    "invalid_json",  # malformed or truncated JSON
    "wrong_type",  # valid JSON, but a field has the wrong type or a required field is missing
    "too_deep",  # nesting deeper than the configured limit
    "not_audit",  # a JSON object that is not an audit entry (e.g. jsonx, unknown shape)
    "internal",  # an unexpected error on this line (a bug): kept, counted, never a traceback
)


class IngestError(Exception):
    """Root of every error raised by :mod:`ingest`."""


class ParseError(IngestError):
    """A raw line could not be parsed. ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown parse-error reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class SourceError(IngestError):
    """A source failed to open, read or commit."""


class CheckpointError(SourceError):
    """A durable checkpoint could not be loaded or saved."""


class ShipError(IngestError):
    """The shipper failed to deliver entries to Kafka."""
