"""Channels against real loopback receivers; the SSRF guard; secrets; configuration."""

from __future__ import annotations

import base64
import ipaddress
import pickle
import time
import tomllib
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import Any

import msgspec
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from alerts.channels import (
    Channel,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    SyslogChannel,
    TeamsChannel,
    TokenBucket,
    WebhookChannel,
    build_channels,
    endpoint_key,
    load_config,
)
from alerts.channels.pagerduty import BODY_LIMIT, render_event
from alerts.channels.webhook import sign, signing_key
from alerts.errors import BlockedDestination, ChannelConfigError, SecretError
from alerts.secrets import Secret, SecretResolver
from alerts.ssrf import Guard, blocked_reason
from tests.alerts.receivers import HttpReceiver, Reply, SmtpReceiver, TlsPair, free_port, make_tls
from tests.alerts.test_deliver import make_alert, payload

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = Guard(allow_loopback=True)
WHSEC_OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WHSEC_NEW = "whsec_" + base64.b64encode(b"a brand new signing key, 32 byte").decode()
UI = "https://vaultwatch.example.com/ui"


def decode(body: bytes) -> Any:
    return msgspec.json.decode(body)


# --- webhook: Standard Webhooks signing -----------------------------------------------------------


def test_standard_webhooks_test_vector() -> None:
    key = signing_key(Secret(WHSEC_OLD))
    sig = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    ch = WebhookChannel(
        url=Secret("https://x.example/h"),
        secrets=[Secret(WHSEC_OLD)],
        guard=LOOPBACK,
        clock=lambda: 1614265330.9,
    )
    headers = ch.headers("msg_p5jXN8AQM9LWM0D4loKWxJek", b'{"test": 2432232314}')
    ch.close()
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


@pytest.mark.parametrize("bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_c2hvcnQ="])
def test_bad_signing_secret_is_refused_without_echo(bad: str) -> None:
    with pytest.raises(ChannelConfigError) as ei:
        signing_key(Secret(bad))
    assert bad.removeprefix("whsec_") not in str(ei.value) or bad == "whsec_"


@pytest.mark.integration
def test_webhook_group_and_per_alert_bodies_verify() -> None:
    with HttpReceiver() as rx:
        group = WebhookChannel(url=Secret(rx.url()), secrets=[Secret(WHSEC_OLD)], guard=LOOPBACK)
        per_alert = WebhookChannel(
            url=Secret(rx.url()), secrets=[Secret(WHSEC_OLD)], guard=LOOPBACK, body="alert"
        )
        p = payload(make_alert(1), make_alert(2))
        assert group.send(p, message_id="msg_1").ok
        assert per_alert.send(p, message_id="msg_2").ok
        group.close()
        per_alert.close()
        got = rx.received()
    wh = Webhook(WHSEC_OLD)
    assert wh.verify(got[0].body, got[0].headers) == decode(msgspec.json.encode(p))
    assert [r.headers["webhook-id"] for r in got] == ["msg_1", "msg_2.0", "msg_2.1"]
    assert wh.verify(got[1].body, got[1].headers)["schema"] == "vaultwatch.alert/v1"
    assert wh.verify(got[2].body, got[2].headers)["id"] == make_alert(2)["id"]
    assert all(r.headers["content-type"] == "application/json" for r in got)


@pytest.mark.integration
def test_signing_secret_rotation_has_no_verification_failures() -> None:
    """Old key only → both keys → new key only; a receiver still on the old key and one already
    on the new key each verify every delivery of the overlap, and the phase matching their key."""
    old_v, new_v = Webhook(WHSEC_OLD), Webhook(WHSEC_NEW)
    phases = [[WHSEC_OLD], [WHSEC_NEW, WHSEC_OLD], [WHSEC_NEW]]
    failures = {"old": 0, "new": 0}
    verified = {"old": 0, "new": 0}
    with HttpReceiver() as rx:
        for n, secrets in enumerate(phases):
            ch = WebhookChannel(url=Secret(rx.url()), secrets=[Secret(s) for s in secrets], guard=LOOPBACK)
            for k in range(3):
                assert ch.send(payload(make_alert(k)), message_id=f"msg_{n}_{k}").ok
            ch.close()
        got = rx.received()
    assert len(got) == 9
    for i, req in enumerate(got):
        phase = i // 3
        for name, verifier, active in (("old", old_v, phase in (0, 1)), ("new", new_v, phase in (1, 2))):
            if not active:
                continue
            try:
                verifier.verify(req.body, req.headers)
                verified[name] += 1
            except WebhookVerificationError:
                failures[name] += 1
    assert failures == {"old": 0, "new": 0}
    assert verified == {"old": 6, "new": 6}
    assert len(got[4].headers["webhook-signature"].split(" ")) == 2


