"""Shared benchmark inputs: a large real OpenBao audit log, made once and cached under var/bench."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / "var" / "bench"


def real_openbao_log(rounds: int = 60) -> Path:
    """An audit log written by a real OpenBao server driven through its API (cached)."""
    from vaultwatch.cli.demo import drive_traffic, setup_org
    from vaultwatch.demo.servers import OpenBaoServer

    out = CACHE / f"openbao-audit-{rounds}.log"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with OpenBaoServer(CACHE / f"bao-{uuid.uuid4().hex[:8]}") as srv:
        drive_traffic(srv, setup_org(srv.client()), rounds)
        srv.stop()
        out.write_bytes(srv.audit_log.read_bytes())
    return out


def scaled_lines(path: Path, n: int) -> list[bytes]:
    """``n`` real lines: the log repeated, each copy with fresh request ids (so dedup sees new
    entries, as it would in a long real log)."""
    base = [line for line in path.read_bytes().splitlines() if line.strip()]
    out: list[bytes] = []
    copy = 0
    while len(out) < n:
        tag = f"{copy:08x}".encode()
        for line in base:
            # Request ids are UUIDs; replacing their first 8 hex chars keeps the shape.
            i = line.find(b'"id":"')
            if i >= 0 and line[i + 6 : i + 14].isalnum():
                line = line[: i + 6] + tag + line[i + 14 :]
            out.append(line)
            if len(out) == n:
                break
        copy += 1
    return out


def rate(fn: Callable[[], int], repeat: int = 3) -> float:
    """Best items/second over ``repeat`` runs of ``fn`` (which returns the item count)."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        best = max(best, n / dt)
    return best
