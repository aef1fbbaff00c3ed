"""Delivery worker: classifier, retry schedule, outbox outcomes, per-endpoint order and isolation,
and the canary test that no secret reaches a log line, an error or a reason."""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from standardwebhooks import Webhook

from alerts.channels import Delivery, build_channels, load_config
from alerts.channels._http import classify_status, parse_retry_after
from alerts.channels.webhook import WebhookChannel
from alerts.deliver import DeliveryWorker
from alerts.errors import ChannelConfigError, SecretError
from alerts.outbox import OutboxItem
from alerts.retry import DEFAULT_SCHEDULE, RetryPolicy
from alerts.route import Router
from alerts.secrets import Secret, SecretResolver
from alerts.ssrf import Guard
from alerts.store import OutboxEntry, Store, to_epoch
from detect.alert import Alert, AlertIdentity, Reason, alert_id
from tests.alerts.receivers import HttpReceiver, Reply, SmtpReceiver, SyslogTcpReceiver, free_port

WHSEC_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# --- helpers --------------------------------------------------------------------------------------


def make_alert(n: int, *, status: str = "open", **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": alert_id("root-token-use", f"k{n}", f"req-{n}"),
        "detector": "root-token-use",
        "title": f"Root token used #{n}",
        "severity": "high",
        "score": 80,
        "identity": AlertIdentity(key=f"entity:{n}", display_name=f"user-{n}", auth_mount="userpass/"),
        "first_seen": "2026-11-28T10:00:00Z",
        "last_seen": "2026-11-28T10:05:00Z",
        "event_ids": (f"req-{n}",),
        "paths": ("secret/data/app",),
        "explanation": (Reason(feature="token_type", observed="root", baseline="service", weight=0.9),),
        "dedup_key": f"k{n}",
        "status": status,
    }
    fields.update(overrides)
    return Alert(**fields).to_dict()


def payload(*alerts: dict[str, Any], status: str = "open") -> dict[str, Any]:
    return {"group_key": "g1", "receiver": "soc", "status": status, "alerts": list(alerts)}


class MemoryOutbox:
    """The Outbox Protocol in memory, with the store's semantics: only the head pending item of an
    endpoint is claimable, claims are leased, ``attempts`` counts finished attempts."""

    def __init__(self) -> None:
        self.items: dict[int, OutboxItem] = {}
        self.lease: dict[int, float] = {}
        self.lock = threading.Lock()
        self.history: list[tuple[str, int, str]] = []

    def add(
        self, endpoint: str, data: Mapping[str, Any], *, now: float = 0.0, channel: str = "webhook"
    ) -> int:
        with self.lock:
            item_id = len(self.items) + 1
            receiver = endpoint.split("/", 1)[0]
            self.items[item_id] = OutboxItem(
                id=item_id,
                receiver=receiver,
                channel=channel,
                endpoint=endpoint,
                message_id=f"msg_{item_id}",
                payload=dict(data),
                created_at=now,
                next_attempt_at=now,
            )
            return item_id

    def claim_due(self, now: float, *, limit: int = 100, lease_seconds: float = 60.0) -> list[OutboxItem]:
        with self.lock:
            heads: dict[str, OutboxItem] = {}
            for item in sorted(self.items.values(), key=lambda i: i.id):
                if item.state == "pending" and item.endpoint not in heads:
                    heads[item.endpoint] = item
            out = [
                i for i in heads.values() if i.next_attempt_at <= now and self.lease.get(i.id, 0.0) <= now
            ][:limit]
            for i in out:
                self.lease[i.id] = now + lease_seconds
            return out

    def _finish(self, item_id: int, now: float, **changes: Any) -> None:
        with self.lock:
            item = self.items[item_id]
            self.items[item_id] = msgspec.structs.replace(item, attempts=item.attempts + 1, **changes)
            self.lease.pop(item_id, None)
            self.history.append((changes.get("state", "pending"), item_id, changes.get("last_reason", "")))

    def mark_delivered(self, item_id: int, now: float, reason: str = "ok") -> None:
        self._finish(item_id, now, state="delivered", last_reason=reason)

    def mark_retry(self, item_id: int, now: float, next_attempt_at: float, reason: str) -> None:
        self._finish(item_id, now, next_attempt_at=next_attempt_at, last_reason=reason)

    def mark_failed(self, item_id: int, now: float, reason: str) -> None:
        self._finish(item_id, now, state="failed", last_reason=reason)

    def disable_endpoint(self, endpoint: str, now: float, reason: str) -> None:
        with self.lock:
            for item_id, item in list(self.items.items()):
                if item.endpoint == endpoint and item.state == "pending":
                    self.items[item_id] = msgspec.structs.replace(item, state="disabled", last_reason=reason)

    def depth(self) -> int:
        with self.lock:
            return sum(1 for i in self.items.values() if i.state == "pending")

    def oldest_pending_age(self, now: float) -> float | None:
        with self.lock:
            ages = [now - i.created_at for i in self.items.values() if i.state == "pending"]
            return max(ages) if ages else None

    def states(self) -> dict[int, str]:
        with self.lock:
            return {i: item.state for i, item in self.items.items()}