# --- Slack, Teams ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_slack_block_kit() -> None:
    alert = make_alert(1, title="Root token used by <!channel> & co", severity="critical")
    with HttpReceiver() as rx:
        ch = SlackChannel(url=Secret(rx.url("/services/T/B/x")), guard=LOOPBACK, ui_base_url=UI)
        assert ch.send(payload(alert), message_id="m").ok
        ch.close()
        (req,) = rx.received()
    body = decode(req.body)
    assert req.path == "/services/T/B/x"
    assert body["blocks"][0]["type"] == "header"
    text = msgspec.json.encode(body).decode()
    assert "&lt;!channel&gt; &amp; co" in text and "<!channel>" not in text  # no mention injection
    section = body["blocks"][1]
    fields = " ".join(f["text"] for f in section["fields"])
    assert "critical" in fields and "user-1" in fields
    assert "token_type: observed root (baseline service)" in text
    button = body["blocks"][3]["elements"][0]
    assert button["url"] == f"{UI}/alerts/{alert['id']}"
    assert body["text"].startswith("[critical]")


@pytest.mark.integration
def test_teams_adaptive_card() -> None:
    alert = make_alert(1)
    with HttpReceiver(default=Reply202()) as rx:
        ch = TeamsChannel(url=Secret(rx.url("/workflows/x")), guard=LOOPBACK, ui_base_url=UI)
        result = ch.send(payload(alert), message_id="m")
        ch.close()
        (req,) = rx.received()
    assert result.ok and result.reason == "http 202"
    body = decode(req.body)
    att = body["attachments"][0]
    assert body["type"] == "message" and att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    facts = {f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["Identity"] == "user-1" and facts["Severity"].startswith("high")
    assert card["actions"][0] == {
        "type": "Action.OpenUrl",
        "title": f"Open {alert['id']}",
        "url": f"{UI}/alerts/{alert['id']}",
    }


def Reply202() -> Reply:
    return Reply(202, body=b"")


# --- PagerDuty -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_pagerduty_trigger_acknowledge_resolve_follow_status() -> None:
    with HttpReceiver(default=Reply202()) as rx:
        ch = PagerDutyChannel(
            routing_key=Secret("R0UT1NGKEY"), guard=LOOPBACK, ui_base_url=UI, events_url=rx.url("/v2/enqueue")
        )
        for status in ("open", "acknowledged", "resolved"):
            assert ch.send(payload(make_alert(1, status=status), status=status), message_id="m").ok
        ch.close()
        got = [decode(r.body) for r in rx.received()]
    assert [e["event_action"] for e in got] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in got} == {make_alert(1)["id"]}
    assert all(e["routing_key"] == "R0UT1NGKEY" for e in got)
    trig = got[0]["payload"]
    assert trig["severity"] == "error" and trig["summary"] == "Root token used #1"
    assert trig["custom_details"]["event_ids"] == ["req-1"]
    assert got[0]["links"][0]["href"] == f"{UI}/alerts/{make_alert(1)['id']}"
    assert "payload" not in got[1]


def test_pagerduty_limits() -> None:
    huge = make_alert(
        1,
        title="x" * 5000,
        event_ids=tuple(f"req-{i:06d}-" + "e" * 40 for i in range(500)),
        paths=tuple("secret/data/" + "p" * 1000 + str(i) for i in range(600)),
    )
    long_id = dict(huge, id="va_" + "z" * 400)
    event = render_event(long_id, routing_key="k", ui_base_url=UI)
    assert len(event["payload"]["summary"]) == 1024
    assert len(event["dedup_key"]) <= 255
    assert len(msgspec.json.encode(event)) <= BODY_LIMIT
    assert render_event(long_id, routing_key="k", ui_base_url=UI)["dedup_key"] == event["dedup_key"]  # stable


