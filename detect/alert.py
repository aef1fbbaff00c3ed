"""The alert: the ``vaultwatch.alert/v1`` contract shared by replay output, webhooks and the API.

The JSON shape is fixed by the design contract; tools outside this codebase rely on it. Change it
only with a schema version bump. :func:`alert_id` is deterministic: the same input always yields
the same id, so a replayed log, a restarted worker and a retried delivery agree on identity.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Literal

import msgspec

__all__ = [
    "SCHEMA",
    "SEVERITIES",
    "STATUSES",
    "Alert",
    "AlertIdentity",
    "Reason",
    "alert_id",
    "severity_rank",
    "encode_alert",
    "decode_alert",
    "MAX_EVENT_IDS",
]

SCHEMA: Final = "vaultwatch.alert/v1"
SEVERITIES: Final = ("info", "low", "medium", "high", "critical")
STATUSES: Final = ("open", "acknowledged", "resolved", "false_positive", "suppressed")
MAX_EVENT_IDS: Final = 500

Severity = Literal["info", "low", "medium", "high", "critical"]
Status = Literal["open", "acknowledged", "resolved", "false_positive", "suppressed"]


class AlertIdentity(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who the alert is about. ``role_name`` is the AppRole role a token was issued for: AppRole
    clients all share the display name ``approle``, so it is what tells them apart (absent, and
    omitted from the JSON, for any other identity)."""

    key: str
    entity_id: str | None = None
    display_name: str | None = None
    auth_mount: str | None = None
    policies: tuple[str, ...] = ()
    role_name: str | None = None


class Reason(msgspec.Struct, frozen=True):
    """One ranked reason: what was observed against what is typical, and how much it weighed."""

    feature: str
    observed: str
    baseline: str
    weight: float


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    detector: str
    title: str
    severity: Severity
    score: int
    identity: AlertIdentity
    first_seen: str
    last_seen: str
    count: int = 1
    event_ids: tuple[str, ...] = ()
    source_addresses: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    explanation: tuple[Reason, ...] = ()
    dedup_key: str
    status: Status = "open"
    schema: str = SCHEMA
    labels: dict[str, str] = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The contract object (plain JSON types)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


def severity_rank(severity: str) -> int:
    """0 for ``info`` up to 4 for ``critical``; unknown severities rank below ``info``."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return -1


def alert_id(detector: str, dedup_key: str, first_event: str) -> str:
    """Deterministic alert id from the detector, its dedup key and the first triggering event."""
    digest = hashlib.sha256(f"{detector}\x1f{dedup_key}\x1f{first_event}".encode()).hexdigest()
    return f"va_{digest[:32]}"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Alert)


def encode_alert(alert: Alert) -> bytes:
    """Compact JSON of the contract object."""
    return _encoder.encode(alert)


def decode_alert(data: bytes | str) -> Alert:
    """Parse contract JSON back into an :class:`Alert` (validating it)."""
    return _decoder.decode(data)
