"""The report as a PDF, drawn with matplotlib's ``PdfPages`` (no system libraries needed).

A4 pages laid out top to bottom from headings, paragraphs, tables and the charts of
:mod:`.charts`; the figures are the HTML page's, taken from the data dict only.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import matplotlib.image as mpimg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from .charts import DPI, change, charts, hours, pct

__all__ = ["render_pdf"]

_A4: Final = (8.27, 11.69)
_MARGIN: Final = 0.6  # inches
#: The lowest a block may reach: the footer (page number, data hash) sits below.
_BOTTOM: Final = _MARGIN + 0.3


# -- layout ----------------------------------------------------------------------------------------
@dataclass
class _Column:
    title: str
    key: str
    width: float  # share of the text width
    fmt: Any = str


@dataclass
class _Pdf:
    """A tiny top-to-bottom page layout over matplotlib figures."""

    pdf: Any
    title: str
    y: float = 0.0
    fig: Figure | None = None
    pages: int = 0
    footer: str = ""
    _open: list[Figure] = field(default_factory=list)
    #: Headings not drawn yet: each goes on the page of the block that follows it, never alone
    #: at a page's foot.
    _pending: list[tuple[str, float]] = field(default_factory=list)
    #: What was drawn, in order: (page, kind, text) with kind ``heading`` or ``block``.
    blocks: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def width(self) -> float:
        return _A4[0] - 2 * _MARGIN

    def _new_page(self) -> None:
        self._close_page()
        self.fig = Figure(figsize=_A4)
        self.pages += 1
        self.y = _A4[1] - _MARGIN
        self._text(_MARGIN, _A4[1] - 0.35, self.title, size=7, colour="#6b7280")
        self._text(_A4[0] - _MARGIN, 0.35, f"page {self.pages}", size=7, colour="#6b7280", ha="right")
        if self.footer:
            self._text(_MARGIN, 0.35, self.footer, size=6, colour="#6b7280")

    def _close_page(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.fig = None

    def _text(
        self, x: float, y: float, s: str, *, size: float = 8, colour: str = "#111827", **kw: Any
    ) -> None:
        assert self.fig is not None
        self.fig.text(x / _A4[0], y / _A4[1], s, fontsize=size, color=colour, va="top", **kw)

    def need(self, height: float, what: str = "") -> None:
        """Room for a block ``height`` inches tall, on a new page if needed, with the headings
        waiting for it; ``what`` names the block in :attr:`blocks`."""
        headings, self._pending = self._pending, []
        above = sum(_heading_height(size) for _, size in headings)
        if self.fig is None or self.y - above - height < _BOTTOM:
            self._new_page()
        for text, size in headings:
            self.y -= 0.1
            self._text(_MARGIN, self.y, text, size=size, weight="bold")
            self.y -= size / 72 + 0.12
            self.blocks.append((self.pages, "heading", text))
        if what:
            self.blocks.append((self.pages, "block", what))

    def heading(self, s: str, size: float = 13) -> None:
        """A heading, kept with the first line of what follows it."""
        self._pending.append((s, size))

    def para(self, s: str, size: float = 8) -> None:
        chars = int(self.width * 72 / (size * 0.52))
        for line in textwrap.wrap(s, chars) or [""]:
            self.need(size / 72 + 0.06, "text")
            self._text(_MARGIN, self.y, line, size=size)
            self.y -= size / 72 + 0.06
        self.y -= 0.06

    def table(self, rows: Sequence[dict[str, Any]], cols: Sequence[_Column], *, empty: str = "None.") -> None:
        if not rows:
            self.para(empty)
            return
        size = 7
        line = size / 72 + 0.07

        def header() -> None:
            x = _MARGIN
            for c in cols:
                self._text(x, self.y, c.title, size=size, weight="bold", colour="#374151")
                x += c.width * self.width
            self.y -= line

        self.need(2 * line, "table")
        header()
        for row in rows:
            if self.fig is None or self.y - line < _BOTTOM:
                self._new_page()
                self.blocks.append((self.pages, "block", "table"))
                header()
            x = _MARGIN
            for c in cols:
                value = row.get(c.key)
                text = "-" if value is None else c.fmt(value)
                chars = max(3, int(c.width * self.width * 72 / (size * 0.55)))
                if len(text) > chars:
                    text = text[: chars - 1] + "…"
                self._text(x, self.y, text, size=size)
                x += c.width * self.width
            self.y -= line
        self.y -= 0.12

    def image(self, png: bytes | None) -> None:
        if png is None:
            return
        img = mpimg.imread(io.BytesIO(png), format="png")
        h_px, w_px = img.shape[0], img.shape[1]
        w = min(self.width, w_px / DPI)
        h = w * h_px / w_px
        self.need(h + 0.1, "image")
        assert self.fig is not None
        ax = self.fig.add_axes(
            ((_MARGIN) / _A4[0], (self.y - h) / _A4[1], w / _A4[0], h / _A4[1]), frame_on=False
        )
        ax.imshow(img)
        ax.set_axis_off()
        self.y -= h + 0.15

    def close(self) -> None:
        if self._pending:
            self.need(0.0)
        self._close_page()


def _heading_height(size: float) -> float:
    return 0.1 + size / 72 + 0.12


def _label(row: dict[str, Any]) -> str:
    return str(row.get("label") or row.get("identity") or row.get("key"))


def render_pdf(
    data: dict[str, Any], images: dict[str, bytes] | None = None, *, layout: list[Any] | None = None
) -> bytes:
    """The report as a PDF (A4 pages drawn with matplotlib's PdfPages).

    ``layout``, when given, receives what was drawn on which page: ``(page, kind, text)`` with
    kind ``heading`` or ``block`` (for layout tests)."""
    pngs = charts(data) if images is None else images
    buf = io.BytesIO()
    s, a, dn, al = data["summary"], data["access"], data["denials"], data["alerts"]
    sign = data["signoff"]
    with PdfPages(
        buf, metadata={"Title": f"vaultwatch audit review {data['period']['id']}", "Creator": "vaultwatch"}
    ) as pdf:
        doc = _Pdf(pdf, f"vaultwatch audit review · {data['period']['label']}")
        doc.footer = f"sha256 {sign['sha256']}"
        doc.heading("Audit review report", 18)
        doc.para(
            f"Period: {data['period']['label']} ({data['period']['id']}). "
            f"Generated {sign['generated_at']} by vaultwatch {sign['version']}."
        )
        doc.heading("Summary")
        ch = s["change_pct"]
        doc.table(
            [
                {
                    "what": k.replace("_", " "),
                    "now": s[k],
                    "before": s["previous"][k],
                    "change": change(ch[k]),
                }
                for k in ("events", "identities", "success", "denied", "login_failed", "errors", "alerts")
            ],
            [
                _Column("figure", "what", 0.3),
                _Column("this period", "now", 0.2),
                _Column("previous", "before", 0.2),
                _Column("change", "change", 0.2),
            ],
        )
        doc.para(
            "Alerts by severity: "
            + ", ".join(f"{k} {v}" for k, v in s["alerts_by_severity"].items())
            + ". By status at the end of the period: "
            + (", ".join(f"{k} {v}" for k, v in s["alerts_by_status"].items()) or "none")
            + "."
        )
        doc.heading("Access")
        doc.image(pngs.get("volume"))
        doc.heading("Top identities", 10)
        doc.table(
            a["top_identities"],
            [
                _Column("identity", "label", 0.6),
                _Column("requests", "requests", 0.2),
                _Column("not ok", "not_ok", 0.2),
            ],
        )
        doc.heading("Top secrets read", 10)
        doc.table(
            a["top_secrets"],
            [
                _Column("secret", "secret", 0.6),
                _Column("reads", "reads", 0.2),
                _Column("readers", "readers", 0.2),
            ],
        )
        doc.heading("New identities", 10)
        doc.table(
            a["new_identities"], [_Column("identity", "label", 0.6), _Column("first seen", "first_seen", 0.4)]
        )
        doc.heading("Dormant identities that came back", 10)
        doc.table(
            a["returned_identities"],
            [
                _Column("identity", "label", 0.45),
                _Column("last seen before", "last_seen_before", 0.25),
                _Column("returned", "returned", 0.2),
                _Column("days", "dormant_days", 0.1),
            ],
        )
        doc.heading("Access outside working hours", 10)
        doc.para(
            f"Working hours: {a['working_hours']}. {a['off_hours_total']} requests fell outside them; "
            f"{a['off_hours_usual_count']} identities do so routinely and are not listed."
        )
        doc.table(
            a["off_hours_unusual"],
            [
                _Column("identity", "label", 0.5),
                _Column("requests", "off_hours", 0.15),
                _Column("share", "share", 0.15, pct),
                _Column("usual share", "usual_share", 0.2, pct),
            ],
        )
        doc.heading("Denials and failures")
        doc.para(f"{dn['denied']} permission-denied requests and {dn['login_failed']} failed logins.")
        doc.image(pngs.get("denials"))
        for title, key in (
            ("Denied, by identity", "denied_by_identity"),
            ("Denied, by source", "denied_by_source"),
            ("Failed logins, by identity", "login_failed_by_identity"),
            ("Failed logins, by source", "login_failed_by_source"),
        ):
            doc.heading(title, 10)
            doc.table(
                [{**r, "label": _label(r)} for r in dn[key]],
                [_Column("who / where", "label", 0.7), _Column("count", "count", 0.3)],
            )
        doc.heading("Alerts")
        doc.image(pngs.get("alerts"))
        tta, ttr = al["time_to_acknowledge"], al["time_to_resolve"]
        doc.para(
            f"{al['total']} alerts were raised. Time to acknowledge: median {hours(tta['median_hours'])}, "
            f"p90 {hours(tta['p90_hours'])} ({tta['count']} alerts). Time to resolve: median "
            f"{hours(ttr['median_hours'])}, p90 {hours(ttr['p90_hours'])} ({ttr['count']} alerts)."
        )
        doc.heading("False-positive rate by detector", 10)
        doc.table(
            al["false_positive_rate"],
            [
                _Column("detector", "detector", 0.45),
                _Column("alerts", "alerts", 0.15),
                _Column("false positive", "false_positive", 0.2),
                _Column("rate", "rate", 0.2, pct),
            ],
        )
        doc.heading(f"Open alerts older than {al['open_older_than_days']:g} days", 10)
        doc.table(
            al["old_open"],
            [
                _Column("detector", "detector", 0.22),
                _Column("severity", "severity", 0.1),
                _Column("title", "title", 0.43),
                _Column("first seen", "first_seen", 0.17),
                _Column("days", "age_days", 0.08),
            ],
        )
        doc.heading("Alerts raised in the period", 10)
        doc.table(
            al["alerts"],
            [
                _Column("severity", "severity", 0.1),
                _Column("detector", "detector", 0.2),
                _Column("title", "title", 0.38),
                _Column("first seen", "first_seen", 0.18),
                _Column("status", "status", 0.14),
            ],
        )
        doc.heading("Configuration changes")
        doc.table(
            data["config_changes"],
            [
                _Column("time", "time", 0.18),
                _Column("kind", "kind", 0.12),
                _Column("path", "path", 0.28),
                _Column("op", "operation", 0.08),
                _Column("who", "label", 0.24),
                _Column("outcome", "outcome", 0.1),
            ],
            empty="No policy, auth method, mount or audit device changes.",
        )
        rot = data["rotation"]
        doc.heading("Rotation compliance")
        doc.para(
            f"{rot['compliant']} secrets compliant, {rot['non_compliant']} not, from the writes in the "
            f"event archive; {rot['deploys']} deploys seen."
        )
        doc.table(
            rot["secrets"],
            [
                _Column("secret", "secret", 0.33),
                _Column("rule", "rule", 0.17),
                _Column("rotations", "rotations", 0.1),
                _Column("max gap h", "max_gap_hours", 0.1),
                _Column("missed", "missed", 0.08),
                _Column("last rotated", "last_rotated", 0.17),
                _Column("ok", "compliant", 0.05, lambda v: "yes" if v else "NO"),
            ],
        )
        if rot["metadata_checked"]:
            doc.heading("KV metadata ages", 10)
            doc.table(
                rot["metadata"],
                [
                    _Column("secret", "secret", 0.35),
                    _Column("age h", "age_hours", 0.12),
                    _Column("limit h", "limit_hours", 0.12),
                    _Column("overdue", "overdue", 0.1),
                    _Column("why", "why", 0.31),
                ],
            )
        f = data["findings"]
        doc.heading("Least-privilege findings")
        if not f["available"]:
            doc.para("vaultwatch check results were not provided for this report.")
        else:
            doc.para("Check results: " + ", ".join(f"{k} {v}" for k, v in sorted(f["counts"].items())) + ".")
            doc.table(
                f["results"],
                [
                    _Column("check", "check", 0.22),
                    _Column("target", "target", 0.25),
                    _Column("status", "status", 0.08),
                    _Column("detail", "detail", 0.45),
                ],
                empty="Every check passed.",
            )
        doc.heading("Sign-off")
        doc.para(
            f"Period: {sign['period']}. Generated: {sign['generated_at']}. vaultwatch {sign['version']}."
        )
        doc.para(f"SHA-256 of the report data: {sign['sha256']}")
        for role in ("Reviewed by", "Approved by"):
            doc.need(0.8, "signature")
            doc.y -= 0.45
            doc._text(
                _MARGIN, doc.y, f"{role}: ______________________________    Date: ______________", size=9
            )
            doc.y -= 0.2
        doc.close()
    if layout is not None:
        layout.extend(doc.blocks)
    return buf.getvalue()
