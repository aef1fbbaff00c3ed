"""Syslog for SIEMs: RFC 5424 records carrying a CEF message, over UDP, TCP or TLS.

TCP and TLS use octet-counting framing (RFC 6587, RFC 5425), so a record's length, not a newline,
ends it. One record per alert.

Alert fields are attacker-influenced (a display name, a path, a title), so escaping is what keeps
a value from forging a CEF field or a syslog record:

* CEF header fields: ``\\`` → ``\\\\``, ``|`` → ``\\|``;
* CEF extension values: ``\\`` → ``\\\\``, ``=`` → ``\\=``;
* both: CR and LF → ``\\r``/``\\n``, every other control character (NUL included) → ``\\xHH``,
  so nothing a line-based or C-string consumer would split on survives raw;
* RFC 5424 structured-data values: ``"``, ``\\`` and ``]`` are backslash-escaped (the only escapes
  the RFC defines), then control characters are escaped as above.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

from alerts.channels._http import describe_exception
from alerts.channels.base import Delivery, alerts_of, identity_label, top_reasons, truncate
from alerts.errors import BlockedDestination, ChannelConfigError
from alerts.ssrf import Guard

__all__ = [
    "SyslogChannel",
    "cef_header_escape",
    "cef_value_escape",
    "format_cef",
    "format_record",
    "frame_octet_counting",
    "sd_value_escape",
]

Transport = Literal["udp", "tcp", "tls"]

CEF_VENDOR: Final = "vaultwatch"
CEF_PRODUCT: Final = "vaultwatch"
CEF_VERSION: Final = "0.1.0"
SD_ID: Final = "vaultwatch@32473"  # 32473: the private enterprise number reserved for documentation
_CEF_SEVERITY: Final = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
_SYSLOG_SEVERITY: Final = {"info": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape_controls(text: str) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def cef_header_escape(text: str) -> str:
    """Escape a CEF header field."""
    return _escape_controls(text.replace("\\", "\\\\").replace("|", "\\|"))


def cef_value_escape(text: str) -> str:
    """Escape a CEF extension value."""
    return _escape_controls(text.replace("\\", "\\\\").replace("=", "\\="))


def sd_value_escape(text: str) -> str:
    """Escape an RFC 5424 SD-PARAM value."""
    return _escape_controls(text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]"))


def _printusascii(text: str, limit: int) -> str:
    clean = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def format_cef(alert: Mapping[str, Any]) -> str:
    """The CEF message for one alert."""
    sev = str(alert.get("severity", "info"))
    ident = alert.get("identity") or {}
    header = [
        "CEF:0",
        cef_header_escape(CEF_VENDOR),
        cef_header_escape(CEF_PRODUCT),
        cef_header_escape(CEF_VERSION),
        cef_header_escape(str(alert.get("detector", "unknown"))),
        cef_header_escape(truncate(str(alert.get("title", "")), 512)),
        str(_CEF_SEVERITY.get(sev, 5)),
    ]
    ext: list[tuple[str, str]] = [
        ("externalId", str(alert.get("id", ""))),
        ("act", str(alert.get("status", "open"))),
        ("suser", identity_label(alert)),
        ("suid", str(ident.get("entity_id") or "")),
        ("cs1Label", "identityKey"),
        ("cs1", str(ident.get("key") or "")),
        ("cs2Label", "authMount"),
        ("cs2", str(ident.get("auth_mount") or "")),
        ("cs3Label", "paths"),
        ("cs3", truncate(",".join(str(p) for p in list(alert.get("paths") or [])[:20]), 1023)),
        ("cs4Label", "sourceAddresses"),
        ("cs4", truncate(",".join(str(p) for p in list(alert.get("source_addresses") or [])[:20]), 1023)),
        ("cn1Label", "score"),
        ("cn1", str(alert.get("score", ""))),
        ("cnt", str(alert.get("count", ""))),
        ("start", str(alert.get("first_seen", ""))),
        ("end", str(alert.get("last_seen", ""))),
        ("msg", truncate("; ".join(top_reasons(alert)), 1023)),
    ]
    extension = " ".join(f"{k}={cef_value_escape(v)}" for k, v in ext if v)
    return "|".join(header) + "|" + extension


def format_record(
    alert: Mapping[str, Any],
    *,
    now: float,
    hostname: str,
    app_name: str = "vaultwatch",
    facility: int = 13,
    procid: str = "-",
) -> bytes:
    """One RFC 5424 record (without transport framing) carrying the alert's CEF message."""
    sev = _SYSLOG_SEVERITY.get(str(alert.get("severity", "info")), 4)
    ts = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    ident = alert.get("identity") or {}
    params = {
        "id": str(alert.get("id", "")),
        "detector": str(alert.get("detector", "")),
        "severity": str(alert.get("severity", "")),
        "identity": str(ident.get("key") or ""),
    }
    sd = "[" + SD_ID + "".join(f' {k}="{sd_value_escape(v)}"' for k, v in params.items()) + "]"
    head = (
        f"<{facility * 8 + sev}>1 {ts} {_printusascii(hostname, 255)} {_printusascii(app_name, 48)} "
        f"{_printusascii(procid, 128)} alert {sd} "
    )
    return (head + format_cef(alert)).encode("utf-8")


