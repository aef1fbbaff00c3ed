"""Slack incoming webhook with a Block Kit message: severity, identity, top reasons, a link to
the alert in the web UI. The webhook URL is a secret (it is the credential)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from alerts.channels.base import (
    Delivery,
    HttpPoster,
    alert_link,
    alerts_of,
    identity_label,
    top_reasons,
    truncate,
)
from alerts.secrets import Secret
from alerts.ssrf import Guard

__all__ = ["SlackChannel", "render_slack"]

_SEVERITY_ICON: Final = {
    "critical": ":red_circle:",
    "high": ":large_orange_circle:",
    "medium": ":large_yellow_circle:",
    "low": ":large_blue_circle:",
    "info": ":white_circle:",
}
_MAX_ALERTS: Final = 10  # Slack allows 50 blocks per message; 4 per alert plus a header
_TEXT_LIMIT: Final = 2900  # section text is limited to 3000 characters
_encoder = msgspec.json.Encoder()


def _esc(text: str) -> str:
    """Escape Slack mrkdwn control characters so alert text cannot inject links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_slack(payload: Mapping[str, Any], ui_base_url: str) -> dict[str, Any]:
    """The Slack message for one group payload."""
    alerts = alerts_of(payload)
    status = str(payload.get("status", "open"))
    header = f"vaultwatch: {len(alerts)} alert{'s' if len(alerts) != 1 else ''} ({status})"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(header, 150)}}
    ]
    for alert in alerts[:_MAX_ALERTS]:
        sev = str(alert.get("severity", "info"))
        title = _esc(str(alert.get("title", "")))
        link = alert_link(ui_base_url, alert)
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": truncate(f"{_SEVERITY_ICON.get(sev, '')} *{title}*", _TEXT_LIMIT),
                },
                "fields": [
                    {"type": "mrkdwn", "text": f"*Severity*\n{_esc(sev)} (score {alert.get('score', '?')})"},
                    {"type": "mrkdwn", "text": f"*Identity*\n{truncate(_esc(identity_label(alert)), 1900)}"},
                    {"type": "mrkdwn", "text": f"*Detector*\n{_esc(str(alert.get('detector', '')))}"},
                    {"type": "mrkdwn", "text": f"*Status*\n{_esc(str(alert.get('status', status)))}"},
                ],
            }
        )
        reasons = top_reasons(alert)
        if reasons:
            text = "*Top reasons*\n" + "\n".join(f"• {_esc(r)}" for r in reasons)
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, _TEXT_LIMIT)}}
            )
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in vaultwatch"},
                        "url": link,
                    }
                ],
            }
        )
        blocks.append({"type": "divider"})
    if len(alerts) > _MAX_ALERTS:
        more = f"…and {len(alerts) - _MAX_ALERTS} more in vaultwatch"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    fallback = _esc("; ".join(f"[{a.get('severity')}] {a.get('title')}" for a in alerts[:5]) or header)
    return {"text": truncate(fallback, 3000), "blocks": blocks}


class SlackChannel:
    """Posts a Block Kit message per group to a Slack incoming webhook."""

    kind = "slack"

    def __init__(
        self,
        *,
        url: Secret,
        guard: Guard,
        ui_base_url: str,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self.ui_base_url = ui_base_url
        self._http = HttpPoster(guard=guard, timeout=timeout, clock=clock)

    def __repr__(self) -> str:
        return "SlackChannel()"

    def send(self, payload: Mapping[str, Any], *, message_id: str) -> Delivery:
        """Post the group's message once."""
        body = _encoder.encode(render_slack(payload, self.ui_base_url))
        return self._http.post(self._url, body, {})

    def close(self) -> None:
        self._http.close()
