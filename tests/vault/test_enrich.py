"""Identity enrichment against a real OpenBao server, and graceful degradation when it is gone."""

from __future__ import annotations

import time
from typing import Any

import pytest

from vaultwatch.demo.servers import OpenBaoServer
from vaultwatch.vault.client import VaultAuth, VaultClient
from vaultwatch.vault.enrich import IdentityEnricher, MemoryEnrichmentStore

pytestmark = pytest.mark.integration


def _alice(srv: OpenBaoServer) -> str:
    root = srv.client()
    root.sys.enable_auth_method("userpass")
    root.auth.userpass.create_or_update_user("alice", password="pw-alice-123", policies=["default"])
    login = srv.client(token="").auth.userpass.login("alice", "pw-alice-123")
    entity_id: str = login["auth"]["entity_id"]
    root.secrets.identity.update_entity(entity_id=entity_id, name="alice", metadata={"team": "payments"})
    root.secrets.identity.create_or_update_group(name="sre", member_entity_ids=[entity_id])
    return entity_id


def test_resolves_names_aliases_groups_and_caches(openbao: OpenBaoServer) -> None:
    entity_id = _alice(openbao)
    now = [1000.0]
    store = MemoryEnrichmentStore()
    with VaultClient(openbao.addr, VaultAuth(method="token", token=openbao.root_token)) as vc:
        enr = IdentityEnricher(vc, ttl=60, store=store, clock=lambda: now[0])
        enr.start()
        try:
            assert enr.get(entity_id) is None  # never blocks: a miss schedules a look-up
            enr.drain()
            info = enr.get(entity_id)
            assert info is not None and info.name == "alice"
            assert info.label == "alice (userpass)"
            assert info.groups == ("sre",) and info.metadata == {"team": "payments"}
            assert enr.stats["fetched"] == 1 and enr.stats["hits"] == 1
            now[0] += 61  # stale: served at once, refreshed in the background
            assert enr.get(entity_id) is info
            enr.drain()
            assert enr.stats["fetched"] == 2
            missing = enr.refresh("00000000-0000-0000-0000-000000000000")
            assert missing.found is False
        finally:
            enr.close()
    # A new enricher starts warm from the store, without Vault.
    warm = IdentityEnricher(None, ttl=10_000, store=store, clock=lambda: now[0])
    got = warm.get(entity_id)
    assert got is not None and got.name == "alice"


def test_unreachable_vault_degrades_without_blocking(openbao_factory: Any) -> None:
    srv = openbao_factory()
    entity_id = _alice(srv)
    vc = VaultClient(srv.addr, VaultAuth(method="token", token=srv.root_token))
    vc.login()
    enr = IdentityEnricher(vc, ttl=60, backoff=(0.05, 0.2))
    enr.start()
    try:
        enr.get(entity_id)
        enr.drain()
        srv.stop()
        t0 = time.monotonic()
        for i in range(200):
            enr.get(f"11111111-0000-0000-0000-{i:012d}")
        assert time.monotonic() - t0 < 0.5  # the hot path never waits on Vault
        time.sleep(1.0)
        assert enr.stats["errors"] >= 1 and enr.stats["unreachable"] >= 1
        cached = enr.get(entity_id)
        assert cached is not None and cached.name == "alice"  # still served
    finally:
        enr.close()
        vc.close()
