"""Routing, grouping, inhibition, silences and notification-log dedup, with compressed timers.

The cases follow Alertmanager's acceptance tests (group wait, group interval with a new alert,
repeat interval, silence then expire, inhibition), with seconds instead of minutes and an
injected clock. The store is a real SQLite file; one restart case also runs on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from alerts.errors import RouteConfigError
from alerts.route import Notification, Router, RouterConfig, parse_duration
from alerts.store import Store, to_epoch
from detect.alert import Alert, AlertIdentity

T0 = to_epoch("2026-01-01T00:00:00Z")
WAIT, INTERVAL, REPEAT = 2.0, 5.0, 20.0


def iso(offset: float) -> str:
    return datetime.fromtimestamp(T0 + offset, UTC).isoformat().replace("+00:00", "Z")


def make_alert(
    name: str,
    *,
    detector: str = "root-token-use",
    severity: str = "high",
    identity: str = "entity:alice",
    seen: float = 0.0,
    labels: dict[str, str] | None = None,
) -> Alert:
    return Alert(
        id=f"va_{name}",
        detector=detector,
        title=f"{detector} by {identity}",
        severity=severity,  # type: ignore[arg-type]
        score=60,
        identity=AlertIdentity(key=identity),
        first_seen=iso(seen),
        last_seen=iso(seen),
        event_ids=(f"req-{name}",),
        dedup_key=f"{detector}:{identity}:{name}",
        labels=labels or {},
    )


def config(**route: Any) -> dict[str, Any]:
    return {
        "receivers": [
            {"name": "soc", "integrations": [{"channel": "webhook", "name": "siem"}]},
            {
                "name": "pager",
                "integrations": [{"channel": "pagerduty"}, {"channel": "slack", "name": "oncall"}],
            },
            {"name": "security", "integrations": [{"channel": "email"}]},
        ],
        "route": {
            "receiver": "soc",
            "group_wait": WAIT,
            "group_interval": INTERVAL,
            "repeat_interval": REPEAT,
            **route,
        },
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'alerts.db'}") as s:
        s.migrate()
        yield s


def feed(store: Store, router: Router, alerts: list[Alert], at: float) -> None:
    """What the service does: store the alerts, then hand them to the router."""
    store.add_alerts(alerts, now=T0 + at)
    router.ingest(alerts, T0 + at)


def run(router: Router, start: float, stop: float, step: float = 1.0) -> list[tuple[float, Notification]]:
    """Tick once per ``step`` from ``start`` to ``stop`` inclusive; the notifications with their time."""
    out: list[tuple[float, Notification]] = []
    at = start
    while at <= stop:
        out.extend((at, n) for n in router.tick(T0 + at))
        at += step
    return out


# -- Alertmanager acceptance cases ---------------------------------------------------------------


def test_group_wait_turns_a_burst_into_one_notification(store: Store) -> None:
    router = Router(config(), store)
    burst = [make_alert(f"{i:03d}", seen=i / 100) for i in range(100)]
    for i in range(0, 100, 10):
        feed(store, router, burst[i : i + 10], at=i / 100)
    assert run(router, 0, 1.5, step=0.5) == []
    sent = run(router, 2, 2)
    assert len(sent) == 1
    note = sent[0][1]
    assert note.receiver == "soc" and note.endpoint == "soc/webhook/siem"
    assert [a.id for a in note.alerts] == sorted(a.id for a in burst)
    (row,) = store.outbox_items()
    assert row.message_id == note.message_id and row.channel == "webhook"
    assert set(row.payload) == {"group_key", "receiver", "status", "alerts"}
    assert row.payload["status"] == "firing" and len(row.payload["alerts"]) == 100
    assert row.payload["alerts"][0]["schema"] == "vaultwatch.alert/v1"


def test_group_interval_sends_a_new_alert_with_its_group(store: Store) -> None:
    router = Router(config(), store)
    feed(store, router, [make_alert("a")], at=0)
    first = run(router, 0, 2)
    assert [t for t, _ in first] == [2]
    feed(store, router, [make_alert("b", seen=3)], at=3)
    assert run(router, 3, 6) == []  # held until the group interval
    (second,) = run(router, 7, 7)
    assert [a.id for a in second[1].alerts] == ["va_a", "va_b"]
    assert second[1].sequence == 2 and second[1].message_id != first[0][1].message_id
    assert store.depth() == 2


def test_repeat_interval_resends_an_unchanged_group(store: Store) -> None:
    router = Router(config(), store)
    feed(store, router, [make_alert("a")], at=0)
    times = [t for t, _ in run(router, 0, 19)]
    assert times == [2]
    # Re-seen alerts (same ids) keep the group unchanged: no new notification.
    feed(store, router, [make_alert("a", seen=10)], at=10)
    times += [t for t, _ in run(router, 20, 45)]
    # Flushes happen every group interval (2, 7, 12, 17, 22, ...); the first one at least
    # REPEAT after the last send repeats it.
    assert times == [2, 22, 42]


def test_silence_then_expire(store: Store) -> None:
    router = Router(config(), store)
    silence = store.create_silence(
        ["detector=root-token-use"], starts_at=T0, ends_at=T0 + 1000, created_by="alice", now=T0
    )
    feed(store, router, [make_alert("a")], at=0)
    feed(store, router, [make_alert("b", detector="rare-path")], at=0)
    sent = run(router, 0, 10)
    assert [(t, [a.id for a in n.alerts]) for t, n in sent] == [(2, ["va_b"])]
    store.expire_silence(silence.id)
    sent = run(router, 11, 20)
    assert [(t, [a.id for a in n.alerts]) for t, n in sent] == [(12, ["va_a"])]


def test_a_silence_that_ends_lets_notifications_through(store: Store) -> None:
    router = Router(config(), store)
    store.create_silence(["severity=~high|critical"], starts_at=T0, ends_at=T0 + 8, created_by="bob", now=T0)
    feed(store, router, [make_alert("a")], at=0)
    assert [t for t, _ in run(router, 0, 12)] == [12]


def test_critical_alert_inhibits_lower_severity_for_the_same_identity(store: Store) -> None:
    router = Router(config(), store)
    crit = make_alert("crit", severity="critical", detector="root-token-use")
    medium = make_alert("med", severity="medium", detector="rare-path")
    other = make_alert("other", severity="medium", detector="rare-path", identity="entity:bob")
    feed(store, router, [crit, medium, other], at=0)
    sent = run(router, 0, 2)
    assert sorted(a.id for _, n in sent for a in n.alerts) == ["va_crit", "va_other"]

    # The critical alert is resolved in the store: the muted one goes out at the next flush.
    store.transition("va_crit", "resolved", "alice", now=T0 + 3)
    sent = run(router, 3, 7)
    assert [(t, [a.id for a in n.alerts]) for t, n in sent] == [(7, ["va_med"])]


def test_custom_inhibit_rules_replace_the_default(store: Store) -> None:
    cfg = config()
    cfg["inhibit_rules"] = [
        {
            "source_matchers": ["detector=token-storm"],
            "target_matchers": ["detector=rare-path"],
            "equal": ["env"],
        }
    ]
    router = Router(cfg, store)
    feed(
        store,
        router,
        [
            make_alert("storm", detector="token-storm", labels={"env": "prod"}),
            make_alert("prod", detector="rare-path", identity="x", labels={"env": "prod"}),
            make_alert("dev", detector="rare-path", identity="y", labels={"env": "dev"}),
            make_alert("crit", severity="critical", identity="z"),
            make_alert("low", severity="low", identity="z", detector="rate-spike"),
        ],
        at=0,
    )
    sent = sorted(a.id for _, n in run(router, 0, 2) for a in n.alerts)
    assert sent == ["va_crit", "va_dev", "va_low", "va_storm"]


# -- routing tree --------------------------------------------------------------------------------


def test_routing_tree_picks_receivers_with_continue_and_inheritance(store: Store) -> None:
    router = Router(
        config(
            routes=[
                {
                    "matchers": ["severity=critical"],
                    "receiver": "pager",
                    "continue": True,
                    "group_wait": "1s",
                },
                {
                    "matchers": ["detector=~root-.*|policy-change"],
                    "receiver": "security",
                    "group_by": ["detector"],
                },
            ]
        ),
        store,
    )
    feed(
        store,
        router,
        [
            make_alert("crit", severity="critical", identity="entity:carol"),
            make_alert("root1", identity="entity:alice"),
            make_alert("root2", identity="entity:bob"),
            make_alert("plain", detector="rare-path"),
        ],
        at=0,
    )
    at_one = run(router, 1, 1)
    assert sorted(n.endpoint for _, n in at_one) == ["pager/pagerduty/0", "pager/slack/oncall"]
    at_two = run(router, 2, 2)
    got = sorted((n.receiver, tuple(a.id for a in n.alerts)) for _, n in at_two)
    assert got == [
        ("security", ("va_crit", "va_root1", "va_root2")),  # one group per detector here
        ("soc", ("va_plain",)),
    ]
    assert {i.endpoint for i in store.outbox_items()} == {
        "pager/pagerduty/0",
        "pager/slack/oncall",
        "security/email/0",
        "soc/webhook/siem",
    }


def test_group_by_all_labels(store: Store) -> None:
    router = Router(config(group_by=["..."]), store)
    feed(store, router, [make_alert("a"), make_alert("b"), make_alert("c", labels={"env": "x"})], at=0)
    assert sorted(len(n.alerts) for _, n in run(router, 2, 2)) == [1, 2]


def test_notifications_list_the_most_severe_alerts_first(store: Store) -> None:
    cfg = config(group_by=["identity"])
    cfg["inhibit_rules"] = []  # no default rule: the critical alert would mute the others
    router = Router(cfg, store)
    feed(
        store,
        router,
        [
            make_alert("a", severity="low"),
            make_alert("b", severity="critical"),
            make_alert("c", severity="high"),
        ],
        at=0,
    )
    ((_, note),) = run(router, 2, 2)
    assert [a.id for a in note.alerts] == ["va_b", "va_c", "va_a"]


# -- durability ----------------------------------------------------------------------------------


def _restart_case(store: Store) -> None:
    router = Router(config(), store)
    feed(store, router, [make_alert("a"), make_alert("b", identity="entity:bob")], at=0)
    assert len(run(router, 0, 2)) == 2
    store.transition("va_b", "acknowledged", "alice", now=T0 + 3)

    restarted = Router(config(), store)
    assert restarted.recover(T0 + 10) == 1  # the acknowledged alert no longer notifies
    assert run(restarted, 10, 21) == []  # already sent: no duplicate after the restart
    sent = run(restarted, 22, 30)
    assert [(t, [a.id for a in n.alerts], n.sequence) for t, n in sent] == [(22, ["va_a"], 2)]
    assert store.depth() == 3


def test_a_restarted_router_does_not_notify_again(store: Store) -> None:
    _restart_case(store)


@pytest.mark.integration
def test_a_restarted_router_does_not_notify_again_on_postgresql(pg_url: str) -> None:
    base = sa.engine.make_url(pg_url)
    schema = f"vw_route_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base.set(query={}))
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = base.set(query={"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        with Store(url) as pg_store:
            pg_store.migrate()
            _restart_case(pg_store)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def test_message_ids_are_stable_across_independent_runs(tmp_path: Path) -> None:
    ids = []
    for run_no in range(2):
        with Store(f"sqlite:///{tmp_path / f'run{run_no}.db'}") as s:
            s.migrate()
            router = Router(config(), s)
            feed(s, router, [make_alert("a"), make_alert("b")], at=0)
            run(router, 0, 2)
            ids.append([i.message_id for i in s.outbox_items()])
    assert ids[0] == ids[1] and len(ids[0]) == 1


def test_tick_inside_the_service_transaction_rolls_back_with_it(store: Store) -> None:
    router = Router(config(), store)
    router.ingest([make_alert("a")], T0)

    class Crash(Exception):
        pass

    with pytest.raises(Crash), store.transaction() as tx:
        tx.add_alerts([make_alert("a")], now=T0 + 2)
        assert len(router.tick(T0 + 2, tx=tx)) == 1
        raise Crash
    assert store.depth() == 0 and store.list_alerts().total == 0
    # Nothing was logged as sent, so the next flush sends it.
    store.add_alerts([make_alert("a")], now=T0 + 3)
    assert [t for t, _ in run(router, 3, 7)] == [7]


def test_alerts_not_seen_for_the_resolve_timeout_leave_their_group(store: Store) -> None:
    cfg = config()
    cfg["resolve_timeout"] = "30s"
    router = Router(cfg, store)
    feed(store, router, [make_alert("a")], at=0)
    assert [t for t, _ in run(router, 0, 60)] == [2, 22]
    assert router.groups == {}


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["route"].update(receiver="nobody"), "unknown receiver"),
        (lambda c: c["route"].update(routes=[{"matchers": ["severity=~("]}]), "regular expression"),
        (lambda c: c["route"].update(group_wait="soon"), "invalid duration"),
        (lambda c: c["route"].update(group_interval=0), "positive"),
        (lambda c: c["route"].update(matchers=["severity=low"]), "root route"),
        (lambda c: c["route"].update(group_by=["...", "detector"]), "stand alone"),
        (lambda c: c["route"].update(recevier="typo"), "invalid routing config"),
        (lambda c: c["receivers"].append({"name": "soc"}), "defined twice"),
        (lambda c: c.update(inhibit_rules=[{"source_matchers": ["x"], "target_matchers": []}]), "inhibit"),
    ],
)
def test_bad_configuration_is_a_clear_error(store: Store, mutate: Any, message: str) -> None:
    cfg = config()
    mutate(cfg)
    with pytest.raises(RouteConfigError, match=message):
        Router(cfg, store)


def test_durations() -> None:
    assert [parse_duration(v) for v in (30, "30s", "5m", "4h", "1d", "250ms", 1.5)] == [
        30.0,
        30.0,
        300.0,
        14400.0,
        86400.0,
        0.25,
        1.5,
    ]
    assert RouterConfig.from_dict(config()).route.group_wait == WAIT


def test_notifications_carry_the_stored_version_of_each_alert(store: Store) -> None:
    router = Router(config(), store)
    feed(store, router, [make_alert("a")], at=0)
    # A repeat of the same alert merged by the store after the router saw it.
    repeat = msgspec.structs.replace(make_alert("a", seen=1), count=4, event_ids=("req-a", "req-a2"))
    store.add_alerts([repeat], now=T0 + 1)
    (row,) = [n for _, n in run(router, 2, 2)]
    (alert,) = row.alerts
    assert alert.count == 4 and alert.event_ids == ("req-a", "req-a2")
    assert store.outbox_items()[0].payload["alerts"][0]["count"] == 4
