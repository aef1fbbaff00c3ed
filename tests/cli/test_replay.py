"""``vaultwatch replay`` on real audit logs: merge order, gzip, quarantine, determinism."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detect.alert import SCHEMA, decode_alert
from detect.engine import Engine
from ingest.quarantine import FileQuarantine
from vaultwatch.cli import main
from vaultwatch.service.replay import read_events, replay


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