def test_token_bucket_with_injected_clock() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=100 / 60, capacity=20, clock=lambda: now[0])
    assert all(bucket.take() == 0.0 for _ in range(20))
    wait = bucket.take()
    assert wait == pytest.approx(0.6)
    now[0] += 0.6
    assert bucket.take() == 0.0
    # a minute of steady demand gets at most burst + rate * 60 events
    sent = 0
    for _ in range(600):
        now[0] += 0.1
        sent += bucket.take() == 0.0
    assert sent <= 101 and sent >= 99


def test_pagerduty_rate_limit_is_retryable_with_retry_after() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=1, capacity=1, clock=lambda: now[0])
    bucket.take()
    ch = PagerDutyChannel(
        routing_key=Secret("k"),
        guard=LOOPBACK,
        ui_base_url=UI,
        bucket=bucket,
        events_url="http://127.0.0.1:9/none",
    )
    d = ch.send(payload(make_alert(1)), message_id="m")
    ch.close()
    assert (d.ok, d.retryable, d.reason) == (False, True, "client-side rate limit")
    assert d.retry_after == pytest.approx(1.0)


# --- email ----------------------------------------------------------------------------------------


def _parts(msg: Message) -> dict[str, str]:
    return {
        p.get_content_type(): p.get_payload(decode=True).decode()  # type: ignore[union-attr]
        for p in msg.walk()
        if not p.is_multipart()
    }


@pytest.mark.integration
def test_email_one_mail_per_group_html_and_text() -> None:
    with SmtpReceiver(password="s3cret-pw") as rx:
        ch = EmailChannel(
            host="127.0.0.1",
            port=rx.port,
            security="plain",
            sender="vw@example.com",
            recipients=["soc@example.com", "ir@example.com"],
            guard=LOOPBACK,
            ui_base_url=UI,
            username="vw",
            password=Secret("s3cret-pw"),
        )
        evil = make_alert(2, title="<script>x</script>\r\nBcc: attacker@example.com")
        d = ch.send(payload(make_alert(1), evil), message_id="msg_42")
        ch.close()
        assert d.ok, d.reason
        ((rcpts, msg),) = rx.messages
    assert rcpts == ["soc@example.com", "ir@example.com"]
    assert msg["Bcc"] is None and "\n" not in msg["Subject"]
    assert msg["Subject"].startswith("[vaultwatch] [high] Root token used #1 (+1 more)")
    assert msg["X-Vaultwatch-Message-Id"] == "msg_42"
    parts = _parts(msg)
    assert set(parts) == {"text/plain", "text/html"}
    assert "&lt;script&gt;" in parts["text/html"] and "<script>" not in parts["text/html"]
    assert f"{UI}/alerts/{make_alert(1)['id']}" in parts["text/plain"]
    assert "identity: user-1" in parts["text/plain"]


@pytest.mark.integration
def test_email_wrong_password_and_plain_needs_loopback_setting() -> None:
    with SmtpReceiver(password="right") as rx:
        ch = EmailChannel(
            host="127.0.0.1",
            port=rx.port,
            security="plain",
            sender="a@b.c",
            recipients=["d@e.f"],
            guard=LOOPBACK,
            ui_base_url=UI,
            username="u",
            password=Secret("wrong-pw"),
        )
        d = ch.send(payload(make_alert(1)), message_id="m")
        strict = EmailChannel(
            host="127.0.0.1",
            port=rx.port,
            security="plain",
            sender="a@b.c",
            recipients=["d@e.f"],
            guard=Guard(),
            ui_base_url=UI,
        )
        d2 = strict.send(payload(make_alert(1)), message_id="m")
    assert (d.ok, d.retryable, d.reason) == (False, False, "smtp 535: SMTPAuthenticationError")
    assert rx.messages == []
    assert (d2.ok, d2.retryable) == (False, False) and d2.reason.startswith("blocked destination")


