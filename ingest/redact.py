"""Redaction at the edge: no plaintext secret value ever leaves the parser.

Vault HMACs every string leaf of ``request.data`` / ``response.data`` and every token unless a
device runs with ``log_raw=true`` or a mount is tuned with ``audit_non_hmac_*_keys``. A string in
those places that is neither an ``hmac-sha256:`` value nor an RFC 3339 timestamp (OpenBao leaves
those unhashed) is therefore a value Vault was told not to protect. It is replaced by
:data:`REDACTED` and its JSON path is recorded, so detection can say *that* a secret leaked and
*where*, without ever holding it.
"""

from __future__ import annotations

import re
from typing import Any, Final

from .errors import ParseError

__all__ = [
    "REDACTED",
    "HMAC_PREFIX",
    "is_protected",
    "has_plaintext",
    "redact_tree",
    "redact_path",
    "SAFE_HEADERS",
]

REDACTED: Final = "[REDACTED]"
HMAC_PREFIX: Final = "hmac-sha256:"
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})\Z")
#: Audited request headers whose values are not credentials.
SAFE_HEADERS: Final = frozenset(
    {"user-agent", "x-forwarded-for", "x-real-ip", "x-request-id", "x-b3-traceid", "traceparent"}
)
# Legacy token endpoints that carry the token itself in the URL (hashicorp/vault#1764).
_TOKEN_IN_PATH = re.compile(r"^(auth/token/(?:lookup|revoke|revoke-orphan|renew))/(.+)$")


def is_protected(value: str) -> bool:
    """True when a string is safe to keep: an HMAC, an empty string, or a timestamp."""
    return not value or value.startswith(HMAC_PREFIX) or _RFC3339.match(value) is not None


def has_plaintext(node: Any, max_depth: int, depth: int = 0) -> bool:
    """Fast check: does a decoded ``data`` tree hold any unprotected string? (No allocation.)

    Nearly every entry is fully HMAC'd, so this check runs on every entry and the slower
    :func:`redact_tree`, which builds the field paths, only on the few that need it.
    """
    if depth > max_depth:
        raise ParseError("too_deep", f"nesting deeper than {max_depth}")
    values = node.values() if type(node) is dict else node
    for v in values:
        t = type(v)
        if t is str:
            if v and not v.startswith(HMAC_PREFIX) and (v[4:5] != "-" or _RFC3339.match(v) is None):
                return True
        elif t is dict or t is list:
            if has_plaintext(v, max_depth, depth + 1):
                return True
    return False


def redact_tree(node: Any, path: str, found: list[str], max_depth: int, depth: int = 0) -> Any:
    """Return ``node`` with every unprotected string replaced; append their paths to ``found``.

    Returns the same object when nothing needed redaction, so the common all-HMAC case allocates
    nothing. Raises :class:`ParseError` (``too_deep``) past ``max_depth`` levels.
    """
    if depth > max_depth:
        raise ParseError("too_deep", f"nesting deeper than {max_depth} at {path}")
    if isinstance(node, str):
        if is_protected(node):
            return node
        found.append(path)
        return REDACTED
    if isinstance(node, dict):
        out: dict[str, Any] | None = None
        for k, v in node.items():
            if isinstance(v, (int, float, bool)) or v is None:
                continue
            nv = redact_tree(v, f"{path}.{k}", found, max_depth, depth + 1)
            if nv is not v:
                if out is None:
                    out = dict(node)
                out[k] = nv
        return node if out is None else out
    if isinstance(node, list):
        lout: list[Any] | None = None
        for i, v in enumerate(node):
            if isinstance(v, (int, float, bool)) or v is None:
                continue
            nv = redact_tree(v, f"{path}[]", found, max_depth, depth + 1)
            if nv is not v:
                if lout is None:
                    lout = list(node)
                lout[i] = nv
        return node if lout is None else lout
    return node


def redact_path(path: str) -> str | None:
    """The path with a token in its URL replaced, or None when it holds none."""
    m = _TOKEN_IN_PATH.match(path)
    if m is None or m.group(2).startswith(HMAC_PREFIX):
        return None
    return f"{m.group(1)}/{REDACTED}"
