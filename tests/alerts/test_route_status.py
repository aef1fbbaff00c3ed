"""Status followers: PagerDuty incidents acknowledge and resolve when the alert does, end to end
through the router, the outbox, the delivery worker and a loopback PagerDuty receiver."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts.channels.config import build_channels, load_config
from alerts.deliver import DeliveryWorker
from alerts.route import Router
from alerts.secrets import SecretResolver
from alerts.store import Store
from tests.alerts.receivers import HttpReceiver
from tests.alerts.test_route import INTERVAL, T0, WAIT, config, make_alert


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'route.db'}")
    s.migrate()
    yield s
    s.close()


def test_only_status_followers_hear_of_acknowledge_and_resolve(store: Store) -> None:
    router = Router(config(receiver="pager"), store)
    alert = make_alert("x")
    store.add_alerts([alert])
    router.ingest([alert], T0)
    first = router.tick(T0 + WAIT)
    assert sorted(n.integration.channel for n in first) == ["pagerduty", "slack"]
    with store.transaction() as tx:
        tx.transition(alert.id, "acknowledged", "analyst@example", "looking", now=T0 + WAIT + 1)
    acked = router.tick(T0 + WAIT + INTERVAL)
    assert [(n.integration.channel, n.status, n.alerts[0].status) for n in acked] == [
        ("pagerduty", "changed", "acknowledged")
    ]
    assert router.tick(T0 + WAIT + 2 * INTERVAL) == []  # nothing new
    with store.transaction() as tx:
        tx.transition(alert.id, "resolved", "analyst@example", "fixed", now=T0 + WAIT + 2 * INTERVAL + 1)
    resolved = router.tick(T0 + WAIT + 3 * INTERVAL)
    assert [(n.integration.channel, n.alerts[0].status) for n in resolved] == [("pagerduty", "resolved")]
    assert router.tick(T0 + WAIT + 4 * INTERVAL) == []
    assert not router.groups  # followed until resolved, then forgotten
    ids = [n.message_id for n in first + acked + resolved]
    assert len(ids) == len(set(ids))


@pytest.mark.integration
def test_pagerduty_receives_trigger_acknowledge_resolve(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VW_PD_KEY", "routing-key-for-tests-0123456789abcdef")
    cfg = {
        "receivers": [{"name": "pager", "integrations": [{"channel": "pagerduty"}]}],
        "route": {
            "receiver": "pager",
            "group_wait": WAIT,
            "group_interval": INTERVAL,
            "repeat_interval": 3600,
        },
    }
    router = Router(cfg, store)
    alert = make_alert("pd")
    store.add_alerts([alert])
    router.ingest([alert], T0)
    with HttpReceiver() as pd:
        channels = build_channels(
            load_config(
                {
                    "delivery": {"allow_loopback": True, "schedule": [0, 1]},
                    "receivers": [
                        {
                            "name": "pager",
                            "pagerduty": [
                                {"routing_key": "env:VW_PD_KEY", "events_url": pd.url("/v2/enqueue")}
                            ],
                        }
                    ],
                }
            ),
            SecretResolver(env=dict(os.environ)),
        )
        worker = DeliveryWorker(store, channels)
        router.tick(T0 + WAIT)
        worker.drain()
        with store.transaction() as tx:
            tx.transition(alert.id, "acknowledged", "analyst@example", "", now=T0 + WAIT + 1)
        router.tick(T0 + WAIT + INTERVAL)
        worker.drain()
        with store.transaction() as tx:
            tx.transition(alert.id, "resolved", "analyst@example", "", now=T0 + WAIT + INTERVAL + 1)
        router.tick(T0 + WAIT + 2 * INTERVAL)
        worker.drain()
        events = [json.loads(r.body) for r in pd.received()]
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert len({e["dedup_key"] for e in events}) == 1
