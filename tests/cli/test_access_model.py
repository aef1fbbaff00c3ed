"""``vaultwatch access-model suggest`` on a real OpenBao (random names), and drift reporting in
``replay`` and ``inspect`` (issue 14 items 3 and 4)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from detect.drift import DriftWatch
from detect.engine import Engine
from detect.policy import default_policy, parse_policy
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.cli import main
from vaultwatch.demo.servers import OpenBaoServer


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def _events(path: Path, offset: int = 0, want: int = 0) -> list[AuditEvent]:
    """Entries of the audit file after ``offset`` (waiting up to 5 s for ``want`` of them)."""
    parser = Parser()
    deadline = time.monotonic() + 5
    while True:
        data = path.read_bytes()[offset:]
        lines = [ln for ln in data[: data.rfind(b"\n") + 1].splitlines() if ln.strip()]
        if len(lines) >= want or time.monotonic() > deadline:
            return [parser.parse(line) for line in lines]
        time.sleep(0.05)


def _quiet(fn: Any) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - a denial is part of the traffic
        pass


@pytest.mark.integration
def test_suggest_from_vault_and_logs(openbao: OpenBaoServer, tmp_path: Path, capsys: Any) -> None:
    root = openbao.client()
    mount, app = _name("kv"), _name("app")
    root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    for area in ("runtime", "build"):
        root.secrets.kv.v2.create_or_update_secret(
            path=f"{app}/{area}/k", secret={"v": "1"}, mount_point=mount
        )
    svc_p, ci_p, ppl_p, rot_p = (_name("p") for _ in range(4))
    root.sys.create_or_update_acl_policy(
        svc_p, f'path "{mount}/data/{app}/runtime/*" {{ capabilities = ["read"] }}'
    )
    root.sys.create_or_update_acl_policy(
        ci_p, f'path "{mount}/data/{app}/build/*" {{ capabilities = ["read"] }}'
    )
    root.sys.create_or_update_acl_policy(ppl_p, f'path "{mount}/data/notes/*" {{ capabilities = ["read"] }}')
    root.sys.create_or_update_acl_policy(
        rot_p, f'path "{mount}/data/{app}/runtime/*" {{ capabilities = ["read", "update", "create"] }}'
    )
    ar, up = _name("ar"), _name("up")
    root.sys.enable_auth_method("approle", path=ar)
    root.sys.enable_auth_method("userpass", path=up)
    roles = {"svc": (svc_p, "8h"), "bld": (ci_p, "10m"), "rot": (rot_p, "8h")}
    tokens = {}
    for role, (pol, ttl) in roles.items():
        root.auth.approle.create_or_update_approle(role, token_policies=[pol], token_ttl=ttl, mount_point=ar)
        rid = root.auth.approle.read_role_id(role, mount_point=ar)["data"]["role_id"]
        sid = root.auth.approle.generate_secret_id(role, mount_point=ar)["data"]["secret_id"]
        tokens[role] = openbao.client(token="").auth.approle.login(rid, sid, mount_point=ar)["auth"][
            "client_token"
        ]
    root.auth.userpass.create_or_update_user("erin", password="pw-erin-123", policies=[ppl_p], mount_point=up)
    erin = openbao.client(token="").auth.userpass.login("erin", "pw-erin-123", mount_point=up)["auth"]
    tokens["erin"] = erin["client_token"]

    def read(who: str, path: str) -> None:
        c = openbao.client(token=tokens[who])
        _quiet(
            lambda: c.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True
            )
        )

    for _ in range(3):
        read("svc", f"{app}/runtime/k")
        read("bld", f"{app}/build/k")
    rot = openbao.client(token=tokens["rot"])
    rot.secrets.kv.v2.create_or_update_secret(path=f"{app}/runtime/k", secret={"v": "2"}, mount_point=mount)
    token_file = tmp_path / "token"
    token_file.write_text(openbao.root_token)
    out, report = tmp_path / "model.toml", tmp_path / "report.json"
    argv = ["access-model", "suggest", str(openbao.audit_log), "--vault-addr", openbao.addr]
    rc = main([*argv, "--token-file", str(token_file), "--out", str(out), "--report", str(report)])
    assert rc == 0
    text = out.read_text()
    model = parse_policy(text, str(out))
    assert openbao.root_token not in text
    assert set(model.protected) == {f"{app}/runtime/*", f"{app}/build/*"}
    by_allow = {r.allow[0].path: r for r in model.roles if r.allow}
    assert by_allow[f"{app}/build/*"].max_token_ttl == 3600.0  # a short TTL: CI-like
    assert by_allow[f"{app}/runtime/*"].max_token_ttl is None and by_allow[f"{app}/runtime/*"].confined
    dev = next(r for r in model.roles if r.name == "developer")
    assert [m.auth_mount for m in dev.match] == [f"auth/{up}/"]
    assert "# why:" in text and "STARTING POINT" in text
    rep = json.loads(report.read_text())
    assert any(rot_p in u["group"] and "writes secrets" in u["why"] for u in rep["unplaced"])
    assert "could not place 1" in capsys.readouterr().err

    # The suggested model catches what the packaged one cannot see here: a person reading a
    # runtime secret (Vault denies it: medium), while the service's own reads stay quiet.
    offset = openbao.audit_log.stat().st_size
    read("erin", f"{app}/runtime/k")
    read("svc", f"{app}/runtime/k")
    events = _events(openbao.audit_log, offset, want=4)
    alerts = [
        a
        for a in Engine({"model_enabled": False, "policy": model}).process_batch(events)
        if a.detector == "access-model-violation"
    ]
    assert [a.identity.display_name for a in alerts] == [f"{up}-erin"]


def test_suggest_errors_name_the_fix(tmp_path: Path, capsys: Any) -> None:
    assert main(["access-model", "suggest"]) == 2
    err = capsys.readouterr().err
    assert "--vault-addr URL --token-file PATH" in err and "FILE" in err
    assert main(["access-model", "suggest", str(tmp_path / "nope.log")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--token-file"):
        main(["access-model", "suggest", "--vault-addr", "http://127.0.0.1:1"])
    tf = tmp_path / "t"
    tf.write_text("s.canary-token-value")
    assert (
        main(["access-model", "suggest", "--vault-addr", "http://127.0.0.1:1", "--token-file", str(tf)]) == 2
    )
    err = capsys.readouterr().err
    assert "cannot use Vault" in err and "canary-token-value" not in err
    with pytest.raises(SystemExit):
        main(["access-model", "suggest", "--help"])
    assert "examples:" in capsys.readouterr().out


# -- drift (item 4) --------------------------------------------------------------------------------
@pytest.mark.integration
def test_drift_in_replay_and_inspect(openbao: OpenBaoServer, tmp_path: Path, capsys: Any) -> None:
    """Secrets under kv/apps/pxl/...: the packaged model's logos/pxl-core globs match nothing."""
    root = openbao.client()
    mount = _name("kv")
    root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    for name in ("jwt-key", "api-key", "db-password"):
        root.secrets.kv.v2.create_or_update_secret(
            path=f"apps/pxl/runtime/{name}", secret={"v": "1"}, mount_point=mount
        )
    for _ in range(40):
        root.secrets.kv.v2.read_secret_version(
            path="apps/pxl/runtime/jwt-key", mount_point=mount, raise_on_deleted_version=True
        )
    events = [e for e in _events(openbao.audit_log) if e.is_response]
    watch = DriftWatch(default_policy(), busy_events=20)
    for e in events:
        watch.observe(e)
    report = watch.report()
    assert report.busy
    drifting = {d.glob: d for d in report.drifting}
    assert "logos/pxl-core/*" in drifting
    assert drifting["logos/pxl-core/runtime/jwt*"].suggestions == ("apps/pxl/runtime/jwt*",)
    assert "apps/pxl/runtime/api-key*" in drifting["logos/pxl-core/runtime/api-key*"].suggestions
    # A model that fits the layout does not drift.
    fitting = default_policy().__class__(protected=("apps/pxl/*",), source="t")
    ok = DriftWatch(fitting, busy_events=20)
    for e in events:
        ok.observe(e)
    assert ok.report().drifting == ()
    # Not busy: not judged.
    quiet = DriftWatch(default_policy())
    for e in events:
        quiet.observe(e)
    assert not quiet.report().busy and quiet.report().drifting == ()
    # State round-trips through plain data.
    twin = DriftWatch(default_policy(), busy_events=20)
    twin.load(json.loads(json.dumps(watch.state())))
    assert twin.report() == report

    # replay --json carries it; inspect prints it. 40 reads are not "busy" by the default of
    # 1000 events a day, so the CLIs say nothing here...
    alerts = tmp_path / "alerts.jsonl"
    assert main(["replay", str(openbao.audit_log), "--alerts-out", str(alerts), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["access_model_drift"]["busy"] is False
    # ...while a busy copy of the same day does.
    busy_log = tmp_path / "busy.log"
    reads = [json.loads(ln) for ln in openbao.audit_log.read_bytes().splitlines() if b"jwt-key" in ln]
    with busy_log.open("w") as f:
        for i in range(2200 // max(1, len(reads)) + 1):  # responses: half the lines
            for entry in reads:
                entry["request"]["id"] = f"{i}-{entry['request']['id']}"
                f.write(json.dumps(entry) + "\n")
    assert main(["replay", str(busy_log), "--alerts-out", str(alerts), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    globs = {d["glob"]: d for d in summary["access_model_drift"]["drifting"]}
    assert summary["access_model_drift"]["busy"] and "logos/pxl-core/*" in globs
    assert globs["logos/pxl-core/runtime/jwt*"]["suggestions"] == ["apps/pxl/runtime/jwt*"]
    assert main(["inspect", str(busy_log)]) == 0
    err = capsys.readouterr().err
    assert "access model drift" in err and "apps/pxl/runtime/jwt*" in err
