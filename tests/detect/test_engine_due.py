"""Deadline-driven detectors fire from Engine.flush, without waiting for another event."""

from __future__ import annotations

from typing import Any

import pytest

from detect.engine import Engine
from ingest import Deduplicator, Parser


@pytest.mark.integration
def test_rotation_overdue_fires_on_flush(openbao: Any) -> None:
    root = openbao.client()
    root.sys.enable_secrets_engine("kv", path="logos", options={"version": "2"})
    root.secrets.kv.v2.create_or_update_secret(
        path="pxl-core/runtime/jwt-key", secret={"k": "1"}, mount_point="logos"
    )
    parser, dedup = Parser(), Deduplicator()
    eng = Engine({"model_enabled": False})
    last = 0.0
    for line in openbao.audit_log.read_bytes().splitlines():
        ev = parser.parse(line)
        if not dedup.is_duplicate(ev):
            eng.process(ev)
            last = max(last, ev.ts)
    assert not [a for a in eng.flush(last + 3600) if a.detector == "rotation-overdue"]  # within a day
    overdue = [a for a in eng.flush(last + 2 * 86400) if a.detector == "rotation-overdue"]
    assert overdue and "jwt-key" in overdue[0].paths[0]
