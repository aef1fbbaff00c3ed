"""The AppRole role name on the identity: read from ``auth.metadata.role_name`` as OpenBao writes
it, never part of the identity key (alert ids and partitions depend on the key)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ingest import Parser
from ingest.event import Auth
from ingest.identity import auth_role_name

#: An AppRole client's read, as a real OpenBao 2.7.2 file audit device wrote it
#: (../shared/reference/openbao_audit_sample.jsonl, line 60).
APPROLE_READ = (
    '{"time":"2026-11-28T12:32:05.048709325Z","type":"request","auth":{"client_token":"hmac-sha256:1c'
    '3d54e2a1b054dc0e4685506abfb71cc0044a2635b2ac5f6c20e3e722051566","accessor":"hmac-sha256:f6b9da18'
    '776fb12dc01ab6d6125f9de8cf3fda5d9448252c9b8f5ad6805aa847","display_name":"approle","policies":["'
    'default","kv-reader"],"token_policies":["default","kv-reader"],"policy_results":{"allowed":true,'
    '"granting_policies":[{"name":"kv-reader","namespace_id":"root","type":"acl"}]},"metadata":{"role'
    '_name":"deployer"},"entity_id":"33a21325-bca7-e537-42cd-717a973b2289","token_type":"service","to'
    'ken_ttl":2764800,"token_issue_time":"2026-11-28T12:32:04Z"},"request":{"id":"d847516e-101e-4e41-'
    '21fc-eb8722369a6f","client_id":"33a21325-bca7-e537-42cd-717a973b2289","operation":"read","mount_'
    'point":"secret/","mount_type":"kv","mount_running_version":"v2.7.2+builtin.bao","mount_class":"s'
    'ecret","client_token":"hmac-sha256:1c3d54e2a1b054dc0e4685506abfb71cc0044a2635b2ac5f6c20e3e722051'
    '566","client_token_accessor":"hmac-sha256:f6b9da18776fb12dc01ab6d6125f9de8cf3fda5d9448252c9b8f5a'
    'd6805aa847","namespace":{"id":"root"},"path":"secret/data/app/db","remote_address":"127.0.0.1","'
    'remote_port":60732}}'
)


def test_an_approle_token_carries_its_role_name_and_keeps_its_key() -> None:
    ev = Parser().parse(APPROLE_READ.encode())
    ident = ev.identity
    assert ident.role_name == "deployer"
    assert ident.key == "entity:33a21325-bca7-e537-42cd-717a973b2289" and ident.display_name == "approle"
    # The same entry without the metadata: same key, no role name.
    bare = json.loads(APPROLE_READ)
    del bare["auth"]["metadata"]
    other = Parser().parse(json.dumps(bare).encode()).identity
    assert other.key == ident.key and other.role_name is None


def test_only_a_plain_role_name_counts() -> None:
    assert auth_role_name(Auth(metadata={"role_name": "deployer"})) == "deployer"
    assert auth_role_name(Auth(metadata={"username": "alice"})) is None
    assert auth_role_name(Auth(metadata={"role_name": "hmac-sha256:0123abcd"})) is None
    assert auth_role_name(Auth(metadata={"role_name": ""})) is None
    assert auth_role_name(Auth(metadata={"role_name": 7})) is None
    assert auth_role_name(Auth(metadata={"role_name": "x" * 257})) is None
    assert auth_role_name(Auth()) is None


def test_every_approle_entry_of_the_reference_sample(shared_fixture: Callable[[str], Path]) -> None:
    parser = Parser()
    seen = 0
    for line in shared_fixture("openbao_audit_sample.jsonl").read_bytes().splitlines():
        ev = parser.parse(line)
        if ev.auth.display_name == "approle" and ev.auth.entity_id:
            seen += 1
            assert ev.identity.role_name == "deployer"
            assert ev.identity.key == f"entity:{ev.auth.entity_id}"
        else:
            assert ev.identity.role_name is None
    assert seen >= 3
