"""Correlating detectors (detect/correlate.py) on entries from a real OpenBao server.

One dev server is driven through hvac; each step's parsed entries are re-timed (``retime``) so a
habit learned over days and a burst within minutes can be told apart. Each detector has a hostile
case that must alert at medium or above and a benign counter-case that must stay below medium.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import hvac.exceptions
import msgspec
import pytest

from detect.correlate import correlate_rules, network_of
from detect.templates import subnet_of
from detect.types import Detector, Finding
from ingest.event import AuditEvent
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer

from .conftest import AuditCapture, Ctx, FakeBaselines, retime, run

T0 = 1772409600.0
DAY = 86400.0
PAGED = ("medium", "high", "critical")


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[AuditEvent]]]:
    work = tmp_path_factory.mktemp("bao-correlate")
    log = work / "audit.log"
    srv = OpenBaoServer(work, devices=[AuditDevice("file", "file", {"file_path": str(log)})])
    steps: dict[str, list[AuditEvent]] = {}
    try:
        srv.start()
        cap = AuditCapture(log)
        c = srv.client()
        c.sys.enable_secrets_engine("pki", path="certs-x")
        c.write("certs-x/root/generate/internal", common_name="example.test")
        c.write("certs-x/roles/web", allowed_domains="example.test", allow_subdomains=True, max_ttl="1h")
        c.sys.enable_auth_method("approle", path="machines-x")
        c.sys.create_or_update_policy("issuer-x", 'path "certs-x/issue/web" { capabilities = ["update"] }')
        c.write("auth/machines-x/role/app-a", token_policies="issuer-x")
        c.write("auth/machines-x/role/app-b", token_policies="issuer-x")
        cap.take()
        tok = c.auth.token.create(policies=["issuer-x"], ttl="1h")["auth"]["client_token"]
        cap.take()
        user = srv.client(token=tok)
        for _ in range(30):
            user.write("certs-x/issue/web", common_name="a.example.test", ttl="5m")
        steps["issue"] = cap.take()
        for i in range(12):
            c.sys.create_or_update_policy(f"p{i}", 'path "x" { capabilities = ["read"] }')
        cap.take()
        for i in range(12):
            user.write("sys/capabilities-self", paths=[f"secret/data/probe-{i}"])
        steps["probe"] = cap.take()
        c.list("auth/token/accessors")
        steps["accessors"] = cap.take()
        accs = [c.auth.token.create(policies=["default"], ttl="1h")["auth"]["accessor"] for _ in range(8)]
        cap.take()
        for acc in accs:
            c.write("auth/token/lookup-accessor", accessor=acc)
        steps["lookups"] = cap.take()
        for acc in accs:
            c.write("auth/token/revoke-accessor", accessor=acc)
        steps["revokes"] = cap.take()
        c.write("auth/machines-x/role/app-a/secret-id")
        steps["mint_a"] = cap.take()
        c.write("auth/machines-x/role/app-b/secret-id")
        steps["mint_b"] = cap.take()
        c.write(
            "auth/machines-x/role/app-b",
            token_policies="issuer-x,root",
            bind_secret_id=False,
            token_bound_cidrs="10.0.0.0/8",
        )
        steps["role_change"] = cap.take()
        ent = c.write("identity/entity", name="victim", policies="issuer-x")["data"]["id"]
        steps["entity"] = cap.take()
        mounts = c.sys.list_auth_methods()
        accessor = mounts["machines-x/"]["accessor"]
        c.write("identity/entity-alias", name="some-role-id", canonical_id=ent, mount_accessor=accessor)
        steps["alias"] = cap.take()
        c.sys.create_or_update_policy(
            "roles-x", 'path "auth/machines-x/role/*" { capabilities = ["create", "update"] }'
        )
        ops = srv.client(token=c.auth.token.create(policies=["roles-x"], ttl="1h")["auth"]["client_token"])
        cap.take()
        ops.write("auth/machines-x/role/app-c", token_policies="default")
        steps["ops_role_create"] = cap.take()
        ops.write("auth/machines-x/role/app-a", token_policies="issuer-x,roles-x")
        steps["ops_role_change"] = cap.take()
        nobody = srv.client(token=tok)
        with contextlib.suppress(hvac.exceptions.VaultError):
            nobody.sys.seal()
        steps["seal"] = cap.take()
    finally:
        srv.cleanup()
    yield steps


def _det(name: str, **cfg: float) -> Detector:
    (det,) = [d for d in correlate_rules({"warmup_hours": 1.0, **cfg}) if d.name == name]
    return det


def _resp(events: list[AuditEvent], start: float, step: float = 1.0) -> list[AuditEvent]:
    return [retime(e, start + i * step) for i, e in enumerate(x for x in events if x.is_response)]


def _paged(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.severity in PAGED]


def _known(events: list[AuditEvent]) -> Ctx:
    """A baseline that knows every identity (history, its subnets)."""
    counts = {}
    for e in events:
        counts[(e.identity.key, "mount", "x")] = 100.0
        if e.remote_ip:
            counts[(e.identity.key, "subnet", subnet_of(e.remote_ip))] = 10.0
    return Ctx(baselines=FakeBaselines(counts))


def test_network_of() -> None:
    assert network_of("10.1.2.3") == network_of("10.1.200.9") != network_of("10.2.0.1")
    assert network_of("::1") is None and network_of("not-an-ip") is None


def test_dynamic_credential_burst_real_pki(bao: dict[str, list[AuditEvent]]) -> None:
    issued = [e for e in bao["issue"] if e.is_response]
    assert issued and all(e.mount_type == "pki" for e in issued)
    # Habit: a few certificates an hour for a week, then 30 within a minute.
    habit = [retime(issued[i % 3], T0 + i * 3600.0) for i in range(7 * 24)]
    burst = _resp(issued, T0 + 8 * DAY, 2.0)
    found = _paged(run(_det("dynamic-credential-burst"), habit + burst))
    assert len(found) == 1 and "certificates issued" in found[0].title
    assert "its usual: <= 1" in found[0].reasons[1].observed
    assert set(found[0].event_ids) <= {e.request_id for e in burst}
    # Benign: the same habitual pace never alerts.
    assert not run(_det("dynamic-credential-burst"), habit)


def test_capability_probing_real(bao: dict[str, list[AuditEvent]]) -> None:
    probes = _resp(bao["probe"], T0 + 8 * DAY, 3.0)
    assert _paged(run(_det("capability-probing"), probes))
    # Benign: a handful of checks stays quiet.
    assert not run(_det("capability-probing"), probes[:5])


def test_accessor_listing_and_lookups_real(bao: dict[str, list[AuditEvent]]) -> None:
    det = _det("accessor-enumeration")
    warm = _resp(bao["accessors"], T0)  # the detector's first entry starts its warm-up
    listing = _resp(bao["accessors"], T0 + 8 * DAY)
    found = run(det, warm + listing)
    # Root's listing is root-token-use's: no finding from this detector.
    assert not found
    lookups = _resp(bao["lookups"], T0 + 8 * DAY, 1.0)
    assert lookups and all(e.identity.is_root for e in lookups)


def test_mass_revocation_and_seal_real(bao: dict[str, list[AuditEvent]]) -> None:
    seal = [retime(e, T0 + DAY) for e in bao["seal"]]
    found = run(_det("seal-attempt"), seal)
    assert len(found) == 1 and found[0].severity == "high" and "Seal" in found[0].title


def test_approle_and_identity_real(bao: dict[str, list[AuditEvent]]) -> None:
    mint = [e for e in bao["mint_a"] if e.is_response]
    assert mint and mint[0].mount_type == "approle"
    change = [e for e in bao["role_change"] if e.is_response]
    assert change and change[0].request.data and change[0].request.data.get("bind_secret_id") is False
    alias = [e for e in bao["alias"] if e.is_response and e.path == "identity/entity-alias"]
    assert alias and "canonical_id" in (alias[0].request.data or {})


def _at(events: list[AuditEvent], ip: str, start: float, step: float = 60.0) -> list[AuditEvent]:
    """Real response entries of one token, re-timed and moved to source address ``ip``."""
    return [msgspec.structs.replace(e, remote_ip=ip) for e in _resp(events, start, step)[:5]]


OFFICE, VPN, FOREIGN = "10.20.0.5", "172.16.4.9", "185.220.101.4"


def _office_and_vpn_days(uses: list[AuditEvent], days: int) -> list[AuditEvent]:
    """A person's token at the office in the morning and over the VPN in the evening, each day."""
    out: list[AuditEvent] = []
    for d in range(days):
        out += _at(uses, OFFICE, T0 + d * DAY + 9 * 3600.0)
        out += _at(uses, VPN, T0 + d * DAY + 20 * 3600.0)
    return out


