"""``vaultwatch replay`` on real audit logs: merge order, gzip, quarantine, determinism."""

from __future__ import annotations

import gzip
import json
import shlex
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alerts.store import AlertQuery, Store
from detect.alert import SCHEMA, decode_alert
from detect.engine import Engine
from ingest.quarantine import FileQuarantine
from vaultwatch.api import AuthConfig, create_app
from vaultwatch.api.auth import generate_pem, hash_api_key
from vaultwatch.cli import main
from vaultwatch.cli.replay import REPLAY_GROUP
from vaultwatch.report.loaders import open_archive
from vaultwatch.service.replay import read_events, replay
from vaultwatch.service.worker import checkpoint_key
from vaultwatch.settings import ArchiveConfig, Settings, StoreConfig

with warnings.catch_warnings():
    # starlette's TestClient warns at import when httpx (not httpx2) is installed.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def _traffic(server: Any) -> None:
    """Real requests through hvac: logins, reads, denials, lists, a few users."""
    root = server.client()
    root.sys.enable_auth_method("userpass")
    root.sys.create_or_update_policy(
        "app-reader",
        'path "secret/data/app/*" { capabilities = ["read"] }\npath "secret/metadata/app/*" { capabilities = ["list"] }',
    )
    for i in range(4):
        root.secrets.kv.v2.create_or_update_secret(
            f"app/s{i}", secret={"v": f"value-{i}"}, mount_point="secret"
        )
    clients = [root]
    for name in ("alice", "bob"):
        root.auth.userpass.create_or_update_user(name, password=f"pw-{name}", policies=["app-reader"])
        user = server.client(token="")
        user.auth.userpass.login(name, f"pw-{name}")
        clients.append(user)
        for i in range(4):
            user.secrets.kv.v2.read_secret_version(
                f"app/s{i}", mount_point="secret", raise_on_deleted_version=False
            )
        user.secrets.kv.v2.list_secrets("app/", mount_point="secret")
        try:
            user.secrets.kv.v2.read_secret_version(
                "ops/root", mount_point="secret", raise_on_deleted_version=False
            )
        except Exception:  # noqa: BLE001 - a denial is what we want logged
            pass
    for c in clients:
        c.adapter.close()


@pytest.fixture
def audit_files(openbao: Any, tmp_path: Path) -> tuple[Path, Path]:
    """The server's own log split in two: the first half gzipped, the second plain with a bad line."""
    _traffic(openbao)
    lines = openbao.audit_log.read_bytes().splitlines(keepends=True)
    assert len(lines) > 40
    half = len(lines) // 2
    first = tmp_path / "audit.log.1.gz"
    with gzip.open(first, "wb") as f:
        f.writelines(lines[:half])
    second = tmp_path / "audit.log"
    second.write_bytes(b"".join(lines[half:]) + b'{"time": "not a time", "type": 3}\n' + b"\x00garbage\n")
    return first, second


@pytest.mark.integration
def test_replay_cli_is_deterministic(audit_files: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = audit_files
    outs = []
    for run in range(2):
        out = tmp_path / f"alerts{run}.jsonl"
        q = tmp_path / f"quarantine{run}.jsonl"
        # Files given in reverse order: the merge puts them back in event-time order.
        rc = main(
            ["replay", str(second), str(first), "--alerts-out", str(out), "--quarantine", str(q), "--json"]
        )
        assert rc == 0
        outs.append(out.read_bytes())
        records = FileQuarantine.read(q)
        assert sorted(r.reason for r in records) == ["no_json", "wrong_type"]
        assert q.stat().st_mode & 0o777 == 0o600
    assert outs[0] == outs[1]
    alerts = [decode_alert(line) for line in outs[0].splitlines()]
    for a in alerts:
        assert a.schema == SCHEMA and a.id.startswith("va_")
        assert json.loads(a.to_dict()["first_seen"].join('""')) <= json.loads(
            a.to_dict()["last_seen"].join('""')
        )
        assert "value-1" not in str(a.to_dict())  # no secret value in any alert
    assert len({a.id for a in alerts}) == len(alerts)


@pytest.mark.integration
def test_merge_order_and_counts(audit_files: tuple[Path, Path]) -> None:
    first, second = audit_files
    c: Counter[str] = Counter()
    events = list(read_events([second, first], failures=c))
    fails = dict(c)
    assert fails == {"no_json": 1, "wrong_type": 1}
    ts = [e.ts for e in events]
    assert ts == sorted(ts)
    result = replay([second, first], engine=Engine({"model_enabled": False}))
    assert result.events == len(events)
    assert result.parse_failures == fails
    assert result.identities >= 3  # root, alice, bob (plus logins)
    s = result.summary()
    assert s["alerts"] == len(result.alerts)
    assert sum(s["alerts_by_severity"].values()) == len(result.alerts)


def test_replay_of_recorded_vault_log(shared_fixture: Callable[[str], Path], tmp_path: Path) -> None:
    log = shared_fixture("vault-audit-learn-monitoring.log")
    twice = [replay([log]) for _ in range(2)]
    assert twice[0].alerts == twice[1].alerts
    assert twice[0].events == 1397 and twice[0].parse_failures == {}
    # The same file given twice (two audit devices): every copy is dropped as a duplicate.
    both = replay([log, log])
    assert both.events == 1397 and both.duplicates == 1397
    assert [a.id for a in both.alerts] == [a.id for a in twice[0].alerts]


def test_replay_cli_refuses_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["replay", str(tmp_path / "nope.log"), "--alerts-out", str(tmp_path / "a.jsonl")])
    assert rc == 2
    assert "no such file" in capsys.readouterr().err


