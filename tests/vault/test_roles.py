"""Roles by capability (issue 14 item 2) against a real OpenBao, with policies of random names.

Nothing here is named like the access model's roles: the mounts, policies and AppRole roles get
random names, so a role can only come from what each policy grants on the protected paths.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from detect.engine import Engine
from detect.policy import (
    CAPABILITY_KEY,
    CapabilityRoleBook,
    CapabilityRoles,
    Grant,
    admin_evidence,
    decide_capability_role,
    default_policy,
)
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.demo.servers import OpenBaoServer
from vaultwatch.vault.client import VaultAuth, VaultClient, VaultClientError
from vaultwatch.vault.roles import CapabilityRefresher, VaultAccess, capability_roles_of, fetch_access


def _name(prefix: str = "p") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# -- the pure decision ---------------------------------------------------------------------------
def test_decision_from_grants_not_names() -> None:
    model = default_policy()
    kv = {"kv9/": "kv-v2"}
    g = {
        # Named like the CI role, but grants read on the runtime area: the grant decides.
        "ci-looking": (Grant("kv9/data/logos/pxl-core/runtime/*", frozenset({"read"})),),
        "b": (Grant("kv9/data/logos/pxl-core/build/*", frozenset({"read", "list"})),),
        "w": (Grant("kv9/data/logos/pxl-core/runtime/*", frozenset({"read", "update"})),),
        "wide": (Grant("kv9/data/*", frozenset({"read"})),),
        "none": (Grant("kv9/data/team/*", frozenset({"read", "update"})),),
        "denied": (
            Grant("kv9/data/logos/pxl-core/runtime/*", frozenset({"read"})),
            Grant("kv9/data/logos/pxl-core/runtime/*", frozenset({"deny"})),
        ),
    }
    role = decide_capability_role(model, ["ci-looking"], g, kv)
    assert role.role == "runtime" and "read-only on kv9/data/logos/pxl-core/runtime/*" in role.evidence
    assert decide_capability_role(model, ["b"], g, kv, token_ttl=600).role == "ci"
    long_ci = decide_capability_role(model, ["b"], g, kv, token_ttl=86400)
    assert long_ci.role is None and "tokens live 1d" in long_ci.evidence
    assert decide_capability_role(model, ["w"], g, kv).role is None
    assert decide_capability_role(model, ["wide"], g, kv).role is None
    dev = decide_capability_role(model, ["none"], g, kv)
    assert dev.role == "developer"
    assert dev.evidence == "role from policy `none`: no grant on logos/pxl-core/*"
    # A deny on the same path removes the grant.
    assert decide_capability_role(model, ["denied"], g, kv).role == "developer"
    # The protected glob also works when the area is the mount itself (logos/ as a KV mount).
    logos = {"r": (Grant("logos/data/pxl-core/runtime/*", frozenset({"read"})),)}
    assert decide_capability_role(model, ["r"], logos, {"logos/": "kv-v2"}).role == "runtime"


def test_admin_by_grant() -> None:
    g = {
        "x1": (Grant("sys/policies/acl/*", frozenset({"create", "update"})),),
        "x2": (Grant("sys/mounts/*", frozenset({"read"})),),
        "x3": (Grant("auth/token/create", frozenset({"update"}), policies_settable=False),),
        "x4": (Grant("auth/token/create", frozenset({"update"})),),
        "x5": (Grant("sys/auth/+", frozenset({"sudo"})),),
        "x6": (Grant("*", frozenset({"create", "update", "read"})),),
    }
    assert admin_evidence(["x1"], g) == "policy `x1` grants create, update on sys/policies/acl/*"
    assert admin_evidence(["x2"], g) == ""  # reading mounts administers nothing
    assert admin_evidence(["x3"], g) == ""  # may not choose the new token's policies
    assert admin_evidence(["x4"], g) != ""
    assert admin_evidence(["x5"], g) != ""
    assert admin_evidence(["x6"], g) != ""
    assert admin_evidence(["root"], {}) == "root policy"


# -- against OpenBao ------------------------------------------------------------------------------
def _events(path: Path, offset: int = 0) -> list[AuditEvent]:
    parser = Parser()
    data = path.read_bytes()[offset:]
    return [parser.parse(line) for line in data[: data.rfind(b"\n") + 1].splitlines() if line.strip()]


@pytest.mark.integration
def test_roles_from_a_real_openbao(openbao: OpenBaoServer) -> None:
    root = openbao.client()
    mount = _name("m")
    root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    for area in ("runtime", "build"):
        root.secrets.kv.v2.create_or_update_secret(
            path=f"logos/pxl-core/{area}/key", secret={"v": "x"}, mount_point=mount
        )
    root.secrets.kv.v2.create_or_update_secret(path="team/notes", secret={"v": "x"}, mount_point=mount)
    run_p, ci_p, slow_p, dev_p, rot_p, adm_p = (_name() for _ in range(6))
    policies = {
        run_p: f'path "{mount}/data/logos/pxl-core/runtime/*" {{ capabilities = ["read"] }}',
        ci_p: f'path "{mount}/data/logos/pxl-core/build/*" {{ capabilities = ["read", "list"] }}',
        slow_p: f'path "{mount}/data/logos/pxl-core/build/*" {{ capabilities = ["read"] }}',
        dev_p: f'path "{mount}/data/team/*" {{ capabilities = ["read", "create", "update"] }}',
        rot_p: f'path "{mount}/data/logos/pxl-core/runtime/*" {{ capabilities = ["read", "update"] }}',
        adm_p: 'path "sys/policies/acl/*" { capabilities = ["create", "update", "read"] }\n'
        'path "sys/policy/*" { capabilities = ["create", "update"] }',
    }
    for name, text in policies.items():
        root.sys.create_or_update_acl_policy(name, text)
    approle = _name("ar")
    root.sys.enable_auth_method("approle", path=approle)
    root.auth.approle.create_or_update_approle(
        _name("r"), token_policies=[ci_p], token_ttl="10m", mount_point=approle
    )
    root.auth.approle.create_or_update_approle(
        _name("r"), token_policies=[slow_p], token_ttl="24h", mount_point=approle
    )
    with VaultClient(openbao.addr, VaultAuth(method="token", token=openbao.root_token)) as vc:
        access = fetch_access(vc)
        assert access.mounts[f"{mount}/"] == "kv-v2"
        assert access.auth_mounts[f"auth/{approle}/"] == "approle"
        assert {r.token_ttl for r in access.auth_roles if r.mount == f"auth/{approle}/"} == {600.0, 86400.0}
        caps = capability_roles_of(access)
        model = default_policy()

        def role(*names: str) -> Any:
            got = caps.resolve(model, ("default", *names))
            assert got is not None, names
            return got

        assert role(run_p).role == "runtime"
        assert role(ci_p).role == "ci" and "token TTL 10m" in role(ci_p).evidence
        assert role(slow_p).role is None and "tokens live 1d" in role(slow_p).evidence
        assert role(dev_p).role == "developer"
        assert role(rot_p).role is None
        assert role(adm_p).admin and not role(dev_p).admin
        assert caps.resolve(model, ("default", _name())) is None  # a policy Vault did not list

        # Detection with the mapping: a token of the developer-like policy reading a runtime
        # secret is a violation whose explanation names the source; the runtime token reading
        # its own secret is not.
        dev_tok = root.auth.token.create(policies=[dev_p], ttl="1h")["auth"]["client_token"]
        run_tok = root.auth.token.create(policies=[run_p], ttl="1h")["auth"]["client_token"]
        offset = openbao.audit_log.stat().st_size  # only what follows
        for tok in (dev_tok, run_tok):
            c = openbao.client(token=tok)
            try:
                c.secrets.kv.v2.read_secret_version(
                    path="logos/pxl-core/runtime/key", mount_point=mount, raise_on_deleted_version=False
                )
            except Exception:  # noqa: BLE001 - the developer is denied; the entry is what counts
                pass
        book = CapabilityRoleBook()
        refresher = CapabilityRefresher(vc, book=book)
        refresher.refresh()
        assert book.current.grants.keys() >= set(policies)
    events = _events(openbao.audit_log, offset)
    assert events
    engine = Engine({"model_enabled": False, CAPABILITY_KEY: book})
    alerts = [a for a in engine.process_batch(events) if a.detector == "access-model-violation"]
    assert len(alerts) == 1, [a.title for a in alerts]
    alert = alerts[0]
    assert dev_p in alert.identity.policies and alert.severity == "medium"  # Vault denied it
    role_reason = alert.explanation[0]
    assert role_reason.observed == "developer (from Vault policies)"
    assert role_reason.baseline == f"role from policy `{dev_p}`: no grant on logos/pxl-core/*"
    # Without the mapping the same entries are judged by behaviour only: nothing yet.
    plain = Engine({"model_enabled": False})
    assert [a for a in plain.process_batch(events) if a.detector == "access-model-violation"] == []


def test_refresher_keeps_the_last_mapping_when_vault_fails() -> None:
    calls = {"n": 0}
    good = VaultAccess(addr="http://vault", policies={})

    def fetch() -> VaultAccess:
        calls["n"] += 1
        if calls["n"] > 1:
            raise VaultClientError("vault unreachable at http://vault: ConnectionError")
        return good

    book = CapabilityRoleBook()
    ref = CapabilityRefresher(None, book=book, fetch=fetch, ttl=0.05, min_backoff=0.01)
    first = ref.refresh()
    assert isinstance(first, CapabilityRoles) and book.current is first
    ref.start()
    try:
        import time

        deadline = time.monotonic() + 5
        while ref.stats["failures"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        ref.close()
    assert ref.stats["failures"] >= 2 and "unreachable" in str(ref.stats["last_error"])
    assert book.current is first  # detection keeps the last good mapping


@pytest.mark.integration
def test_policy_admin_by_capability_not_by_name(openbao: OpenBaoServer) -> None:
    """``policy-change`` calls a writer an administrator by what its policies grant (a random
    name here); a policy merely *named* admin grants nothing and makes no administrator."""
    root = openbao.client()
    sec, fake = _name("s"), "admin"
    root.sys.create_or_update_acl_policy(
        sec, 'path "sys/policies/acl/*" { capabilities = ["create", "update"] }'
    )
    root.sys.create_or_update_acl_policy(fake, 'path "secret/data/x" { capabilities = ["read"] }')
    sec_tok = root.auth.token.create(policies=[sec], ttl="1h")["auth"]["client_token"]
    offset = openbao.audit_log.stat().st_size
    openbao.client(token=sec_tok).sys.create_or_update_acl_policy(
        _name("agent"), 'path "a/*" { capabilities = ["read"] }'
    )
    with VaultClient(openbao.addr, VaultAuth(method="token", token=openbao.root_token)) as vc:
        book = CapabilityRoleBook()
        CapabilityRefresher(vc, book=book).refresh()
    events = _events(openbao.audit_log, offset)

    def change(config: dict[str, Any]) -> Any:
        found = [
            a
            for a in Engine({"model_enabled": False, **config}).process_batch(events)
            if a.detector == "policy-change"
        ]
        assert len(found) == 1
        return found[0]

    def writer(alert: Any) -> tuple[str, str]:
        reason = next(r for r in alert.explanation if r.feature == "writer")
        return reason.observed, reason.baseline

    by_grant = change({CAPABILITY_KEY: book})
    assert writer(by_grant) == (
        "an administrator's change",
        f"administrator: policy `{sec}` grants create, update on sys/policies/acl/*",
    )
    # Without Vault (before: any policy named "admin" made an administrator): a first change by
    # an identity not known to administer anything.
    assert writer(change({}))[0] == "first policy change by an identity that is no administrator"
    assert book.current.admin(("default", fake)) == ""  # the name alone makes no administrator
