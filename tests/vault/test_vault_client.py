"""VaultClient against a real OpenBao dev server: auth methods, renewal, errors without secrets."""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import pytest

from vaultwatch.demo.servers import OpenBaoServer
from vaultwatch.vault.client import VaultAuth, VaultClient, VaultClientError, renew_delay

pytestmark = pytest.mark.integration


def _approle(srv: OpenBaoServer, *, ttl: str, max_ttl: str) -> tuple[str, str]:
    root = srv.client()
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_acl_policy("watch", 'path "sys/audit-hash/*" { capabilities = ["update"] }')
    root.auth.approle.create_or_update_approle(
        "vaultwatch", token_policies=["watch"], token_ttl=ttl, token_max_ttl=max_ttl
    )
    role_id = root.auth.approle.read_role_id("vaultwatch")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("vaultwatch")["data"]["secret_id"]
    return role_id, secret_id


def test_renew_delay_is_about_two_thirds_with_jitter() -> None:
    rng = random.Random(7)
    delays = [renew_delay(30.0, rng) for _ in range(200)]
    assert all(18.0 <= d <= 20.0 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100  # jittered
    assert renew_delay(0.1, rng) == 0.5


def test_token_and_token_file_auth(openbao: OpenBaoServer, tmp_path: Path) -> None:
    with VaultClient(openbao.addr, VaultAuth(method="token", token=openbao.root_token)) as vc:
        assert "file/" in vc.audit_devices()
        assert vc.audit_hash("file", "x").startswith("hmac-sha256:")
    tok = openbao.client().auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
    f = tmp_path / "token"
    f.write_text(tok + "\n")
    with VaultClient(openbao.addr, VaultAuth(method="token_file", token_file=str(f))) as vc:
        assert vc.remaining() > 3000
        # A rewritten token file is picked up.
        tok2 = openbao.client().auth.token.create(policies=["default"], ttl="2h")["auth"]["client_token"]
        time.sleep(0.01)
        f.write_text(tok2)
        vc.renew_or_relogin()
        assert vc.remaining() > 6000


def test_bad_credentials_give_clear_errors_without_secrets(
    openbao: OpenBaoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    role_id, _ = _approle(openbao, ttl="10s", max_ttl="30s")
    canary = "canary-secret-id-1f0e9d8c"
    auth = VaultAuth(method="approle", role_id=role_id, secret_id=canary)
    assert canary not in repr(auth)
    vc = VaultClient(openbao.addr, auth)
    with pytest.raises(VaultClientError) as info:
        vc.login()
    vc.close()
    assert "approle" in str(info.value)
    assert canary not in str(info.value) and canary not in repr(vc) and canary not in caplog.text
    with pytest.raises(VaultClientError, match="needs role_id"):
        VaultClient(openbao.addr, VaultAuth(method="approle"))


def test_approle_token_renewal_for_a_minute_has_no_auth_failures(openbao: OpenBaoServer) -> None:
    """AppRole token ttl=10s, max_ttl=30s: the watcher renews, then logs in again before max_ttl."""
    role_id, secret_id = _approle(openbao, ttl="10s", max_ttl="30s")
    vc = VaultClient(openbao.addr, VaultAuth(method="approle", role_id=role_id, secret_id=secret_id))
    vc.login()
    vc.start_renewal()
    failures, calls = 0, 0
    stop = time.monotonic() + 60
    try:
        while time.monotonic() < stop:
            try:
                vc.audit_hash("file", "probe")
                calls += 1
            except VaultClientError:
                failures += 1
            time.sleep(0.25)
    finally:
        vc.close()
    assert calls > 150
    assert failures == 0, vc.state.last_error
    assert vc.state.renewals >= 2
    assert vc.state.logins >= 2  # max_ttl forced a fresh login at least once
    assert vc.state.failures == 0


def test_watcher_backs_off_when_vault_is_down(openbao_factory: object) -> None:
    srv = openbao_factory()  # type: ignore[operator]
    role_id, secret_id = _approle(srv, ttl="2s", max_ttl="4s")
    vc = VaultClient(
        srv.addr,
        VaultAuth(method="approle", role_id=role_id, secret_id=secret_id),
        min_backoff=0.2,
        max_backoff=1.0,
    )
    vc.login()
    srv.stop()
    attempts: list[float] = []
    orig = vc.renew_or_relogin

    def counting() -> None:
        attempts.append(time.monotonic())
        orig()

    vc.renew_or_relogin = counting  # type: ignore[method-assign]
    vc.start_renewal()
    threading.Event().wait(6)
    vc.close()
    # Backing off: a handful of attempts, not a busy loop.
    assert 2 <= len(attempts) <= 20
    assert vc.state.failures >= 2
