"""Getting Vault and OpenBao audit entries in: the typed event, sources, the shipper, quarantine."""

from .dedup import Deduplicator
from .errors import REASONS, CheckpointError, IngestError, ParseError, ShipError, SourceError
from .event import (
    AuditEvent,
    Auth,
    Entry,
    GrantingPolicy,
    Identity,
    Namespace,
    PolicyResults,
    Request,
    Response,
    Secret,
    WrapInfo,
)
from .parse import DEFAULT_MAX_DEPTH, DEFAULT_MAX_LINE_BYTES, Parser
from .redact import REDACTED

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_LINE_BYTES",
    "REASONS",
    "REDACTED",
    "AuditEvent",
    "Auth",
    "CheckpointError",
    "Deduplicator",
    "Entry",
    "GrantingPolicy",
    "Identity",
    "IngestError",
    "Namespace",
    "ParseError",
    "Parser",
    "PolicyResults",
    "Request",
    "Response",
    "Secret",
    "ShipError",
    "SourceError",
    "WrapInfo",
]
