"""The report as one self-contained HTML page (Jinja2): charts as ``data:image/png;base64`` URIs.

The stylesheet is inline too (``templates/report.html``), so the one file can be mailed or archived.
"""

from __future__ import annotations

import base64
from typing import Any

import jinja2

from .charts import change, charts, hours, pct

__all__ = ["render_html"]


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vaultwatch.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = pct
    env.filters["hours"] = hours
    env.filters["change"] = change
    return env


def render_html(data: dict[str, Any], images: dict[str, bytes] | None = None) -> str:
    """The report as one self-contained HTML page (charts embedded as PNG data URIs)."""
    pngs = charts(data) if images is None else images
    uris = {k: "data:image/png;base64," + base64.b64encode(v).decode() for k, v in pngs.items()}
    return _env().get_template("report.html").render(d=data, charts=uris)