def frame_octet_counting(record: bytes) -> bytes:
    """RFC 6587 octet counting: ``<length> SP <record>``."""
    return str(len(record)).encode("ascii") + b" " + record


class SyslogChannel:
    """Sends one RFC 5424 + CEF record per alert to a syslog receiver."""

    kind = "syslog"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        guard: Guard,
        transport: Transport = "tls",
        timeout: float = 10.0,
        facility: int = 13,
        app_name: str = "vaultwatch",
        hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if transport not in ("udp", "tcp", "tls"):
            raise ChannelConfigError("syslog transport must be udp, tcp or tls")
        if not 0 <= facility <= 23:
            raise ChannelConfigError("syslog facility must be within 0..23")
        self.host = host
        self.port = port
        self.guard = guard
        self.transport = transport
        self.timeout = timeout
        self.facility = facility
        self.app_name = app_name
        self.hostname = hostname or socket.gethostname()
        self.tls_context = tls_context or guard.tls_context or ssl.create_default_context()
        self.clock = clock

    def __repr__(self) -> str:
        return f"SyslogChannel(transport={self.transport!r})"

    def records(self, payload: Mapping[str, Any]) -> list[bytes]:
        """The records for one payload."""
        now = self.clock()
        return [
            format_record(a, now=now, hostname=self.hostname, app_name=self.app_name, facility=self.facility)
            for a in alerts_of(payload)
        ]

    def send(self, payload: Mapping[str, Any], *, message_id: str) -> Delivery:
        """Send every alert's record once (UDP: best effort, as UDP syslog always is)."""
        records = self.records(payload)
        if not records:
            return Delivery(ok=True, retryable=False, reason="nothing to send")
        try:
            target = self.guard.check_host(self.host, self.port)
        except BlockedDestination as exc:
            return Delivery(ok=False, retryable=False, reason=f"blocked destination: {exc}")
        try:
            if self.transport == "udp":
                self._send_udp(target.ip, records)
            else:
                self._send_stream(target.ip, records)
        except OSError as exc:
            return Delivery(
                ok=False, retryable=True, reason=f"syslog {self.transport}: {describe_exception(exc)}"
            )
        return Delivery(ok=True, retryable=False, reason=f"sent {len(records)} record(s)")

    def _send_udp(self, ip: str, records: Iterable[bytes]) -> None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self.timeout)
            for record in records:
                sock.sendto(record, (ip, self.port))

    def _send_stream(self, ip: str, records: Iterable[bytes]) -> None:
        data = b"".join(frame_octet_counting(r) for r in records)
        with socket.create_connection((ip, self.port), timeout=self.timeout) as raw:
            if self.transport == "tls":
                with self.tls_context.wrap_socket(raw, server_hostname=self.host) as tls:
                    tls.sendall(data)
            else:
                raw.sendall(data)

    def close(self) -> None:
        """Nothing pooled: each send opens and closes its own socket."""
