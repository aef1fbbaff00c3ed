"""Helpers for detector tests: real audit entries from a real OpenBao server, and small fakes.

``bao_scenario`` (session scope) starts one OpenBao dev server with two file audit devices (the
normal HMAC'ing one and a ``log_raw`` one), drives a scripted set of benign and hostile requests
through hvac, and keeps the parsed events of each named step. The server is stopped as soon as
the script has run; tests then feed the steps they need to fresh detectors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hvac.exceptions
import msgspec
import pytest

from detect.types import Detector, Finding
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer

#: Values that must never appear in a finding.
CANARY_PASSWORD = "canary-pw-7Hq2xZ"
CANARY_SECRET = "canary-secret-Vd93kLm"


class FakeBaselines:
    """A :class:`~detect.types.BaselineView` answering from plain dicts."""

    def __init__(
        self, counts: dict[tuple[str, str, str], float] | None = None, *, learning: bool = False
    ) -> None:
        self.counts = dict(counts or {})
        self.learning = learning

    def in_learning(self, identity_key: str, now: float) -> bool:
        return self.learning

    def count(self, identity_key: str, feature: str, value: str, horizon: str = "long") -> float:
        return self.counts.get((identity_key, feature, value), 0.0)

    def total(self, identity_key: str, horizon: str = "long") -> float:
        return sum(v for (k, _, _), v in self.counts.items() if k == identity_key)


@dataclass
class Ctx:
    """A :class:`~detect.types.DetectContext`."""

    baselines: FakeBaselines = field(default_factory=FakeBaselines)
    config: dict[str, Any] = field(default_factory=dict)


def run(detector: Detector, events: list[AuditEvent], ctx: Ctx | None = None) -> list[Finding]:
    """Feed ``events`` in order and collect every finding."""
    ctx = ctx or Ctx()
    out: list[Finding] = []
    for ev in events:
        out.extend(detector.observe(ev, ctx))
    return out


def retime(event: AuditEvent, ts: float) -> AuditEvent:
    """The same real event, moved to event time ``ts``."""
    return msgspec.structs.replace(event, ts=ts, time=datetime.fromtimestamp(ts, UTC))


def responses(events: list[AuditEvent]) -> list[AuditEvent]:
    return [e for e in events if e.is_response]


class AuditCapture:
    """Reads what an audit file gained since the last :meth:`take`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.parser = Parser()

    def take(self) -> list[AuditEvent]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [
            self.parser.parse(line, source=self.path.name) for line in data[:end].splitlines() if line.strip()
        ]


@dataclass
class Scenario:
    steps: dict[str, list[AuditEvent]]
    raw: list[AuditEvent]
    secrets: list[str]

    def __getitem__(self, name: str) -> list[AuditEvent]:
        return self.steps[name]

    def all(self) -> list[AuditEvent]:
        return [e for evs in self.steps.values() for e in evs]


_POLICIES = {
    # Drifted on purpose: each grants a little more than the access model allows.
    "pxl-core-runtime": 'path "logos/data/pxl-core/runtime/*" { capabilities = ["read", "create", "update"] }',
    "pxl-core-ci": (
        'path "logos/data/pxl-core/build/*" { capabilities = ["read"] }\n'
        'path "logos/data/pxl-core/runtime/api-key" { capabilities = ["read"] }'
    ),
    "developer": (
        'path "secret/data/dev/*" { capabilities = ["read", "create", "update"] }\n'
        'path "logos/data/pxl-core/build/*" { capabilities = ["read"] }'
    ),
    "token-maker": (
        'path "auth/token/create" { capabilities = ["create", "update", "sudo"] }\n'
        'path "auth/token/create/*" { capabilities = ["create", "update"] }'
    ),
}


def _quiet(fn: Callable[[], Any]) -> None:
    """Run a request that OpenBao is expected to refuse (the refusal is what gets audited)."""
    with contextlib.suppress(hvac.exceptions.VaultError):
        fn()


