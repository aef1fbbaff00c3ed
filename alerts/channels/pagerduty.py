"""PagerDuty Events API v2: one event per alert, ``dedup_key`` = the stable alert id.

The alert's status picks the action: ``open`` triggers, ``acknowledged`` acknowledges,
``resolved``/``false_positive``/``suppressed`` resolve (nobody should stay paged for those).
PagerDuty's limits are enforced client side: summary 1024 characters, dedup_key 255, body 512 KB
(custom details are trimmed to fit), and a token bucket per routing key keeps us under ~120 events
per minute so a burst is spread out instead of answered with 429s.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from alerts.channels.base import (
    Delivery,
    HttpPoster,
    alert_link,
    alerts_of,
    identity_label,
    top_reasons,
    truncate,
)
from alerts.errors import ChannelConfigError
from alerts.secrets import Secret
from alerts.ssrf import Guard

__all__ = ["DEFAULT_EVENTS_URL", "PagerDutyChannel", "TokenBucket", "event_action", "render_event"]

DEFAULT_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_LIMIT: Final = 1024
DEDUP_KEY_LIMIT: Final = 255
BODY_LIMIT: Final = 512 * 1024
_SEVERITY: Final = {
    "critical": "critical",
    "high": "error",
    "medium": "warning",
    "low": "info",
    "info": "info",
}
_ACTION: Final = {
    "open": "trigger",
    "acknowledged": "acknowledge",
    "resolved": "resolve",
    "false_positive": "resolve",
    "suppressed": "resolve",
}
_encoder = msgspec.json.Encoder()


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; thread safe; the clock is injected."""

    def __init__(self, *, rate: float, capacity: float, clock: Callable[[], float]) -> None:
        if rate <= 0 or capacity < 1:
            raise ChannelConfigError("token bucket needs rate > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self.clock = clock
        self._tokens = capacity
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token: returns 0.0 on success, else the seconds until one is available."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


def event_action(alert: Mapping[str, Any]) -> str:
    """``trigger``, ``acknowledge`` or ``resolve`` for the alert's status."""
    return _ACTION.get(str(alert.get("status", "open")), "trigger")


def dedup_key(alert: Mapping[str, Any]) -> str:
    """The alert id, or a digest of it if it is over PagerDuty's 255-character limit."""
    key = str(alert.get("id", ""))
    if len(key) <= DEDUP_KEY_LIMIT:
        return key
    return "vw_" + hashlib.sha256(key.encode()).hexdigest()


def render_event(alert: Mapping[str, Any], *, routing_key: str, ui_base_url: str) -> dict[str, Any]:
    """The Events API v2 body for one alert (within PagerDuty's size limits)."""
    action = event_action(alert)
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key(alert),
    }
    if action != "trigger":
        return event
    details: dict[str, Any] = {
        "identity": identity_label(alert),
        "score": alert.get("score"),
        "reasons": top_reasons(alert, 5),
        "count": alert.get("count"),
        "first_seen": alert.get("first_seen"),
        "last_seen": alert.get("last_seen"),
        "paths": list(alert.get("paths") or [])[:50],
        "source_addresses": list(alert.get("source_addresses") or [])[:50],
        "event_ids": list(alert.get("event_ids") or []),
    }
    event.update(
        {
            "payload": {
                "summary": truncate(
                    str(alert.get("title") or alert.get("detector") or "vaultwatch alert"), SUMMARY_LIMIT
                ),
                "source": truncate(identity_label(alert), 255),
                "severity": _SEVERITY.get(str(alert.get("severity")), "warning"),
                "timestamp": alert.get("last_seen"),
                "component": "vault",
                "group": str((alert.get("identity") or {}).get("auth_mount") or "vault"),
                "class": str(alert.get("detector", "")),
                "custom_details": details,
            },
            "client": "vaultwatch",
            "client_url": alert_link(ui_base_url, alert),
            "links": [{"href": alert_link(ui_base_url, alert), "text": "Open in vaultwatch"}],
        }
    )
    # Trim the bulkiest details until the body fits.
    for field in ("event_ids", "paths", "source_addresses", "reasons"):
        if len(_encoder.encode(event)) <= BODY_LIMIT:
            break
        details[field] = details[field][:10]
    if len(_encoder.encode(event)) > BODY_LIMIT:
        event["payload"]["custom_details"] = {"note": "details too large; see vaultwatch"}
    return event


class PagerDutyChannel:
    """Sends one Events API v2 event per alert of a group, rate limited per routing key."""

    kind = "pagerduty"

    def __init__(
        self,
        *,
        routing_key: Secret,
        guard: Guard,
        ui_base_url: str,
        events_url: str = DEFAULT_EVENTS_URL,
        timeout: float = 10.0,
        events_per_minute: float = 100.0,
        burst: float = 20.0,
        clock: Callable[[], float] = time.time,
        bucket: TokenBucket | None = None,
    ) -> None:
        if not 0 < events_per_minute <= 120:
            raise ChannelConfigError("pagerduty events_per_minute must be within (0, 120]")
        self._routing_key = routing_key
        self.ui_base_url = ui_base_url
        self._events_url = Secret(events_url)
        self.bucket = bucket or TokenBucket(rate=events_per_minute / 60.0, capacity=burst, clock=clock)
        self._http = HttpPoster(guard=guard, timeout=timeout, clock=clock)

    def __repr__(self) -> str:
        return "PagerDutyChannel()"

    def send(self, payload: Mapping[str, Any], *, message_id: str) -> Delivery:
        """Send each alert's event once. A retry resends earlier events of the group too; that is
        harmless because PagerDuty deduplicates on ``dedup_key``."""
        result = Delivery(ok=True, retryable=False, reason="nothing to send")
        for alert in alerts_of(payload):
            wait = self.bucket.take()
            if wait > 0:
                return Delivery(ok=False, retryable=True, reason="client-side rate limit", retry_after=wait)
            event = render_event(alert, routing_key=self._routing_key.reveal(), ui_base_url=self.ui_base_url)
            result = self._http.post(self._events_url, _encoder.encode(event), {})
            if not result.ok:
                return result
        return result

    def close(self) -> None:
        self._http.close()
