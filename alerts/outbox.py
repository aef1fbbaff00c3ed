"""The seam between the alert store and delivery: a durable, ordered outbox.

The store writes one :class:`OutboxItem` per (notification, receiver) in the same transaction as
the alerts it carries. Delivery workers claim due items, try them, and record the outcome. Items
for one endpoint are handed out in creation order, and a claimed item is leased (not deleted), so
a worker that dies mid-delivery leaves it to be retried: delivery is at-least-once and receivers
dedup by ``webhook-id`` / ``dedup_key``.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

__all__ = ["OutboxItem", "Outbox", "OUTBOX_STATES"]

OUTBOX_STATES = ("pending", "delivered", "failed", "disabled")


class OutboxItem(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    receiver: str  # receiver name from the routing config
    channel: str  # webhook | slack | pagerduty | teams | email | syslog
    endpoint: str  # stable, redacted-safe endpoint key (receiver/integration index), for ordering
    message_id: str  # stable across retries (webhook-id / dedup key)
    payload: dict[str, Any]  # {"group_key":..., "status": ..., "alerts": [alert/v1 dicts]}
    attempts: int = 0
    created_at: float = 0.0
    next_attempt_at: float = 0.0
    state: str = "pending"
    last_reason: str | None = None


class Outbox(Protocol):
    def claim_due(self, now: float, *, limit: int = 100, lease_seconds: float = 60.0) -> list[OutboxItem]:
        """Pending items whose ``next_attempt_at <= now``, oldest first per endpoint; an endpoint
        with an earlier undelivered item is not skipped past (per-endpoint order)."""
        ...

    def mark_delivered(self, item_id: int, now: float, reason: str = "ok") -> None: ...

    def mark_retry(self, item_id: int, now: float, next_attempt_at: float, reason: str) -> None: ...

    def mark_failed(self, item_id: int, now: float, reason: str) -> None:
        """Give up: the item stays visible in state ``failed`` and is counted in a metric."""
        ...

    def disable_endpoint(self, endpoint: str, now: float, reason: str) -> None:
        """HTTP 410: the receiver is gone; its pending items end ``disabled``."""
        ...

    def depth(self) -> int: ...

    def oldest_pending_age(self, now: float) -> float | None: ...
