"""The queue's priority order, summary and setup grouping (whole across pages), the alert page's
evidence, raw entries, outcome words and next steps, identities named as people read them, and
an identity's offboarding page."""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

with warnings.catch_warnings():
    # starlette's TestClient warns at import when httpx (not httpx2) is installed.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from alerts.store import AlertQuery, Store
from detect.alert import Alert, AlertIdentity, severity_rank
from vaultwatch.api.app import create_app
from vaultwatch.api.auth import AuthConfig
from vaultwatch.api.routes.identities import shared_peers
from vaultwatch.api.ui.alerts import PAGE_SIZE
from vaultwatch.api.ui.guidance import (
    AlertGroup,
    evidence_count,
    group_setup,
    group_setup_across,
    next_steps,
    outcome_text,
)
from vaultwatch.naming import identity_label
from vaultwatch.settings import ArchiveConfig, Settings

from .conftest import PASSWORDS, Seed


def _alert(
    n: int,
    detector: str,
    severity: str = "medium",
    *,
    key: str = "root:token",
    minute: int = 0,
    score: int = 55,
    labels: dict[str, str] | None = None,
    ids: int = 1,
) -> Alert:
    return Alert(
        id=f"va_{n:032d}",
        detector=detector,
        title=f"{detector} {n}",
        severity=severity,  # type: ignore[arg-type]
        score=score,
        identity=AlertIdentity(key=key, display_name="token", policies=("root",)),
        first_seen=f"2026-01-01T00:{minute:02d}:00Z",
        last_seen=f"2026-01-01T00:{minute:02d}:30Z",
        event_ids=tuple(f"req-{n}-{i}" for i in range(ids)),
        paths=("sys/policies/acl/x",),
        dedup_key=f"d{n}",
        labels=labels or {"outcome": "ok"},
    )


START = 1767225600.0  # 2026-01-01T00:00:00Z, the alerts' hour


# -- grouping ---------------------------------------------------------------------------------


def test_setup_changes_of_one_identity_fold_into_one_group() -> None:
    alerts = [
        _alert(1, "root-token-use", "high", score=80),
        _alert(2, "policy-change", minute=1),
        _alert(3, "auth-method-change", minute=2),
        _alert(4, "secrets-engine-change", minute=3),
        _alert(5, "audit-tampering", "critical", minute=4, labels={"outcome": "ok", "kind": "disable"}),
        _alert(6, "policy-change", minute=5, labels={"outcome": "denied"}),
        _alert(7, "audit-tampering", minute=6, labels={"outcome": "ok", "kind": "add"}),
    ]
    rows = group_setup(alerts, {"root:token": START})
    groups = [r for r in rows if isinstance(r, AlertGroup)]
    assert len(groups) == 1
    members = {m.id for m in groups[0].members}
    assert members == {alerts[i].id for i in (1, 2, 3, 6)}
    singles = {r.id for r in rows if isinstance(r, Alert)}
    # The attack, the critical tampering and the refused change each keep their own row.
    assert singles == {alerts[0].id, alerts[4].id, alerts[5].id}
    assert rows[0] is alerts[0] and rows[1] is groups[0]


def test_changes_after_the_first_hour_or_alone_are_not_grouped() -> None:
    late = [_alert(1, "policy-change", minute=0), _alert(2, "policy-change", minute=1)]
    # The identity started two hours before these changes: they are not its setup.
    rows = group_setup(late, {"root:token": START - 7200})
    assert all(isinstance(r, Alert) for r in rows)
    alone = group_setup([_alert(3, "policy-change")], {})
    assert all(isinstance(r, Alert) for r in alone)
    other = [_alert(4, "policy-change", key="token:a"), _alert(5, "policy-change", key="token:b")]
    assert all(isinstance(r, Alert) for r in group_setup(other, {}))


def test_a_setup_group_is_whole_on_the_page_of_its_first_member() -> None:
    attack = _alert(3, "root-token-use", "high", score=80)
    a, b = _alert(1, "policy-change", minute=0), _alert(2, "auth-method-change", minute=1)
    whole = {"root:token": [a, b]}  # the identity's configuration changes, in queue order
    page1 = group_setup_across([attack, a], whole, {})
    assert page1[0] is attack and isinstance(page1[1], AlertGroup)
    assert [m.id for m in page1[1].members] == [a.id, b.id]
    # On the next page its other member is not shown again, in or out of a group.
    assert group_setup_across([b], whole, {}) == []
    # One change alone is no group, on any page.
    assert group_setup_across([a], {"root:token": [a]}, {}) == [a]


