"""The report's charts: tick labels never collide, whatever the period's length and bucket size.

Checked on the drawn figures: the bounding boxes of the tick labels along each axis, as matplotlib
lays them out, must not intersect.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from matplotlib.figure import Figure

from vaultwatch.report.charts import chart_figures, charts, overlapping_labels

T0 = datetime(2026, 9, 14, tzinfo=UTC)


def _data(buckets: int, hourly: bool, detectors: int = 12) -> dict[str, Any]:
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    vol = [{"t": (T0 + i * step).isoformat(), "ok": 3 + i % 7, "failed": i % 3} for i in range(buckets)]
    return {
        "access": {"volume": vol, "bucket": "1h" if hourly else "1d"},
        "denials": {"trend": [{"t": v["t"], "denied": v["failed"], "login_failed": 1} for v in vol]},
        "alerts": {
            "by_detector": [
                {"detector": f"a-rather-long-detector-name-{i}", "high": i + 1, "medium": 2}
                for i in range(detectors)
            ]
        },
    }


@pytest.mark.parametrize(
    ("buckets", "hourly"),
    [(1, True), (9, True), (15, True), (24, True), (47, True), (49, True), (168, True), (744, True)]
    + [(2, False), (7, False), (15, False), (31, False), (92, False), (366, False)],
)
def test_tick_labels_never_overlap(buckets: int, hourly: bool) -> None:
    figs = chart_figures(_data(buckets, hourly))
    assert set(figs) == {"volume", "denials", "alerts"}
    for name, fig in figs.items():
        assert overlapping_labels(fig) == [], (name, buckets, hourly)
        ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
        assert 1 <= len(ticks) <= 10, (name, ticks)
        if name != "alerts":
            # Short labels: a date, or an hour of one day (no "09-14 06:00" crammed together).
            assert all(len(t) <= 5 for t in ticks), ticks


def test_hourly_buckets_over_days_are_labelled_by_day() -> None:
    fig = chart_figures(_data(168, True))["volume"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][:3] == ["09-14", "09-15", "09-16"]


def test_overlap_check_sees_crammed_labels() -> None:
    """The check itself: 15 long labels across a chart's width do collide."""
    fig = Figure(figsize=(7.2, 2.4))
    ax = fig.subplots()
    ax.bar(range(15), [1] * 15)
    ax.set_xticks(range(15))
    ax.set_xticklabels([f"09-14 {h:02d}:00" for h in range(15)], fontsize=7)
    assert overlapping_labels(fig)


def test_pngs_are_drawn() -> None:
    pngs = charts(_data(24, True))
    assert all(png.startswith(b"\x89PNG") for png in pngs.values())
