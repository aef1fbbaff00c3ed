"""Rule precision on real audit logs (issue 14, items 6, 7 and 9), each case made by a real OpenBao.

The module starts one OpenBao dev server that allows audit devices to be managed through the API
(``unsafe_allow_api_audit_creation``, as Vault always does), with a normal and a ``log_raw`` file
device, and drives the cases the public logs showed: an audit device added, re-added over an
existing path, disabled and re-created with other options; attempts without the right; a policy
write whose response entry is lost; several identities writing through a ``log_raw`` device; an
AppRole service and a userpass administrator whose alerts must name them as a person reads them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import hvac.exceptions
import msgspec
import pytest

from detect.engine import Engine
from detect.rules import (
    AdminWork,
    AuditTampering,
    PlaintextSecretInAudit,
    PolicyChange,
    RulesConfig,
    SecretsEngineChange,
    TokenPrivilegeEscalation,
)
from detect.templates import subnet_of
from detect.types import Finding
from ingest.event import AuditEvent
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer

from .conftest import CANARY_PASSWORD, CANARY_SECRET, AuditCapture, Ctx, FakeBaselines, retime, run

pytestmark = pytest.mark.integration

_OPS_POLICY = """
path "sys/policies/acl/agent-*" { capabilities = ["create", "update", "read", "delete"] }
path "sys/policy/agent-*" { capabilities = ["create", "update", "read", "delete"] }
path "auth/token/create" { capabilities = ["create", "update", "sudo"] }
path "auth/token/create-orphan" { capabilities = ["create", "update", "sudo"] }
path "secret/data/ops/*" { capabilities = ["create", "update", "read"] }
path "sys/mounts/team-*" { capabilities = ["create", "update", "read"] }
"""


@dataclass
class Real:
    steps: dict[str, list[AuditEvent]]
    raw: list[AuditEvent]
    secrets: list[str]

    def __getitem__(self, name: str) -> list[AuditEvent]:
        return self.steps[name]


def _quiet(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(hvac.exceptions.VaultError):
        fn()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Real]:
    work = tmp_path_factory.mktemp("bao-real")
    main, raw = work / "audit.log", work / "raw.log"
    devices = [
        AuditDevice("file", "file", {"file_path": str(main)}),
        AuditDevice("file", "raw", {"file_path": str(raw), "log_raw": "true"}),
    ]
    srv = OpenBaoServer(work, devices=devices, extra_config="unsafe_allow_api_audit_creation = true\n")
    secrets: list[str] = [srv.root_token]
    steps: dict[str, list[AuditEvent]] = {}
    cap = AuditCapture(main)
    try:
        srv.start()
        c = srv.client()

        def step(name: str) -> None:
            steps[name] = cap.take()

        step("startup")
        c.sys.create_or_update_policy("ops-team", _OPS_POLICY)
        c.sys.create_or_update_policy("agent-read", 'path "secret/data/agents/*" { capabilities = ["read"] }')
        c.sys.enable_auth_method("userpass")
        c.sys.enable_auth_method("approle")
        c.auth.userpass.create_or_update_user("dana", password=CANARY_PASSWORD, policies=["ops-team"])
        c.auth.userpass.create_or_update_user("finn", password=CANARY_PASSWORD, policies=["ops-team"])
        c.auth.userpass.create_or_update_user("eve", password=CANARY_PASSWORD, policies=["default"])
        c.auth.approle.create_or_update_approle("billing-api", token_policies=["default"])
        step("setup")
        anon = srv.client(token="")
        dt = anon.auth.userpass.login("dana", CANARY_PASSWORD, use_token=False)["auth"]["client_token"]
        et = anon.auth.userpass.login("eve", CANARY_PASSWORD, use_token=False)["auth"]["client_token"]
        role_id = c.auth.approle.read_role_id("billing-api")["data"]["role_id"]
        secret_id = c.auth.approle.generate_secret_id("billing-api")["data"]["secret_id"]
        st = anon.auth.approle.login(role_id, secret_id, use_token=False)["auth"]["client_token"]
        ft = anon.auth.userpass.login("finn", CANARY_PASSWORD, use_token=False)["auth"]["client_token"]
        secrets += [dt, et, st, ft]
        dana, eve, svc = srv.client(token=dt), srv.client(token=et), srv.client(token=st)
        finn = srv.client(token=ft)
        step("logins")

        # Audit devices: added, re-added over the same path, disabled, re-created with other options.
        c.sys.enable_audit_device("file", options={"file_path": str(work / "extra.log")}, path="extra")
        step("audit_add")
        _quiet(
            lambda: c.sys.enable_audit_device(
                "file", options={"file_path": str(work / "other.log")}, path="extra"
            )
        )
        step("audit_readd")
        c.sys.disable_audit_device("extra")
        step("audit_disable")
        c.sys.enable_audit_device(
            "file", options={"file_path": str(work / "other.log"), "log_raw": "true"}, path="extra"
        )
        step("audit_recreate")
        _quiet(
            lambda: eve.sys.enable_audit_device("file", options={"file_path": "/tmp/evil.log"}, path="evil")
        )
        step("audit_add_denied")
        _quiet(lambda: eve.sys.disable_audit_device("file"))
        step("audit_disable_denied")
        c.write("sys/config/auditing/request-headers/x-request-id", hmac=False)
        step("audit_headers")

        # Administration by a userpass admin and an AppRole service.
        dana.sys.read_acl_policy("agent-read")
        step("dana_policy_read")
        dana.sys.create_or_update_policy("agent-extra", 'path "secret/data/x" { capabilities = ["read"] }')
        step("dana_policy_write")
        secrets.append(dana.auth.token.create(policies=["agent-read"], ttl="1h")["auth"]["client_token"])
        step("dana_token_beyond_own")
        _quiet(lambda: svc.sys.create_or_update_policy("agent-mine", 'path "*" { capabilities = ["sudo"] }'))
        step("svc_policy_denied")
        # A second holder of the same policies (a colleague of the same team) at work.
        finn.sys.create_or_update_policy("agent-other", 'path "secret/data/y" { capabilities = ["read"] }')
        step("finn_policy_write")
        finn.sys.delete_policy("agent-other")
        step("finn_policy_delete")
        finn.sys.enable_secrets_engine("kv", path="team-x", options={"version": "2"})
        finn.sys.tune_mount_configuration("team-x", default_lease_ttl="768h")
        step("finn_mount_new")

        # Writes through a log_raw device by several identities.
        dana.secrets.kv.v2.create_or_update_secret(
            "ops/one", secret={"a": CANARY_SECRET}, mount_point="secret"
        )
        dana.secrets.kv.v2.create_or_update_secret(
            "ops/two", secret={"b": CANARY_SECRET}, mount_point="secret"
        )
        c.secrets.kv.v2.create_or_update_secret("root/x", secret={"r": CANARY_SECRET}, mount_point="secret")
        step("raw_writes")
    finally:
        srv.cleanup()
    yield Real(steps=steps, raw=AuditCapture(raw).take(), secrets=secrets)


def sev(findings: list[Finding]) -> list[str]:
    return [f.severity for f in findings]


# -- audit devices (item 7) ------------------------------------------------------------------------
def test_enabling_an_audit_device_is_an_addition_not_tampering(real: Real) -> None:
    added = run(AuditTampering(), real["audit_add"])
    assert sev(added) == ["medium"], added
    assert "added" in added[0].title and "tampering" not in added[0].title.lower()
    # Re-adding over a path that exists (Vault refuses, the intent is an option change): critical.
    rule = AuditTampering()
    run(rule, real["audit_add"])
    assert sev(run(rule, real["audit_readd"])) == ["critical"]
    assert sev(run(rule, real["audit_disable"])) == ["critical"]
    recreated = run(rule, real["audit_recreate"])
    assert sev(recreated) == ["critical"] and "extra" in recreated[0].title
    # A device path seen only being disabled is known too.
    rule2 = AuditTampering()
    run(rule2, real["audit_disable"])
    assert sev(run(rule2, real["audit_recreate"])) == ["critical"]
    # Attempts without the right are high, whatever the act; header changes stay high.
    assert sev(run(AuditTampering(), real["audit_add_denied"])) == ["high"]
    assert sev(run(AuditTampering(), real["audit_disable_denied"])) == ["high"]
    assert sev(run(AuditTampering(), real["audit_headers"])) == ["high"]
    # Disabling still alerts on the request entry alone (its response may never be written).
    req_only = [e for e in real["audit_disable"] if e.is_request]
    assert sev(run(AuditTampering(), req_only)) == ["critical"]


def test_audit_device_state_round_trips(real: Real) -> None:
    rule = AuditTampering()
    run(rule, real["audit_add"])
    twin = AuditTampering()
    twin.load(msgspec.json.decode(msgspec.json.encode(rule.state())))
    assert sev(run(twin, real["audit_readd"])) == ["critical"]


# -- request-only entries (item 6) -----------------------------------------------------------------
def _policy_alerts(alerts: list[Any]) -> list[Any]:
    return [a for a in alerts if a.detector == "policy-change"]


@pytest.mark.parametrize("behaviour", [True, False])
def test_policy_write_logged_only_as_a_request_still_alerts(real: Real, behaviour: bool) -> None:
    evs = real["dana_policy_write"]
    req = [e for e in evs if e.is_request]
    resp = [e for e in evs if e.is_response]
    assert len(req) == len(resp) == 1
    eng = Engine({"model_enabled": False, "behaviour_enabled": behaviour})
    assert _policy_alerts(eng.process_batch(req)) == []
    wait = eng.cfg.request_wait_seconds
    found = _policy_alerts(eng.flush(req[0].ts + wait + 1.0))
    assert len(found) == 1, found
    alert = found[0]
    assert alert.event_ids == (req[0].request_id,)
    assert "agent-extra" in alert.title and "no response" in alert.title
    assert alert.severity in ("medium", "high")
    # Exactly once: a later flush and the late response add nothing.
    assert _policy_alerts(eng.flush(req[0].ts + 10 * wait)) == []
    late = retime(resp[0], req[0].ts + 20 * wait)
    assert _policy_alerts(eng.process(late)) == []


def test_policy_write_with_its_response_alerts_once(real: Real) -> None:
    eng = Engine({"model_enabled": False})
    evs = real["dana_policy_write"]
    first = _policy_alerts(eng.process_batch(evs))
    assert len(first) == 1 and "no response" not in first[0].title
    later = _policy_alerts(eng.flush(evs[-1].ts + 3600.0))
    assert later == []


# -- plaintext secrets (item 7) ----------------------------------------------------------------------
def test_plaintext_names_each_identitys_fields(real: Real) -> None:
    raw = [e for e in real.raw if e.is_response and e.plaintext_fields]
    eng = Engine({"model_enabled": False, "behaviour_enabled": False}, detectors=[PlaintextSecretInAudit()])
    alerts = {a.id: a for a in eng.process_batch(raw) if a.detector == "plaintext-secret-in-audit"}
    by_identity: dict[str, list[Any]] = {}
    for a in alerts.values():
        by_identity.setdefault(a.identity.key, []).append(a)
    dana_events = [e for e in raw if e.identity.display_name == "userpass-dana"]
    assert dana_events, "the admin wrote through the raw device"
    dana_key = dana_events[0].identity.key
    assert dana_key in by_identity and len(by_identity) >= 3  # root, dana, the logins, ...
    # Each alert belongs to the identity whose entries it counts.
    for key, group in by_identity.items():
        ids = {e.request_id for e in raw if e.identity.key == key}
        for a in group:
            assert set(a.event_ids) <= ids, key
    # Each of the admin's alerts (one per mount) lists every field path its entries on that mount
    # wrote in clear, not only the first event's.
    for alert in by_identity[dana_key]:
        mount = alert.labels["mount"]
        want = sorted({f for e in dana_events if (e.mount_point or "-") == mount for f in e.plaintext_fields})
        listed = alert.explanation[0].observed.split(", ")
        assert listed == want, mount
        assert "dana" in alert.title and alert.identity.display_name == "userpass-dana"
    assert any(a.count > 1 for a in by_identity[dana_key])  # several entries, one alert
    blob = msgspec.json.encode(list(alerts.values())).decode()
    for secret in (CANARY_PASSWORD, CANARY_SECRET, *real.secrets):
        assert secret not in blob


# -- titles (item 9) -------------------------------------------------------------------------------
def test_titles_name_the_identity_as_a_person_reads_it(real: Real) -> None:
    pol = run(PolicyChange(), real["dana_policy_write"])
    assert len(pol) == 1 and "dana" in pol[0].title and "agent-extra" in pol[0].title
    assert "userpass" in pol[0].title
    esc = run(TokenPrivilegeEscalation(), real["dana_token_beyond_own"], Ctx(FakeBaselines(learning=True)))
    assert sev(esc) == ["high"] and "dana" in esc[0].title and "agent-read" in esc[0].title
    svc = run(PolicyChange(), real["svc_policy_denied"])
    assert sev(svc) == ["high"] and "AppRole role billing-api" in svc[0].title
    added = run(AuditTampering(), real["audit_add"])
    assert "root token" in added[0].title
    for f in pol + esc + svc + added:
        assert "\n" not in f.title and len(f.title) <= 160


# -- administrators by capability, as the entries show it (item 6; brief: no policy names) --------
_DAY = 86400.0


def _later(events: list[AuditEvent], days: float) -> list[AuditEvent]:
    return [retime(e, e.ts + days * _DAY) for e in events]


def _knows_subnet(events: list[AuditEvent]) -> Ctx:
    """A baseline in which the events' identities worked from their subnets before."""
    counts = {
        (e.identity.key, "subnet", subnet_of(e.remote_ip)): 5.0
        for e in events
        if e.remote_ip and e.is_response
    }
    return Ctx(FakeBaselines(counts))