def test_setup_grouping_holds_across_queue_pages(tmp_path: Path, users_file: Path) -> None:
    st = Store(f"sqlite:///{tmp_path / 'q.db'}")
    st.migrate()
    # Priority order puts the first change at the top of page 1 and the second on page 2, with a
    # page's worth of other alerts in between.
    first = _alert(1, "policy-change", score=90, minute=0)
    second = _alert(2, "auth-method-change", score=10, minute=1)
    others = [
        _alert(100 + i, "kv-read", key=f"token:other-{i}", score=50, minute=2) for i in range(PAGE_SIZE)
    ]
    st.add_alerts([first, second, *others])
    settings = Settings(archive=ArchiveConfig(enabled=False, path=tmp_path / "archive"))
    app = create_app(
        settings, auth=AuthConfig(users_file=users_file, cookie_secure=False, login_burst=50), store=st
    )
    with TestClient(app) as client:
        _login(client)
        page1 = client.get("/ui/alerts").text
        nxt = re.search(r'<a href="([^"]+)" rel="next">', page1)
        assert nxt is not None
        page2 = client.get(html.unescape(nxt.group(1))).text
    assert page1.count("Initial configuration") == 1
    assert f'data-member-id="{first.id}"' in page1 and f'data-member-id="{second.id}"' in page1
    rows2 = re.findall(r'<tr data-alert-id="([^"]+)"', page2)
    assert rows2 and second.id not in rows2 and "Initial configuration" not in page2
    st.close()


# -- evidence, outcomes, steps ---------------------------------------------------------------


def test_evidence_is_the_requests_behind_the_alert() -> None:
    a = msgspec.structs.replace(_alert(1, "login-failure-burst", ids=30), count=1)
    assert evidence_count(a) == 30
    assert evidence_count(msgspec.structs.replace(a, event_ids=(), count=4)) == 4


def test_outcome_words() -> None:
    assert outcome_text("pending") == "request logged, no response recorded"
    assert outcome_text("ok") == "allowed"
    assert outcome_text("login_failed") == "failed login"
    assert "denied" in outcome_text("denied")


def test_next_steps_name_the_secret_and_the_identity() -> None:
    a = msgspec.structs.replace(
        _alert(1, "access-model-violation", "high", key="entity:abc-123"),
        identity=AlertIdentity(key="entity:abc-123", entity_id="abc-123", display_name="userpass-alice"),
        paths=("kv/data/app/runtime/db", "kv/data/app/runtime/jwt"),
    )
    steps = next_steps(a)
    commands = [s.command for s in steps if s.command]
    assert "vaultwatch exposure --path kv/data/app/runtime/ --since-last-rotation" in commands
    assert "vault write identity/entity/id/abc-123 disabled=true" in commands
    root = next_steps(_alert(2, "root-token-use", "critical"))
    assert any(c and "--accessor" in c for c in (s.command for s in root))


# -- naming and peers -------------------------------------------------------------------------


def test_identity_labels() -> None:
    assert identity_label("anon:?").name == "unauthenticated (no address in the entry)"
    assert identity_label("anon:10.0.0.9").name == "unauthenticated from 10.0.0.9"
    alice = identity_label(
        "entity:7693f9d5", display_name="userpass-alice", policies=("default", "developer")
    )
    assert alice.name == "alice" and "auth userpass" in alice.role and "developer" in alice.role
    assert alice.key == "entity:7693f9d5"
    ci = identity_label("token:token-ci-deploy", display_name="token-ci-deploy", policies=("pxl-ci",))
    assert ci.name == "ci-deploy" and "auth token" in ci.role
    a1 = identity_label("entity:1", display_name="approle", policies=("svc-a",), addresses=("10.0.0.5",))
    a2 = identity_label("entity:2", display_name="approle", policies=("svc-b",), addresses=("10.0.0.6",))
    assert a1.name == "AppRole svc-a" and "10.0.0.5" in a1.role and a1 != a2
    assert (
        identity_label("entity:3", display_name="approle", entity_name="entity_1a2b").name == "AppRole client"
    )
    assert (
        identity_label("entity:4", display_name="userpass-bob", entity_name="Bob Smith").name == "Bob Smith"
    )
    assert identity_label("login:userpass:bob").name.startswith("bob")
    assert identity_label("root:token", display_name="token").name == "root token"


