"""Encode a parsed event back into audit-entry JSON, redacted, for forwarding (the shipper).

vaultwatch never forwards the raw line: it may hold plaintext secrets. The shipper parses once,
redacts, and forwards this re-encoding, which :class:`~ingest.parse.Parser` reads back into an
equal event (redaction marks included, since ``[REDACTED]`` is itself an unprotected value).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .event import AuditEvent

__all__ = ["encode_entry"]

_enc = msgspec.json.Encoder()


def encode_entry(event: AuditEvent) -> bytes:
    """The redacted audit entry of ``event`` as compact JSON (unknown fields put back in place)."""
    entry: dict[str, Any] = {
        "time": event.time,
        "type": event.type,
        "auth": event.auth,
        "request": event.request,
    }
    if event.response is not None:
        entry["response"] = event.response
    if event.error:
        entry["error"] = event.error
    if event.forwarded_from is not None:
        entry["forwarded_from"] = event.forwarded_from
    if event.forwarded is not None:
        entry["forwarded"] = event.forwarded
    if event.extra:
        entry = msgspec.to_builtins(entry)
        for dotted, value in event.extra.items():
            _put(entry, dotted, value)
    return _enc.encode(entry)


def _put(entry: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = entry
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):  # inside a list or missing: keep it at the top level
            entry[dotted] = value
            return
        node = child
    node[parts[-1]] = value