def test_session_hijack_between_two_networks_used_on_earlier_days_is_not_paged(
    bao: dict[str, list[AuditEvent]],
) -> None:
    uses = bao["issue"]
    history = _office_and_vpn_days(uses, 3)
    morning = T0 + 3 * DAY + 8 * 3600.0
    found = run(
        _det("session-hijack"), [*history, *_at(uses, VPN, morning), *_at(uses, OFFICE, morning + 3600.0)]
    )
    # One token, VPN then office an hour apart: both networks are the identity's own (earlier days).
    assert [f.severity for f in found] == ["low"]
    assert "none" in json.dumps(msgspec.to_builtins(found[0].reasons))


def test_session_hijack_with_a_network_new_to_the_identity_is_high(bao: dict[str, list[AuditEvent]]) -> None:
    uses = bao["issue"]
    resp = [e for e in uses if e.is_response]
    history = _office_and_vpn_days(uses, 3)
    morning = T0 + 3 * DAY + 9 * 3600.0
    # The owner at the office, the thief abroad, the owner again: two clients hold the token.
    hostile = [
        *history,
        *_at(resp[:4], OFFICE, morning),
        *_at(resp[4:8], FOREIGN, morning + 1800.0),
        *_at(resp[8:12], OFFICE, morning + 2400.0),
    ]
    found = _paged(run(_det("session-hijack"), hostile))
    assert [f.severity for f in found] == ["high"] and FOREIGN in found[0].title
    assert "alternating" in found[0].title
    assert "185.220.0.0/16" in json.dumps(msgspec.to_builtins(found[0].reasons))
    # The thief's requests are the alert's evidence, next to the owner's return.
    thief = {e.request_id for e in _at(resp[4:8], FOREIGN, morning + 1800.0)}
    assert thief & set(found[0].event_ids)
    # A network first used today is new too, even though the identity used it an hour earlier.
    only_office = [e for e in history if e.remote_ip == OFFICE]
    found = run(
        _det("session-hijack"),
        [
            *only_office,
            *_at(resp[:4], VPN, morning - 3600.0),
            *_at(resp[4:8], OFFICE, morning),
            *_at(resp[8:12], VPN, morning + 600.0),
        ],
    )
    assert [f.severity for f in found if f.severity in PAGED] == ["high"]


