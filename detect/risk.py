"""Risk-based alerting: per-identity risk accumulated over a window, with decay.

A behavioural signal alone is rarely worth a page; several unusual things done by one identity
within a day are. Each signal adds *points* (its surprise, i.e. ``-log10`` of its tail
probability, scaled); points decay with a half-life, and contributions older than the window are
dropped. The identity alerts when its decayed risk crosses the threshold, or when enough
distinct signal *families* each brought a meaningful share within the window.

>>> r = RiskState()
>>> r.add(Contribution(ts=0.0, family="novelty", signal="novelty.subnet", value="10.9.9.0/24",
...       points=40.0, feature="subnet", observed="10.9.9.0/24", baseline="never", event_id="e1"))
>>> round(r.score(3600 * 12, half_life=12 * 3600), 1)
20.0
"""

from __future__ import annotations

import math

import msgspec

__all__ = ["Contribution", "RiskState", "to_score"]

_MAX_CONTRIBUTIONS = 48


class Contribution(msgspec.Struct, kw_only=True):
    """One signal's share of an identity's risk."""

    ts: float
    family: str
    signal: str
    value: str
    points: float
    feature: str
    observed: str
    baseline: str
    event_id: str = ""
    path: str = ""
    address: str = ""
    #: Earlier requests behind the signal (a slow exfiltration's first reads), also evidence.
    more: tuple[str, ...] = ()


class RiskState(msgspec.Struct, kw_only=True):
    """The contributions of the current window (bounded: the weakest are dropped first)."""

    items: list[Contribution] = msgspec.field(default_factory=list)

    def add(self, c: Contribution) -> None:
        self.items.append(c)
        if len(self.items) > _MAX_CONTRIBUTIONS:
            weakest = min(range(len(self.items)), key=lambda i: self.items[i].points)
            del self.items[weakest]

    def prune(self, now: float, window: float) -> None:
        """Forget contributions older than ``window`` seconds."""
        if self.items and self.items[0].ts < now - window:
            self.items = [c for c in self.items if c.ts >= now - window]

    def decayed(self, now: float, half_life: float) -> list[tuple[float, Contribution]]:
        return [(c.points * 0.5 ** (max(now - c.ts, 0.0) / half_life), c) for c in self.items]

    def score(self, now: float, half_life: float) -> float:
        """The decayed sum of points at ``now``."""
        return sum(p for p, _ in self.decayed(now, half_life))

    def families(self, now: float, half_life: float, min_points: float) -> list[str]:
        """Families whose decayed points reach ``min_points``, strongest first."""
        per: dict[str, float] = {}
        for p, c in self.decayed(now, half_life):
            per[c.family] = per.get(c.family, 0.0) + p
        return [f for f, p in sorted(per.items(), key=lambda kv: (-kv[1], kv[0])) if p >= min_points]

    def clear(self) -> None:
        self.items = []


def to_score(points: float, threshold: float) -> int:
    """Map risk points to 0-100: the threshold lands at 60, saturating smoothly towards 100."""
    if points <= 0:
        return 0
    x = points / threshold
    return max(1, min(100, round(100 * (1 - math.exp(-0.916 * x)))))
