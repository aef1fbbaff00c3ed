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

#: Families of the behavioural threat signals (:mod:`detect.behaviour`): each is judged whole by
#: its own detector, reaches the alert level on its own, and its text is the alert's title.
THREAT_FAMILIES = frozenset({"credential", "exfiltration", "denial"})

__all__ = ["THREAT_FAMILIES", "rank_reasons", "fmt_count", "title_for"]

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
    """The ``limit`` strongest reasons; weights are shares of the total (sum to 1).

    Contributions with the same signal and value merge; a threat signal (whose text grows as
    the act goes on: "reading 2 secrets", then "reading 6") reads as its latest text.
    """
    merged: dict[tuple[str, str], tuple[float, Contribution, int]] = {}
    for pts, c in items:
        k = (c.signal, c.value)
        m = merged.get(k)
        if m is None:
            merged[k] = (pts, c, 1)
        else:
            keep = c if c.family in THREAT_FAMILIES and c.ts >= m[1].ts else m[1]
            merged[k] = (m[0] + pts, keep, m[2] + 1)
    total = sum(m[0] for m in merged.values()) or 1.0
    ranked = sorted(merged.values(), key=lambda m: (-m[0], m[1].signal, m[1].value))
    out: list[Reason] = []
    for pts, c, n in ranked[:limit]:
        observed = c.observed if n == 1 or c.family in THREAT_FAMILIES else f"{c.observed} (x{n})"
        out.append(
            Reason(feature=c.feature, observed=observed, baseline=c.baseline, weight=round(pts / total, 3))
        )
    return tuple(out)


def title_for(families: list[str], display: str, items: Iterable[tuple[float, Contribution]] = ()) -> str:
    """One line a human reads first.

    When a threat signal (a stolen credential, denials outside habit, slow exfiltration) is
    among the contributions, its own words are the title: what happened to whom. Otherwise the
    families name what was unusual.
    """
    items = list(items)
    best: tuple[float, float, Contribution] | None = None
    for pts, c in items:
        if c.family in THREAT_FAMILIES and c.points > 0:
            k = (pts, c.ts)
            if best is None or k > best[:2]:
                best = (pts, c.ts, c)
    if best is not None:
        lead = best[2]
        # The latest words of the same signal (its act has grown since the strongest part).
        latest = lead.observed
        latest_ts = lead.ts
        for _, c in items:
            if c.signal == lead.signal and c.value == lead.value and c.ts >= latest_ts:
                latest, latest_ts = c.observed, c.ts
        return latest[:1].upper() + latest[1:]
    parts = [_TITLES.get(f, f) for f in families[:3]]
    what = ", ".join(parts) if parts else "unusual behaviour"
    return f"Unusual behaviour by {display}: {what}"