@pytest.mark.integration
def test_per_attempt_timeout_is_a_wall_clock_bound() -> None:
    """A receiver trickling bytes never trips httpx's per-read timeout; the attempt deadline does."""
    with HttpReceiver(default=Reply(trickle=3.0)) as rx:
        ch = WebhookChannel(url=Secret(rx.url()), secrets=[Secret(WHSEC_OLD)], guard=LOOPBACK, timeout=0.5)
        t0 = time.monotonic()
        d = ch.send(payload(make_alert(1)), message_id="m")
        elapsed = time.monotonic() - t0
        ch.close()
    assert (d.ok, d.retryable, d.reason) == (False, True, "timeout: ReadTimeout")
    assert elapsed < 1.0


# --- the contract every channel keeps -------------------------------------------------------------


def _all_channels(port: int) -> list[Channel]:
    url = Secret(f"http://127.0.0.1:{port}/SECRETPATH")
    return [
        WebhookChannel(url=url, secrets=[Secret(WHSEC_OLD)], guard=LOOPBACK, timeout=0.5),
        SlackChannel(url=url, guard=LOOPBACK, ui_base_url=UI, timeout=0.5),
        TeamsChannel(url=url, guard=LOOPBACK, ui_base_url=UI, timeout=0.5),
        PagerDutyChannel(
            routing_key=Secret("SECRETKEY"),
            guard=LOOPBACK,
            ui_base_url=UI,
            events_url=url.reveal(),
            timeout=0.5,
        ),
        EmailChannel(
            host="127.0.0.1",
            port=port,
            security="plain",
            sender="a@b.c",
            recipients=["d@e.f"],
            guard=LOOPBACK,
            ui_base_url=UI,
            timeout=0.5,
            username="u",
            password=Secret("SECRETPW"),
        ),
        SyslogChannel(host="127.0.0.1", port=port, transport="tcp", guard=LOOPBACK, timeout=0.5),
    ]


def test_every_channel_reports_an_unreachable_endpoint_as_retryable() -> None:
    port = free_port()  # nothing listens here
    for ch in _all_channels(port):
        d = ch.send(payload(make_alert(1)), message_id="m")
        ch.close()
        assert (d.ok, d.retryable) == (False, True), (ch.kind, d)
        assert "SECRET" not in d.reason and "SECRET" not in repr(ch)


def test_every_channel_refuses_a_blocked_destination() -> None:
    strict = Guard()
    chans: list[Channel] = [
        WebhookChannel(url=Secret("https://127.0.0.1/h"), secrets=[Secret(WHSEC_OLD)], guard=strict),
        SlackChannel(url=Secret("http://hooks.example.com/x"), guard=strict, ui_base_url=UI),
        TeamsChannel(url=Secret("https://10.1.2.3/x"), guard=strict, ui_base_url=UI),
        PagerDutyChannel(
            routing_key=Secret("k"), guard=strict, ui_base_url=UI, events_url="https://169.254.169.254/"
        ),
        EmailChannel(
            host="192.168.1.1", port=25, sender="a@b.c", recipients=["d@e.f"], guard=strict, ui_base_url=UI
        ),
        SyslogChannel(host="100.64.0.9", port=514, transport="udp", guard=strict),
    ]
    for ch in chans:
        d = ch.send(payload(make_alert(1)), message_id="m")
        ch.close()
        assert (d.ok, d.retryable) == (False, False), (ch.kind, d)
        assert d.reason.startswith("blocked destination"), d.reason


# --- SSRF guard -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "why"),
    [
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.254", "cgnat"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "ipv4-mapped"),
        ("::ffff:8.8.8.8", "ipv4-mapped"),
        ("fc00::1", "private"),
        ("192.0.2.1", "private"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("100.128.0.1", None),
    ],
)
def test_blocked_ranges(ip: str, why: str | None) -> None:
    assert blocked_reason(ipaddress.ip_address(ip)) == why


def _resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


def test_guard_rules() -> None:
    g = Guard(resolver=_resolver({"good.example": ["8.8.8.8"], "mixed.example": ["8.8.8.8", "10.0.0.5"]}))
    assert g.check_url("https://good.example/x").ip == "8.8.8.8"
    with pytest.raises(BlockedDestination, match="scheme"):
        g.check_url("http://good.example/x")
    with pytest.raises(BlockedDestination, match="private"):
        g.check_url("https://mixed.example/x")  # every address must pass
    with pytest.raises(BlockedDestination, match="resolve"):
        g.check_url("https://nowhere.example/x")
    with pytest.raises(BlockedDestination, match="loopback"):
        g.check_url("https://127.0.0.1/x")
    lo = Guard(allow_loopback=True, resolver=g.resolver)
    assert lo.check_url("http://127.0.0.1:8080/x").ip == "127.0.0.1"
    with pytest.raises(BlockedDestination, match="private"):
        lo.check_url("http://10.0.0.1/x")
    with pytest.raises(BlockedDestination, match="plain http"):
        lo.check_url("http://good.example/x")  # http only to loopback, even when allowed