class ScriptedChannel:
    """A fake behind the Channel Protocol answering from a script (unit tests only)."""

    kind = "webhook"

    def __init__(self, *results: Delivery) -> None:
        self.results = list(results)
        self.sent: list[str] = []

    def send(self, payload: Mapping[str, Any], *, message_id: str) -> Delivery:
        self.sent.append(message_id)
        return self.results.pop(0) if self.results else Delivery(ok=True, retryable=False, reason="ok")

    def close(self) -> None:
        pass


OK = Delivery(ok=True, retryable=False, reason="http 200")
RETRY = Delivery(ok=False, retryable=True, reason="http 503")


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- classifier -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", range(100, 600))
def test_classifier_covers_every_status(status: int) -> None:
    v = classify_status(status)
    if 200 <= status < 300:
        assert (v.ok, v.retryable, v.disable) == (True, False, False)
    elif status == 429 or status >= 500:
        assert (v.ok, v.retryable, v.disable) == (False, True, False)
    elif status == 410:
        assert (v.ok, v.retryable, v.disable) == (False, False, True)
    else:  # 1xx, 3xx and every other 4xx: permanent
        assert (v.ok, v.retryable, v.disable) == (False, False, False)


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(90.0, abs=1.0)
    assert parse_retry_after(email.utils.formatdate(now - 50, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after(None, now) is None


# --- retry policy ---------------------------------------------------------------------------------


def test_default_schedule_is_standard_webhooks() -> None:
    p = RetryPolicy(jitter=0.0)
    assert p.schedule == DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert [p.delay_after(n) for n in range(1, 8)] == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert p.delay_after(8) is None
    assert p.max_attempts == 8


def test_jitter_is_bounded_and_retry_after_honoured_and_capped() -> None:
    p = RetryPolicy(schedule=(0, 100, 100), jitter=0.2, cap=500)
    rng = random.Random(7)
    delays = [p.delay_after(1, rng=rng) for _ in range(200)]
    assert all(d is not None and 80 <= d <= 120 for d in delays)
    assert len({round(d or 0, 3) for d in delays}) > 50  # actually spread
    assert p.delay_after(1, retry_after=400, rng=rng) == 400  # the receiver asked for longer
    assert p.delay_after(1, retry_after=10_000, rng=rng) == 500  # but never past the cap


def test_exponential_and_scaled() -> None:
    p = RetryPolicy.exponential(attempts=5, base=2, factor=3, cap=30, jitter=0)
    assert p.schedule == (0, 2, 6, 18, 30)
    assert RetryPolicy(jitter=0).scaled(0.001).schedule[2] == pytest.approx(0.3)
    with pytest.raises(ChannelConfigError):
        RetryPolicy(schedule=())
    with pytest.raises(ChannelConfigError):
        RetryPolicy(jitter=2.0)


# --- worker outcomes (fake channel, fake clock) ---------------------------------------------------


def test_retry_then_delivered_at_schedule_times() -> None:
    clock = Clock()
    box = MemoryOutbox()
    box.add("soc/webhook/0", payload(make_alert(1)), now=clock.t)
    ch = ScriptedChannel(RETRY, RETRY, OK)
    w = DeliveryWorker(box, {"soc/webhook/0": ch}, policy=RetryPolicy(jitter=0.0), clock=clock)
    assert w.drain() == {"retried": 1}
    assert w.drain() == {}  # not due yet
    clock.t += 5
    assert w.drain() == {"retried": 1}
    clock.t += 299
    assert w.drain() == {}
    clock.t += 1
    assert w.drain() == {"delivered": 1}
    assert box.items[1].state == "delivered" and box.items[1].attempts == 3
    assert ch.sent == ["msg_1"] * 3  # same message id on every attempt


def test_exhausted_schedule_ends_failed_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    box = MemoryOutbox()
    box.add("soc/webhook/0", payload(make_alert(1)), now=clock.t)
    box.add("soc/webhook/0", payload(make_alert(2)), now=clock.t)
    ch = ScriptedChannel(*[RETRY] * 3)
    w = DeliveryWorker(
        box, {"soc/webhook/0": ch}, policy=RetryPolicy(schedule=(0, 1, 1), jitter=0), clock=clock
    )
    with caplog.at_level(logging.WARNING, logger="alerts.deliver"):
        for _ in range(3):
            w.drain()
            clock.t += 1
    assert box.items[1].state == "failed"
    assert "gave up after 3 attempts: http 503" in (box.items[1].last_reason or "")
    assert box.items[2].state == "delivered"  # the endpoint moved on, in order
    assert w.stats.snapshot() == {"delivered": 1, "retried": 2, "failed": 1, "disabled": 0}
    assert any("failed" in r.getMessage() for r in caplog.records)


def test_permanent_failure_and_410_and_missing_channel() -> None:
    clock = Clock()
    box = MemoryOutbox()
    box.add("a/webhook/0", payload(make_alert(1)), now=clock.t)
    box.add("b/webhook/0", payload(make_alert(2)), now=clock.t)
    box.add("b/webhook/0", payload(make_alert(3)), now=clock.t)
    box.add("c/webhook/0", payload(make_alert(4)), now=clock.t)
    bad = Delivery(ok=False, retryable=False, reason="http 400")
    gone = Delivery(ok=False, retryable=False, reason="http 410: endpoint gone", disable=True)
    w = DeliveryWorker(
        box, {"a/webhook/0": ScriptedChannel(bad), "b/webhook/0": ScriptedChannel(gone)}, clock=clock
    )
    w.drain()
    assert box.states() == {1: "failed", 2: "disabled", 3: "disabled", 4: "failed"}
    assert box.items[4].last_reason == "no channel configured for endpoint c/webhook/0"


def test_channel_exception_is_retried_not_lost() -> None:
    class Broken:
        kind = "webhook"

        def send(self, payload: Mapping[str, Any], *, message_id: str) -> Delivery:
            raise RuntimeError("bug")

        def close(self) -> None:
            pass

    box = MemoryOutbox()
    box.add("a/webhook/0", payload(make_alert(1)))
    w = DeliveryWorker(box, {"a/webhook/0": Broken()}, clock=Clock())
    assert w.drain() == {"retried": 1}
    assert box.items[1].state == "pending" and "RuntimeError" in (box.items[1].last_reason or "")


def test_lease_must_exceed_attempt_timeout() -> None:
    with pytest.raises(ChannelConfigError):
        DeliveryWorker(MemoryOutbox(), {}, attempt_timeout=10, lease_seconds=5)


# --- real receivers, real time --------------------------------------------------------------------


def _webhook(url: str, *, timeout: float = 0.5) -> WebhookChannel:
    return WebhookChannel(
        url=Secret(url), secrets=[Secret(WHSEC_A)], guard=Guard(allow_loopback=True), timeout=timeout
    )


def _wait(cond: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


@pytest.mark.integration
def test_down_endpoint_recovers_in_order_and_does_not_slow_others() -> None:
    down_port = free_port()
    box = MemoryOutbox()
    now = time.time()
    for n in range(5):
        box.add("down/webhook/0", payload(make_alert(n)), now=now)
        box.add("up/webhook/0", payload(make_alert(100 + n)), now=now)
    policy = RetryPolicy(schedule=(0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2), jitter=0.1)
    with HttpReceiver() as up:
        channels = {
            "down/webhook/0": _webhook(f"http://127.0.0.1:{down_port}/h"),
            "up/webhook/0": _webhook(up.url()),
        }
        worker = DeliveryWorker(
            box, channels, policy=policy, attempt_timeout=0.5, lease_seconds=2, poll_interval=0.05
        )
        started = time.monotonic()
        with worker:
            up.wait_for(5, timeout=5)
            up_done = time.monotonic() - started
            time.sleep(0.5)  # the down endpoint keeps failing meanwhile
            assert all(box.items[i].state == "pending" for i in range(1, 10, 2))
            with HttpReceiver(port=down_port) as recovered:
                got = recovered.wait_for(5, timeout=10)
                _wait(lambda: box.depth() == 0)
        for ch in channels.values():
            ch.close()
    assert up_done < 1.5, f"healthy endpoint took {up_done:.2f}s"
    ids = [msgspec.json.decode(r.body)["alerts"][0]["title"] for r in got]
    assert ids == [f"Root token used #{n}" for n in range(5)]
    assert [r.headers["webhook-id"] for r in got] == [f"msg_{i}" for i in range(1, 10, 2)]
    assert box.items[1].attempts >= 2
    assert set(box.states().values()) == {"delivered"}


@pytest.mark.integration
def test_slow_endpoint_times_out_and_does_not_slow_others() -> None:
    box = MemoryOutbox()
    now = time.time()
    box.add("slow/webhook/0", payload(make_alert(1)), now=now)
    for n in range(3):
        box.add("fast/webhook/0", payload(make_alert(10 + n)), now=now)
    with HttpReceiver(default=Reply(delay=2.0)) as slow, HttpReceiver() as fast:
        channels = {
            "slow/webhook/0": _webhook(slow.url(), timeout=0.3),
            "fast/webhook/0": _webhook(fast.url()),
        }
        w = DeliveryWorker(
            box,
            channels,
            policy=RetryPolicy(schedule=(0,), jitter=0),
            attempt_timeout=0.3,
            lease_seconds=2,
            poll_interval=0.05,
        )
        t0 = time.monotonic()
        with w:
            fast.wait_for(3, timeout=5)
            fast_done = time.monotonic() - t0
            _wait(lambda: box.items[1].state == "failed")
        for ch in channels.values():
            ch.close()
    assert fast_done < 1.0
    assert "timeout" in (box.items[1].last_reason or "")


@pytest.mark.integration
def test_429_retry_after_is_honoured() -> None:
    box = MemoryOutbox()
    box.add("a/webhook/0", payload(make_alert(1)), now=time.time())
    with HttpReceiver() as rx:
        rx.replies(Reply(429, {"Retry-After": "1"}))
        ch = _webhook(rx.url())
        w = DeliveryWorker(
            box,
            {"a/webhook/0": ch},
            policy=RetryPolicy(schedule=(0, 0.01), jitter=0),
            attempt_timeout=0.5,
            lease_seconds=2,
            poll_interval=0.05,
        )
        with w:
            got = rx.wait_for(2, timeout=5)
            _wait(lambda: box.items[1].state == "delivered")
        ch.close()
    assert got[1].at - got[0].at >= 0.95


@pytest.mark.integration
def test_redirect_not_followed_and_410_disables() -> None:
    box = MemoryOutbox()
    now = time.time()
    box.add("r/webhook/0", payload(make_alert(1)), now=now)
    box.add("g/webhook/0", payload(make_alert(2)), now=now)
    box.add("g/webhook/0", payload(make_alert(3)), now=now)
    with HttpReceiver() as target, HttpReceiver() as rx:
        redirect = Reply(307, {"Location": target.url()})
        rx.set_default(Reply(410))
        with HttpReceiver(default=redirect) as redirector:
            channels = {"r/webhook/0": _webhook(redirector.url()), "g/webhook/0": _webhook(rx.url())}
            DeliveryWorker(box, channels, attempt_timeout=0.5, lease_seconds=2).drain()
            for ch in channels.values():
                ch.close()
        assert target.received() == []  # the redirect was not followed
        assert len(rx.received()) == 1  # the gone endpoint was tried once, then disabled
    assert box.states() == {1: "failed", 2: "disabled", 3: "disabled"}
    assert box.items[1].last_reason == "http 307: redirect not followed"


@pytest.mark.integration
def test_worker_over_real_sqlite_store(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        store.migrate()
        entries = [
            OutboxEntry(
                receiver="soc",
                channel="webhook",
                endpoint="soc/webhook/0",
                message_id=f"m{n}",
                payload=payload(make_alert(n)),
            )
            for n in range(3)
        ]
        with store.transaction() as tx:
            tx.enqueue(entries, now=time.time())
        with HttpReceiver() as rx:
            rx.replies(Reply(503))
            ch = _webhook(rx.url())
            w = DeliveryWorker(
                store,
                {"soc/webhook/0": ch},
                policy=RetryPolicy(schedule=(0, 0.1), jitter=0),
                attempt_timeout=0.5,
                lease_seconds=2,
                poll_interval=0.05,
            )
            with w:
                got = rx.wait_for(4, timeout=10)
                _wait(lambda: store.depth() == 0)
            ch.close()
        assert [r.headers["webhook-id"] for r in got] == ["m0", "m0", "m1", "m2"]
        assert [i.state for i in store.outbox_items()] == ["delivered"] * 3
    finally:
        store.close()


# --- canary: no secret in logs, errors or reasons -------------------------------------------------

CANARY = "CANARY7f3a9e"


@pytest.fixture
def canary_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    secret_file = tmp_path / "pd_key"
    secret_file.write_text(f"{CANARY}pdkey\n")
    yield {
        "WH_URL": "",  # filled per test
        "WH_SECRET": "whsec_" + __import__("base64").b64encode(f"{CANARY}-signing-key".encode()).decode(),
        "PD_KEY_FILE": str(secret_file),
        "SMTP_PASSWORD": f"{CANARY}smtp",
    }


@pytest.mark.integration
def test_canary_secrets_never_leak(caplog: pytest.LogCaptureFixture, canary_env: dict[str, str]) -> None:
    seen: list[str] = []
    with (
        HttpReceiver(default=Reply(503)) as http_rx,
        HttpReceiver(default=Reply(400, body=CANARY.encode())) as bad_rx,
        SmtpReceiver(password="the-right-one") as smtp_rx,
        SyslogTcpReceiver() as syslog_rx,
    ):
        env = dict(canary_env)
        env["WH_URL"] = http_rx.url(f"/hook/{CANARY}wh")
        env["SLACK_URL"] = bad_rx.url(f"/services/{CANARY}slack")
        env["TEAMS_URL"] = f"http://127.0.0.1:{free_port()}/workflows/{CANARY}teams"  # nobody listens
        env["PD_URL"] = http_rx.url(f"/pd/{CANARY}")
        cfg = load_config(
            {
                "delivery": {
                    "allow_loopback": True,
                    "attempt_timeout": 0.5,
                    "lease_seconds": 2,
                    "schedule": [0, 0.01],
                },
                "receivers": [
                    {
                        "name": "soc",
                        "webhook": [{"url": "env:WH_URL", "signing_secrets": ["env:WH_SECRET"]}],
                        "slack": [{"url": "env:SLACK_URL"}],
                        "teams": [{"url": "env:TEAMS_URL"}],
                        "pagerduty": [{"routing_key": "env:PD_KEY", "events_url": env["PD_URL"]}],
                        "email": [
                            {
                                "host": "127.0.0.1",
                                "port": smtp_rx.port,
                                "security": "plain",
                                "sender": "vw@example.com",
                                "to": ["soc@example.com"],
                                "username": "vw",
                                "password": "env:SMTP_PASSWORD",
                            }
                        ],
                        "syslog": [{"host": "127.0.0.1", "port": syslog_rx.port, "transport": "tcp"}],
                    }
                ],
            }
        )
        caplog.set_level(logging.DEBUG)
        channels = build_channels(cfg, SecretResolver(env=env))
        seen += [repr(c) for c in channels.values()] + [str(c.__dict__) for c in channels.values()]
        box = MemoryOutbox()
        for key, ch in channels.items():
            box.add(key, payload(make_alert(1)), now=time.time(), channel=ch.kind)
        w = DeliveryWorker(box, channels, policy=cfg.retry_policy(), attempt_timeout=0.5, lease_seconds=2)
        for _ in range(3):
            w.drain(now=time.time() + 1)
        for ch in channels.values():
            ch.close()
        seen += [item.last_reason or "" for item in box.items.values()]
        seen += [r.getMessage() for r in caplog.records] + [caplog.text]
        # errors on the configuration and secret paths
        for bad in (
            {"receivers": [{"name": "x", "slack": [{"url": env["SLACK_URL"]}]}]},
            {"receivers": [{"name": "x", "slack": [{"url": 5}]}], "nope": env["WH_URL"]},
        ):
            with pytest.raises(ChannelConfigError) as ei:
                load_config(bad)
            seen.append(str(ei.value))
        with pytest.raises(ChannelConfigError) as ce:
            WebhookChannel(url=Secret(env["WH_URL"]), secrets=[Secret(f"{CANARY}-not-whsec")], guard=Guard())
        seen.append(str(ce.value))
        with pytest.raises(SecretError) as se:
            SecretResolver(env={"X_FILE": f"/nonexistent/{CANARY}"}).resolve("env:X")
        seen.append(str(se.value))
        syslog_rx.wait_for(1)
    states = box.states()
    assert states[1] == "failed" and states[2] == "failed"  # webhook gave up (503), slack 400
    assert states[5] == "failed"  # SMTP authentication refused
    assert states[6] == "delivered"  # syslog
    assert smtp_rx.messages == []
    text = "\n".join(seen)
    assert "http 503" in text and "http 400" in text  # the failures really were captured
    assert CANARY not in text
    assert "pdkey" not in text and "-signing-key" not in text


def test_delivery_positional_and_keyword_forms_agree() -> None:
    assert Delivery(False, True, "http 503") == Delivery(ok=False, retryable=True, reason="http 503")


@pytest.mark.integration
def test_router_store_worker_end_to_end(tmp_path: Path) -> None:
    """Alerts → router → outbox in a real SQLite store → worker → signed webhook and PagerDuty."""
    store = Store(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        store.migrate()
        router = Router(
            {
                "receivers": [
                    {
                        "name": "soc",
                        "integrations": [{"channel": "webhook", "name": "siem"}, {"channel": "pagerduty"}],
                    }
                ],
                "route": {
                    "receiver": "soc",
                    "group_by": ["detector"],
                    "group_wait": 1,
                    "group_interval": 5,
                    "repeat_interval": 60,
                },
            },
            store,
        )
        alerts = [msgspec.convert(make_alert(n), Alert) for n in range(2)]
        t0 = to_epoch(alerts[0].last_seen) + 1  # event time, as the pipeline runs
        store.add_alerts(alerts, now=t0)
        router.ingest(alerts, t0)
        assert len(router.tick(t0 + 1)) == 2  # one notification per integration
        with HttpReceiver() as hook, HttpReceiver(default=Reply(202)) as pd:
            cfg = load_config(
                {
                    "delivery": {"allow_loopback": True, "attempt_timeout": 1, "lease_seconds": 5},
                    "receivers": [
                        {
                            "name": "soc",
                            "webhook": [{"name": "siem", "url": "env:U", "signing_secrets": ["env:S"]}],
                            "pagerduty": [{"routing_key": "env:K", "events_url": pd.url("/v2/enqueue")}],
                        }
                    ],
                }
            )
            channels = build_channels(cfg, SecretResolver(env={"U": hook.url(), "S": WHSEC_A, "K": "rk"}))
            assert set(channels) == {"soc/webhook/siem", "soc/pagerduty/0"}
            counts = DeliveryWorker(store, channels, policy=cfg.retry_policy()).drain(now=t0 + 2)
            for ch in channels.values():
                ch.close()
            (req,) = hook.received()
            events = [msgspec.json.decode(r.body) for r in pd.received()]
        assert counts == {"delivered": 2}
        body = Webhook(WHSEC_A).verify(req.body, req.headers)
        assert sorted(a["id"] for a in body["alerts"]) == sorted(a.id for a in alerts)
        assert req.headers["webhook-id"].startswith("vwn_")
        assert sorted(e["dedup_key"] for e in events) == sorted(a.id for a in alerts)
        assert {e["event_action"] for e in events} == {"trigger"}
        assert store.depth() == 0
    finally:
        store.close()
