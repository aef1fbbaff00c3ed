"""Email over SMTP: one message per group, HTML and plain-text parts.

Transport security is ``starttls`` (submission, port 587), ``tls`` (implicit TLS, port 465) or
``plain`` (no TLS; only accepted towards loopback, e.g. a local relay). The host is checked by the
SSRF guard and the connection goes to the checked address while TLS verifies the configured name.
The password is a secret and is only sent over TLS (or to loopback).
"""

from __future__ import annotations

import html
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Literal

from alerts.channels._http import describe_exception
from alerts.channels.base import Delivery, alert_link, alerts_of, identity_label, top_reasons, truncate
from alerts.errors import BlockedDestination, ChannelConfigError
from alerts.secrets import Secret
from alerts.ssrf import Guard
from detect.alert import severity_rank

__all__ = ["EmailChannel", "render_email"]

Security = Literal["starttls", "tls", "plain"]


def render_email(
    payload: Mapping[str, Any],
    *,
    ui_base_url: str,
    sender: str,
    recipients: Sequence[str],
    subject_prefix: str,
) -> EmailMessage:
    """The message for one group payload (text first, HTML alternative)."""
    alerts = alerts_of(payload)
    worst = max((str(a.get("severity", "info")) for a in alerts), key=severity_rank, default="info")
    first = str(alerts[0].get("title", "")) if alerts else "no alerts"
    more = f" (+{len(alerts) - 1} more)" if len(alerts) > 1 else ""
    msg = EmailMessage()
    # header values are single-line; strip line breaks so a title cannot add headers
    msg["Subject"] = " ".join(f"{subject_prefix} [{worst}] {truncate(first, 150)}{more}".split())
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="vaultwatch")
    text_lines = [f"vaultwatch: {len(alerts)} alert(s), status {payload.get('status', 'open')}", ""]
    html_parts = [f"<h2>vaultwatch: {len(alerts)} alert(s)</h2>"]
    for a in alerts:
        link = alert_link(ui_base_url, a)
        reasons = top_reasons(a)
        text_lines += [
            f"[{a.get('severity')}] {a.get('title')}",
            f"  identity: {identity_label(a)}",
            f"  detector: {a.get('detector')}  score: {a.get('score')}  status: {a.get('status')}",
            *(f"  - {r}" for r in reasons),
            f"  {link}",
            "",
        ]
        e = html.escape
        html_parts.append(
            f"<h3>[{e(str(a.get('severity')))}] {e(str(a.get('title')))}</h3>"
            f"<p>Identity: {e(identity_label(a))}<br>Detector: {e(str(a.get('detector')))}"
            f" &middot; score {e(str(a.get('score')))} &middot; {e(str(a.get('status')))}</p>"
            + ("<ul>" + "".join(f"<li>{e(r)}</li>" for r in reasons) + "</ul>" if reasons else "")
            + f'<p><a href="{e(link, quote=True)}">Open in vaultwatch</a></p>'
        )
    msg.set_content("\n".join(text_lines))
    msg.add_alternative("<html><body>" + "".join(html_parts) + "</body></html>", subtype="html")
    return msg


class EmailChannel:
    """Sends one mail per group through an SMTP server."""

    kind = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        guard: Guard,
        ui_base_url: str,
        security: Security = "starttls",
        username: str | None = None,
        password: Secret | None = None,
        timeout: float = 10.0,
        subject_prefix: str = "[vaultwatch]",
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in ("starttls", "tls", "plain"):
            raise ChannelConfigError("email security must be starttls, tls or plain")
        if not recipients:
            raise ChannelConfigError("email needs at least one recipient")
        if (username is None) != (password is None):
            raise ChannelConfigError("email username and password go together")
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.guard = guard
        self.ui_base_url = ui_base_url
        self.security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self.subject_prefix = subject_prefix
        self.tls_context = tls_context or guard.tls_context or ssl.create_default_context()

    def __repr__(self) -> str:
        return f"EmailChannel(security={self.security!r}, recipients={len(self.recipients)})"

    def _connect(self) -> smtplib.SMTP:
        target = self.guard.check_host(self.host, self.port)
        if self.security == "plain" and not self.guard.allow_loopback:
            raise BlockedDestination("plain SMTP allowed only with allow_loopback")
        smtp: smtplib.SMTP
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(
                local_hostname="vaultwatch", timeout=self.timeout, context=self.tls_context
            )
        else:
            smtp = smtplib.SMTP(local_hostname="vaultwatch", timeout=self.timeout)
        # connect to the checked address, verify TLS against the configured name
        smtp._host = self.host  # type: ignore[attr-defined]
        try:
            smtp.connect(target.ip, self.port)
            if self.security == "starttls":
                smtp.starttls(context=self.tls_context)
        except BaseException:
            smtp.close()
            raise
        return smtp

    @staticmethod
    def _login(smtp: smtplib.SMTP, username: str, password: Secret) -> None:
        # One AUTH PLAIN attempt when offered: smtplib's login() walks through every mechanism
        # after a refusal, and some servers stall on the second try instead of answering 535.
        smtp.ehlo_or_helo_if_needed()
        if "plain" in smtp.esmtp_features.get("auth", "").lower().split():
            smtp.user, smtp.password = username, password.reveal()
            try:
                smtp.auth("PLAIN", smtp.auth_plain)
            finally:
                smtp.password = ""
        else:
            smtp.login(username, password.reveal())

    def send(self, payload: Mapping[str, Any], *, message_id: str) -> Delivery:
        """Send the group's mail once. 4xx SMTP replies and connection problems are retried;
        5xx replies (bad recipient, authentication refused) are permanent."""
        msg = render_email(
            payload,
            ui_base_url=self.ui_base_url,
            sender=self.sender,
            recipients=self.recipients,
            subject_prefix=self.subject_prefix,
        )
        msg["X-Vaultwatch-Message-Id"] = message_id
        try:
            smtp = self._connect()
        except BlockedDestination as exc:
            return Delivery(ok=False, retryable=False, reason=f"blocked destination: {exc}")
        except (OSError, smtplib.SMTPException) as exc:
            return Delivery(ok=False, retryable=True, reason=f"smtp connect: {describe_exception(exc)}")
        try:
            if self.username is not None and self._password is not None:
                self._login(smtp, self.username, self._password)
            refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
            if refused:
                return Delivery(ok=True, retryable=False, reason=f"sent; {len(refused)} recipient(s) refused")
            return Delivery(ok=True, retryable=False, reason="sent")
        except smtplib.SMTPRecipientsRefused:
            return Delivery(ok=False, retryable=False, reason="smtp: all recipients refused")
        except smtplib.SMTPResponseException as exc:
            # exc.smtp_error is the server's text; it is not echoed (it can quote our input)
            code = int(exc.smtp_code)
            return Delivery(
                ok=False, retryable=400 <= code < 500 or code < 0, reason=f"smtp {code}: {type(exc).__name__}"
            )
        except (OSError, smtplib.SMTPException) as exc:
            return Delivery(ok=False, retryable=True, reason=f"smtp: {describe_exception(exc)}")
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def close(self) -> None:
        """Nothing pooled: each send opens and closes its own connection."""