@pytest.mark.integration
def test_connection_is_pinned_to_the_checked_address() -> None:
    """The name does not resolve through DNS at all: the request can only arrive if the transport
    connected to the address the guard checked, keeping the original Host header."""
    with HttpReceiver() as rx:
        calls: list[str] = []

        def resolve(host: str, port: int) -> list[str]:
            calls.append(host)
            return ["127.0.0.1"]

        guard = Guard(allow_loopback=True, resolver=resolve)
        ch = WebhookChannel(
            url=Secret(f"http://hooks.invalid:{rx.port}/h"), secrets=[Secret(WHSEC_OLD)], guard=guard
        )
        assert ch.send(payload(make_alert(1)), message_id="m").ok
        ch.close()
        (req,) = rx.received()
    assert calls == ["hooks.invalid"]
    assert req.headers["host"] == f"hooks.invalid:{rx.port}"


# --- secrets --------------------------------------------------------------------------------------


def test_secret_is_redacted_everywhere() -> None:
    s = Secret("hunter2-value")
    assert "hunter2" not in repr(s) + str(s) + f"{s}" + f"{s!r}" + f"{[s]}" + f"{ {'k': s} }"
    assert s.reveal() == "hunter2-value" and s == Secret("hunter2-value") and s != Secret("other")
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_secret_sources(tmp_path: Path) -> None:
    f = tmp_path / "slack_url"
    f.write_text("https://hooks.slack.com/services/T/B/xyz\n")
    r = SecretResolver(env={"A": "from-env", "B": "ignored", "B_FILE": str(f)})
    assert r.resolve("env:A").reveal() == "from-env"
    assert r.resolve("env:B").reveal() == "https://hooks.slack.com/services/T/B/xyz"  # *_FILE wins
    assert r.resolve(f"file:{f}").reveal().endswith("/xyz")
    for ref, msg in [
        ("env:MISSING", "not set"),
        (f"file:{tmp_path}/nope", "cannot be read"),
        ("plain-value", "reference"),
        ("ftp:x", "unknown"),
        ("vault:a#b", "Vault client"),
    ]:
        with pytest.raises(SecretError, match=msg):
            r.resolve(ref)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        r.resolve(f"file:{empty}")


@pytest.mark.integration
def test_secret_from_vault_kv2(openbao: Any) -> None:
    client = openbao.client()
    client.secrets.kv.v2.create_or_update_secret(
        path="vaultwatch/channels",
        secret={"slack_url": "https://hooks.slack.com/services/KV2-CANARY-7f3a9c"},
        mount_point="secret",
    )
    r = SecretResolver(vault=client, vault_mount="secret")
    assert r.resolve("vault:vaultwatch/channels#slack_url").reveal().endswith("/KV2-CANARY-7f3a9c")
    assert "KV2-CANARY-7f3a9c" not in repr(r.__dict__)  # the cache holds wrapped values only
    with pytest.raises(SecretError, match="key missing"):
        r.resolve("vault:vaultwatch/channels#nope")
    with pytest.raises(SecretError, match="cannot be read from Vault") as ei:
        r.resolve("vault:vaultwatch/absent#x")
    assert ei.value.__cause__ is None and ei.value.__suppress_context__


# --- configuration --------------------------------------------------------------------------------


