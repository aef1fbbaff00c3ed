"""``vaultwatch demo`` end to end, as a new user runs it: a subprocess with the whole real stack.

OpenBao (socket audit device) -> socket listener -> shipper -> Tansu broker -> worker -> SQLite
store -> API. The injected attacks must reach the store, the printed address must answer, nothing
secret may be printed, and no ``bao`` or broker process may outlive the demo.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts.store import AlertQuery, Store

pytestmark = pytest.mark.integration

ATTACKER_ROOT_ADDR = "203.0.113.9"  # vaultwatch.demo.traffic's root-token-use attacker
BRUTE_FORCE_ADDR = "198.51.100.23"  # vaultwatch.demo.traffic's brute-force attacker


def _children(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid``: pid -> command line (read from /proc)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        for child, ppid in parents.items():
            if ppid == p and child not in found:
                found[child] = _cmdline(child)
                frontier.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _processes_mentioning(text: str) -> list[int]:
    return [
        int(d.name)
        for d in Path("/proc").iterdir()
        if d.name.isdigit() and text in _cmdline(int(d.name)) and _alive(int(d.name))
    ]


class _Demo:
    """``vaultwatch demo`` in a subprocess, its stdout and stderr read line by line as it runs."""

    def __init__(self, *args: str, own_group: bool = False) -> None:
        # own_group: a process group of its own, like a shell job, so that a "terminal Ctrl-C"
        # (SIGINT to the whole group) can be sent without reaching pytest.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vaultwatch.cli", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=own_group,
        )
        self.out_lines: list[str] = []
        self.err_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out_lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err_lines), daemon=True),
        ]
        for t in self._readers:
            t.start()
        self.children: dict[int, str] = {}

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for raw in stream:
            into.append(raw.decode(errors="replace"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in [*self.out_lines, *self.err_lines]:
                m = rx.search(line)
                if m:
                    return m
            self.children.update(_children(self.proc.pid))
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.kill()
        pytest.fail(f"no {pattern!r} in the demo's output:\n{self.output[-3000:]}")

    def finish(self, timeout: float) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the demo did not exit in {timeout}s:\n{self.output[-3000:]}")
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        for t in self._readers:
            t.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def kill(self) -> None:
        for pid in _children(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait()
        self._close()

    @property
    def stdout(self) -> str:
        return "".join(self.out_lines)

    @property
    def output(self) -> str:
        return self.stdout + "".join(self.err_lines)


@pytest.fixture
def run_demo() -> Iterator[Callable[..., _Demo]]:
    """Start demos; any still running at teardown (a failed test) is killed with its children."""
    made: list[_Demo] = []

    def start(*args: str, own_group: bool = False) -> _Demo:
        demo = _Demo(*args, own_group=own_group)
        made.append(demo)
        return demo

    yield start
    for demo in made:
        if demo.proc.poll() is None:
            demo.kill()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read())


def _assert_no_leftovers(demo: _Demo, workdir: Path) -> None:
    names = " ".join(demo.children.values())
    assert "bao" in names and "broker" in names, f"expected bao and the broker as children: {names}"
    deadline = time.monotonic() + 5
    left = [p for p in demo.children if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in demo.children if _alive(p)]
    assert not left, f"left behind: {[demo.children[p] for p in left]}"
    assert not _processes_mentioning(str(workdir))


def test_demo_runs_the_stack_and_catches_the_attacks(tmp_path: Path, run_demo: Callable[..., _Demo]) -> None:
    work = tmp_path / "demo"
    demo = run_demo(
        "--exit-after-traffic",
        "--json",
        "--keep",
        str(work),
        "--days",
        "2",
        "--warmup-days",
        "1",
        "--port",
        "0",
    )
    m = demo.wait_for(r"UI and API:\s+(http://127\.0\.0\.1:\d+/)", timeout=60)
    ui = m.group(1)
    creds = json.loads((work / "credentials.json").read_text())
    headers = {"X-API-Key": creds["api_key"]}
    status, _ = _get(ui + "healthz")
    assert status == 200
    # The real API: it refuses a request without credentials and answers the demo's API key.
    assert _get(ui + "api/v1/alerts")[0] == 401
    status, body = _get(ui + "api/v1/alerts", headers)
    assert status == 200 and json.loads(body) is not None
    status, _ = _get(ui)
    assert status == 200
    # The demo user can log in over plain http (no Secure cookie on loopback).
    req = urllib.request.Request(
        ui + "api/v1/auth/login",
        data=json.dumps(creds["ui_login"]).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
        assert resp.status == 200
        assert "secure" not in (resp.headers.get("Set-Cookie") or "").lower()
    code = demo.finish(timeout=90)
    assert code == 0, demo.output[-3000:]

    doc = json.loads(demo.stdout)
    assert doc["ui"] == ui
    assert doc["pipeline"]["caught_up"] is True
    assert doc["pipeline"]["consumed"] >= doc["pipeline"]["shipped"] > 1000
    assert doc["attacks_detected"] == {
        "developer-reads-runtime": True,
        "brute-force": True,
        "root-token-use": True,
    }

    # The alerts are in the store the worker wrote, not only in the demo's memory.
    with Store(f"sqlite:///{work / 'vaultwatch.db'}") as store:
        stored = store.list_alerts(AlertQuery(limit=500)).items
    by_detector: dict[str, list[object]] = {}
    for a in stored:
        by_detector.setdefault(a.detector, []).append(a)
    assert any(ATTACKER_ROOT_ADDR in a.source_addresses for a in stored if a.detector == "root-token-use")
    assert any(BRUTE_FORCE_ADDR in a.source_addresses for a in stored if a.detector == "login-failure-burst")
    assert any(
        a.identity.display_name == "userpass-dana" and any("pxl-core/runtime" in p for p in a.paths)
        for a in stored
        if a.detector == "access-model-violation"
    )
    assert {a.id for a in stored} == {a["id"] for a in doc["alerts"]}

    # Secrets: every credential is random and only in the 0600 file, never in the output.
    creds_file = work / "credentials.json"
    assert creds_file.stat().st_mode & 0o077 == 0
    creds = json.loads(creds_file.read_text())
    secrets = [
        creds["openbao"]["root_token"],
        *creds["openbao_userpass"].values(),
        creds["api_key"],
        creds["ui_login"]["password"],
    ]
    assert len(secrets) > 5 and all(len(s) >= 12 for s in secrets)
    for s in secrets:
        assert s not in demo.output
    _assert_no_leftovers(demo, work)


@pytest.mark.parametrize("how", ["sigterm", "terminal-ctrl-c"])
def test_signal_mid_scenario_stops_everything(
    tmp_path: Path, run_demo: Callable[..., _Demo], how: str
) -> None:
    """SIGTERM to the demo, or Ctrl-C in a terminal (SIGINT to the whole process group, the
    servers included): a clean exit with no server left behind."""
    work = tmp_path / "demo"
    demo = run_demo("--keep", str(work), "--days", "3", "--warmup-days", "2", "--port", "0", own_group=True)
    demo.wait_for(r"traffic: warm-up", timeout=60)
    demo.children.update(_children(demo.proc.pid))
    if how == "sigterm":
        demo.proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(demo.proc.pid, signal.SIGINT)
    t0 = time.monotonic()
    code = demo.finish(timeout=45)
    assert code == 0, demo.output[-3000:]
    assert time.monotonic() - t0 < 40
    assert "stopped on request" in demo.output
    assert "Traceback" not in demo.output
    _assert_no_leftovers(demo, work)


def test_traffic_progress_fraction() -> None:
    from vaultwatch.demo.stack import TrafficProgress

    p = TrafficProgress(warmup_days=2.0)
    assert p.warmup_fraction == 0.0
    p.sim_days = 1.0
    assert p.warmup_fraction == 0.5
    p.sim_days = 5.0
    assert p.warmup_fraction == 1.0
    assert TrafficProgress(warmup_days=0.0).warmup_fraction == 1.0


def test_keep_refuses_a_previous_run(tmp_path: Path) -> None:
    """A kept directory with a previous run's store is refused (its checkpoints would shadow the
    new run), and nothing in it is touched."""
    (tmp_path / "vaultwatch.db").write_bytes(b"previous run")
    proc = subprocess.run(
        [sys.executable, "-m", "vaultwatch.cli", "demo", "--keep", str(tmp_path)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert b"previous demo run" in proc.stderr
    assert (tmp_path / "vaultwatch.db").read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vaultwatch.db"]
