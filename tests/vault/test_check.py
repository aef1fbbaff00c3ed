"""`vaultwatch check` against a real OpenBao server: a correct setup, then each failure injected."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from vaultwatch.demo.servers import AuditDevice, OpenBaoServer
from vaultwatch.vault.client import VaultAuth, VaultClient
from vaultwatch.vault.compliance import FAIL, PASS, CheckResult, load_spec, parse_duration, run_checks
from vaultwatch.vault.policy_hcl import glob_reaches, glob_within, parse_policy

CANARY_DB_PASSWORD = "canary-db-pw-5e1c0b7a"


def _pem_key(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert(key: Any, days: float) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pxl-core.example")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _good_setup(c: Any) -> dict[str, Any]:
    c.sys.enable_secrets_engine("kv", path="logos", options={"version": "2"})
    jwt_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tls_key = ec.generate_private_key(ec.SECP256R1())
    values: dict[str, dict[str, str]] = {
        "pxl-core/runtime/jwt-key": {"private_key": _pem_key(jwt_key)},
        "pxl-core/runtime/api-keys": {
            "billing": secrets.token_urlsafe(32),
            "search": secrets.token_urlsafe(40),
        },
        "pxl-core/runtime/tls": {"certificate": _cert(tls_key, 90), "private_key": _pem_key(tls_key)},
        "pxl-core/runtime/db": {"username": "pxl", "password": CANARY_DB_PASSWORD},
        "pxl-core/build/registry-token": {"token": secrets.token_hex(20)},
        "pxl-core/build/cosign-key": {"key": "cosign-" + secrets.token_hex(16)},
    }
    for path, data in values.items():
        c.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="logos")
    c.sys.create_or_update_acl_policy(
        "pxl-core-runtime", 'path "logos/data/pxl-core/runtime/*" { capabilities = ["read"] }'
    )
    c.sys.create_or_update_acl_policy(
        "pxl-core-ci", 'path "logos/data/pxl-core/build/*" { capabilities = ["read"] }'
    )
    c.sys.create_or_update_acl_policy("developer", 'path "apps/data/*" { capabilities = ["read", "list"] }')
    c.sys.create_or_update_acl_policy(
        "admin", 'path "sys/*" { capabilities = ["create", "read", "update", "sudo"] }'
    )
    c.sys.enable_auth_method("approle")
    c.auth.approle.create_or_update_approle(
        "ci", token_policies=["pxl-core-ci"], token_ttl="15m", token_max_ttl="30m"
    )
    return {"tls_key": tls_key}


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpenBaoServer, dict[str, Any]]]:
    work = tmp_path_factory.mktemp("check")
    devices = [
        AuditDevice("file", "file", {"file_path": str(work / "a.log")}),
        AuditDevice("file", "second", {"file_path": str(work / "b.log")}),
    ]
    with OpenBaoServer(work / "srv", devices=devices) as srv:
        yield srv, _good_setup(srv.client())


def _run(srv: OpenBaoServer) -> list[CheckResult]:
    with VaultClient(srv.addr, VaultAuth(method="token", token=srv.root_token)) as vc:
        return run_checks(vc, load_spec())


def _failed(results: list[CheckResult]) -> set[tuple[str, str]]:
    return {(r.check, r.target) for r in results if r.status == FAIL}


pytestmark = pytest.mark.integration


def test_correct_setup_passes(bao: tuple[OpenBaoServer, dict[str, Any]]) -> None:
    srv, _ = bao
    results = _run(srv)
    assert not _failed(results), [r for r in results if r.status == FAIL]
    checks = {r.check for r in results}
    for expected in (
        "secret.jwt_signing_key",
        "secret.tls_certificate",
        "secret.api_keys",
        "secret.db_credentials",
        "audit.devices",
        "audit.log_raw",
        "audit.non_hmac_keys",
        "policy.runtime",
        "policy.ci",
        "policy.developer",
        "policy.sys",
        "ci.token_ttl",
    ):
        assert expected in checks
    assert all(r.status == PASS for r in results if r.check == "audit.devices")


def _inject(
    srv: OpenBaoServer, do: Callable[[Any], None], undo: Callable[[Any], None]
) -> set[tuple[str, str]]:
    c = srv.client()
    do(c)
    try:
        return _failed(_run(srv))
    finally:
        undo(c)


def _put(path: str, data: dict[str, str]) -> Callable[[Any], None]:
    return lambda c: c.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="logos")


def test_each_failure_is_caught(bao: tuple[OpenBaoServer, dict[str, Any]]) -> None:
    srv, ctx = bao
    c = srv.client()
    good = {
        p: c.secrets.kv.v2.read_secret_version(p, mount_point="logos", raise_on_deleted_version=True)["data"][
            "data"
        ]
        for p in (
            "pxl-core/runtime/jwt-key",
            "pxl-core/runtime/tls",
            "pxl-core/runtime/api-keys",
            "pxl-core/runtime/db",
        )
    }
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    other = ec.generate_private_key(ec.SECP256R1())
    cases: list[tuple[str, Callable[[Any], None], Callable[[Any], None], tuple[str, str]]] = [
        (
            "missing secret",
            lambda c: c.secrets.kv.v2.delete_metadata_and_all_versions(
                "pxl-core/build/cosign-key", mount_point="logos"
            ),
            _put("pxl-core/build/cosign-key", {"key": "x"}),
            ("secret.readable", "logos/pxl-core/build/cosign-key"),
        ),
        (
            "weak JWT key",
            _put("pxl-core/runtime/jwt-key", {"private_key": _pem_key(weak)}),
            _put("pxl-core/runtime/jwt-key", good["pxl-core/runtime/jwt-key"]),
            ("secret.jwt_signing_key", "logos/pxl-core/runtime/jwt-key"),
        ),
        (
            "JWT key not PEM",
            _put("pxl-core/runtime/jwt-key", {"private_key": "not a key"}),
            _put("pxl-core/runtime/jwt-key", good["pxl-core/runtime/jwt-key"]),
            ("secret.jwt_signing_key", "logos/pxl-core/runtime/jwt-key"),
        ),
        (
            "TLS expiring",
            _put(
                "pxl-core/runtime/tls",
                {"certificate": _cert(ctx["tls_key"], 5), "private_key": _pem_key(ctx["tls_key"])},
            ),
            _put("pxl-core/runtime/tls", good["pxl-core/runtime/tls"]),
            ("secret.tls_certificate", "logos/pxl-core/runtime/tls"),
        ),
        (
            "TLS key mismatch",
            _put(
                "pxl-core/runtime/tls",
                {"certificate": _cert(ctx["tls_key"], 90), "private_key": _pem_key(other)},
            ),
            _put("pxl-core/runtime/tls", good["pxl-core/runtime/tls"]),
            ("secret.tls_certificate", "logos/pxl-core/runtime/tls"),
        ),
        (
            "bad API key",
            _put("pxl-core/runtime/api-keys", {"billing": "short"}),
            _put("pxl-core/runtime/api-keys", good["pxl-core/runtime/api-keys"]),
            ("secret.api_keys", "logos/pxl-core/runtime/api-keys"),
        ),
        (
            "DB password missing",
            _put("pxl-core/runtime/db", {"username": "pxl"}),
            _put("pxl-core/runtime/db", good["pxl-core/runtime/db"]),
            ("secret.db_credentials", "logos/pxl-core/runtime/db"),
        ),
        (
            "non-HMAC keys",
            lambda c: c.sys.tune_mount_configuration("logos", audit_non_hmac_request_keys=["password"]),
            lambda c: c.sys.tune_mount_configuration("logos", audit_non_hmac_request_keys=[]),
            ("audit.non_hmac_keys", "logos/"),
        ),
        (
            "runtime writes",
            lambda c: c.sys.create_or_update_acl_policy(
                "pxl-core-runtime",
                'path "logos/data/pxl-core/runtime/*" { capabilities = ["read", "update"] }',
            ),
            lambda c: c.sys.create_or_update_acl_policy(
                "pxl-core-runtime", 'path "logos/data/pxl-core/runtime/*" { capabilities = ["read"] }'
            ),
            ("policy.runtime", "pxl-core-runtime"),
        ),
        (
            "CI reads runtime",
            lambda c: c.sys.create_or_update_acl_policy(
                "pxl-core-ci", 'path "logos/data/pxl-core/*" { capabilities = ["read"] }'
            ),
            lambda c: c.sys.create_or_update_acl_policy(
                "pxl-core-ci", 'path "logos/data/pxl-core/build/*" { capabilities = ["read"] }'
            ),
            ("policy.ci", "pxl-core-ci"),
        ),
        (
            "CI long TTL",
            lambda c: c.auth.approle.create_or_update_approle(
                "ci", token_policies=["pxl-core-ci"], token_ttl="24h", token_max_ttl="48h"
            ),
            lambda c: c.auth.approle.create_or_update_approle(
                "ci", token_policies=["pxl-core-ci"], token_ttl="15m", token_max_ttl="30m"
            ),
            ("ci.token_ttl", "auth/approle/role/ci"),
        ),
        (
            "developer reaches runtime",
            lambda c: c.sys.create_or_update_acl_policy(
                "developer", '# broad\npath "logos/data/*" {\n  capabilities = ["read"]\n}\n'
            ),
            lambda c: c.sys.create_or_update_acl_policy(
                "developer", 'path "apps/data/*" { capabilities = ["read"] }'
            ),
            ("policy.developer", "developer"),
        ),
        (
            "sudo outside admin",
            lambda c: c.sys.create_or_update_acl_policy(
                "ops", 'path "sys/mounts/*" { capabilities = ["update", "sudo"] }'
            ),
            lambda c: c.sys.delete_acl_policy("ops"),
            ("policy.sys", "ops"),
        ),
    ]
    for name, do, undo, expected in cases:
        failed = _inject(srv, do, undo)
        assert expected in failed, f"{name}: expected {expected} to fail, got {failed}"
        assert len(failed) <= 2, f"{name}: unrelated failures {failed}"  # (readable+format at most)
    assert not _failed(_run(srv)), "every injection was reverted"


def test_log_raw_and_single_device(openbao_factory: Callable[..., OpenBaoServer], tmp_path: Path) -> None:
    srv = openbao_factory(
        devices=[AuditDevice("file", "raw", {"file_path": str(tmp_path / "r.log"), "log_raw": "true"})]
    )
    _good_setup(srv.client())
    results = _run(srv)
    by = {(r.check, r.target): r.status for r in results}
    assert by[("audit.log_raw", "raw/")] == FAIL
    assert by[("audit.devices", "sys/audit")] == "warn"  # one device: allowed, two recommended


def test_cli_exit_codes_json_and_no_secret_values(
    bao: tuple[OpenBaoServer, dict[str, Any]], tmp_path: Path
) -> None:
    srv, _ = bao
    token_file = tmp_path / "tok"
    token_file.write_text(srv.root_token)
    cmd = [
        sys.executable,
        "-m",
        "vaultwatch.cli",
        "check",
        "--addr",
        srv.addr,
        "--token-file",
        str(token_file),
    ]
    ok = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True and doc["results"]
    assert CANARY_DB_PASSWORD not in ok.stdout + ok.stderr and srv.root_token not in ok.stdout + ok.stderr
    c = srv.client()
    c.secrets.kv.v2.create_or_update_secret(
        path="pxl-core/runtime/db", secret={"username": "pxl"}, mount_point="logos"
    )
    try:
        bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        c.secrets.kv.v2.create_or_update_secret(
            path="pxl-core/runtime/db",
            secret={"username": "pxl", "password": CANARY_DB_PASSWORD},
            mount_point="logos",
        )
    assert bad.returncode == 1 and "fail" in bad.stdout
    unreachable = subprocess.run(
        [*cmd[:4], "--addr", "http://127.0.0.1:1", "--token-file", str(token_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 2 and "error" in unreachable.stderr


def test_policy_parser_and_globs() -> None:
    rules = parse_policy(
        '/* block */ path "a/*" { capabilities = ["read"]\n allowed_parameters = { "x" = [] } }\n'
        '// line\npath "b" { policy = "write" }\npath "c" { capabilities = ["deny", "read"] }'
    )
    assert [(r.path, r.capabilities) for r in rules][:1] == [("a/*", ("read",))]
    assert "update" in rules[1].capabilities and rules[2].grants == frozenset()
    assert parse_policy('{"path": {"k/*": {"capabilities": ["list"]}}}')[0].capabilities == ("list",)
    assert glob_reaches("*", "logos/data/pxl-core/")
    assert glob_reaches("logos/+/pxl-core/runtime/x", "logos/data/pxl-core/")
    assert not glob_reaches("logos/data/other/*", "logos/data/pxl-core/")
    assert glob_within("logos/data/pxl-core/runtime/jwt", "logos/data/pxl-core/runtime/*")
    assert not glob_within("logos/data/pxl-core/*", "logos/data/pxl-core/runtime/*")
    assert parse_duration("1h30m") == 5400 and parse_duration(90) == 90
    with pytest.raises(ValueError):
        parse_duration("soon")