def test_replay_of_garbage_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.log"
    bad.write_bytes(b"hello\n{\n" + b"[1,2]\n")
    out = tmp_path / "alerts.jsonl"
    assert main(["replay", str(bad), "--alerts-out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == 0 and sum(summary["parse_failures"].values()) == 3
    assert out.read_bytes() == b""


@pytest.mark.integration
def test_replay_leaves_an_archive_and_a_store_for_report_exposure_and_serve(
    audit_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay --archive DIR --store URL``: the events in a Parquet archive, the alerts and the
    learned baselines in a store; the summary's own commands then work offline."""
    first, second = audit_files
    archive, out = tmp_path / "archive", tmp_path / "alerts.jsonl"
    url = f"sqlite:///{tmp_path / 'vw.db'}"
    args = ["replay", str(second), str(first), "--alerts-out", str(out), "--json"]
    assert main([*args, "--archive", str(archive), "--store", url]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] > 40

    # Every event the engine saw is archived, nothing else (the bad lines are not events).
    with open_archive(archive) as arc:
        frame = arc.query()
    assert len(frame) == summary["events"]
    assert frame["ts"].is_monotonic_increasing
    # The store holds the alerts in their final state, and the engine's baselines.
    alerts = [decode_alert(line) for line in out.read_bytes().splitlines()]
    assert alerts
    with Store(url) as store:
        stored = store.list_alerts(AlertQuery(limit=1000)).items
        with store.transaction(read_only=True) as tx:
            blob = tx.load_checkpoint(checkpoint_key(REPLAY_GROUP, "files", 0))
    assert {a.id for a in stored} == {a.id for a in alerts}
    assert {a.id: a.count for a in stored} == {a.id: a.count for a in alerts}
    assert blob is not None

    # report: the command the summary suggests, as given.
    report_cmd = next(c for c in summary["next"] if c.startswith("vaultwatch report"))
    assert f"--archive {archive}" in report_cmd and f"--store {url}" in report_cmd
    report_out = tmp_path / "reports"
    assert main([*shlex.split(report_cmd)[1:], "--out", str(report_out)]) == 0
    capsys.readouterr()
    data = json.loads(next(report_out.glob("reports/*/report.json")).read_text())
    assert data["summary"]["events"] > 0 and data["summary"]["alerts"] == len(alerts)
    # exposure: who read the app's secrets (alice and bob did, in the traffic).
    assert main(["exposure", "--archive", str(archive), "--path", "secret/data/app/", "--json"]) == 0
    exposure = json.loads(capsys.readouterr().out)
    assert exposure["events"] >= 8
    # serve: the API on that store and archive lists the alerts and the identities it learned.
    serve_cmd = next(c for c in summary["next"] if c.endswith("vaultwatch serve"))
    env = dict(kv.split("=", 1) for kv in shlex.split(serve_cmd) if "=" in kv)
    assert env["VAULTWATCH_STORE__URL"] == url and env["VAULTWATCH_ARCHIVE__PATH"] == str(archive)
    settings = Settings(
        store=StoreConfig(url=url),
        archive=ArchiveConfig(enabled=True, path=Path(env["VAULTWATCH_ARCHIVE__PATH"])),
    )
    key = f"t.{'k' * 32}"
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nid = "t"\nhash = "{hash_api_key(key)}"\nrole = "viewer"\n')
    auth = AuthConfig(api_keys_file=keys, jwt_key_file=_jwt(tmp_path), cookie_secure=False)
    with TestClient(create_app(settings, auth=auth)) as client:
        page = client.get("/api/v1/alerts", params={"limit": 200}, headers={"X-API-Key": key})
        assert page.status_code == 200
        assert {a["id"] for a in page.json()["items"]} == {a.id for a in alerts}
        idents = client.get("/api/v1/identities", headers={"X-API-Key": key})
        assert idents.status_code == 200, idents.text
        assert len(idents.json()["items"]) >= 3


def _jwt(tmp_path: Path) -> Path:
    path = tmp_path / "jwt.pem"
    path.write_bytes(generate_pem("ed25519"))
    return path


def test_report_without_an_archive_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(["report", "--period", "daily", "--archive", str(tmp_path / "none"), "--no-store"])
    assert rc == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no event archive" in err
    assert "vaultwatch replay" in err and "--archive DIR" in err and "--store URL" in err


def test_report_errors_name_the_option_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    archive = tmp_path / "archive"
    archive.mkdir()
    rc = main(
        [
            "report",
            "--period",
            "daily",
            "--archive",
            str(archive),
            "--store",
            f"sqlite:///{tmp_path / 'x.db'}",
        ]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "no alert store" in err and "--no-store" in err, err
    rc = main(
        ["report", "--period", "daily", "--archive", str(archive), "--no-store", "--notify", "r/webhook/0"]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "--store URL" in err, err
