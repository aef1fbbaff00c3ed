"""The request primitive of the organisation generator: real HTTP requests on a simulated clock.

Every request carries two headers: ``X-Forwarded-For`` (the identity's pretend address; the
server's second listener trusts it from loopback, see :func:`~vaultwatch.demo.traffic.forwarding_listener`)
and ``X-Vw-Seq``, a sequence number the server is told to audit in clear
(``sys/config/auditing/request-headers``). After the run, :meth:`Driver.rewrite` reads the
server's own audit log, finds each entry's request by that number (failed and refused requests
included: Vault audits the header on every entry), sets the entry's ``time`` (and its tokens'
``token_issue_time``) to the simulated time the generator chose, strips the header, and drops
the two entries of the header's own configuration. Labels are the generator's own bookkeeping:
each request is made under a *tag* (``setup``, ``benign`` or a labelled instance).
"""

from __future__ import annotations

import http.client
import json
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from ..errors import VaultwatchError

__all__ = ["SEQ_HEADER", "Actor", "Driver", "DriverError", "Reply", "Rewritten", "rfc3339"]

log = logging.getLogger(__name__)

SEQ_HEADER: Final = "x-vw-seq"
SETUP: Final = "setup"
BENIGN: Final = "benign"


class DriverError(VaultwatchError, RuntimeError):
    """The generator could not drive the server or match the audit log to its requests."""


def rfc3339(ts: float, *, fraction: bool = True) -> str:
    """``ts`` (epoch seconds) as RFC 3339 UTC, as Vault writes it."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if fraction else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


@dataclass
class Actor:
    """One caller: its name and kind, its current address, how it logs in, and its token."""

    name: str
    kind: str
    address: str
    login_path: str = ""
    login_body: dict[str, Any] = field(default_factory=dict, repr=False)
    token: str | None = field(default=None, repr=False)
    accessor: str = field(default="", repr=False)
    expires: float = 0.0
    ttl: float = 4 * 3600.0
    policies: tuple[str, ...] = ()

    def copy(self, *, name: str | None = None, address: str | None = None, kind: str | None = None) -> Actor:
        """The same credentials under another name/address (a thief holding them)."""
        return Actor(
            name or self.name,
            kind or self.kind,
            address or self.address,
            self.login_path,
            dict(self.login_body),
            self.token,
            self.accessor,
            self.expires,
            self.ttl,
            self.policies,
        )


@dataclass(frozen=True)
class Reply:
    """One response: HTTP status and the decoded JSON body (``{}`` when there is none)."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def data(self) -> dict[str, Any]:
        d = self.body.get("data")
        return d if isinstance(d, dict) else {}

    @property
    def auth(self) -> dict[str, Any]:
        a = self.body.get("auth")
        return a if isinstance(a, dict) else {}


@dataclass(frozen=True)
class _Call:
    ts: float
    tag: str


@dataclass
class Rewritten:
    """What :meth:`Driver.rewrite` produced: request ids per tag (in order) and counts."""

    ids_by_tag: dict[str, list[str]]
    rid_by_seq: dict[int, str]
    first_ts: dict[str, float]
    entries: int
    requests: int
    unmatched: int