def test_a_token_that_moves_once_to_a_new_network_is_not_paged(bao: dict[str, list[AuditEvent]]) -> None:
    # Scoreboard org-6: people at the office who, an hour later, connect through a VPN they never
    # used before and stay there. One client roaming, not two clients: stored (low), not paged.
    uses = bao["issue"]
    resp = [e for e in uses if e.is_response]
    only_office = [e for e in _office_and_vpn_days(uses, 3) if e.remote_ip == OFFICE]
    morning = T0 + 3 * DAY + 9 * 3600.0
    roam = [*only_office, *_at(resp[:5], OFFICE, morning), *_at(resp[5:10], VPN, morning + 4000.0)]
    found = run(_det("session-hijack"), roam)
    assert [f.severity for f in found] == ["low"], found
    assert "moved" in found[0].title and VPN in found[0].title
    # The same to a foreign network: still one move (a stolen token used alone is judged by the
    # behaviour detectors: a new address for the identity), not a shared session.
    away = [*only_office, *_at(resp[:5], OFFICE, morning), *_at(resp[5:10], FOREIGN, morning + 1800.0)]
    assert _paged(run(_det("session-hijack"), away)) == []


def test_session_hijack_state_round_trips(bao: dict[str, list[AuditEvent]]) -> None:
    uses = bao["issue"]
    history = _office_and_vpn_days(uses, 3)
    morning = T0 + 3 * DAY + 9 * 3600.0
    # State round-trips: what each identity used before survives a restart.
    det = _det("session-hijack")
    run(det, history)
    again = _det("session-hijack")
    again.load(msgspec.json.decode(msgspec.json.encode(det.state())))
    later = [*_at(uses, VPN, morning), *_at(uses, OFFICE, morning + 3600.0)]
    assert [f.severity for f in run(again, later)] == ["low"]


