"""Rotation compliance from real KV v2 metadata on an OpenBao server."""

from __future__ import annotations

import time

import pytest

from vaultwatch.demo.servers import OpenBaoServer
from vaultwatch.vault.client import VaultAuth, VaultClient
from vaultwatch.vault.rotation import RotationMonitor, human

pytestmark = pytest.mark.integration


def test_ages_and_overdue_alerts(openbao: OpenBaoServer) -> None:
    root = openbao.client()
    root.sys.enable_secrets_engine("kv", path="logos", options={"version": "2"})
    for name in ("jwt-key", "api-keys", "tls", "db", "unrelated"):
        root.secrets.kv.v2.create_or_update_secret(
            path=f"pxl-core/runtime/{name}", secret={"v": "1"}, mount_point="logos"
        )
    root.secrets.kv.v2.create_or_update_secret(
        path="pxl-core/runtime/sub/jwt-extra", secret={"v": "1"}, mount_point="logos"
    )
    created = time.time()
    seen_write = created - 5
    with VaultClient(openbao.addr, VaultAuth(method="token", token=openbao.root_token)) as vc:
        mon = RotationMonitor(vc, last_deploy=lambda: created + 60, last_stream_write=lambda p: seen_write)
        ages = {a.path: a for a in mon.scan(created + 1)}
        assert set(ages) == {
            "logos/pxl-core/runtime/jwt-key",
            "logos/pxl-core/runtime/api-keys",
            "logos/pxl-core/runtime/tls",
            "logos/pxl-core/runtime/db",
        }
        assert not any(a.overdue for a in ages.values())
        # Two days later the JWT key (daily) is overdue, the API keys (weekly) are not; the DB
        # credentials were not rotated after the deploy an hour and a half ago.
        later = created + 2 * 86400
        mon.last_deploy = lambda: later - 5400
        ages2 = {a.path: a for a in mon.scan(later)}
        assert ages2["logos/pxl-core/runtime/jwt-key"].overdue
        assert not ages2["logos/pxl-core/runtime/api-keys"].overdue
        assert ages2["logos/pxl-core/runtime/db"].overdue
        alerts = mon.alerts(later, list(ages2.values()))
        assert {a.paths[0] for a in alerts} == {"logos/pxl-core/runtime/jwt-key", "logos/pxl-core/runtime/db"}
        jwt = next(a for a in alerts if "jwt" in a.paths[0])
        assert jwt.detector == "rotation-overdue"
        assert [r.feature for r in jwt.explanation] == ["metadata age", "last write in the audit stream"]
        assert jwt.explanation[0].observed.startswith("2d")
        assert mon.alerts(later, list(ages2.values())) == []  # once per deadline
        # Rotating clears it.
        root.secrets.kv.v2.create_or_update_secret(
            path="pxl-core/runtime/jwt-key", secret={"v": "2"}, mount_point="logos"
        )
        fresh = {a.path: a for a in mon.scan(time.time() + 60)}
        assert not fresh["logos/pxl-core/runtime/jwt-key"].overdue
        assert fresh["logos/pxl-core/runtime/jwt-key"].current_version == 2


def test_human() -> None:
    assert human(3 * 86400 + 4 * 3600) == "3d 4h"
    assert human(42) == "42s" and human(3700) == "1h 1m"
