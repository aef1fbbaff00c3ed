"""Microsoft Teams through a Workflows webhook, as an Adaptive Card. The URL is a secret (it
carries the signature that authorises posting)."""

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

__all__ = ["TeamsChannel", "render_teams"]

_COLOR: Final = {
    "critical": "Attention",
    "high": "Attention",
    "medium": "Warning",
    "low": "Accent",
    "info": "Default",
}
_MAX_ALERTS: Final = 10
_encoder = msgspec.json.Encoder()


def render_teams(payload: Mapping[str, Any], ui_base_url: str) -> dict[str, Any]:
    """The Workflows message (one Adaptive Card attachment) for one group payload."""
    alerts = alerts_of(payload)
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "size": "Large",
            "weight": "Bolder",
            "wrap": True,
            "text": f"vaultwatch: {len(alerts)} alert(s) ({payload.get('status', 'open')})",
        }
    ]
    actions: list[dict[str, Any]] = []
    for alert in alerts[:_MAX_ALERTS]:
        sev = str(alert.get("severity", "info"))
        body.append(
            {
                "type": "TextBlock",
                "wrap": True,
                "weight": "Bolder",
                "color": _COLOR.get(sev, "Default"),
                "text": truncate(str(alert.get("title", "")), 1000),
            }
        )
        body.append(
            {
                "type": "FactSet",
                "facts": [
                    {"title": "Severity", "value": f"{sev} (score {alert.get('score', '?')})"},
                    {"title": "Identity", "value": truncate(identity_label(alert), 500)},
                    {"title": "Detector", "value": str(alert.get("detector", ""))},
                    {"title": "Status", "value": str(alert.get("status", ""))},
                ],
            }
        )
        for reason in top_reasons(alert):
            body.append(
                {"type": "TextBlock", "wrap": True, "spacing": "None", "text": "- " + truncate(reason, 500)}
            )
        actions.append(
            {
                "type": "Action.OpenUrl",
                "title": truncate(f"Open {alert.get('id', '')}", 60),
                "url": alert_link(ui_base_url, alert),
            }
        )
    if len(alerts) > _MAX_ALERTS:
        body.append({"type": "TextBlock", "isSubtle": True, "text": f"…and {len(alerts) - _MAX_ALERTS} more"})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": actions[:5],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


class TeamsChannel:
    """Posts an Adaptive Card per group to a Teams Workflows webhook."""

    kind = "teams"

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
        return "TeamsChannel()"

    def send(self, payload: Mapping[str, Any], *, message_id: str) -> Delivery:
        """Post the group's card once."""
        return self._http.post(self._url, _encoder.encode(render_teams(payload, self.ui_base_url)), {})

    def close(self) -> None:
        self._http.close()
