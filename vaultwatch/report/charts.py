"""What both renderers draw from the report data: the charts (matplotlib PNGs) and the number formats.

:func:`charts` returns PNG bytes by name; :mod:`.render_html` embeds them as data URIs and
:mod:`.render_pdf` places them on its pages. :func:`pct`, :func:`hours` and :func:`change` format
the figures the same way in both.
"""

from __future__ import annotations

import io
from typing import Any, Final

# Figures are made with matplotlib's object API, not pyplot: no backend is chosen or changed,
# so importing the report leaves an analyst's notebook (inline charts) as it was.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "SEVERITY_COLOURS",
    "change",
    "chart_figures",
    "charts",
    "hours",
    "overlapping_labels",
    "pct",
]

#: Resolution of the chart PNGs (the PDF places them at this many pixels per inch).
DPI: Final = 110

SEVERITY_COLOURS: Final = {
    "critical": "#7f1d1d",
    "high": "#dc2626",
    "medium": "#f59e0b",
    "low": "#3b82f6",
    "info": "#9ca3af",
}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _drawn(fig: Figure) -> Any:
    """A renderer with ``fig`` laid out on it (an Agg canvas; pyplot's backend is not touched)."""
    canvas: Any = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    return canvas.get_renderer()


def overlapping_labels(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of tick labels (along one axis of one plot) whose drawn boxes intersect."""
    renderer = _drawn(fig)
    out: list[tuple[str, str]] = []
    for ax in fig.axes:
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            boxes = [
                (t.get_text(), t.get_window_extent(renderer))
                for t in labels
                if t.get_visible() and t.get_text()
            ]
            for i, (text, box) in enumerate(boxes):
                out.extend((text, other) for other, box2 in boxes[i + 1 :] if box.overlaps(box2))
    return out


def _tick_text(label: str, hourly: bool, many_days: bool) -> str:
    """``09-14`` for a day; an hour as ``06:00``, or as its date at midnight over many days."""
    if not hourly:
        return label[5:10]
    if many_days or label[11:13] == "00":
        return label[5:10]
    return label[11:16]


def _ticks(ax: Any, labels: list[str], hourly: bool) -> None:
    """At most eight ticks, short labels; hourly buckets over days get one tick per midnight."""
    many_days = hourly and len(labels) > 48
    candidates = (
        [i for i, t in enumerate(labels) if t[11:13] == "00"] or [0]
        if many_days
        else list(range(len(labels)))
    )
    step = max(1, -(-len(candidates) // 8))
    pos = candidates[::step]
    ax.set_xticks(pos)
    ax.set_xticklabels([_tick_text(labels[i], hourly, many_days) for i in pos], fontsize=7)


def _declutter(fig: Figure, ax: Any) -> None:
    """Drop every other x tick label until none overlaps (long labels, a narrow figure)."""
    while overlapping_labels(fig):
        ticks = list(ax.get_xticks())
        texts = [t.get_text() for t in ax.get_xticklabels()]
        if len(ticks) <= 2:
            ax.tick_params(axis="x", labelrotation=30)
            return
        ax.set_xticks(ticks[::2])
        ax.set_xticklabels(texts[::2], fontsize=7)


def _volume_chart(data: dict[str, Any]) -> Figure | None:
    vol = data["access"]["volume"]
    if not vol:
        return None
    fig = Figure(figsize=(7.2, 2.4))
    ax = fig.subplots()
    x = range(len(vol))
    ok = [v["ok"] for v in vol]
    failed = [v["failed"] for v in vol]
    ax.bar(x, ok, color="#2563eb", label="succeeded", width=0.85)
    ax.bar(x, failed, bottom=ok, color="#dc2626", label="denied / failed", width=0.85)
    _ticks(ax, [str(v["t"]) for v in vol], data["access"]["bucket"] == "1h")
    ax.set_ylabel("requests", fontsize=8)
    ax.set_title(f"Requests per {'hour' if data['access']['bucket'] == '1h' else 'day'}", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    _declutter(fig, ax)
    return fig


def _denials_chart(data: dict[str, Any]) -> Figure | None:
    trend = data["denials"]["trend"]
    if not trend:
        return None
    fig = Figure(figsize=(7.2, 2.2))
    ax = fig.subplots()
    x = list(range(len(trend)))
    ax.plot(x, [t["denied"] for t in trend], color="#b45309", marker="o", ms=2, label="permission denied")
    ax.plot(x, [t["login_failed"] for t in trend], color="#7c3aed", marker="o", ms=2, label="login failed")
    _ticks(ax, [str(t["t"]) for t in trend], data["access"]["bucket"] == "1h")
    ax.set_ylabel("requests", fontsize=8)
    ax.set_title("Denials and login failures", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    _declutter(fig, ax)
    return fig


def _alerts_chart(data: dict[str, Any]) -> Figure | None:
    rows = data["alerts"]["by_detector"]
    if not rows:
        return None
    fig = Figure(figsize=(7.2, 0.35 * len(rows) + 0.8))
    ax = fig.subplots()
    names = [r["detector"] for r in rows][::-1]
    left = [0] * len(names)
    for sev, colour in SEVERITY_COLOURS.items():
        vals = [r.get(sev, 0) for r in rows][::-1]
        if any(vals):
            ax.barh(names, vals, left=left, color=colour, label=sev)
            left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel("alerts", fontsize=8)
    ax.set_title("Alerts by detector and severity", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    _declutter(fig, ax)
    return fig


def chart_figures(data: dict[str, Any]) -> dict[str, Figure]:
    """The report's charts as matplotlib figures, by name; empty ones omitted."""
    out: dict[str, Figure] = {}
    for name, make in (("volume", _volume_chart), ("denials", _denials_chart), ("alerts", _alerts_chart)):
        fig = make(data)
        if fig is not None:
            out[name] = fig
    return out


def charts(data: dict[str, Any]) -> dict[str, bytes]:
    """The report's charts as PNG bytes, by name (``volume``, ``denials``, ``alerts``); empty ones omitted."""
    return {name: _png(fig) for name, fig in chart_figures(data).items()}


# -- number formats ----------------------------------------------------------------------------
def pct(value: Any) -> str:
    """A share as a whole percentage (``-`` when unknown)."""
    return "-" if value is None else f"{100 * float(value):.0f}%"


def hours(value: Any) -> str:
    """A duration in hours as minutes below one hour, else hours (``-`` when unknown)."""
    if value is None:
        return "-"
    h = float(value)
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def change(value: Any) -> str:
    """A signed percentage change (``n/a`` without a previous period)."""
    if value is None:
        return "n/a"
    return f"{'+' if value > 0 else ''}{value:.1f}%"
