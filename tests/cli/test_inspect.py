"""`vaultwatch inspect` over a real OpenBao log with bad lines appended."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ingest import Parser

pytestmark = pytest.mark.integration


def _inspect(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "vaultwatch.cli", "inspect", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def test_counts_events_duplicates_and_quarantines_bad_lines(openbao: Any, tmp_path: Path) -> None:
    openbao.client().sys.list_enabled_audit_devices()
    real = openbao.audit_log.read_bytes()
    n = len(real.splitlines())
    log = tmp_path / "audit.log"
    log.write_bytes(real + b"not json\n" + b'{"time": "x"}\n' + b'{"x":"' + b"a" * 5_000_000 + b'"}\n')
    q = tmp_path / "q.jsonl"
    out = _inspect(str(log), "--json", "--quarantine", str(q))
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["events"] == n and d["parse_failures_by_reason"] == {
        "no_json": 1,
        "wrong_type": 1,
        "too_large": 1,
    }
    assert len(q.read_text().splitlines()) == 3
    twice = _inspect("-", "--json", stdin=real + real)
    t = json.loads(twice.stdout)
    # Entries without a request id (OpenBao writes a few) cannot be recognised as copies.
    no_id = sum(Parser().parse(line).request_id is None for line in real.splitlines())
    assert (t["events"], t["duplicates"]) == (n + no_id, n - no_id)
    missing = _inspect(str(tmp_path / "nope.log"))
    assert missing.returncode == 2 and b"cannot open" in missing.stderr
