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
from matplotlib.figure import Figure

__all__ = ["SEVERITY_COLOURS", "change", "charts", "hours", "pct"]

SEVERITY_COLOURS: Final = {
    "critical": "#7f1d1d",
    "high": "#dc2626",
    "medium": "#f59e0b",
    "low": "#3b82f6",
    "info": "#9ca3af",
}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _ticks(ax: Any, labels: list[str], hourly: bool) -> None:
    step = max(1, len(labels) // 8)
    pos = list(range(0, len(labels), step))
    ax.set_xticks(pos)
    ax.set_xticklabels(
        [labels[i][5:16].replace("T", " ") if hourly else labels[i][5:10] for i in pos], fontsize=7
    )


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
    return fig


def charts(data: dict[str, Any]) -> dict[str, bytes]:
    """The report's charts as PNG bytes, by name (``volume``, ``denials``, ``alerts``); empty ones omitted."""
    out: dict[str, bytes] = {}
    for name, make in (("volume", _volume_chart), ("denials", _denials_chart), ("alerts", _alerts_chart)):
        fig = make(data)
        if fig is not None:
            out[name] = _png(fig)
    return out


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