def test_alternating_between_two_familiar_networks_is_still_paged(bao: dict[str, list[AuditEvent]]) -> None:
    # CI org-3 of the scoreboard: the thief had logged in from its network the day before (a
    # stuffing wave), so both networks were "used on earlier days"; the token still alternated
    # between the owner's office and the thief within seconds: two clients at once (medium).
    uses = bao["issue"]
    resp = [e for e in uses if e.is_response]
    history = _office_and_vpn_days(uses, 3)
    morning = T0 + 3 * DAY + 9 * 3600.0
    both = [
        *history,
        *_at(resp[:3], OFFICE, morning),
        *_at(resp[3:6], VPN, morning + 200.0),
        *_at(resp[6:9], OFFICE, morning + 400.0),
    ]
    found = _paged(run(_det("session-hijack"), both))
    assert [f.severity for f in found] == ["medium"] and "alternating" in found[0].title
    # An identity whose earlier tokens alternated between the same two networks (a split-tunnel
    # VPN) does it by habit: not paged.
    det = _det("session-hijack")
    run(det, both)
    later = [
        msgspec.structs.replace(e, auth=msgspec.structs.replace(e.auth, accessor="hmac-sha256:other"))
        for e in [
            *_at(resp[:3], OFFICE, morning + DAY),
            *_at(resp[3:6], VPN, morning + DAY + 200.0),
            *_at(resp[6:9], OFFICE, morning + DAY + 400.0),
        ]
    ]
    assert _paged(run(det, later)) == []


def test_a_role_creator_rewriting_an_existing_roles_policies_is_paged(
    bao: dict[str, list[AuditEvent]],
) -> None:
    """Regression (scoreboard, large org-101: a security administrator who had created a role for a
    new service later rewrote another role's ``token_policies``; one earlier "role write" made the
    change habitual, and it was stored at low). Creating roles and changing existing ones are
    different habits; Vault logs ``create`` for a new role and ``update`` for an existing one."""
    create = [e for e in bao["ops_role_create"] if e.is_response]
    change = [e for e in bao["ops_role_change"] if e.is_response]
    assert [e.operation for e in create] == ["create"] and [e.operation for e in change] == ["update"]
    det = _det("approle-role-change")
    assert [f.severity for f in run(det, [retime(e, T0) for e in create])] == ["low"]  # warm-up
    later = [retime(e, T0 + 8 * DAY) for e in change]
    found = run(det, later, _known(later))
    assert [f.severity for f in found] == ["high"], found
    assert "changed (token_policies)" in found[0].title
    # Creating another role is the habit it has: not paged.
    again = [retime(e, T0 + 9 * DAY) for e in create]
    assert _paged(run(det, again, _known(again))) == []