def _script(srv: OpenBaoServer, cap: AuditCapture, secrets: list[str]) -> dict[str, list[AuditEvent]]:
    steps: dict[str, list[AuditEvent]] = {}
    c = srv.client()
    kv = c.secrets.kv.v2

    def step(name: str) -> None:
        steps[name] = cap.take()

    step("startup")
    c.sys.enable_secrets_engine("kv", path="logos", options={"version": "2"})
    for name, body in _POLICIES.items():
        c.sys.create_or_update_policy(name, body)
    for name in ("jwt-key", "api-key", "tls-cert", "db-creds", "config"):
        kv.create_or_update_secret(
            f"pxl-core/runtime/{name}", secret={"v": CANARY_SECRET}, mount_point="logos"
        )
    kv.create_or_update_secret(
        "pxl-core/build/registry-token", secret={"v": CANARY_SECRET}, mount_point="logos"
    )
    c.sys.enable_auth_method("userpass")
    c.sys.enable_auth_method("approle")
    # Lockout would refuse the correct password after a burst; the test wants to see the success.
    c.sys.tune_auth_method("userpass", user_lockout_config={"lockout_disable": True})
    for user in ("alice", "bob"):
        c.auth.userpass.create_or_update_user(user, password=CANARY_PASSWORD, policies=["developer"])
    c.auth.approle.create_or_update_approle("pxl-core-runtime", token_policies=["pxl-core-runtime"])
    step("setup")

    c.sys.create_or_update_policy("extra", 'path "secret/data/extra" { capabilities = ["read"] }')
    step("policy_write")
    c.sys.delete_policy("extra")
    step("policy_delete")
    _quiet(lambda: c.sys.create_or_update_policy("broken", 'path "x" { capabilities = '))
    step("policy_invalid")

    # Runtime container: AppRole login, allowed read, then a write its drifted policy allows.
    role_id = c.auth.approle.read_role_id("pxl-core-runtime")["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id("pxl-core-runtime")["data"]["secret_id"]
    step("approle_setup")
    rt = srv.client(token="").auth.approle.login(role_id, secret_id, use_token=False)["auth"]["client_token"]
    secrets.append(rt)
    runtime = srv.client(token=rt)
    runtime.secrets.kv.v2.read_secret_version(
        "pxl-core/runtime/jwt-key", mount_point="logos", raise_on_deleted_version=False
    )
    runtime.auth.token.lookup_self()
    step("runtime_ok")
    runtime.secrets.kv.v2.create_or_update_secret(
        "pxl-core/runtime/jwt-key", secret={"v": CANARY_SECRET}, mount_point="logos"
    )
    step("runtime_write")

    # CI: a short-lived token reads build secrets (a deploy), then runtime secrets.
    ct = c.auth.token.create(policies=["pxl-core-ci"], ttl="30m", display_name="ci-deploy")["auth"][
        "client_token"
    ]
    secrets.append(ct)
    step("ci_token")
    ci = srv.client(token=ct)
    ci.secrets.kv.v2.read_secret_version(
        "pxl-core/build/registry-token", mount_point="logos", raise_on_deleted_version=False
    )
    step("ci_build_read")
    ci.secrets.kv.v2.read_secret_version(
        "pxl-core/runtime/api-key", mount_point="logos", raise_on_deleted_version=False
    )
    step("ci_runtime_allowed")
    _quiet(
        lambda: ci.secrets.kv.v2.read_secret_version(
            "pxl-core/runtime/jwt-key", mount_point="logos", raise_on_deleted_version=False
        )
    )
    step("ci_runtime_denied")
    lt = c.auth.token.create(policies=["pxl-core-ci"], ttl="48h", display_name="ci-nightly")["auth"][
        "client_token"
    ]
    secrets.append(lt)
    srv.client(token=lt).secrets.kv.v2.read_secret_version(
        "pxl-core/build/registry-token", mount_point="logos", raise_on_deleted_version=False
    )
    step("ci_long_token")

    # Developer: own dev secrets fine; pxl-core secrets are outside the model.
    at = srv.client(token="").auth.userpass.login("alice", CANARY_PASSWORD, use_token=False)["auth"][
        "client_token"
    ]
    secrets.append(at)
    alice = srv.client(token=at)
    alice.secrets.kv.v2.create_or_update_secret(
        "dev/notes", secret={"v": CANARY_SECRET}, mount_point="secret"
    )
    alice.secrets.kv.v2.read_secret_version("dev/notes", mount_point="secret", raise_on_deleted_version=False)
    step("developer_ok")
    alice.secrets.kv.v2.read_secret_version(
        "pxl-core/build/registry-token", mount_point="logos", raise_on_deleted_version=False
    )
    step("developer_build_read")
    _quiet(
        lambda: alice.secrets.kv.v2.read_secret_version(
            "pxl-core/runtime/jwt-key", mount_point="logos", raise_on_deleted_version=False
        )
    )
    step("developer_denied")
    _quiet(
        lambda: alice.secrets.kv.v2.read_secret_version(
            "dev/nots", mount_point="logos", raise_on_deleted_version=False
        )
    )
    step("typo_denied")
    for i in range(6):
        _quiet(lambda i=i: alice.read(f"sys/policies/acl/probe-{i}"))
    step("denied_burst")
    _quiet(lambda: alice.sys.create_or_update_policy("mine", 'path "*" { capabilities = ["sudo"] }'))
    step("policy_denied")

    anon = srv.client(token="")
    _quiet(lambda: anon.auth.userpass.login("alice", "wrong-once"))
    step("login_single_failure")
    for _ in range(6):
        _quiet(lambda: anon.auth.userpass.login("bob", "wrong-guess"))
    step("login_burst")
    secrets.append(anon.auth.userpass.login("bob", CANARY_PASSWORD, use_token=False)["auth"]["client_token"])
    step("login_after_burst")
    for i in range(11):
        _quiet(lambda i=i: anon.auth.userpass.login(f"user{i}", "Summer2026!"))
    step("spray")

    for i in range(25):
        _quiet(lambda i=i: c.secrets.kv.v2.list_secrets(f"pxl-core/sweep/d{i}/", mount_point="logos"))
    step("list_sweep")
    for p in ("pxl-core/", "pxl-core/runtime/", "pxl-core/build/"):
        c.secrets.kv.v2.list_secrets(p, mount_point="logos")
    step("list_few")

    # Secret destruction on KV v2 and v1.
    kv.create_or_update_secret("pxl-core/runtime/old-key", secret={"v": CANARY_SECRET}, mount_point="logos")
    kv.create_or_update_secret("pxl-core/runtime/old-key", secret={"v": CANARY_SECRET}, mount_point="logos")
    step("destroy_setup")
    kv.delete_latest_version_of_secret("pxl-core/runtime/old-key", mount_point="logos")
    step("soft_delete")
    kv.delete_secret_versions("pxl-core/runtime/old-key", versions=[1], mount_point="logos")
    step("soft_delete_versions")
    kv.destroy_secret_versions("pxl-core/runtime/old-key", versions=[1, 2], mount_point="logos")
    step("destroy")
    kv.delete_metadata_and_all_versions("pxl-core/runtime/old-key", mount_point="logos")
    step("metadata_delete")
    c.sys.enable_secrets_engine("kv", path="legacy", options={"version": "1"})
    c.write("legacy/app", value=CANARY_SECRET)
    step("kv1_setup")
    c.delete("legacy/app")
    step("kv1_delete")
    for i in range(12):
        kv.create_or_update_secret(f"bulk/s{i}", secret={"v": CANARY_SECRET}, mount_point="secret")
    step("bulk_setup")
    for i in range(12):
        kv.destroy_secret_versions(f"bulk/s{i}", versions=[1], mount_point="secret")
    step("mass_destroy")

    # Tokens.
    secrets.append(c.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"])
    step("token_normal")
    secrets.append(c.auth.token.create(policies=["default"], ttl="48h")["auth"]["client_token"])
    step("token_long_ttl")
    secrets.append(c.auth.token.create_orphan(policies=["default"], ttl="1h")["auth"]["client_token"])
    step("token_orphan")
    secrets.append(
        c.auth.token.create(policies=["default"], ttl="1h", no_parent=True)["auth"]["client_token"]
    )
    step("token_no_parent")
    secrets.append(c.auth.token.create(policies=["root"], ttl="1h")["auth"]["client_token"])
    step("token_root")
    mt = c.auth.token.create(policies=["token-maker"], ttl="1h", display_name="maker")["auth"]["client_token"]
    secrets.append(mt)
    c.write("auth/token/roles/ci-role", allowed_policies="pxl-core-ci", orphan=False)
    step("maker_setup")
    maker = srv.client(token=mt)
    secrets.append(maker.auth.token.create(policies=["token-maker"], ttl="1h")["auth"]["client_token"])
    step("maker_subset")
    secrets.append(maker.auth.token.create(policies=["pxl-core-runtime"], ttl="1h")["auth"]["client_token"])
    step("maker_escalation")
    secrets.append(maker.auth.token.create(role_name="ci-role", ttl="1h")["auth"]["client_token"])
    step("maker_role")

    # Mounts and audit configuration.
    c.sys.tune_mount_configuration("secret", default_lease_ttl="1h")
    step("tune_benign")
    c.sys.tune_mount_configuration("logos", audit_non_hmac_request_keys=["username"])
    step("tune_non_hmac")
    kv.create_or_update_secret(
        "pxl-core/runtime/db-creds", secret={"username": CANARY_SECRET}, mount_point="logos"
    )
    step("plaintext_write")
    c.sys.tune_auth_method("userpass", audit_non_hmac_request_keys=["username"])
    step("auth_tune_non_hmac")
    c.sys.enable_auth_method("userpass", path="backdoor")
    step("auth_enable")
    c.sys.disable_auth_method("backdoor")
    step("auth_disable")
    c.sys.disable_secrets_engine("legacy")
    step("engine_disable")
    c.sys.list_enabled_audit_devices()
    c.sys.list_mounted_secrets_engines()
    step("audit_list")
    _quiet(lambda: c.sys.disable_audit_device("file"))
    step("audit_disable")
    _quiet(
        lambda: c.sys.enable_audit_device(
            "file", options={"file_path": str(srv.workdir / "evil.log")}, path="evil"
        )
    )
    step("audit_enable")
    _quiet(lambda: alice.sys.disable_audit_device("file"))
    step("audit_disable_denied")
    c.write("sys/config/auditing/request-headers/x-trace-id", hmac=False)
    step("audit_headers")
    c.sys.calculate_hash("file", "some-input")
    step("audit_hash")

    _quiet(lambda: c.adapter.get("/v1/sys/storage/raft/snapshot"))
    step("raft_snapshot")
    _quiet(lambda: c.adapter.put("/v1/sys/generate-root/attempt", json={}))
    step("generate_root")
    c.sys.enable_secrets_engine("transit")
    c.secrets.transit.create_key("app")
    c.secrets.transit.encrypt_data("app", plaintext="aGVsbG8=")
    step("transit_benign")
    c.secrets.transit.create_key("exp", exportable=True, allow_plaintext_backup=True)
    step("transit_exportable")
    c.secrets.transit.export_key("exp", key_type="encryption-key")
    step("transit_export")
    c.secrets.transit.backup_key("exp")
    step("transit_backup")
    c.sys.enable_secrets_engine("pki")
    c.write("pki/root/generate/internal", common_name="internal.example")
    step("pki_internal")
    c.write("pki/root/generate/exported", common_name="exported.example", issuer_name="exported")
    step("pki_exported")
    return steps


@pytest.fixture(scope="session")
def bao_scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Real audit entries of the scripted scenario (the server is stopped before tests run)."""
    work = tmp_path_factory.mktemp("bao-detect")
    main, raw = work / "audit.log", work / "raw.log"
    devices = [
        AuditDevice("file", "file", {"file_path": str(main)}),
        AuditDevice("file", "raw", {"file_path": str(raw), "log_raw": "true"}),
    ]
    srv = OpenBaoServer(work, devices=devices)
    secrets: list[str] = [srv.root_token]
    try:
        srv.start()
        steps = _script(srv, AuditCapture(main), secrets)
    finally:
        srv.cleanup()
    yield Scenario(steps=steps, raw=AuditCapture(raw).take(), secrets=secrets)