def test_a_peer_of_an_administrator_changes_policies_and_mounts_at_low(real: Real) -> None:
    """Regression (scoreboard orgs 14, 15, 19: a security team's second administrator writing a
    team policy or enabling and tuning a planned mount for the first time raised a high
    ``policy-change`` and a medium ``secrets-engine-change``). Nothing names the policies: dana's
    successful policy write the day before shows what their shared policy set grants."""
    book = AdminWork()
    pol, mounts = PolicyChange(admin_work=book), SecretsEngineChange(admin_work=book)
    finn_write = _later(real["finn_policy_write"], 1)
    ctx = _knows_subnet(finn_write)
    assert sev(run(pol, real["dana_policy_write"], ctx)) == ["high"]  # nobody vouches for dana yet
    written = run(pol, finn_write, ctx)
    assert sev(written) == ["low"], written
    why = " ".join(f"{r.observed} {r.baseline}" for r in written[0].reasons)
    assert "userpass user dana" in why and "ops-team" in why and "entries seen" in why
    assert sev(run(mounts, _later(real["finn_mount_new"], 1), ctx)) == ["low", "low"]
    # A delete by an administrator stays medium (what the policy restricted is gone).
    deleted = run(pol, _later(real["finn_policy_delete"], 1), ctx)
    assert sev(deleted) == ["medium"] and "deleted" in deleted[0].title
    # The state (one book shared by the rules) survives a restart.
    twin = PolicyChange()
    twin.load(msgspec.json.decode(msgspec.json.encode(pol.state())))
    assert sev(run(twin, _later(real["finn_policy_write"], 2), ctx)) == ["low"]


