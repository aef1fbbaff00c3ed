"""Explanations: turn signal contributions into 1-5 ranked :class:`~detect.alert.Reason` objects.

A reason says what was observed against what is typical, with its window, e.g.
``first read of secret/data/logos/pxl-core/runtime/* by this identity`` against
``never in 180 d; peers: 0 of 3``. Contributions with the same signal and value merge, so a
burst of identical findings reads as one reason with its count.
"""

from __future__ import annotations

from collections.abc import Iterable

from detect.alert import Reason

from .risk import Contribution

__all__ = ["rank_reasons", "fmt_count", "title_for"]

_TITLES = {
    "novelty": "unfamiliar activity",
    "rarity": "rarely used access",
    "time": "activity at an unusual hour",
    "volume": "unusual volume",
    "error": "error spike",
    "model": "unusual hourly pattern",
}


def fmt_count(x: float) -> str:
    """Short human form of a decayed count."""
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}".rstrip("0").rstrip(".") or "0"


def rank_reasons(items: Iterable[tuple[float, Contribution]], limit: int = 5) -> tuple[Reason, ...]:
    """The ``limit`` strongest reasons; weights are shares of the total (sum to 1)."""
    merged: dict[tuple[str, str], tuple[float, Contribution, int]] = {}
    for pts, c in items:
        k = (c.signal, c.value)
        m = merged.get(k)
        merged[k] = (pts, c, 1) if m is None else (m[0] + pts, m[1], m[2] + 1)
    total = sum(m[0] for m in merged.values()) or 1.0
    ranked = sorted(merged.values(), key=lambda m: (-m[0], m[1].signal, m[1].value))
    out: list[Reason] = []
    for pts, c, n in ranked[:limit]:
        observed = c.observed if n == 1 else f"{c.observed} (x{n})"
        out.append(
            Reason(feature=c.feature, observed=observed, baseline=c.baseline, weight=round(pts / total, 3))
        )
    return tuple(out)


def title_for(families: list[str], display: str) -> str:
    """One line a human reads first."""
    parts = [_TITLES.get(f, f) for f in families[:3]]
    what = ", ".join(parts) if parts else "unusual behaviour"
    return f"Unusual behaviour by {display}: {what}"
