"""Drop the second copy of an entry that two audit devices both wrote.

Each device writes every entry; the copies share ``(request.id, type)`` but carry different
HMACs (each device has its own salt). The window is bounded by count, so memory is fixed.
"""

from __future__ import annotations

from collections import deque

from .event import AuditEvent

__all__ = ["Deduplicator"]


class Deduplicator:
    """Remembers the last ``window`` ``(request.id, type)`` keys.

    >>> d = Deduplicator(window=2)
    >>> d.seen(("a", "request")), d.seen(("a", "request")), d.seen(("b", "request"))
    (False, True, False)
    """

    def __init__(self, window: int = 65_536) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        # A set for membership and a queue for age: exactly the last ``window`` distinct keys
        # (an OrderedDict does the same at about twice the cost per entry).
        self._keys: set[tuple[str, str]] = set()
        self._order: deque[tuple[str, str]] = deque()
        self.duplicates = 0

    def seen(self, key: tuple[str, str] | None) -> bool:
        """Record ``key``; True when it was already in the window (a duplicate)."""
        if key is None:
            return False
        keys = self._keys
        if key in keys:
            self.duplicates += 1
            return True
        keys.add(key)
        order = self._order
        order.append(key)
        if len(order) > self.window:
            keys.discard(order.popleft())
        return False

    def is_duplicate(self, event: AuditEvent) -> bool:
        """:meth:`seen` of the event's ``dedup_key`` (inlined: it runs once per event)."""
        rid = event.request.id
        if not rid:
            return False
        key = (rid, event.type)
        keys = self._keys
        if key in keys:
            self.duplicates += 1
            return True
        keys.add(key)
        order = self._order
        order.append(key)
        if len(order) > self.window:
            keys.discard(order.popleft())
        return False

    def __len__(self) -> int:
        return len(self._keys)
