"""Exposure assessment against real OpenBao traffic: a known token, a leaked secret path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ingest import Deduplicator, Parser
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer
from vaultwatch.service.archive import EventArchive
from vaultwatch.vault.client import VaultAuth, VaultClient
from vaultwatch.vault.exposure import (
    exposure_for_identity,
    exposure_for_path,
    exposure_for_token,
    render_html,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("exposure")
    devices = [
        AuditDevice("file", "file", {"file_path": str(work / "a.log")}),
        AuditDevice("file", "second", {"file_path": str(work / "b.log")}),
    ]
    srv = OpenBaoServer(work / "srv", devices=devices).start()
    root = srv.client()
    root.sys.enable_secrets_engine("kv", path="logos", options={"version": "2"})
    for name in ("jwt-key", "db"):
        root.secrets.kv.v2.create_or_update_secret(
            path=f"pxl-core/runtime/{name}", secret={"v": "1"}, mount_point="logos"
        )
    root.sys.create_or_update_acl_policy(
        "rt", 'path "logos/data/pxl-core/runtime/*" { capabilities = ["read"] }'
    )
    leaked = root.auth.token.create(policies=["rt"], ttl="1h", display_name="leaky")["auth"]["client_token"]
    other = root.auth.token.create(policies=["rt"], ttl="1h", display_name="other")["auth"]["client_token"]
    for _ in range(3):
        srv.client(token=leaked).secrets.kv.v2.read_secret_version(
            "pxl-core/runtime/jwt-key", mount_point="logos", raise_on_deleted_version=False
        )
    srv.client(token=leaked).secrets.kv.v2.read_secret_version(
        "pxl-core/runtime/db", mount_point="logos", raise_on_deleted_version=False
    )
    srv.client(token=other).secrets.kv.v2.read_secret_version(
        "pxl-core/runtime/db", mount_point="logos", raise_on_deleted_version=False
    )
    # Rotation, then one more read by "other": only that read counts since the last rotation.
    root.secrets.kv.v2.create_or_update_secret(
        path="pxl-core/runtime/db", secret={"v": "2"}, mount_point="logos"
    )
    srv.client(token=other).secrets.kv.v2.read_secret_version(
        "pxl-core/runtime/db", mount_point="logos", raise_on_deleted_version=False
    )
    archive = EventArchive(work / "archive")
    parser, dedup = Parser(), Deduplicator()
    # Archive what the *second* device wrote: token HMACs differ per device, the search must
    # find them anyway by asking every device.
    for line in (work / "b.log").read_bytes().splitlines():
        ev = parser.parse(line)
        if not dedup.is_duplicate(ev):
            archive.append(ev)
    archive.flush()
    yield {"srv": srv, "archive": archive, "leaked": leaked, "work": work}
    archive.close()
    srv.cleanup()


def test_token_exposure_finds_exactly_its_requests(scene: Any) -> None:
    srv: OpenBaoServer = scene["srv"]
    with VaultClient(srv.addr, VaultAuth(method="token", token=srv.root_token)) as vc:
        report = exposure_for_token(scene["archive"], vc, token=scene["leaked"])
    assert report.devices_searched == ["file/", "second/"]
    assert report.events == 4
    assert [i.display_name for i in report.identities] == ["token-leaky"]
    paths = {s.path: s.reads for s in report.secrets}
    assert paths == {"logos/data/pxl-core/runtime/jwt-key": 3, "logos/data/pxl-core/runtime/db": 1}
    text = json.dumps(report.to_dict()) + render_html(report)
    assert scene["leaked"] not in text
    assert "revoke" in report.actions[0]


def test_path_exposure_groups_by_identity_and_honours_rotation(scene: Any) -> None:
    report = exposure_for_path(scene["archive"], "logos/pxl-core/runtime/db")  # KV v2 data/ form found
    names = {i.display_name: i.reads for i in report.identities if i.reads}
    assert names == {"token-leaky": 1, "token-other": 2}
    assert report.secrets[0].last_write is not None
    after = exposure_for_path(scene["archive"], "logos/data/pxl-core/runtime/db", since_last_rotation=True)
    assert {i.display_name: i.reads for i in after.identities if i.reads} == {"token-other": 1}
    assert any(a.startswith("rotate logos/data/pxl-core/runtime/db") for a in report.actions)


def test_identity_exposure_lists_what_to_rotate_for_an_offboarding(scene: Any) -> None:
    # By display name: the leaky token read jwt-key 3 times (never rotated since) and db once,
    # before db's rotation: only jwt-key is still exposed.
    report = exposure_for_identity(scene["archive"], "token-leaky")
    assert report.kind == "identity"
    assert {s.path: s.reads for s in report.secrets} == {"logos/data/pxl-core/runtime/jwt-key": 3}
    assert report.actions[0].startswith("rotate logos/data/pxl-core/runtime/jwt-key")
    # By identity key: "other" read db after its rotation, so db is on its list.
    key = next(
        i.identity
        for i in exposure_for_path(scene["archive"], "logos/pxl-core/runtime/db").identities
        if i.display_name == "token-other"
    )
    other = exposure_for_identity(scene["archive"], key)
    assert {s.path: s.reads for s in other.secrets} == {"logos/data/pxl-core/runtime/db": 1}
    assert exposure_for_identity(scene["archive"], "nobody").secrets == []
    # The CLI verb gives the same list.
    cmd = [
        sys.executable,
        "-m",
        "vaultwatch.cli",
        "exposure",
        "--archive",
        str(scene["work"] / "archive"),
        "--identity",
        "token-leaky",
        "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
    assert [s["path"] for s in json.loads(out.stdout)["secrets"]] == ["logos/data/pxl-core/runtime/jwt-key"]


def test_cli_token_from_stdin_never_echoed(scene: Any) -> None:
    srv: OpenBaoServer = scene["srv"]
    env = {**os.environ, "VAULT_TOKEN": srv.root_token}
    cmd = [
        sys.executable,
        "-m",
        "vaultwatch.cli",
        "exposure",
        "--archive",
        str(scene["work"] / "archive"),
        "--token-stdin",
        "--addr",
        srv.addr,
    ]
    out = subprocess.run(
        [*cmd, "--json"], input=scene["leaked"] + "\n", capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["events"] == 4
    assert scene["leaked"] not in out.stdout + out.stderr
    table = subprocess.run(
        cmd, input=scene["leaked"] + "\n", capture_output=True, text=True, env=env, timeout=60
    )
    assert table.returncode == 0 and "token-leaky" in table.stdout
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaultwatch.cli",
            "exposure",
            "--archive",
            str(Path(scene["work"]) / "nope"),
            "--path",
            "x/",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "no event archive" in missing.stderr
