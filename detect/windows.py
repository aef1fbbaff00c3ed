"""Small event-time windowed counters for burst rules, with plain-data state.

Each counter is keyed (an identity key, a source address) and forgets what is older than its
window. Memory is bounded twice: per key by ``max_items`` (a burst needs only the threshold's worth
of items to be recognised) and overall by sweeping keys whose newest item left the window.

>>> c = SlidingCount(window=60.0)
>>> [c.add("alice", t) for t in (0.0, 10.0, 20.0, 100.0)]
[1, 2, 3, 1]
>>> d = DistinctCount(window=60.0)
>>> [d.add("10.0.0.1", target, t) for target, t in (("a", 0.0), ("b", 1.0), ("a", 2.0))]
[1, 2, 2]
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["SlidingCount", "DistinctCount", "Cooldown"]

_SWEEP_EVERY = 1024


class SlidingCount:
    """Number of items per key within the last ``window`` seconds of event time.

    Each item may carry a short tag (an event id), so a burst finding can name the entries that
    made it.
    """

    def __init__(self, window: float, *, max_items: int = 500) -> None:
        self.window = float(window)
        self.max_items = max_items
        self._items: dict[str, deque[tuple[float, str]]] = {}
        self._adds = 0

    def add(self, key: str, ts: float, tag: str = "") -> int:
        """Record one item at ``ts`` and return the count in ``(ts - window, ts]``."""
        q = self._items.get(key)
        if q is None:
            q = self._items[key] = deque(maxlen=self.max_items)
        q.append((ts, tag))
        cutoff = ts - self.window
        while q and q[0][0] <= cutoff:
            q.popleft()
        self._maybe_sweep(ts)
        return len(q)

    def count(self, key: str, now: float) -> int:
        """Items for ``key`` still inside the window at ``now``."""
        q = self._items.get(key)
        if not q:
            return 0
        cutoff = now - self.window
        return sum(1 for t, _ in q if t > cutoff)

    def tags(self, key: str, now: float) -> list[str]:
        """Non-empty tags of the items for ``key`` inside the window at ``now``, oldest first."""
        cutoff = now - self.window
        return [tag for t, tag in self._items.get(key, ()) if t > cutoff and tag]

    def _maybe_sweep(self, now: float) -> None:
        self._adds += 1
        if self._adds % _SWEEP_EVERY:
            return
        cutoff = now - self.window
        for k in [k for k, q in self._items.items() if not q or q[-1][0] <= cutoff]:
            del self._items[k]

    def state(self) -> dict[str, Any]:
        """Plain-data state: ``{key: [[ts, tag], ...]}``."""
        return {"items": {k: [[t, tag] for t, tag in q] for k, q in self._items.items() if q}}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._items = {
            str(k): deque(((float(t), str(tag)) for t, tag in v), maxlen=self.max_items)
            for k, v in dict(state.get("items", {})).items()
        }


class DistinctCount:
    """Number of distinct values per key seen within the last ``window`` seconds."""

    def __init__(self, window: float, *, max_values: int = 1000) -> None:
        self.window = float(window)
        self.max_values = max_values
        self._seen: dict[str, dict[str, float]] = {}
        self._adds = 0

    def add(self, key: str, value: str, ts: float) -> int:
        """Record ``value`` for ``key`` at ``ts``; return the distinct count in the window."""
        vals = self._seen.get(key)
        if vals is None:
            vals = self._seen[key] = {}
        vals.pop(value, None)  # re-insert so the dict stays ordered by last sighting
        vals[value] = ts
        cutoff = ts - self.window
        for v in [v for v, t in vals.items() if t <= cutoff]:
            del vals[v]
        while len(vals) > self.max_values:
            del vals[next(iter(vals))]
        self._maybe_sweep(ts)
        return len(vals)

    def values(self, key: str) -> list[str]:
        """The values currently held for ``key``, oldest sighting first."""
        return list(self._seen.get(key, {}))

    def _maybe_sweep(self, now: float) -> None:
        self._adds += 1
        if self._adds % _SWEEP_EVERY:
            return
        cutoff = now - self.window
        for k in [k for k, v in self._seen.items() if not v or max(v.values()) <= cutoff]:
            del self._seen[k]

    def state(self) -> dict[str, Any]:
        """Plain-data state: ``{key: {value: last_ts}}``."""
        return {"seen": {k: dict(v) for k, v in self._seen.items() if v}}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._seen = {
            str(k): {str(v): float(t) for v, t in dict(vals).items()}
            for k, vals in dict(state.get("seen", {})).items()
        }


class Cooldown:
    """Fire at most once per key per ``period`` seconds of event time.

    A burst keeps crossing its threshold on every further event; the rule reports it once and
    again only after a full quiet period, so one attack is one finding rather than hundreds.
    """

    def __init__(self, period: float, *, max_keys: int = 100_000) -> None:
        self.period = float(period)
        self.max_keys = max_keys
        self._last: dict[str, float] = {}

    def ready(self, key: str, ts: float) -> bool:
        """True (and arm the key) when ``key`` has not fired within the period before ``ts``."""
        last = self._last.get(key)
        if last is not None and ts - last < self.period:
            return False
        self._last.pop(key, None)
        self._last[key] = ts
        if len(self._last) > self.max_keys:
            del self._last[next(iter(self._last))]
        # Keys are ordered by last firing: forget those whose period is long over.
        cutoff = ts - self.period
        while self._last:
            oldest = next(iter(self._last))
            if self._last[oldest] > cutoff:
                break
            del self._last[oldest]
        return True

    def state(self) -> dict[str, Any]:
        """Plain-data state: ``{key: last_fired_ts}``."""
        return {"last": dict(self._last)}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._last = {str(k): float(v) for k, v in dict(state.get("last", {})).items()}
