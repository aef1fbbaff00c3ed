"""Outputs are whole or absent (issue 18): ``replay --alerts-out`` killed mid-write.

Before: a replay killed while writing its alerts left a file with some of them, every line valid
JSON, and nothing to say it was partial. Now the alerts go to ``<out>.partial`` and are renamed
on success: a SIGKILL leaves the previous file (or none), and the next run says so.

The subprocess is the real ``vaultwatch replay`` command line. Only the detection result is
replaced, by many alerts whose encoding is slowed down (the write of a large run's output), so
the kill reliably lands inside the write: the file under test is the real one the CLI writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vaultwatch.service.atomic import atomic_writer, leftover, partial_path, write_bytes_atomic

#: Runs ``vaultwatch replay`` with a stand-in detection result of N alerts, each taking DELAY
#: seconds to encode: argv = [N, DELAY, TAG, replay arguments...].
_DRIVER = r"""
import sys, time
import vaultwatch.cli.replay as cli
from vaultwatch.cli import main

n, delay, tag = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]

class SlowAlert:
    def __init__(self, i):
        self.i = i
    def to_dict(self):
        if delay:
            time.sleep(delay)
        return {"schema": "vaultwatch.alert/v1", "id": f"{tag}-{self.i:06d}", "pad": "x" * 200}

class Result:
    alerts = [SlowAlert(i) for i in range(n)]
    def summary(self):
        return {"alerts": n}

cli.replay = lambda *a, **k: Result()
sys.exit(main(["replay", *sys.argv[4:]]))
"""


def _replay(tmp_path: Path, out: Path, n: int, delay: float, tag: str) -> subprocess.Popen[str]:
    log = tmp_path / "audit.log"
    log.write_text("")
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _DRIVER,
            str(n),
            str(delay),
            tag,
            str(log),
            "--alerts-out",
            str(out),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


def _kill_mid_write(proc: subprocess.Popen[str], out: Path, before: bytes | None) -> None:
    """SIGKILL ``proc`` as soon as its write has begun (a ``.partial`` file, or ``out`` changed)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the replay ended before it could be killed: {proc.communicate()[1]}")
        part = partial_path(out)
        now = out.read_bytes() if out.exists() else None
        if (part.exists() and part.stat().st_size > 0) or now != before:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)  # reaps it and closes the pipes
            return
        time.sleep(0.005)
    proc.kill()
    proc.communicate(timeout=30)
    pytest.fail("the replay never started writing")


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_a_killed_replay_leaves_the_previous_alerts_and_the_next_run_says_so(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    first = _replay(tmp_path, out, 50, 0.0, "first")
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    previous = out.read_bytes()
    assert _ids(out) == [f"first-{i:06d}" for i in range(50)]

    killed = _replay(tmp_path, out, 3000, 0.002, "killed")
    _kill_mid_write(killed, out, previous)
    assert killed.returncode == -signal.SIGKILL
    assert out.read_bytes() == previous  # the previous file, whole
    assert leftover(out) is not None  # and the trace of the interrupted write

    again = _replay(tmp_path, out, 20, 0.0, "again")
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert "interrupted" in stderr and str(out) in stderr
    assert json.loads(stdout)["previous_run_interrupted"] is True
    assert _ids(out) == [f"again-{i:06d}" for i in range(20)]
    assert leftover(out) is None


def test_a_first_run_killed_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "alerts.jsonl"
    killed = _replay(tmp_path, out, 3000, 0.002, "killed")
    _kill_mid_write(killed, out, None)
    assert not out.exists()


def test_the_helper_keeps_the_previous_file_on_an_exception(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    write_bytes_atomic(out, b"old")
    with pytest.raises(RuntimeError), atomic_writer(out) as f:
        f.write(b"half of the new")
        raise RuntimeError("interrupted")
    assert out.read_bytes() == b"old"
    assert leftover(out) == tmp_path / "report.json.partial"
    write_bytes_atomic(out, b"new")
    assert out.read_bytes() == b"new" and leftover(out) is None