def test_peers_come_from_shared_policies_not_personal_ones() -> None:
    def s(*pols: str) -> dict[str, Any]:
        return {"identity": {"policies": ["default", *pols]}}

    summaries = {
        "entity:alice": s("developer", "alice-home"),
        "entity:bob": s("developer", "bob-home"),
        "entity:carol": s("developer", "ops"),
        "entity:dave": s("ops", "developer"),
        "entity:solo": s("solo-only"),
    }
    assert shared_peers(summaries, "entity:alice") == ["entity:bob"]
    assert shared_peers(summaries, "entity:carol") == ["entity:dave"]
    assert shared_peers(summaries, "entity:solo") == []


# -- the store's priority order ---------------------------------------------------------------


def test_priority_order_pages_by_severity_then_score_then_recency(tmp_path: Path) -> None:
    st = Store(f"sqlite:///{tmp_path / 'a.db'}")
    st.migrate()
    sevs = ["medium", "critical", "high", "low", "medium", "high"]
    alerts = [
        _alert(i, "x", sevs[i % len(sevs)], score=(i * 37) % 100, minute=i % 60, key=f"token:{i}")
        for i in range(40)
    ]
    st.add_alerts(alerts, now=1.0)
    seen: list[Alert] = []
    cursor = None
    while True:
        page = st.list_alerts(AlertQuery(sort="priority", limit=7, cursor=cursor))
        seen += page.items
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(seen) == 40 and len({a.id for a in seen}) == 40
    keys = [(severity_rank(a.severity), a.score, a.last_seen, a.id) for a in seen]
    assert keys == sorted(keys, reverse=True)
    summary = st.queue_summary()
    assert summary.open_by_severity["critical"] == sum(1 for a in alerts if a.severity == "critical")
    assert list(summary.open_by_severity)[0] == "critical"
    assert summary.oldest_open is not None and summary.oldest_open_at == 1.0
    st.close()


# -- the pages over a real OpenBao run --------------------------------------------------------


def _login(client: TestClient, user: str = "ana") -> None:
    r = client.post("/api/v1/auth/login", json={"username": user, "password": PASSWORDS[user]})
    assert r.status_code == 200, r.text


def test_queue_page_puts_the_worst_first_and_groups_setup(
    make_app: Callable[..., Any], ui_seed: Seed
) -> None:
    with TestClient(make_app()) as client:
        _login(client)
        html = client.get("/ui/alerts").text
    ids = re.findall(r'<tr data-alert-id="([^"]+)"', html)
    by_id = {a.id: a for a in ui_seed.alerts}
    shown = [by_id[i] for i in ids]
    ranks = [(severity_rank(a.severity), a.score) for a in shown]
    assert ranks == sorted(ranks, reverse=True)
    assert shown[0].severity == max((a.severity for a in ui_seed.alerts), key=severity_rank)
    assert 'id="queue-summary"' in html and "Oldest unacknowledged" in html
    # Every root-token alert keeps its own row; configuration changes by one identity fold.
    roots = [a.id for a in ui_seed.alerts if a.detector == "root-token-use"]
    assert roots and all(r in ids for r in roots)
    setup = [
        a
        for a in ui_seed.alerts
        if a.detector in ("policy-change", "auth-method-change", "secrets-engine-change")
    ]
    # The demo org's bootstrap (policies, auth methods, a secrets engine by the root token).
    assert len(setup) >= 2, "the seed should hold the bootstrap's configuration changes"
    assert "Initial configuration" in html
    assert all(a.id not in ids for a in setup)
    assert all(f'data-member-id="{a.id}"' in html for a in setup)


def test_alert_page_counts_collapses_and_guides(make_app: Callable[..., Any], ui_seed: Seed) -> None:
    big = max(ui_seed.alerts, key=lambda a: len(a.event_ids))
    assert len(big.event_ids) > 10, "the seed should hold an alert with many entries"
    with TestClient(make_app()) as client:
        _login(client)
        html = client.get(f"/ui/alerts/{big.id}").text
        full = client.get(f"/ui/alerts/{big.id}?raw=all").text
        # The seed's brute force on bob (eight wrong passwords).
        burst = next((a for a in ui_seed.alerts if a.detector == "login-failure-burst"), None)
        assert burst is not None, "the seed should hold the brute force's alert"
        burst_html = client.get(f"/ui/alerts/{burst.id}").text
    shown = html.count('class="raw-entry"')
    assert 0 < shown <= 2 * 10  # first and last five requests, each a request and a response entry
    assert 'id="raw-gap"' in html and "?raw=all" in html
    assert full.count('class="raw-entry"') > shown and 'id="raw-gap"' not in full
    assert ">pending<" not in html and "— pending<" not in html
    assert f"<strong>{len(big.event_ids)}</strong> request(s)" in html
    assert 'id="todo"' in html
    assert evidence_count(burst) > 1
    assert f"<strong>{evidence_count(burst)}</strong> request(s)" in burst_html