def test_example_configuration_loads_and_builds() -> None:
    data = tomllib.loads((ROOT / "examples" / "channels.toml").read_text())
    cfg = load_config(data)
    env = dict.fromkeys(
        ("VW_SOC_WEBHOOK_URL", "VW_SLACK_URL", "VW_TEAMS_URL", "VW_PD_ROUTING_KEY", "VW_SMTP_PASSWORD"), "x"
    )
    env["VW_SOC_WEBHOOK_SECRET"] = WHSEC_NEW
    env["VW_SOC_WEBHOOK_SECRET_OLD"] = WHSEC_OLD
    resolver = SecretResolver(env=env)
    channels = build_channels(cfg, resolver)
    try:
        kinds = {key: ch.kind for key, ch in channels.items()}
        assert kinds[endpoint_key("soc", "webhook", 0)] == "webhook"
        assert kinds[endpoint_key("oncall", "pagerduty", 0)] == "pagerduty"
        assert kinds["soc/syslog/siem"] == "syslog"
        assert {"slack", "pagerduty", "teams", "email", "syslog", "webhook"} == set(kinds.values())
        assert cfg.retry_policy().schedule == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    finally:
        for ch in channels.values():
            ch.close()


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (
            {"receivers": [{"name": "a", "slack": [{"url": "https://hooks.slack.com/services/LITERAL"}]}]},
            "reference",
        ),
        (
            {"receivers": [{"name": "a", "webhook": [{"url": "env:U", "signing_secrets": []}]}]},
            "signing_secrets",
        ),
        ({"receivers": [{"name": "a"}, {"name": "a"}]}, "duplicate"),
        ({"receivers": [{"name": "a/b"}]}, "no '/'"),
        (
            {
                "receivers": [
                    {"name": "a", "slack": [{"url": "env:A", "name": "x"}, {"url": "env:B", "name": "x"}]}
                ]
            },
            "unique",
        ),
        (
            {"receivers": [{"name": "a", "pagerduty": [{"routing_key": "env:K", "events_per_minute": 500}]}]},
            "120",
        ),
        ({"delivery": {"schedule": []}}, "at least one"),
        ({"delivery": {"attempt_timeout": 30, "lease_seconds": 10}}, "lease"),
        ({"receivers": [{"name": "a", "syslog": [{"host": "h", "transport": "carrier-pigeon"}]}]}, "invalid"),
        ({"receivers": [{"name": "a", "teams": [{"url": "env:T", "extra": 1}]}]}, "unknown field"),
    ],
)
def test_invalid_configuration(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(ChannelConfigError, match=match) as ei:
        load_config(doc)
    assert "LITERAL" not in str(ei.value)


# --- TLS: pinned address, name verified ------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsPair:
    return make_tls(tmp_path_factory.mktemp("tls"))


def _tls_guard(tls: TlsPair) -> Guard:
    return Guard(allow_loopback=True, tls_context=tls.client, resolver=lambda host, port: ["127.0.0.1"])


@pytest.mark.integration
def test_https_webhook_pins_the_address_and_verifies_the_name(tls: TlsPair) -> None:
    guard = _tls_guard(tls)
    with HttpReceiver(tls=tls.server) as rx:
        good = WebhookChannel(url=Secret(rx.url(host="hooks.test")), secrets=[Secret(WHSEC_OLD)], guard=guard)
        d = good.send(payload(make_alert(1)), message_id="m1")
        # same address, a name the certificate does not carry: verification uses the name, not the IP
        wrong = WebhookChannel(
            url=Secret(rx.url(host="other.test")), secrets=[Secret(WHSEC_OLD)], guard=guard
        )
        d2 = wrong.send(payload(make_alert(1)), message_id="m2")
        good.close()
        wrong.close()
        got = rx.received()
    assert d.ok, d.reason
    assert [r.headers["host"] for r in got] == [f"hooks.test:{rx.port}"]
    assert (d2.ok, d2.retryable) == (False, True) and d2.reason.startswith("transport error: ConnectError")


@pytest.mark.integration
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_over_tls(tls: TlsPair, security: str) -> None:
    kw: dict[str, Any] = {"starttls": tls.server} if security == "starttls" else {"implicit_tls": tls.server}
    with SmtpReceiver(password="pw-over-tls", **kw) as rx:
        ch = EmailChannel(
            host="hooks.test",
            port=rx.port,
            security=security,  # type: ignore[arg-type]
            sender="vw@example.com",
            recipients=["soc@example.com"],
            guard=_tls_guard(tls),
            ui_base_url=UI,
            username="vw",
            password=Secret("pw-over-tls"),
        )
        d = ch.send(payload(make_alert(1)), message_id="m")
        assert d.ok, d.reason
        assert len(rx.messages) == 1
