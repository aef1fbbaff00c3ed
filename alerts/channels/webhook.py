"""Generic webhook for SOC integrations, signed per the Standard Webhooks specification.

Each request carries ``webhook-id`` (the outbox message id, stable across retries, so receivers
dedup), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256
over "id.timestamp.body">`` for each configured ``whsec_`` secret, space separated. Configuring the
new and the old secret together is how a secret is rotated without a single verification
failure: receivers accept any matching signature.

The body is the group payload (``body = "group"``) or, with ``body = "alert"``, one request per
alert carrying the bare ``vaultwatch.alert/v1`` object with id ``<message_id>.<n>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

import msgspec

from alerts.channels.base import Delivery, HttpPoster, alerts_of
from alerts.errors import ChannelConfigError
from alerts.secrets import Secret
from alerts.ssrf import Guard

__all__ = ["WebhookChannel", "sign", "signing_key"]

_PREFIX: Final = "whsec_"
_encoder = msgspec.json.Encoder()


def signing_key(secret: Secret) -> bytes:
    """The HMAC key of a ``whsec_`` secret (base64 after the prefix); raises ChannelConfigError."""
    raw = secret.reveal()
    if not raw.startswith(_PREFIX):
        raise ChannelConfigError("webhook signing secret must start with 'whsec_'")
    try:
        key = base64.b64decode(raw[len(_PREFIX) :] + "==", validate=False)
    except (binascii.Error, ValueError):
        raise ChannelConfigError("webhook signing secret is not base64 after 'whsec_'") from None
    if len(key) < 16:
        raise ChannelConfigError("webhook signing secret must decode to at least 16 bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>``."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


class WebhookChannel:
    """POSTs signed JSON to one URL. ``secrets`` lists one signing secret, or two during a
    rotation (every request is signed with each)."""

    kind = "webhook"

    def __init__(
        self,
        *,
        url: Secret,
        secrets: Sequence[Secret],
        guard: Guard,
        timeout: float = 10.0,
        body: Literal["group", "alert"] = "group",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets:
            raise ChannelConfigError("webhook needs at least one signing secret")
        if body not in ("group", "alert"):
            raise ChannelConfigError("webhook body must be 'group' or 'alert'")
        self._url = url
        for s in secrets:
            signing_key(s)  # validate now; the key bytes are derived per request, never stored bare
        self._secrets = list(secrets)
        self.body = body
        self.clock = clock
        self._http = HttpPoster(guard=guard, timeout=timeout, clock=clock)

    def __repr__(self) -> str:
        return f"WebhookChannel(body={self.body!r}, secrets={len(self._secrets)})"

    def headers(self, msg_id: str, body: bytes) -> dict[str, str]:
        """The Standard Webhooks headers for one request."""
        ts = int(self.clock())
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": " ".join(sign(signing_key(s), msg_id, ts, body) for s in self._secrets),
        }

    def send(self, payload: Mapping[str, Any], *, message_id: str) -> Delivery:
        """Deliver the group (or each alert) once; the first failure stops the attempt."""
        if self.body == "group":
            bodies = [(message_id, _encoder.encode(dict(payload)))]
        else:
            bodies = [(f"{message_id}.{n}", _encoder.encode(a)) for n, a in enumerate(alerts_of(payload))]
        result = Delivery(ok=True, retryable=False, reason="nothing to send")
        for msg_id, body in bodies:
            result = self._http.post(self._url, body, self.headers(msg_id, body))
            if not result.ok:
                return result
        return result

    def close(self) -> None:
        self._http.close()