def test_a_peer_is_no_administrator_the_same_day_or_from_a_new_network(real: Real) -> None:
    ctx = _knows_subnet(real["finn_policy_write"])
    book = AdminWork()
    pol = PolicyChange(admin_work=book)
    run(pol, real["dana_policy_write"], ctx)
    # The same day: the grant is not proven on an earlier day yet.
    assert sev(run(pol, real["finn_policy_write"], ctx)) == ["high"]
    # From a network finn never worked from: not vouched for.
    book2 = AdminWork()
    run(PolicyChange(admin_work=book2), real["dana_policy_write"], ctx)
    finn_key = real["finn_policy_write"][-1].identity.key
    elsewhere = Ctx(FakeBaselines({(finn_key, "subnet", "10.9.8.0/24"): 5.0}))
    stranger = run(PolicyChange(admin_work=book2), _later(real["finn_policy_write"], 1), elsewhere)
    assert sev(stranger) == ["high"]
    assert "never used" in " ".join(r.observed for r in stranger[0].reasons)
    # No history of its own at all: not vouched for either.
    fresh = run(PolicyChange(admin_work=book2), _later(real["finn_policy_write"], 1), Ctx(FakeBaselines()))
    assert sev(fresh) == ["high"] and "no history" in " ".join(r.observed for r in fresh[0].reasons)
    # Its own earlier work is the engine's habit, not a peer's evidence: alone, finn stays high
    # the first time and medium the next day.
    alone = PolicyChange()
    assert sev(run(alone, real["finn_policy_write"], ctx)) == ["high"]
    assert sev(run(alone, _later(real["finn_policy_write"], 1), ctx)) == ["medium"]
    # A mount change by someone whose peers never administered keeps its medium.
    assert sev(run(SecretsEngineChange(), real["finn_mount_new"], ctx)) == ["medium", "medium"]


def test_no_policy_name_makes_an_administrator() -> None:
    # The old fallback took policies named "admin" or "root" for administrators.
    assert "policy_admin_policies" not in RulesConfig.__struct_fields__


def test_an_identity_that_reads_vault_configuration_administers_it(real: Real) -> None:
    """Regression (the scenario suite, once the ``admin`` policy name no longer made an
    administrator: ops-kim, who lists auth methods and mounts as part of its admin tasks, raised a
    high and a medium for editing the developers' policy and onboarding a new hire). A successful
    read of Vault's configuration on an earlier day shows a grant on ``sys/`` that developers and
    services do not have."""
    write = real["dana_policy_write"]
    ctx = _knows_subnet(write)
    pol = PolicyChange()
    assert run(pol, _later(real["dana_policy_read"], -1), ctx) == []  # a read is learned, not reported
    found = run(pol, write, ctx)
    assert sev(found) == ["low"], found
    assert "read Vault's configuration" in " ".join(r.baseline for r in found[0].reasons)
    # The same day, the read proves nothing yet.
    same_day = PolicyChange()
    run(same_day, real["dana_policy_read"], ctx)
    assert sev(run(same_day, write, ctx)) == ["high"]
