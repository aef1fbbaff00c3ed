"""Parse one raw audit line into an :class:`~ingest.event.AuditEvent`, once, at the edge.

The fast path is a single msgspec decode into strict structs. Only an entry with fields this
version does not know takes the slow path (a generic decode, unknown fields split off, redacted,
and kept in ``extra``). Every failure is a :class:`~ingest.errors.ParseError` with a reason code;
nothing else escapes :meth:`Parser.parse`.

The module is long (about 600 lines) because the fast path and the general path build the same
event from the same structs and must agree field for field: they stay side by side in one class,
with the identity and header caches and the redaction they share, so a change to one is seen
beside the other.

>>> p = Parser()
>>> line = (b'{"time":"2026-01-01T00:00:00Z","type":"request","auth":{"token_type":"default"},'
...         b'"request":{"id":"r1","operation":"update","path":"auth/userpass/login/alice",'
...         b'"namespace":{"id":"root"},"remote_address":"10.0.0.5:51000"}}')
>>> ev = p.parse(line)
>>> ev.identity.key, ev.remote_ip, ev.remote_port, ev.outcome
('login:userpass:alice', '10.0.0.5', 51000, 'pending')
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from .errors import ParseError
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
from .identity import MAX_PORT, classify_outcome, resolve_identity, split_address, valid_port
from .redact import (
    HMAC_PREFIX,
    REDACTED,
    check_depth,
    has_plaintext,
    is_credential_header,
    is_protected,
    is_pseudonym,
    pseudonym,
    redact_path,
    redact_text,
    redact_tree,
)

__all__ = [
    "Parser",
    "DEFAULT_IDENTITY_CACHE",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_DEPTH",
    "MIN_TIME",
    "MAX_TIME",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_LINE_BYTES: Final = 2 * 1024 * 1024
DEFAULT_MAX_DEPTH: Final = 32
#: Entry times outside ``[MIN_TIME, MAX_TIME)`` are refused (``wrong_type``): no audit device
#: wrote them, and near the calendar's edges every conversion to UTC or POSIX time can overflow.
MIN_TIME: Final = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME: Final = datetime(2200, 1, 1, tzinfo=UTC)
# A UTC time is in range exactly when its year is (MIN_TIME and MAX_TIME are 1 January, 00:00 UTC).
_MIN_YEAR: Final = MIN_TIME.year
_MAX_YEAR: Final = MAX_TIME.year
_EMPTY_AUTH: Final = Auth()
_EMPTY_REQUEST: Final = Request()

# For the slow path: which nested objects are typed, so unknown keys can be split off.
_CHILDREN: Final[dict[type[msgspec.Struct], dict[str, type[msgspec.Struct]]]] = {
    Entry: {"auth": Auth, "request": Request, "response": Response},
    Auth: {"policy_results": PolicyResults},
    PolicyResults: {"granting_policies": GrantingPolicy},
    Request: {"namespace": Namespace},
    Response: {"auth": Auth, "secret": Secret, "wrap_info": WrapInfo},
}
#: Identity cache key: token HMAC, accessor, client id, login entry or not.
_CacheKey = tuple[str, str | None, str | None, bool]
#: Tokens whose identity the parser remembers (about 600 bytes each: the key with the token and
#: accessor hashes, and the Identity, whose parts repeated across tokens are shared: ``_share``).
DEFAULT_IDENTITY_CACHE: Final = 50_000
#: Distinct repeated identity parts (display names, policy sets, metadata...) the parser shares.
_SHARED_PARTS: Final = 4096
_RESP_ERROR: Final = "response.data.error"
#: Audited (header name, value) pairs the parser remembers as holding no credential.
_CLEAN_HEADERS: Final = 4096
#: The fast path builds events positionally: this is the field order it was written for.
_EVENT_FIELDS: Final = (
    "time", "ts", "type", "identity", "outcome", "auth", "request", "response", "error", "forwarded_from",
    "forwarded", "path", "namespace", "remote_ip", "remote_port", "plaintext_fields", "extra", "source",
)  # fmt: skip
if AuditEvent.__struct_fields__ != _EVENT_FIELDS:  # pragma: no cover - a guard against a silent reorder
    raise ImportError(
        f"ingest.parse builds AuditEvent positionally; its fields changed: {AuditEvent.__struct_fields__}"
    )


class Parser:
    """Turns raw audit lines into events. Thread-compatible; holds no per-line state.

    ``prefix`` is the audit device's ``prefix`` option; lines may also carry any other text
    before the JSON object (a syslog header, say), which is skipped up to the first ``{``.

    A token or accessor written in clear (``log_raw``, ``hmac_accessor=false``) is replaced by
    its keyed hash (:func:`~ingest.redact.pseudonym`, under ``pseudonym_key`` when given) before
    anything downstream sees it, so identities, correlation and alert dedup keys still work and
    never carry the raw value; its field is listed in ``plaintext_fields``. Other plaintext values
    (data, credential headers, tokens in URLs) become ``[REDACTED]``.
    """

    def __init__(
        self,
        *,
        prefix: str | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        pseudonym_key: bytes | None = None,
        identity_cache_size: int = DEFAULT_IDENTITY_CACHE,
    ) -> None:
        if identity_cache_size <= 0:
            raise ValueError("identity_cache_size must be positive")
        self.prefix = prefix.encode() if prefix else None
        self._pseudonym_key = pseudonym_key or None
        self.max_line_bytes = max_line_bytes
        self.max_depth = max_depth
        self._decoder = msgspec.json.Decoder(Entry)
        # A token's identity does not change during its life: cache it by token HMAC, accessor,
        # client id and whether the entry is a login (a login's response describes the new
        # token). Bounded: the oldest entry leaves first.
        self._identities: dict[_CacheKey, Identity] = {}
        self._identity_order: deque[_CacheKey] = deque()
        self._clean_headers: dict[tuple[str, str], None] = {}
        # One object per distinct repeated identity part (see _share); bounded, cleared when full.
        self._shared: dict[Any, Any] = {}
        #: Entries built by the general (redacting) path rather than the one-pass fast path.
        self.general_path = 0
        #: The identity cache's bound (entries; the oldest leaves first) and its counters.
        self.identity_cache_size = identity_cache_size
        self.identity_lookups = 0
        self.identity_misses = 0
        self.identity_evictions = 0

    # -- public -------------------------------------------------------------------------------
    def parse(self, line: bytes | str, *, source: str | None = None) -> AuditEvent:
        """Parse one line; raise :class:`ParseError` with a reason code on any failure.

        Any other exception would be a bug: it is logged (its type only, never the line) and
        raised as ``ParseError("internal")``, so that one line can never stop a pipeline.
        """
        try:
            return self.parse_unguarded(line, source=source)
        except ParseError:
            raise
        except Exception as exc:
            log.error("parser bug on a line from %s: %s (line quarantined)", source, type(exc).__name__)
            raise ParseError("internal", f"unexpected {type(exc).__name__}") from None

    def parse_unguarded(self, line: bytes | str, *, source: str | None = None) -> AuditEvent:
        """:meth:`parse` without its last-resort guard: for the fuzz campaign, which must see any
        exception other than :class:`ParseError` as the bug it is."""
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogatepass")
        if len(line) > self.max_line_bytes:
            raise ParseError("too_large", f"{len(line)} bytes > limit {self.max_line_bytes}")
        body = line if self.prefix is None and line[:1] == b"{" else self._strip(line)
        try:
            entry = self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            msg = str(exc)
            if "unknown field" not in msg:
                raise ParseError("wrong_type", msg) from None
            entry, extra = self._decode_lenient(body)
            return self._build_general(entry, extra, source)
        except msgspec.DecodeError as exc:
            raise ParseError(_decode_reason(str(exc)), str(exc)) from None
        except UnicodeDecodeError:
            raise ParseError("not_utf8", "invalid UTF-8 in a JSON string") from None
        except RecursionError:
            raise ParseError("too_deep", "nesting too deep to decode") from None
        event = self._build_clean(entry, source)
        return event if event is not None else self._build_general(entry, None, source)

    def _headers_clean(self, headers: dict[str, Any]) -> bool:
        """True when :func:`_redact_headers` would leave ``headers`` as they are (no credential).

        Audited headers repeat (``user-agent`` on every request): a header whose single value
        was found clean is remembered (bounded), so its check costs a lookup afterwards.
        """
        known = self._clean_headers
        for name, value in headers.items():
            key: tuple[str, str] | None = None
            if type(value) is list and len(value) == 1 and type(value[0]) is str:
                key = (name, value[0])
                if key in known:
                    continue
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) and is_protected(v) for v in values) and is_credential_header(
                name, values
            ):
                return False
            if key is not None:
                if len(known) >= _CLEAN_HEADERS:
                    known.clear()
                known[key] = None
        return True

    def identity_cache_stats(self) -> dict[str, int]:
        """The identity cache's size and bound, lookups, misses (resolutions) and evictions."""
        return {
            "size": len(self._identities),
            "bound": self.identity_cache_size,
            "lookups": self.identity_lookups,
            "misses": self.identity_misses,
            "evictions": self.identity_evictions,
        }

    # -- internals ----------------------------------------------------------------------------
    def _strip(self, line: bytes) -> bytes:
        if self.prefix is not None and line.startswith(self.prefix):
            line = line[len(self.prefix) :]
        if line[:1] == b"{":
            return line
        start = line.find(b"{")
        if start < 0:
            head = line.lstrip()[:1]
            if head == b"<":
                raise ParseError("not_audit", "XML (jsonx) or markup, not a JSON audit entry")
            raise ParseError("no_json", "no JSON object on the line")
        if line[:start].lstrip().startswith(b"<json:"):
            raise ParseError("not_audit", "jsonx format is not supported; use format=json")
        return line[start:]

    def _decode_lenient(self, body: bytes) -> tuple[Entry, dict[str, Any]]:
        try:
            raw = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise ParseError(_decode_reason(str(exc)), str(exc)) from None
        except UnicodeDecodeError:
            raise ParseError("not_utf8", "invalid UTF-8 in a JSON string") from None
        except RecursionError:
            raise ParseError("too_deep", "nesting too deep to decode") from None
        if not isinstance(raw, dict):
            raise ParseError("not_audit", "top level is not a JSON object")
        extra: dict[str, Any] = {}
        known = _split_known(raw, Entry, "", extra)
        try:
            entry = msgspec.convert(known, Entry)
        except msgspec.ValidationError as exc:
            raise ParseError("wrong_type", str(exc)) from None
        found: list[str] = []
        return entry, redact_tree(extra, "extra", found, self.max_depth)

    def _build_clean(self, entry: Entry, source: str | None) -> AuditEvent | None:
        """The event of an entry that needs no redaction at all (nearly every entry), or None.

        One pass, inline, over what :meth:`_build_general` would find to redact: every token and
        accessor a Vault HMAC, no plaintext in ``request.data`` / ``response.data``, no token in
        the path, no credential in the audited headers, no wrap info, no ``error`` text, a UTC
        time in range; the identity (cached per token), the outcome and the address are worked
        out in the same pass. Any of those present: None, and the general path does the work.
        Its checks may be stricter than the general path's (an HMAC-looking value starting
        ``vw:``, say, goes there), never looser. The event is the one :meth:`_build_general`
        would make (same fields, same identity and outcome), and a nesting too deep raises the
        same :class:`ParseError`.
        """
        t = entry.time
        kind = entry.type
        if t.tzinfo is not UTC or not kind or not _MIN_YEAR <= t.year < _MAX_YEAR:
            return None
        auth = entry.auth or _EMPTY_AUTH
        req = entry.request or _EMPTY_REQUEST
        resp = entry.response
        md = self.max_depth
        # The free-form fields' nesting, first, as on the general path (same errors). Only the
        # metadata is common; any of the others present and the whole check runs.
        if (
            auth.external_namespace_policies is not None
            or auth.authorization_details is not None
            or req.headers is not None
            or req.supplemental_audit_data is not None
            or (resp is not None and (resp.headers is not None or resp.supplemental_audit_data is not None))
            or (resp is not None and resp.auth is not None)
        ):
            _check_free_form(auth, req, resp, md)
        elif auth.metadata is not None:
            check_depth(auth.metadata, md, "auth.metadata")
        if entry.error or (req.headers and not self._headers_clean(req.headers)):
            return None
        # Tokens and accessors: Vault HMACs (the request's copies are most often the same text).
        token = auth.client_token
        if token is not None and not (token.startswith(HMAC_PREFIX) and not token.startswith("vw:", 12)):
            return None
        accessor = auth.accessor
        if accessor is not None and not (
            accessor.startswith(HMAC_PREFIX) and not accessor.startswith("vw:", 12)
        ):
            return None
        v = req.client_token
        if v is not None and v != token and not (v.startswith(HMAC_PREFIX) and not v.startswith("vw:", 12)):
            return None
        v = req.client_token_accessor
        if (
            v is not None
            and v != accessor
            and not (v.startswith(HMAC_PREFIX) and not v.startswith("vw:", 12))
        ):
            return None
        port = req.remote_port
        if port is not None and not 0 <= port <= MAX_PORT:
            return None
        raw_path = req.path or ""
        if raw_path.startswith("auth/token/") and redact_path(raw_path) is not None:
            return None
        data = req.data
        if data is not None and has_plaintext(data, md):
            return None
        outcome: str
        if resp is None:
            outcome = "pending" if kind.endswith("request") else "ok"
        else:
            if resp.wrap_info is not None:
                return None
            data = resp.data
            if data is not None and has_plaintext(data, md):
                return None
            ra = resp.auth
            if ra is not None:
                v = ra.client_token
                if v is not None and not (v.startswith(HMAC_PREFIX) and not v.startswith("vw:", 12)):
                    return None
                v = ra.accessor
                if v is not None and not (v.startswith(HMAC_PREFIX) and not v.startswith("vw:", 12)):
                    return None
            # classify_outcome without an error: a response's data error, else ok.
            if data is not None and "error" in data:
                outcome = "login_failed" if ra is None and _is_login(raw_path) else "error"
            else:
                outcome = "ok"
        pr = auth.policy_results
        if pr is not None and pr.allowed is False:
            outcome = "denied"
        addr = req.remote_address
        ip: str | None
        if not addr:
            ip = None
        elif ":" not in addr and "[" not in addr:
            ip = addr
        else:
            ip, addr_port = split_address(addr)
            if addr_port is not None:
                port = addr_port
        # The identity: cached per token (a token's identity does not change during its life).
        if token:
            ck = (token, accessor, req.client_id, raw_path.startswith("auth/") and "/login" in raw_path)
            self.identity_lookups += 1
            identity = self._identities.get(ck)
            if identity is None:
                identity = self._resolve_cached(ck, auth, req, raw_path, ip)
        else:
            identity = resolve_identity(auth, req, raw_path, ip)
        ns = req.namespace
        ns_path = ns.path if ns is not None else None
        # Positional, in AuditEvent's field order (checked at import: _EVENT_FIELDS).
        return AuditEvent(
            t,
            t.timestamp(),
            kind,
            identity,
            outcome,
            auth,
            req,
            resp,
            None,  # error
            entry.forwarded_from,
            entry.forwarded,
            f"{ns_path}{raw_path}" if ns_path else raw_path,
            ns_path or None,
            ip,
            port,
            (),  # plaintext_fields
            None,  # extra
            source,
        )

    def _identity(self, auth: Auth, req: Request, raw_path: str, ip: str | None) -> Identity:
        """The entry's identity, cached by token HMAC (a token's identity does not change)."""
        token = auth.client_token
        # Only an HMAC names one token; a redacted plaintext token ([REDACTED]) names none.
        if token and token.startswith("hmac-sha256:"):
            ck = (token, auth.accessor, req.client_id, _is_login(raw_path))
            self.identity_lookups += 1
            identity = self._identities.get(ck)
            if identity is None:
                identity = self._resolve_cached(ck, auth, req, raw_path, ip)
            return identity
        return resolve_identity(auth, req, raw_path, ip)

    def _resolve_cached(
        self, ck: _CacheKey, auth: Auth, req: Request, raw_path: str, ip: str | None
    ) -> Identity:
        """A cache miss: resolve and remember (the oldest entry leaves when the cache is full)."""
        identity = self._share(resolve_identity(auth, req, raw_path, ip))
        self.identity_misses += 1
        if identity.client_id is not ck[2]:
            ck = (ck[0], ck[1], identity.client_id, ck[3])  # an equal key holding the shared id
        self._identities[ck] = identity
        order = self._identity_order
        order.append(ck)
        if len(order) > self.identity_cache_size:
            del self._identities[order.popleft()]
            self.identity_evictions += 1
        return identity

    def _share(self, identity: Identity) -> Identity:
        """``identity`` with its repeated parts as one shared object each: every token of a role
        or person decodes its own copy of the same display name, token type, policies, role name
        and metadata, and the cache (and the engine, which keeps identities) would hold them all.
        Equal values, so nothing reads differently; only the memory is shared."""
        shared = self._shared
        if len(shared) >= _SHARED_PARTS:
            shared.clear()

        def one(value: Any) -> Any:
            return None if value is None else shared.setdefault(value, value)

        md = identity.metadata
        if md and all(type(v) is str for v in md.values()):
            # Keyed by its items in order (a dict is not hashable); the dict itself is shared.
            md = shared.setdefault(("metadata", tuple(md.items())), md)
        pol = identity.policies
        if pol:
            pol = shared.get(pol) or one(tuple(one(p) for p in pol))
        # Entity ids and accessors are one per identity or token: not shared, but the client id
        # is mostly the entity id again.
        eid = identity.entity_id
        cid = identity.client_id
        cid = eid if cid is not None and cid == eid else cid
        return msgspec.structs.replace(
            identity,
            entity_id=eid,
            display_name=one(identity.display_name),
            auth_mount=one(identity.auth_mount),
            policies=pol,
            token_type=one(identity.token_type),
            client_id=cid,
            metadata=md,
            role_name=one(identity.role_name),
        )

    def _build_general(self, entry: Entry, extra: dict[str, Any] | None, source: str | None) -> AuditEvent:
        self.general_path += 1
        if not entry.type:
            raise ParseError("not_audit", "empty entry type")
        time = _bounded_time(entry.time)
        auth = entry.auth or _EMPTY_AUTH
        req = entry.request or _EMPTY_REQUEST
        resp = entry.response
        found: list[str] = []
        # Plaintext values redacted from this entry (memory only), scrubbed from ``error`` too.
        plain: list[str] = []
        md = self.max_depth
        _check_free_form(auth, req, resp, md)

        # Redact plaintext values where Vault would have written HMACs.
        new_req: dict[str, Any] = {}
        if req.data is not None and has_plaintext(req.data, md):
            new_req["data"] = redact_tree(req.data, "request.data", found, md, values=plain)
        for name in ("client_token", "client_token_accessor"):
            value = getattr(req, name)
            hidden = self._hide(value, f"request.{name}", found, plain)
            if hidden is not value:
                new_req[name] = hidden
        if req.remote_port is not None and valid_port(req.remote_port) is None:
            new_req["remote_port"] = None
        if req.headers:
            h = _redact_headers(req.headers, found, plain)
            if h is not req.headers:
                new_req["headers"] = h
        raw_path = req.path or ""
        red = redact_path(raw_path) if raw_path.startswith("auth/token/") else None
        if red is not None:
            found.append("request.path")
            plain.append(raw_path.rsplit("/", 1)[-1])
            new_req["path"] = red
            raw_path = red
        if new_req:
            req = msgspec.structs.replace(req, **new_req)
        auth = self._redact_auth(auth, "auth", found, plain)
        if resp is not None:
            new_resp: dict[str, Any] = {}
            if resp.data is not None and has_plaintext(resp.data, md):
                rfound: list[str] = []
                rvalues: list[str] = []
                new_resp["data"] = redact_tree(resp.data, "response.data", rfound, md, values=rvalues)
                found += rfound
                # ``response.data.error`` is the error message itself, not a secret to scrub.
                plain += [v for f, v in zip(rfound, rvalues, strict=True) if not f.startswith(_RESP_ERROR)]
            if resp.auth is not None:
                ra = self._redact_auth(resp.auth, "response.auth", found, plain)
                if ra is not resp.auth:
                    new_resp["auth"] = ra
            wi = resp.wrap_info
            if wi is not None:
                new_wi = {}
                for name in ("token", "accessor", "wrapped_accessor"):
                    value = getattr(wi, name)
                    hidden = self._hide(value, f"response.wrap_info.{name}", found, plain)
                    if hidden is not value:
                        new_wi[name] = hidden
                if new_wi:
                    new_resp["wrap_info"] = msgspec.structs.replace(wi, **new_wi)
            if new_resp:
                resp = msgspec.structs.replace(resp, **new_resp)

        ns = req.namespace
        ns_path = ns.path if ns is not None and ns.path else None
        path = f"{ns_path}{raw_path}" if ns_path else raw_path
        ip, port = split_address(req.remote_address)
        if port is None:
            port = req.remote_port
        raw_error = entry.error or None
        error = raw_error
        if raw_error is not None:
            error = redact_text(raw_error, plain)
            # Marked like data: a redaction mark (new, or from a re-encoded entry) flags the field.
            if REDACTED in error:
                found.append("error")
        identity = self._identity(auth, req, raw_path, ip)
        # Classified on the error as written: redaction never changes an outcome.
        outcome = classify_outcome(entry.type, raw_error, auth, resp, raw_path)
        return AuditEvent(
            time=time,
            ts=time.timestamp(),
            type=entry.type,
            identity=identity,
            outcome=outcome,
            auth=auth,
            request=req,
            response=resp,
            error=error,
            forwarded_from=entry.forwarded_from,
            forwarded=entry.forwarded,
            path=path,
            namespace=ns_path,
            remote_ip=ip,
            remote_port=port,
            plaintext_fields=tuple(found),
            extra=extra or None,
            source=source,
        )

    def _hide(self, value: str | None, where: str, found: list[str], plain: list[str]) -> str | None:
        """``value`` unchanged when protected, else its keyed hash (the field is recorded)."""
        if not value or is_protected(value):
            return value
        found.append(where)
        if is_pseudonym(value):  # hashed by vaultwatch already (a re-encoded entry)
            return value
        plain.append(value)
        return pseudonym(value, self._pseudonym_key)

    def _redact_auth(self, auth: Auth, where: str, found: list[str], plain: list[str]) -> Auth:
        new: dict[str, str | None] = {}
        for name in ("client_token", "accessor"):
            value = getattr(auth, name)
            hidden = self._hide(value, f"{where}.{name}", found, plain)
            if hidden is not value:
                new[name] = hidden
        return msgspec.structs.replace(auth, **new) if new else auth


def _is_login(path: str) -> bool:
    return path.startswith("auth/") and "/login" in path


def _bounded_time(t: datetime) -> datetime:
    """``t`` (a zoneless time read as UTC) when within ``[MIN_TIME, MAX_TIME)``; else ParseError."""
    # The year is checked first: comparing or converting a time near year 1 or 9999 can overflow.
    if not MIN_TIME.year <= t.year < MAX_TIME.year:
        raise ParseError("wrong_type", f"entry time out of range (year {t.year})")
    if t.tzinfo is None or t.utcoffset() is None:
        t = t.replace(tzinfo=UTC)
    if not MIN_TIME <= t < MAX_TIME:
        raise ParseError("wrong_type", "entry time out of range")
    return t


def _check_free_form(auth: Auth, req: Request, resp: Response | None, max_depth: int) -> None:
    """Bound the nesting of the fields typed ``Any``/``dict`` that redaction does not walk."""
    _check_auth(auth, "auth", max_depth)
    if req.headers is not None:
        check_depth(req.headers, max_depth, "request.headers")
    if req.supplemental_audit_data is not None:
        check_depth(req.supplemental_audit_data, max_depth, "request.supplemental_audit_data")
    if resp is not None:
        if resp.headers is not None:
            check_depth(resp.headers, max_depth, "response.headers")
        if resp.supplemental_audit_data is not None:
            check_depth(resp.supplemental_audit_data, max_depth, "response.supplemental_audit_data")
        if resp.auth is not None:
            _check_auth(resp.auth, "response.auth", max_depth)


def _check_auth(auth: Auth, where: str, max_depth: int) -> None:
    if auth.metadata is not None:
        check_depth(auth.metadata, max_depth, f"{where}.metadata")
    if auth.external_namespace_policies is not None:
        check_depth(auth.external_namespace_policies, max_depth, f"{where}.external_namespace_policies")
    if auth.authorization_details is not None:
        check_depth(auth.authorization_details, max_depth, f"{where}.authorization_details")


def _redact_headers(headers: dict[str, Any], found: list[str], plain: list[str]) -> dict[str, Any]:
    out: dict[str, Any] | None = None
    for name, value in headers.items():
        values = value if isinstance(value, list) else [value]
        if all(isinstance(v, str) and is_protected(v) for v in values):
            continue
        if not is_credential_header(name, values):
            continue
        if out is None:
            out = dict(headers)
        found.append(f"request.headers.{name}")
        plain.extend(v for v in values if isinstance(v, str))
        out[name] = [REDACTED]
    return headers if out is None else out


def _split_known(
    raw: dict[str, Any], cls: type[msgspec.Struct], where: str, extra: dict[str, Any]
) -> dict[str, Any]:
    fields = cls.__struct_fields__
    children = _CHILDREN.get(cls, {})
    known: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in fields:
            extra[f"{where}{k}"] = v
            continue
        child = children.get(k)
        if child is not None and isinstance(v, dict):
            v = _split_known(v, child, f"{where}{k}.", extra)
        elif child is not None and isinstance(v, list):
            v = [_split_known(i, child, f"{where}{k}[].", extra) if isinstance(i, dict) else i for i in v]
        known[k] = v
    return known


def _decode_reason(msg: str) -> str:
    low = msg.lower()
    if "nested" in low or "recursion" in low or "depth" in low:
        return "too_deep"
    if "utf-8" in low:
        return "not_utf8"
    return "invalid_json"
