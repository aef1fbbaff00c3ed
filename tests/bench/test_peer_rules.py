"""The peer rule sets, on audit entries in the documented schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bench.peer_rules import datadog_rules, hashicorp_rules
from ingest.event import AuditEvent
from ingest.parse import Parser

T0 = 1_788_775_200  # 2026-09-07T10:00:00Z


def entry(
    rid: str,
    path: str,
    *,
    minutes: float = 0,
    operation: str = "read",
    policies: tuple[str, ...] = ("default", "app"),
    who: str = "app",
    created: tuple[str, ...] | None = None,
    kind: str = "response",
) -> AuditEvent:
    when = datetime.fromtimestamp(T0 + minutes * 60, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    e: dict[str, Any] = {
        "time": when,
        "type": kind,
        "auth": {
            "client_token": f"hmac-sha256:{who}",
            "accessor": f"hmac-sha256:acc-{who}",
            "display_name": who,
            "policies": list(policies),
            "token_policies": list(policies),
            "token_type": "service",
        },
        "request": {
            "id": rid,
            "operation": operation,
            "namespace": {"id": "root"},
            "path": path,
            "remote_address": "10.0.0.1",
        },
    }
    if kind == "response":
        e["response"] = (
            {"auth": {"policies": list(created), "token_policies": list(created)}} if created else {}
        )
    return Parser().parse(json.dumps(e).encode())


def test_datadog_root_token_signal_groups_by_identity_with_keep_alive() -> None:
    events = [
        entry("r1", "logos/data/x", policies=("root",), who="root"),
        entry("r2", "logos/data/y", policies=("root",), who="root", minutes=30),
        entry("a1", "logos/data/x"),  # not root: nothing
        entry("r3", "sys/policies/acl/p", operation="update", policies=("root",), who="root", minutes=200),
        entry("g1", "sys/generate-root/attempt", operation="update", who="mallory", minutes=201),
        entry("t1", "auth/token/create", operation="update", who="admin", created=("root",), minutes=202),
    ]
    alerts = datadog_rules(events)
    root = [a for a in alerts if a["detector"].endswith("vault-root-token")]
    # r1 and r2 within the keep-alive; r3 after it; g1 and t1 are other identities.
    assert [a["event_ids"] for a in root] == [["r1", "r2"], ["r3"], ["g1"], ["t1"]]
    assert {a["severity"] for a in root} == {"medium"}


def test_datadog_audit_device_disabled_but_not_enabled() -> None:
    events = [
        entry("e1", "sys/audit/file", operation="update", who="admin"),
        entry("d1", "sys/audit/file", operation="delete", who="admin", minutes=5),
    ]
    alerts = datadog_rules(events)
    assert [(a["detector"], a["event_ids"], a["severity"]) for a in alerts] == [
        ("datadog-ootb:vault-audit-disabled", ["d1"], "high")
    ]


def test_datadog_signal_ends_at_max_duration() -> None:
    events = [
        entry(f"r{i}", "logos/data/x", policies=("root",), who="root", minutes=50 * i) for i in range(40)
    ]
    alerts = datadog_rules(events)
    # Matches every 50 min keep the signal alive; it is cut every 24 h (at most 29 matches).
    assert len(alerts) == 2 and len(alerts[0]["event_ids"]) == 29


def test_hashicorp_five_checks_one_alert_per_request() -> None:
    events = [
        entry("r1", "logos/data/x", policies=("root",), who="root", kind="request"),
        entry("r1", "logos/data/x", policies=("root",), who="root"),
        entry("g1", "sys/generate-root/attempt", operation="update", who="mallory"),
        entry("s1", "secret/data/emergency-only/db", who="dev"),
        entry("n1", "secret/data/normal", who="dev"),
        entry("p1", "logos/data/pxl-core/runtime/jwt", who="dev"),
    ]
    alerts = hashicorp_rules(events)
    assert [(a["event_ids"], a["title"]) for a in alerts] == [
        (["r1"], "root policy used"),
        (["g1"], "root token generation path accessed"),
        (["s1"], "sensitive path accessed"),
    ]
    mine = hashicorp_rules(events, sensitive_prefixes=("logos/data/pxl-core/runtime/",))
    assert [a["event_ids"] for a in mine] == [["r1"], ["g1"], ["p1"]]
    assert {a["severity"] for a in mine} == {"high"}
