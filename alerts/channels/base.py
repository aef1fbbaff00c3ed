"""The channel seam: ``Channel.send(payload, message_id=...) -> Delivery``, plus what HTTP channels share.

A channel turns one outbox payload (``{"group_key", "receiver", "status", "alerts": [alert/v1
dicts]}``) into one notification and reports a :class:`Delivery`. It never raises for a delivery
problem and never puts a secret (URL, key, password) into ``Delivery.reason``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Final, Protocol
from urllib.parse import quote

import httpx
import msgspec

from alerts.channels._http import classify_status, describe_exception, parse_retry_after
from alerts.errors import BlockedDestination
from alerts.secrets import Secret
from alerts.ssrf import Guard, attempt_deadline, guarded_client

__all__ = [
    "Channel",
    "Delivery",
    "HttpPoster",
    "alert_link",
    "alerts_of",
    "identity_label",
    "top_reasons",
    "truncate",
]

logger = logging.getLogger(__name__)

USER_AGENT: Final = "vaultwatch-delivery/0.1"


class _RedactUrls(logging.Filter):
    """httpx logs every request's full URL at INFO; for webhooks the URL is the credential.
    Keep scheme, host and port, drop path and query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                f"{a.scheme}://{a.host}:{a.port or ''}/[redacted]" if isinstance(a, httpx.URL) else a
                for a in record.args
            )
        return True


# Installed on import of any HTTP channel, so no configuration can forget it.
if not any(isinstance(f, _RedactUrls) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RedactUrls())


class Delivery(msgspec.Struct, frozen=True):
    """The outcome of one attempt. ``retry_after`` (seconds) is a floor the receiver asked for;
    ``disable`` means the endpoint is gone (HTTP 410) and must not be tried again."""

    ok: bool
    retryable: bool
    reason: str
    retry_after: float | None = None
    disable: bool = False


class Channel(Protocol):
    """One notification integration (webhook, slack, pagerduty, teams, email, syslog)."""

    kind: str

    def send(self, payload: Mapping[str, Any], *, message_id: str) -> Delivery:
        """Deliver one outbox payload once. ``message_id`` is stable across retries."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class HttpPoster:
    """POSTs bodies through a guarded, pinned, redirect-refusing httpx client and classifies the
    answer with the one status classifier. The URL is a :class:`Secret`."""

    def __init__(
        self,
        *,
        guard: Guard,
        timeout: float,
        clock: Any = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.clock = clock or time.time
        self.timeout = timeout
        self.client = client or guarded_client(guard, timeout=timeout)

    def post(self, url: Secret, content: bytes, headers: Mapping[str, str]) -> Delivery:
        """POST once; never raises for transport or HTTP problems."""
        all_headers = {"content-type": "application/json", "user-agent": USER_AGENT, **headers}
        try:
            with attempt_deadline(self.timeout):
                resp = self.client.post(url.reveal(), content=content, headers=all_headers)
        except BlockedDestination as exc:
            return Delivery(ok=False, retryable=False, reason=f"blocked destination: {exc}")
        except httpx.TimeoutException as exc:
            return Delivery(ok=False, retryable=True, reason=f"timeout: {type(exc).__name__}")
        except httpx.InvalidURL:
            return Delivery(ok=False, retryable=False, reason="invalid URL")
        except (httpx.TransportError, OSError) as exc:
            return Delivery(ok=False, retryable=True, reason=f"transport error: {describe_exception(exc)}")
        verdict = classify_status(resp.status_code)
        if verdict.ok:
            return Delivery(ok=True, retryable=False, reason=f"http {resp.status_code}")
        if 300 <= resp.status_code <= 399:
            reason = f"http {resp.status_code}: redirect not followed"
        elif verdict.disable:
            reason = f"http {resp.status_code}: endpoint gone"
        else:
            reason = f"http {resp.status_code}"
        retry_after = (
            parse_retry_after(resp.headers.get("retry-after"), self.clock()) if verdict.retryable else None
        )
        return Delivery(
            ok=False,
            retryable=verdict.retryable,
            reason=reason,
            retry_after=retry_after,
            disable=verdict.disable,
        )

    def close(self) -> None:
        self.client.close()


# --- rendering helpers shared by the human-facing channels ----------------------------------------


def alerts_of(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The alert dicts of an outbox payload (an empty list if there are none)."""
    alerts = payload.get("alerts") or []
    return [a for a in alerts if isinstance(a, dict)]


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def identity_label(alert: Mapping[str, Any]) -> str:
    """Who the alert is about, for humans: an AppRole client by its role (they all share the
    display name ``approle``), else the display name, else entity id, else the identity key."""
    ident = alert.get("identity") or {}
    if ident.get("role_name"):
        return f"AppRole role {ident['role_name']}"
    return str(ident.get("display_name") or ident.get("entity_id") or ident.get("key") or "unknown")


def top_reasons(alert: Mapping[str, Any], n: int = 3) -> list[str]:
    """The ``n`` heaviest explanation entries as one-line strings."""
    reasons = [r for r in alert.get("explanation") or [] if isinstance(r, dict)]
    reasons.sort(key=lambda r: -abs(float(r.get("weight") or 0.0)))
    return [
        f"{r.get('feature', '?')}: observed {r.get('observed', '?')} (baseline {r.get('baseline', '?')})"
        for r in reasons[:n]
    ]


def alert_link(base_url: str, alert: Mapping[str, Any]) -> str:
    """The alert's page in the web UI."""
    return f"{base_url.rstrip('/')}/alerts/{quote(str(alert.get('id', '')), safe='')}"
