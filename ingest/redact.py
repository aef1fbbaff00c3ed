"""Redaction at the edge: no plaintext secret value ever leaves the parser.

Vault HMACs every string leaf of ``request.data`` / ``response.data`` and every token unless a
device runs with ``log_raw=true`` or a mount is tuned with ``audit_non_hmac_*_keys``. A string in
those places that is neither an ``hmac-sha256:`` value nor an RFC 3339 timestamp (OpenBao leaves
those unhashed) is therefore a value Vault was told not to protect. It is replaced by
:data:`REDACTED` and its JSON path is recorded, so detection can say *that* a secret leaked and
*where*, without ever holding it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Final

from .errors import ParseError
from .identity import LOGIN_FAILURE_ERRORS

__all__ = [
    "REDACTED",
    "HMAC_PREFIX",
    "is_protected",
    "has_plaintext",
    "redact_tree",
    "redact_path",
    "check_depth",
    "redact_text",
    "is_masked",
    "is_credential_header",
    "PSEUDONYM_PREFIX",
    "pseudonym",
    "is_pseudonym",
    "KMIP_ROOTS",
]

REDACTED: Final = "[REDACTED]"
HMAC_PREFIX: Final = "hmac-sha256:"
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})\Z")
# Legacy token endpoints that carry the token itself in the URL (hashicorp/vault#1764).
_TOKEN_IN_PATH = re.compile(r"^(auth/token/(?:lookup|revoke|revoke-orphan|renew))/(.+)$")


#: A token or accessor written in clear, turned into vaultwatch's keyed hash (see :func:`pseudonym`).
#: Vault's own HMACs are lower-case hex after ``hmac-sha256:``, so ``vw:`` cannot be one of them.
PSEUDONYM_PREFIX: Final = "hmac-sha256:vw:"
_PSEUDONYM_DOMAIN: Final = b"vaultwatch/pseudonym/v1\x00"

# A value masked by whoever published a log: a run of one mask character (``****``, ``xxxxxx``,
# ``•••``), optionally after a short kept prefix (``hvs.****``), or a bracketed word
# such as ``<redacted>``, ``REDACTED``, ``[MASKED]``. vaultwatch's own mark ``[REDACTED]`` is *not* a
# mask: it stands for a plaintext value vaultwatch removed, and keeps its field flagged when a
# re-encoded entry is parsed again (:mod:`ingest.codec`).
_MASK_RUN = re.compile(r"(?:[A-Za-z]{1,4}[._-])?([*•●#xX])\1{2,}\Z")
_MASK_WORD = re.compile(
    r"(?i)[*<\[({#_-]{0,3}(?:redacted|masked|hidden|removed|omitted|sanitized|scrubbed|elided)[*>\])}#_-]{0,3}\Z"
)
_CREDENTIAL_HEADER = re.compile(
    r"(?i)(auth|token|cookie|secret|passw|pwd|api[-_]?key|apikey|session|credential|signature|jwt|bearer|"
    r"private|otp|(?:^|-)key(?:$|-))"
)
#: Keys holding a KMIP TTLV tree (Vault Enterprise's KMIP engine, ``kmip-request``/``kmip-response``).
KMIP_ROOTS: Final = frozenset({"kmip_request", "kmip_response"})
# TTLV items whose values are secrets: key material and credentials. Every other ``tag``, ``type``
# and scalar ``value`` in a KMIP tree is protocol structure (names, enumerations, integers, ids).
_KMIP_SECRET_TAGS: Final = frozenset(
    {"KeyValue", "KeyMaterial", "CredentialValue", "Password", "SecretData", "Nonce", "NonceValue"}
)


def is_masked(value: str) -> bool:
    """True when a publisher replaced the value by hand (``****``, ``<redacted>``, ``xxxx``...).

    >>> [is_masked(v) for v in ("****", "<redacted>", "REDACTED", "hvs.xxxxxx", "[REDACTED]", "hunter2")]
    [True, True, True, True, False, False]
    """
    if value == REDACTED or len(value) > 64:
        return False
    return _MASK_RUN.match(value) is not None or _MASK_WORD.match(value) is not None


def is_protected(value: str) -> bool:
    """True when a string is safe to keep: an HMAC, an empty string, a timestamp or a mask."""
    return (
        not value
        or (value.startswith(HMAC_PREFIX) and not value.startswith(PSEUDONYM_PREFIX))
        or _RFC3339.match(value) is not None
        or is_masked(value)
    )


def is_pseudonym(value: str) -> bool:
    """True for a value vaultwatch already turned into its keyed hash (:func:`pseudonym`)."""
    return value.startswith(PSEUDONYM_PREFIX)


def pseudonym(value: str, key: bytes | None = None) -> str:
    """A token or accessor written in clear, as ``hmac-sha256:vw:<hex>``: stable, never reversible.

    With ``key`` (from configuration) it is HMAC-SHA256 under that key; without, a SHA-256 under a
    fixed domain-separation prefix. Both are deterministic, so identities, dedup keys and alert ids
    are the same across a replay and a restart. The trade-off: without a key, someone who already
    holds a token can confirm that it appears in vaultwatch's output (tokens and accessors are
    random, so nothing can be *recovered* from the hash); with a key that needs the key too, but
    changing the key changes every derived identity and alert id. Idempotent on its own output.

    >>> p = pseudonym("s.abcdefghijklmnop")
    >>> p.startswith(PSEUDONYM_PREFIX), pseudonym(p) == p, pseudonym("s.abcdefghijklmnop", b"k") != p
    (True, True, True)
    """
    if value.startswith(PSEUDONYM_PREFIX):
        return value
    data = value.encode("utf-8", "surrogatepass")
    if key:
        digest = hmac.new(key, data, hashlib.sha256).hexdigest()
    else:
        digest = hashlib.sha256(_PSEUDONYM_DOMAIN + data).hexdigest()
    return PSEUDONYM_PREFIX + digest


def is_credential_header(name: str, values: list[Any]) -> bool:
    """True when an audited request header carries a credential.

    By name (``authorization``, ``x-vault-token``, ``cookie``, ``x-api-key``, anything naming a
    token, secret, password, session or key) or, for any other header, by a value shaped like a
    secret (a Vault token, a bearer token, a JWT, URL credentials...). ``user-agent``,
    ``x-request-id``, ``accept`` or ``content-type`` are ordinary.
    """
    if _CREDENTIAL_HEADER.search(name):
        return True
    return any(isinstance(v, str) and redact_text(v) != v for v in values)


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
            if v.startswith(HMAC_PREFIX):
                if v.startswith("vw:", 12):  # PSEUDONYM_PREFIX: hashed by vaultwatch, was plaintext
                    return True
            elif v and (v[4:5] != "-" or _RFC3339.match(v) is None) and not is_masked(v):
                return True
        elif t is dict or t is list:
            if has_plaintext(v, max_depth, depth + 1):
                return True
    return False


def redact_tree(
    node: Any,
    path: str,
    found: list[str],
    max_depth: int,
    depth: int = 0,
    *,
    values: list[str] | None = None,
) -> Any:
    """Return ``node`` with every unprotected string replaced; append their paths to ``found``.

    Returns the same object when nothing needed redaction, so the common all-HMAC case allocates
    nothing. Raises :class:`ParseError` (``too_deep``) past ``max_depth`` levels. ``values``, when
    given, receives the plaintext strings replaced (in memory only), so that the same values can be
    scrubbed from free text such as the entry's ``error`` (see :func:`redact_text`).
    """
    if depth > max_depth:
        raise ParseError("too_deep", f"nesting deeper than {max_depth} at {path}")
    if isinstance(node, str):
        if is_protected(node):
            return node
        found.append(path)
        if values is not None:
            values.append(node)
        return REDACTED
    if isinstance(node, dict):
        out: dict[str, Any] | None = None
        for k, v in node.items():
            if isinstance(v, (int, float, bool)) or v is None:
                continue
            if k in KMIP_ROOTS:
                nv = _redact_kmip(v, f"{path}.{k}", found, max_depth, depth + 1, False, values)
            else:
                nv = redact_tree(v, f"{path}.{k}", found, max_depth, depth + 1, values=values)
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
            nv = redact_tree(v, f"{path}[]", found, max_depth, depth + 1, values=values)
            if nv is not v:
                if lout is None:
                    lout = list(node)
                lout[i] = nv
        return node if lout is None else lout
    return node


def _redact_kmip(
    node: Any, path: str, found: list[str], max_depth: int, depth: int, secret: bool, values: list[str] | None
) -> Any:
    """:func:`redact_tree` for a KMIP TTLV tree: structure strings are kept, secrets redacted.

    Inside an item tagged as key material or a credential (``secret``), every string is a secret;
    elsewhere ``tag``, ``type`` and scalar ``value`` strings are protocol structure.
    """
    if depth > max_depth:
        raise ParseError("too_deep", f"nesting deeper than {max_depth} at {path}")
    if isinstance(node, dict):
        tag = node.get("tag")
        inner = secret or (isinstance(tag, str) and tag in _KMIP_SECRET_TAGS)
        out: dict[str, Any] | None = None
        for k, v in node.items():
            if isinstance(v, str) and (k in ("tag", "type") or (k == "value" and not inner)):
                continue
            if isinstance(v, (int, float, bool)) or v is None:
                continue
            if isinstance(v, (dict, list)) and k in ("value", "tag", "type"):
                nv = _redact_kmip(v, f"{path}.{k}", found, max_depth, depth + 1, inner, values)
            else:
                nv = redact_tree(v, f"{path}.{k}", found, max_depth, depth + 1, values=values)
            if nv is not v:
                if out is None:
                    out = dict(node)
                out[k] = nv
        return node if out is None else out
    if isinstance(node, list):
        lout: list[Any] | None = None
        for i, v in enumerate(node):
            nv = _redact_kmip(v, f"{path}[]", found, max_depth, depth + 1, secret, values)
            if nv is not v:
                if lout is None:
                    lout = list(node)
                lout[i] = nv
        return node if lout is None else lout
    # A bare value outside any TTLV item: judged like any other data value.
    return redact_tree(node, path, found, max_depth, depth, values=values)


def redact_path(path: str) -> str | None:
    """The path with a token in its URL replaced, or None when it holds none."""
    m = _TOKEN_IN_PATH.match(path)
    if m is None or m.group(2).startswith(HMAC_PREFIX):
        return None
    return f"{m.group(1)}/{REDACTED}"


def check_depth(node: Any, max_depth: int, where: str, depth: int = 0) -> None:
    """Raise :class:`ParseError` (``too_deep``) when a decoded tree nests past ``max_depth``.

    For the free-form fields (``metadata``, ``headers``, ``supplemental_audit_data``...) that are
    not otherwise walked, so that no consumer ever meets an entry nested deeper than the limit.
    """
    if depth > max_depth:
        raise ParseError("too_deep", f"nesting deeper than {max_depth} in {where}")
    t = type(node)
    if t is dict:
        for v in node.values():
            if type(v) is dict or type(v) is list:
                check_depth(v, max_depth, where, depth + 1)
    elif t is list:
        for v in node:
            if type(v) is dict or type(v) is list:
                check_depth(v, max_depth, where, depth + 1)


# Secret-shaped substrings of free text (the top-level ``error``): Vault and OpenBao tokens,
# bearer tokens, JWTs, AWS access keys, PEM private keys, URL credentials and key=value pairs
# whose key names a credential. Every pattern is linear (no nested quantifiers).
_TEXT_SECRETS: Final = (
    re.compile(r"-----BEGIN[^-\n]{0,40}PRIVATE KEY-----[\s\S]*?(?:-----END[^-\n]{0,40}-----|\Z)"),
    re.compile(r"\b(?:hv[sbr]|s|b|r|sb)\.[A-Za-z0-9_-]{20,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    re.compile(r"(?i)(?<=\bbearer )[^\s\"',;]+"),
    re.compile(r"(?<=://)[^/\s:@]{0,256}:[^/\s@]{1,256}(?=@)"),
    re.compile(
        r"(?i)(?<![A-Za-z0-9])(?:password|passwd|pwd|secret(?:_id|_key)?|client_secret|token|api[_-]?key|"
        r"access[_-]?key|private[_-]?key|credentials?|auth)[\"']?\s{0,4}[:=]\s{0,4}[\"']?"
        r"(?!hmac-sha256:|\[REDACTED\])([^\s\"',;&)}\]]+)"
    ),
)
_MIN_KNOWN: Final = 4
#: Known values shorter than this are replaced only as whole tokens (not inside a word):
#: ``"on d"`` from a response's data must not turn ``permission denied`` into ``permissi...``.
_MIN_ANYWHERE: Final = 12
#: Vault's own error phrases that decide an entry's outcome (:func:`ingest.identity.classify_outcome`):
#: never scrubbed, or a secret value that happens to be a word of one would change how the entry
#: is classified once it is re-encoded (``vaultwatch ship``) and parsed again.
KEEP_PHRASES: Final = LOGIN_FAILURE_ERRORS
_KEEP = re.compile("|".join(re.escape(p) for p in KEEP_PHRASES), re.IGNORECASE)


def redact_text(text: str, known: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with secret-shaped substrings and every ``known`` plaintext value replaced.

    ``known`` holds the values redacted from the same entry's data, tokens and headers (values
    shorter than four characters are skipped, and those shorter than twelve are replaced only as
    whole tokens: they would mangle ordinary words). HMACs and Vault's outcome phrases
    (:data:`KEEP_PHRASES`) are kept.

    >>> redact_text("connect failed: postgres://app:s3cret-pw@db:5432/x password=hunter2!")
    'connect failed: postgres://[REDACTED]@db:5432/x password=[REDACTED]'
    >>> redact_text("1 error occurred: permission denied")
    '1 error occurred: permission denied'
    >>> redact_text("1 error occurred: permission denied for abc1", ["on d", "abc1", "denied"])
    '1 error occurred: permission denied for [REDACTED]'
    """
    pieces: list[str] = []
    at = 0
    for m in _KEEP.finditer(text):
        pieces.append(_scrub(text[at : m.start()], known))
        pieces.append(m.group(0))
        at = m.end()
    pieces.append(_scrub(text[at:], known))
    return "".join(pieces)


def _scrub(out: str, known: list[str] | tuple[str, ...]) -> str:
    if not out:
        return out
    for value in sorted({v for v in known if len(v) >= _MIN_KNOWN}, key=len, reverse=True):
        if value not in out:
            continue
        if len(value) >= _MIN_ANYWHERE:
            out = out.replace(value, REDACTED)
        else:
            out = re.sub(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", REDACTED, out)
    for pattern in _TEXT_SECRETS:
        if pattern.groups:
            out = pattern.sub(_replace_group, out)
        else:
            out = pattern.sub(REDACTED, out)
    return out


def _replace_group(m: re.Match[str]) -> str:
    whole = m.group(0)
    start = m.start(1) - m.start(0)
    return whole[:start] + REDACTED
