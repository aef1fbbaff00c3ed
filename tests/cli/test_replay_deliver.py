"""`vaultwatch replay --deliver`: a replay's alerts reach a real webhook receiver, signed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.alerts.receivers import HttpReceiver

pytestmark = pytest.mark.integration
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_replay_delivers_through_routes_and_channels(openbao: Any, tmp_path: Path) -> None:
    from vaultwatch.cli.demo import drive_traffic, setup_org

    drive_traffic(openbao, setup_org(openbao.client()), 3)
    with HttpReceiver() as hook:
        cfg = tmp_path / "vw.toml"
        cfg.write_text(f"""
[store]
url = "sqlite:///{tmp_path / "vw.db"}"
[routes]
receivers = [{{name = "soc", integrations = [{{channel = "webhook"}}]}}]
route = {{receiver = "soc", group_wait = "30s"}}
[channels.delivery]
allow_loopback = true
[[channels.receivers]]
name = "soc"
[[channels.receivers.webhook]]
url = "env:VW_HOOK_URL"
signing_secrets = ["env:VW_HOOK_SECRET"]
""")
        env = {**os.environ, "VW_HOOK_URL": hook.url("/hook"), "VW_HOOK_SECRET": SECRET}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "vaultwatch.cli",
                "replay",
                str(openbao.audit_log),
                "--alerts-out",
                str(tmp_path / "alerts.jsonl"),
                "--deliver",
                str(cfg),
                "--json",
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        got = hook.received()
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    # Default inhibition: an identity's critical alert mutes its lower-severity groups.
    critical = {a["identity"]["key"] for a in alerts if a["severity"] == "critical"}
    shown = [a for a in alerts if a["severity"] == "critical" or a["identity"]["key"] not in critical]
    groups = {(a["identity"]["key"], a["detector"]) for a in shown}
    assert summary["delivery"]["pending"] == 0, (summary["delivery"], len(got), len(groups))
    assert len(got) == len(groups)  # one notification per group (identity x detector)
    wh = Webhook(SECRET)
    delivered = set()
    for r in got:
        payload = wh.verify(r.body, {k.lower(): v for k, v in r.headers.items()})
        delivered |= {a["id"] for a in payload["alerts"]}
    assert delivered == {a["id"] for a in shown}
    assert SECRET not in out.stdout + out.stderr