def test_identities_are_named_not_keyed(make_app: Callable[..., Any], ui_seed: Seed) -> None:
    alice = next(a for a in ui_seed.alerts if (a.identity.display_name or "").endswith("-alice"))
    key = alice.identity.key
    with TestClient(make_app()) as client:
        _login(client)
        listing = client.get("/ui/identities").text
        page = client.get(f"/ui/identities/{key}").text
        api = client.get(f"/api/v1/identities/{key}").json()
    assert re.search(r'class="identity-name"[^>]*>alice<', listing)
    assert re.search(r'<h1 id="identity-name">alice', page)
    assert key in page  # the key stays, as the secondary line
    assert "anon:?" not in listing
    assert api["label"] == "alice" and "developer" in api["role"]


def test_approle_clients_are_named_by_their_role_name(make_app: Callable[..., Any], ui_seed: Seed) -> None:
    # The demo org's AppRole role; every token of it reads runtime secrets.
    runtime = [e for e in ui_seed.events if e.identity.role_name == "pxl-core-runtime"]
    assert runtime, "the seed's AppRole entries should carry auth.metadata.role_name"
    key = runtime[0].identity.key
    assert key.startswith("entity:")
    with TestClient(make_app()) as client:
        _login(client)
        api = client.get(f"/api/v1/identities/{key}").json()
        listing = client.get("/api/v1/identities", params={"limit": 200}).json()
        page = client.get(f"/ui/identities/{key}").text
    assert api["label"] == "pxl-core-runtime" and "AppRole" in api["role"] and "approle" in api["role"]
    assert next(i for i in listing["items"] if i["key"] == key)["label"] == "pxl-core-runtime"
    assert re.search(r'<h1 id="identity-name">pxl-core-runtime', page)


def test_offboarding_page_lists_what_to_rotate_and_no_secret_value(
    make_app: Callable[..., Any], ui_seed: Seed
) -> None:
    alice = next(a for a in ui_seed.alerts if (a.identity.display_name or "").endswith("-alice"))
    key = alice.identity.key
    # What alice read after each secret's last successful write: the secrets to rotate.
    reads: dict[str, float] = {}
    writes: dict[str, float] = {}
    for e in ui_seed.events:
        if e.outcome != "ok":
            continue
        if e.identity.key == key and e.operation in ("read", "list", "scan"):
            reads[e.path] = max(reads.get(e.path, 0.0), e.ts)
        elif e.operation in ("create", "update", "patch"):
            writes[e.path] = max(writes.get(e.path, 0.0), e.ts)
    expected = {p for p, t in reads.items() if t > writes.get(p, float("-inf"))}
    assert "logos/data/pxl-core/runtime/jwt-key" in expected  # the developer's read of a runtime secret
    with TestClient(make_app()) as client:
        _login(client)
        identity_page = client.get(f"/ui/identities/{key}").text
        resp = client.get("/ui/exposure/identity", params={"identity": key})
        missing = client.get("/ui/exposure/identity")
        client.cookies.clear()
        anonymous = client.get("/ui/exposure/identity", params={"identity": key}, follow_redirects=False)
    assert missing.status_code == 422 and "Give an identity" in missing.text
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/ui/login?next=")
    assert 'href="/ui/exposure/identity?identity=' in identity_page
    assert resp.status_code == 200
    page = resp.text
    assert re.search(r'<h1 id="offboarding-h">Offboarding: alice<', page)
    table = page[
        page.index('<table id="secrets"') : page.index("</table>", page.index('<table id="secrets"'))
    ]
    assert set(re.findall(r'<td class="mono">([^<]+)</td>', table)) == expected
    rotation = page[
        page.index('<ol id="rotation-list">') : page.index("</ol>", page.index('<ol id="rotation-list">'))
    ]
    assert all(f"rotate {p} " in rotation for p in expected)
    # Paths, times and addresses only: none of the values the demo org stored, nor a password.
    assert not re.search(r"demo-[a-z-]+-v\d", page) and "demo-pw" not in page
    assert "hmac-sha256:" not in page