class Driver:
    """Makes real requests to ``url`` as actors, stamping each with a simulated time and a tag."""

    def __init__(self, url: str, root_token: str, *, now: float, rng: random.Random) -> None:
        self.url = url.rstrip("/")
        self.root_token = root_token
        parts = urlsplit(self.url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 8200
        self._conn = http.client.HTTPConnection(self._host, self._port, timeout=60)
        self.now = now
        self.rng = rng
        self.tag = SETUP
        self.calls: list[_Call] = []
        self.bootstrap_address = "10.0.0.2"
        #: The dev server's unseal key, for :meth:`unseal` after a threat sealed it.
        self.unseal_key: str | None = None

    def __repr__(self) -> str:  # never the token
        return f"Driver(url={self.url!r}, requests={len(self.calls)})"

    def close(self) -> None:
        self._conn.close()

    def enable_sequence_header(self) -> None:
        """Tell the server to audit the sequence header in clear (dropped from the output)."""
        path = f"sys/config/auditing/request-headers/{SEQ_HEADER}"
        r = self._send(self.root_token, "POST", path, {"hmac": False}, 0)
        if not r.ok:
            raise DriverError(f"could not configure the audited sequence header: HTTP {r.status}")

    @contextmanager
    def tagged(self, tag: str) -> Iterator[None]:
        """Requests made inside are labelled ``tag``."""
        before = self.tag
        self.tag = tag
        try:
            yield
        finally:
            self.tag = before

    def at(self, ts: float) -> None:
        """Move the simulated clock forward to ``ts`` (never back)."""
        self.now = max(self.now, ts)

    def req(
        self,
        actor: Actor | None,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        anonymous: bool = False,
        gap: tuple[float, float] = (0.4, 4.0),
    ) -> Reply:
        """One real request as ``actor`` (root when None) at the current simulated time."""
        self.calls.append(_Call(self.now, self.tag))
        seq = len(self.calls)
        token = None if anonymous else (self.root_token if actor is None else actor.token)
        address = self.bootstrap_address if actor is None else actor.address
        reply = self._send(token, method, path, body, seq, address)
        self.now += self.rng.uniform(*gap)
        if reply.status == 503 and any("sealed" in str(e) for e in reply.body.get("errors") or ()):
            # A sealed server audits nothing: every later request would silently vanish from the
            # log and every later threat would be labelled with no requests.
            raise DriverError(f"OpenBao is sealed ({method} {path}); a threat that seals must unseal")
        return reply

    def unseal(self) -> None:
        """Unseal the server (the operator's recovery after a threat sealed it)."""
        if not self.unseal_key:
            raise DriverError("the server was sealed and its unseal key is unknown")
        r = self._send(None, "PUT", "sys/unseal", {"key": self.unseal_key}, 0)
        if not r.ok or r.body.get("sealed", True):
            raise DriverError(f"could not unseal OpenBao: HTTP {r.status}")

    def _send(
        self,
        token: str | None,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        seq: int,
        address: str | None = None,
    ) -> Reply:
        headers = {"X-Vw-Seq": str(seq)} if seq else {}
        if token:
            headers["X-Vault-Token"] = token
        if address:
            headers["X-Forwarded-For"] = address
        payload = json.dumps(body).encode() if body is not None else None
        if payload is not None:
            headers["Content-Type"] = "application/json"
        raw, status = b"", 0
        for attempt in (1, 2):  # one reconnect if the server closed the kept-alive connection
            try:
                self._conn.request(method, f"/v1/{path}", body=payload, headers=headers)
                resp = self._conn.getresponse()
                status, raw = resp.status, resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._conn.close()
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=60)
                if attempt == 2:
                    raise DriverError(f"request to OpenBao failed: {type(exc).__name__}") from exc
        parsed: dict[str, Any] = {}
        if raw:
            try:
                value = json.loads(raw)
                parsed = value if isinstance(value, dict) else {}
            except ValueError:
                parsed = {}
        return Reply(status, parsed)

    # -- rewrite ------------------------------------------------------------------------------
    def rewrite(self, audit_log: Path, out: Path, *, setup_ts: float) -> Rewritten:
        """Copy ``audit_log`` to ``out`` on the simulated clock; return request ids per tag.

        Entries before the first sequenced one (the dev server's bootstrap) get ``setup_ts``.
        """
        calls = self.calls
        ids_by_tag: dict[str, list[str]] = {}
        rid_by_seq: dict[int, str] = {}
        seen: set[str] = set()
        first_ts: dict[str, float] = {}
        issued: dict[str, float] = {}
        entries = unmatched = 0
        last_ts = setup_ts
        header_path = f"sys/config/auditing/request-headers/{SEQ_HEADER}"
        with open(audit_log, "rb") as src, open(out, "wb") as dst:
            for line in src:
                if not line.strip():
                    continue
                entry = json.loads(line)
                request = entry.get("request") or {}
                if request.get("path") == header_path:
                    continue
                headers = request.get("headers") or {}
                seq_values = headers.pop(SEQ_HEADER, None)
                if not headers:
                    request.pop("headers", None)
                seq = int(seq_values[0]) if seq_values else 0
                if 0 < seq <= len(calls):
                    call = calls[seq - 1]
                    ts = call.ts + (0.002 if entry.get("type") == "response" else 0.0)
                    rid = request.get("id")
                    if rid:
                        rid_by_seq.setdefault(seq, rid)
                    if rid and rid not in seen:
                        seen.add(rid)
                        ids_by_tag.setdefault(call.tag, []).append(rid)
                        first_ts.setdefault(call.tag, call.ts)
                else:
                    if rid_by_seq:  # after the organisation's first request: unexpected
                        unmatched += 1
                    ts = last_ts
                last_ts = ts
                _set_times(entry, ts, issued, setup_ts)
                dst.write(_encode(entry))
                entries += 1
        if unmatched:
            log.warning("%d audit entries carried no sequence number", unmatched)
        return Rewritten(ids_by_tag, rid_by_seq, first_ts, entries, len(calls), unmatched)


def _set_times(entry: dict[str, Any], ts: float, issued: dict[str, float], setup_ts: float) -> None:
    """Move ``entry`` and its tokens' issue times onto the simulated clock.

    A token's simulated issue time is that of the response that issued it (by accessor HMAC);
    tokens issued before the log began (the root token) get the setup time.
    """
    entry["time"] = rfc3339(ts)
    resp_auth = (entry.get("response") or {}).get("auth") or {}
    if isinstance(resp_auth, dict) and resp_auth.get("accessor"):
        issued.setdefault(resp_auth["accessor"], ts)
    for auth in (entry.get("auth"), resp_auth):
        if isinstance(auth, dict) and auth.get("token_issue_time"):
            when = issued.get(auth.get("accessor") or "", setup_ts)
            auth["token_issue_time"] = rfc3339(when, fraction=False)


_GO_ESCAPES: Final = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _encode(entry: dict[str, Any]) -> bytes:
    """One JSON line as Go's encoder (which Vault's file device uses) writes it."""
    text = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
    if any(c in text for c in _GO_ESCAPES):
        for c, esc in _GO_ESCAPES.items():
            text = text.replace(c, esc)
    return text.encode() + b"\n"
