"""Soak and chaos (issue 18): ``vaultwatch run`` under a steady load while things break.

Two ``vaultwatch run`` worker processes share one consumer group on a **private PostgreSQL
cluster** (``initdb``/``pg_ctl`` from ``/usr/lib/postgresql/*/bin``, on a free port in the work
directory: the shared server on 5432 is never touched), a real Tansu broker and a loopback webhook
receiver. A producer offers real OpenBao audit lines (:func:`bench.common.real_openbao_log`, each
restamped to the wall clock with a fresh request id) at a steady rate, keyed by identity as the
shipper does, plus a poison record (with a canary secret) every ``--poison-every`` seconds.

A scripted schedule, scaled to ``--duration``:

* SIGKILL a worker ``--kills`` times (alternating, restarted 2 s later);
* restart the broker. Tansu here has **memory storage only** (the wheel's build has no
  ``postgres://`` engine), so a restart is a new, empty cluster: every topic, record and broker-side
  offset is gone. The soak drains the topic first (producer paused until the workers' stored
  offsets reach the log end), restarts, re-creates the topics, and carries on. The new log's
  offsets start at 0, below the workers' checkpoints: the workers see the topic's new id, read it
  from its beginning and skip only entries older than those they handled (nothing of the new log
  is). The figures still count the lines offered below the old checkpoints (which workers that
  trusted offsets alone would have skipped); the DLQ's earlier records are gone with the broker's
  memory;
* restart PostgreSQL (``pg_ctl stop -m immediate``, a crash, then start);
* take the webhook receiver down for ``--webhook-outage`` seconds (default a third of the run,
  at most 10 minutes);
* fill the archive's disk: the archive has no size setting of its own, so it is put on a tmpfs of
  ``--archive-mb`` (needs root to mount; said when it cannot) which a filler file fills to the
  last byte for a while, then frees.

At the end it prints: alerts lost and extra against ``vaultwatch replay`` of the same input (one
replay per partition, as the worker runs one engine per partition), duplicate alert rows, whether
every webhook was delivered and in order after the outage, whether the DLQ holds exactly the poison
records (decrypted with the quarantine key; and that no canary is in its bytes), and the workers'
RSS over time.

    python -m bench.soak --duration 1800          # make soak (SOAK_SECONDS=...)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 3
CANARY = "s.SOAKcanary5e1f00d0000secret"
_TIME = re.compile(rb'^\{"time":"[^"]*"')
_REQ_ID = re.compile(rb'"id":"[0-9a-f]{8}')


def _log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: T201


# -- PostgreSQL, private ---------------------------------------------------------------------------
class PrivatePostgres:
    """A PostgreSQL cluster of the soak's own, in ``root``, on a free port (trust auth)."""

    def __init__(self, root: Path, port: int) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/pg_ctl: install postgresql")
        self.bin = bins[-1].parent
        self.root = root
        self.data = root / "data"
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        # initdb refuses to run as root: the cluster then belongs to the postgres user.
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [str(self.bin / args[0]), *args[1:]], capture_output=True, text=True, check=False, user=self.user
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({r.returncode}): {r.stderr.strip()[-1500:]}")
        return r

    def init(self) -> PrivatePostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "pg.log"), "-o", opts, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def crash_restart(self, down: float) -> None:
        self.stop("immediate")
        time.sleep(down)
        self.start()


# -- the webhook receiver --------------------------------------------------------------------------
@dataclass
class Hook:
    """A loopback webhook receiver that can be taken down (its port then refuses connections)."""

    port: int
    received: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)  # (at, webhook-id, body)
    _server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def up(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                msg_id = self.headers.get("webhook-id", "")
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"unparsed": len(body)}
                with owner.lock:
                    owner.received.append((time.time(), msg_id, payload))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# -- the offered load ------------------------------------------------------------------------------
def _stamp(line: bytes, ts: float, n: int) -> bytes:
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"
    line = _TIME.sub(b'{"time":"' + t.encode() + b'"', line, count=1)
    return _REQ_ID.sub(b'"id":"' + f"{n & 0xFFFFFFFF:08x}".encode(), line, count=1)


def _poison(n: int) -> bytes:
    kinds = (
        b'{"time":"2026-12-01T00:00:00Z","type":"request","auth":{"client_token":"'
        + CANARY.encode()
        + b'","po',
        b"\xff\xfe password=" + CANARY.encode() + b" \xc3\x28",
        b'{"type":"request","time":"0001-01-01T00:00:00","auth":{"client_token":"' + CANARY.encode() + b'"}}',
    )
    return kinds[n % len(kinds)] + f" #{n}".encode()


class Producer:
    """Offers stamped real lines at ``rate``/s (keyed by identity); pausable; records what was
    acknowledged per partition, in order, for the reference replay."""

    def __init__(
        self, bootstrap: str, topic: str, lines: list[bytes], rate: float, work: Path, poison_every: float
    ):
        from ingest.codec import encode_entry
        from ingest.parse import Parser

        self.bootstrap, self.topic, self.lines, self.rate = bootstrap, topic, lines, rate
        self.encode, self.parser = encode_entry, Parser()
        self.poison_every = poison_every
        self.files = {p: open(work / f"offered-p{p}.log", "ab") for p in range(PARTITIONS)}  # noqa: SIM115
        # Lines offered after the memory broker's restart at offsets below the workers' checkpoints
        # (the new log starts at 0): workers trusting offsets alone would skip them (module doc).
        self.below = {p: open(work / f"below-checkpoint-p{p}.log", "ab") for p in range(PARTITIONS)}  # noqa: SIM115
        self.skip_below: dict[int, int] = {}
        self.skipped = 0
        self.poison: list[tuple[float, bytes, bool]] = []  # (when, record, below a checkpoint)
        self.sent = 0
        self.failed_sends = 0
        self.ends: dict[int, int] = {}
        self.go = threading.Event()
        self.go.set()
        self.idle = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._producer: Any = None

    def _connect(self) -> Any:
        from kafka import KafkaProducer

        while not self.stop.is_set():
            try:
                return KafkaProducer(
                    bootstrap_servers=[self.bootstrap], acks="all", linger_ms=5, retries=0, max_block_ms=5000
                )
            except Exception:  # noqa: BLE001 - the broker may be down: retry
                time.sleep(1)
        return None

    def _send(self, key: bytes, value: bytes) -> tuple[int, int]:
        """Send until acknowledged; the partition and offset it went to."""
        while not self.stop.is_set():
            try:
                if self._producer is None:
                    self._producer = self._connect()
                md = self._producer.send(self.topic, key=key, value=value).get(timeout=15)
                self.ends[md.partition] = md.offset + 1
                return int(md.partition), int(md.offset)
            except Exception:  # noqa: BLE001 - retried: nothing offered is dropped
                self.failed_sends += 1
                with contextlib.suppress(Exception):
                    self._producer.close(timeout=0)
                self._producer = None
                time.sleep(1)
        return -1, -1

    def _run(self) -> None:
        interval = 1.0 / self.rate
        nxt = time.monotonic()
        last_poison = time.monotonic()
        i = 0
        while not self.stop.is_set():
            if not self.go.is_set():
                self.idle.set()
                self.go.wait(0.5)
                nxt = time.monotonic()
                continue
            self.idle.clear()
            now = time.monotonic()
            if now < nxt:
                time.sleep(min(nxt - now, 0.2))
                continue
            nxt += interval
            if now - last_poison >= self.poison_every:
                last_poison = now
                bad = _poison(len(self.poison))
                part, off = self._send(b"poison", bad)
                if part >= 0:
                    self.poison.append((time.time(), bad, off < self.skip_below.get(part, 0)))
                continue
            raw = _stamp(self.lines[i % len(self.lines)], time.time(), i)
            i += 1
            try:
                ev = self.parser.parse(raw)
            except Exception:  # noqa: BLE001 - the source log's own bad lines are not offered
                continue
            part, off = self._send(ev.identity.key.encode(), self.encode(ev))
            if part >= 0:
                self.files[part].write(raw + b"\n")
                self.files[part].flush()
                self.sent += 1
                if off < self.skip_below.get(part, 0):
                    self.below[part].write(raw + b"\n")
                    self.below[part].flush()
                    self.skipped += 1
        self.idle.set()

    def pause(self) -> None:
        self.go.clear()
        self.idle.wait(30)

    def close(self) -> None:
        self.stop.set()
        self.go.set()
        if self.thread.is_alive():
            self.thread.join(30)
        for f in [*self.files.values(), *self.below.values()]:
            f.close()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=5)


# -- helpers ---------------------------------------------------------------------------------------
def _create_topics(bootstrap: str, topics: list[str]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    deadline = time.monotonic() + 60
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
            try:
                admin.create_topics(
                    [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in topics]
                )
            finally:
                admin.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _query(url: str, sql: str) -> list[Any]:
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    try:
        with eng.connect() as c:
            return list(c.execute(sa.text(sql)))
    finally:
        eng.dispose()


def _offsets(url: str, group: str) -> dict[int, int]:
    try:
        rows = _query(url, f"SELECT partition, \"offset\" FROM consumer_offsets WHERE group_id = '{group}'")
    except Exception:  # noqa: BLE001 - PostgreSQL may be restarting
        return {}
    return {int(p): int(o) for p, o in rows}


def _mount_tmpfs(path: Path, mb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(path)], capture_output=True, check=False
    )
    return r.returncode == 0


def _fill(path: Path) -> int:
    """Write a filler file until the filesystem is full; its size."""
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    n += os.write(fd, chunk)
    finally:
        os.close(fd)
    return n


@dataclass
class Worker:
    name: str
    cfg: Path
    work: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    rss: list[tuple[float, int, float]] = field(default_factory=list)  # (t, pid, MB)
    starts: int = 0
    died_at: float | None = None

    def start(self) -> None:
        log = open(self.work / f"{self.name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vaultwatch.cli", "--log-level", "INFO", "run",
                 "--config", str(self.cfg), "--checkpoint-interval", "1"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.work,
            )  # fmt: skip
            self.starts += 1
        finally:
            log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return -9
        return self.proc.returncode


# -- the run ---------------------------------------------------------------------------------------
def _config(work: Path, bootstrap: str, topic: str, pg: str, archive: Path, hook_port: int) -> Path:
    cfg = work / "soak.toml"
    cfg.write_text(
        f"""
[kafka]
bootstrap = "{bootstrap}"
topic = "{topic}"
group_id = "soak"
max_poll_records = 200

[store]
url = "{pg}"

[archive]
enabled = true
path = "{archive}"
flush_interval_s = 5

[routes]
receivers = [{{name = "soc", integrations = [{{channel = "webhook"}}]}}]
route = {{receiver = "soc", group_wait = "1s", group_interval = "5s"}}

[channels.delivery]
allow_loopback = true
# A drill schedule: one retry a minute for 20 minutes. The default (Standard Webhooks': 5 s, 5 min,
# 30 min, 2 h...) resumes up to 30 minutes after a 10-minute outage, past the end of the soak.
schedule = [0, 5, 15, 30, {", ".join(["60"] * 20)}]
jitter = 0.1

[[channels.receivers]]
name = "soc"
[[channels.receivers.webhook]]
url = "env:SOAK_HOOK_URL"
signing_secrets = ["env:SOAK_HOOK_SECRET"]
"""
    )
    return cfg


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The soak; every process it started is stopped and the tmpfs unmounted, whatever happens."""
    with contextlib.ExitStack() as cleanup:
        return _run(args, cleanup)


def _run(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> dict[str, Any]:
    from bench.common import real_openbao_log
    from ingest.quarantine import KEY_FILE_ENV, generate_key_file
    from vaultwatch.demo.servers import KafkaBroker, free_port

    duration = float(args.duration)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vw-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    _log(f"work directory {work}; duration {duration:.0f}s, rate {args.rate}/s")
    lines = [ln for ln in real_openbao_log(args.rounds).read_bytes().splitlines() if ln.strip()]
    key = generate_key_file(work / "quarantine.key")
    topic = "soak-audit"
    if not args.keep:
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
    # Its own directory under the system temp dir: the postgres user (when run as root) must be
    # able to reach it, which a 0700 parent (pytest's tmp_path) does not allow.
    pg_root = Path(tempfile.mkdtemp(prefix="vw-soak-pg-"))
    if not args.keep:
        cleanup.callback(shutil.rmtree, pg_root, ignore_errors=True)
    pg = PrivatePostgres(pg_root, free_port()).init()
    pg.start()
    cleanup.callback(pg.stop)
    brokers = [KafkaBroker(free_port()).start()]
    cleanup.callback(lambda: brokers[-1].kill())
    broker = brokers[-1]
    _create_topics(broker.bootstrap, [topic, f"{topic}.dlq"])
    archive = work / "archive"
    tmpfs = _mount_tmpfs(archive, args.archive_mb)
    if tmpfs:
        cleanup.callback(subprocess.run, ["umount", "-l", str(archive)], check=False)
    hook = Hook(free_port())
    hook.up()
    cleanup.callback(hook.down)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
        KEY_FILE_ENV: str(key),
        "SOAK_HOOK_URL": f"http://127.0.0.1:{hook.port}/hook",
        "SOAK_HOOK_SECRET": "whsec_" + "c29ha3NlY3JldHNvYWtzZWNyZXQ=",
    }
    cfg = _config(work, broker.bootstrap, topic, pg.url, archive, hook.port)
    workers = [Worker(f"worker-{c}", cfg, work, env) for c in "ab"][: args.workers]
    for w in workers:
        w.start()
        cleanup.callback(w.kill)
    producer = Producer(broker.bootstrap, topic, lines, args.rate, work, args.poison_every)
    cleanup.callback(producer.close)
    events: list[tuple[float, str]] = []
    t0 = time.time()
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(args.rss_every):
            for w in workers:
                if w.proc is not None and w.proc.poll() is None:
                    mb = _rss_mb(w.proc.pid)
                    if mb is not None:
                        w.rss.append((time.time() - t0, w.proc.pid, mb))

    threading.Thread(target=sample, daemon=True).start()
    time.sleep(5)  # the group forms
    producer.thread.start()

    # -- the schedule, scaled to the duration --
    outage = min(600.0, duration / 3) if args.webhook_outage is None else float(args.webhook_outage)
    schedule: list[tuple[float, str]] = []
    # The first kill after the group has formed and settled (a kill during the very first join is
    # a different test); then evenly over 80 % of the run.
    first = max(20.0, duration * 0.08)
    for k in range(args.kills):
        schedule.append(
            (first + (duration * 0.88 - first) * k / max(1, args.kills), f"kill:{k % len(workers)}")
        )
    schedule += [
        (duration * 0.15, "disk-fill"),
        (duration * 0.22, "disk-free"),
        (duration * 0.35, "broker-restart"),
        (duration * 0.50, "pg-restart"),
        (duration * 0.55, "hook-down"),
        (duration * 0.55 + outage, "hook-up"),
    ]
    if args.no_chaos:
        schedule = []
    if args.no_broker_restart:
        schedule = [x for x in schedule if x[1] != "broker-restart"]
    schedule.sort()
    broker_restart_at: float | None = None
    hook_up_at: float | None = None
    self_exits: Counter[str] = Counter()
    filler = archive / "filler.bin"
    for at, action in schedule:
        while time.time() - t0 < at:
            time.sleep(0.5)
            for w in workers:  # a worker that died on its own is restarted (after 5 s, as a
                # supervisor with RestartSec=5 would), and counted
                if w.proc is not None and w.proc.poll() is not None:
                    if w.died_at is None:
                        w.died_at = time.time()
                        why = _last_error(w.work / f"{w.name}.log")
                        events.append(
                            (time.time() - t0, f"{w.name} exited {w.proc.returncode} on its own: {why}")
                        )
                        self_exits[w.name] += 1
                    elif time.time() - w.died_at >= 5:
                        w.died_at = None
                        w.start()
        now = time.time() - t0
        if action.startswith("kill:"):
            w = workers[int(action.split(":")[1])]
            w.kill()
            events.append((now, f"SIGKILL {w.name}"))
            time.sleep(2)
            w.died_at = None
            w.start()
        elif action == "disk-fill":
            if tmpfs:
                size = _fill(filler)
                events.append(
                    (now, f"archive disk full ({size >> 20} MiB filler on a {args.archive_mb} MiB tmpfs)")
                )
            else:
                events.append((now, "archive disk fill NOT RUN: cannot mount a tmpfs (needs root)"))
        elif action == "disk-free":
            if tmpfs:
                filler.unlink(missing_ok=True)
                events.append((now, "archive disk freed"))
        elif action == "broker-restart":
            producer.pause()
            drained = _drain(pg.url, producer.ends, timeout=240)
            events.append((time.time() - t0, f"producer paused; workers drained: {drained}"))
            broker.kill()
            time.sleep(3)
            stored = _offsets(pg.url, "soak")  # the checkpoints the workers will resume from
            broker = KafkaBroker(broker.port).start()
            brokers.append(broker)
            _create_topics(broker.bootstrap, [topic, f"{topic}.dlq"])
            broker_restart_at = time.time() - t0
            producer.skip_below = stored or dict(producer.ends)
            lost_in_broker = sum(max(0, n - stored.get(p, 0)) for p, n in producer.ends.items())
            events.append(
                (time.time() - t0, f"records never consumed, gone with the broker: {lost_in_broker}")
            )
            producer.ends = {}
            producer.go.set()
            events.append((broker_restart_at, "broker restarted (memory storage: a new, empty log)"))
        elif action == "pg-restart":
            pg.crash_restart(down=5)
            events.append((now, "PostgreSQL crashed (immediate stop) and restarted after 5 s"))
        elif action == "hook-down":
            hook.down()
            events.append((now, f"webhook receiver down for {outage:.0f}s"))
        elif action == "hook-up":
            hook.up()
            hook_up_at = time.time()
            events.append((now, "webhook receiver up"))
    while time.time() - t0 < duration:
        time.sleep(0.5)
    producer.close()
    events.append(
        (time.time() - t0, f"producer stopped: {producer.sent} lines, {len(producer.poison)} poison")
    )
    drained = _drain(pg.url, producer.ends, timeout=args.settle)
    events.append(
        (
            time.time() - t0,
            "workers' stored offsets reached the log end"
            if drained
            else f"workers did NOT reach the log end within --settle {args.settle:.0f}s",
        )
    )
    _settle_outbox(pg.url, timeout=args.settle)
    stop_sampling.set()
    codes = {w.name: w.stop() for w in workers}
    figures = _figures(
        args, work, pg.url, producer, hook, broker, topic, key, broker_restart_at, t0, hook_up_at
    )
    figures["events"] = [f"{t:7.1f}s {e}" for t, e in events]
    figures["worker_exit_codes"] = codes
    figures["worker_starts"] = {w.name: w.starts for w in workers}
    figures["worker_exits_on_their_own"] = dict(self_exits)
    figures["rss_mb"] = {w.name: _rss_summary(w.rss) for w in workers}
    figures["archive_tmpfs"] = tmpfs
    figures["drained"] = drained
    return figures


def _drain(url: str, ends: dict[int, int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _offsets(url, "soak")
        if ends and all(got.get(p, 0) >= n for p, n in ends.items()):
            return True
        time.sleep(1)
    return False


def _settle_outbox(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            (n,) = _query(url, "SELECT count(*) FROM outbox WHERE state = 'pending'")[0]
            if n == 0:
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(2)


def _rss_summary(samples: list[tuple[float, int, float]]) -> dict[str, Any]:
    """Per process lifetime: first (after a minute's warm-up) and last RSS, and the slope."""
    by_pid: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for t, pid, mb in samples:
        by_pid[pid].append((t, mb))
    lives = []
    for pid, pts in by_pid.items():
        warm = [p for p in pts if p[0] - pts[0][0] >= 60] or pts
        first, last = warm[0], warm[-1]
        minutes = max((last[0] - first[0]) / 60, 1e-9)
        lives.append(
            {
                "pid": pid,
                "from_s": round(pts[0][0]),
                "minutes": round((pts[-1][0] - pts[0][0]) / 60, 1),
                "rss_first_mb": round(first[1], 1),
                "rss_last_mb": round(last[1], 1),
                "rss_max_mb": round(max(p[1] for p in pts), 1),
                "mb_per_minute": round((last[1] - first[1]) / minutes, 2) if minutes > 0.5 else None,
            }
        )
    return {
        "lifetimes": sorted(lives, key=lambda x: x["from_s"]),
        "series": [(round(t), round(m, 1)) for t, _, m in samples],
    }


def _reference(
    work: Path, *, exclude: bool = False, seen: dict[str, dict[str, Any]] | None = None
) -> tuple[set[str], set[str], dict[str, str]]:
    """What ``vaultwatch replay`` raises on the same input: all partitions' offered lines merged
    in event-time order through the same two-stage pipeline ``run`` uses (built as the ``replay``
    command builds it). Returns the ids raised by the events themselves, the ids raised only by
    the replay's final flush (an hour past the last event: time the live run has not reached
    when the soak ends, so not counted as lost), and each id's detector. With ``exclude``, the
    lines the workers took for already processed after the broker's restart are left out. ``seen``
    collects each alert's times, count and first evidence ids (for explaining a difference)."""
    from detect.drift import DriftWatch
    from detect.rules import default_rules
    from vaultwatch.cli import replay as cli
    from vaultwatch.service.replay import read_events, run_engine
    from vaultwatch.settings import load_policy

    drift = DriftWatch(load_policy(None))
    full = {"policy": drift.policy}

    def detectors() -> list[Any]:  # as `vaultwatch replay` builds them
        return [*default_rules(full), drift]

    engine = cli._Archiving(full, seed=0, detectors=detectors, archive=None)  # noqa: SLF001 - replay's own
    by_events: set[str] = set()
    at_flush: set[str] = set()
    detector: dict[str, str] = {}

    def on_event(_: Any, alerts: list[Any]) -> None:
        for a in alerts:
            by_events.add(a.id)
            detector[a.id] = a.detector
            if seen is not None:
                seen[a.id] = _brief(a.first_seen, a.last_seen, a.count, a.event_ids)

    def on_flush(_: float, alerts: list[Any]) -> None:
        for a in alerts:
            at_flush.add(a.id)
            detector[a.id] = a.detector
            if seen is not None:
                seen[a.id] = _brief(a.first_seen, a.last_seen, a.count, a.event_ids)

    files = [f for f in sorted(work.glob("offered-p*.log")) if f.stat().st_size]
    if exclude:
        files = [_without(f, work / f.name.replace("offered-", "below-checkpoint-"), work) for f in files]
    run_engine(read_events(files), engine, on_event=on_event, on_flush=on_flush)
    return by_events, at_flush - by_events, detector


def _brief(first: str, last: str, count: int, event_ids: Any) -> dict[str, Any]:
    return {"first_seen": first, "last_seen": last, "count": count, "event_ids": list(event_ids)[:3]}


def _explain_duplicates(url: str, work: Path, seen: dict[str, dict[str, Any]]) -> Path:
    """Every stored alert whose detector, identity and dedup key another stored alert shares, beside
    what the replay raised for that key: ``duplicates.json`` in the work directory."""
    rows = _query(
        url,
        "SELECT id, detector, identity_key, dedup_key, first_seen, last_seen, count, created_at, alert_json "
        "FROM alerts ORDER BY created_at",
    )
    groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for r in rows:
        groups[(r[1], r[2], r[3])].append(r)
    out = []
    for (det, ident, _), rs in groups.items():
        if len(rs) < 2:
            continue
        out.append(
            {
                "detector": det,
                "identity": ident,
                "stored": [
                    {
                        "id": r[0],
                        "in_replay": r[0] in seen,
                        "created_at": str(r[7]),
                        **_brief(str(r[4]), str(r[5]), r[6], json.loads(r[8]).get("event_ids", [])),
                    }
                    for r in rs
                ],
                "replay": [{"id": i, **b} for i, b in seen.items() if i in {r[0] for r in rs}],
            }
        )
    path = work / "duplicates.json"
    path.write_text(json.dumps(out, indent=1))
    return path


def _late(url: str, group: str) -> int:
    """Records the cross stage judged after its frontier had passed them (out of canonical order)."""
    import msgspec

    from vaultwatch.service.cross import describe
    from vaultwatch.service.worker import _Checkpoint

    rows = _query(url, f"SELECT blob FROM checkpoints WHERE key LIKE 'cross/{group}.xid/%'")
    return sum(describe(msgspec.msgpack.decode(bytes(b), type=_Checkpoint).engine)["late"] for (b,) in rows)


def _without(src: Path, drop: Path, work: Path) -> Path:
    """``src`` without the lines of ``drop`` (each line is unique: it has its own request id)."""
    gone = set(drop.read_bytes().splitlines()) if drop.exists() else set()
    out = work / f"processable-{src.name}"
    with open(src, "rb") as f, open(out, "wb") as g:
        for line in f:
            if line.rstrip(b"\n") not in gone:
                g.write(line)
    return out


def _figures(
    args: argparse.Namespace,
    work: Path,
    url: str,
    producer: Producer,
    hook: Hook,
    broker: Any,
    topic: str,
    key: Path,
    broker_restart_at: float | None,
    t0: float,
    hook_up_at: float | None,
) -> dict[str, Any]:
    from ingest.quarantine import open_records
    from vaultwatch.cli.quarantine import read_dlq

    rows = _query(url, "SELECT id, detector, identity_key, dedup_key, created_at FROM alerts")
    ids = [r[0] for r in rows]
    dup_rows = len(ids) - len(set(ids))
    key_counts = Counter((r[1], r[2], r[3]) for r in rows)
    dup_keys = sum(n - 1 for n in key_counts.values() if n > 1)
    dup_sample = [f"{d} {i[:30]} x{n}" for (d, i, _), n in key_counts.items() if n > 1][:6]
    seen: dict[str, dict[str, Any]] = {}
    ref, flush_only, detector = _reference(work, seen=seen)
    got = set(ids)
    dup_file = _explain_duplicates(url, work, seen) if dup_keys else None
    lost = sorted(ref - got)
    extra = sorted(got - ref - flush_only)
    lost_apart, extra_apart = lost, extra
    if producer.skipped:
        ref_x, flush_x, det_x = _reference(work, exclude=True)
        detector.update(det_x)
        lost_apart = sorted(ref_x - got)
        extra_apart = sorted(got - ref_x - flush_x)
    # Webhooks: every outbox message arrived; per group, in the order the outbox created them.
    outbox = _query(url, "SELECT id, message_id, state, payload FROM outbox ORDER BY id")
    created = {m: (i, json.loads(p).get("group_key", "")) for i, m, _, p in outbox}
    states = Counter(st for _, _, st, _ in outbox)
    first_arrival: dict[str, float] = {}
    delivered_ids: set[str] = set()
    for at, msg_id, payload in hook.received:
        first_arrival.setdefault(msg_id, at)
        for a in payload.get("alerts", []) if isinstance(payload, dict) else []:
            if isinstance(a, dict) and "id" in a:
                delivered_ids.add(a["id"])
    order_breaks = 0
    last: dict[str, int] = {}
    for msg_id, _ in sorted(first_arrival.items(), key=lambda kv: kv[1]):
        if msg_id not in created:
            continue
        seq, group = created[msg_id]
        if seq < last.get(group, -1):
            order_breaks += 1
        last[group] = max(seq, last.get(group, -1))
    never_arrived = sum(1 for m in created if m not in first_arrival)
    after_outage = [m for m, at in first_arrival.items() if hook_up_at is not None and at >= hook_up_at]
    # DLQ: decrypted, against the poison offered since the broker's (memory) restart.
    # At least once: a worker that re-reads its records after a fault puts a refused one again
    # (the same record id); read_dlq skips the repeats and counts them.
    distinct, unsealed, repeated = read_dlq([broker.bootstrap], f"{topic}.dlq")
    lines = sorted(r.line() for r in open_records(distinct, key_file=key))
    since = t0 + (broker_restart_at or 0.0)
    # The DLQ before the restart went with the broker's memory; everything after it is read, the
    # poison below the old checkpoints included (the workers see the topic's new id).
    expect = sorted(p for at, p, _ in producer.poison if at >= since)
    raw_dlq_has_canary = any(CANARY in r.sealed for r in distinct)
    return {
        "offered_lines": producer.sent,
        "producer_retries": producer.failed_sends,
        "alerts_stored": len(ids),
        "alerts_replay_reference": len(ref),
        "alerts_replay_final_flush_only": len(flush_only),
        "alerts_final_flush_only_stored": len(flush_only & got),
        "alerts_lost": len(lost),
        "alerts_lost_by_detector": dict(Counter(detector[i] for i in lost)),
        "lines_below_checkpoint_after_broker_restart": producer.skipped,
        "alerts_lost_apart_from_those_lines": len(lost_apart),
        "alerts_lost_apart_by_detector": dict(Counter(detector[i] for i in lost_apart)),
        "alerts_extra_apart_from_those_lines": len(extra_apart),
        "archive_rows": _archive_rows(work / "archive"),
        "archive_repeated_rows": _archive_repeats(work / "archive"),
        "alerts_extra": len(extra),
        "alerts_lost_sample": lost[:5],
        "duplicate_alert_rows": dup_rows,
        "duplicate_alert_keys": dup_keys,
        "duplicate_alert_keys_sample": dup_sample,
        "duplicate_alert_keys_explained_in": str(dup_file) if dup_file else None,
        "cross_stage_late_records": _late(url, "soak"),
        "webhook_requests": len(hook.received),
        "webhook_messages": len(created),
        "webhook_outbox_states": dict(states),
        "webhook_messages_never_arrived": never_arrived,
        "webhook_messages_first_arrived_after_outage": len(after_outage),
        "webhook_order_breaks_per_group": order_breaks,
        "webhook_alerts_delivered": len(delivered_ids),
        "alerts_stored_in_no_webhook_inhibited_or_grouped": len(got - delivered_ids),
        "poison_offered": len(producer.poison),
        "poison_expected_in_dlq": len(expect),
        "dlq_records": len(distinct) + repeated,
        "dlq_distinct_records": len(distinct),
        "dlq_unsealed": unsealed,
        "dlq_exactly_the_poison": lines == expect,
        "dlq_canary_in_bytes": raw_dlq_has_canary,
        "broker_restart_at_s": broker_restart_at,
    }


def _last_error(log: Path) -> str:
    """The worker's last words (its final error line), for the events list."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "?"
    for line in reversed(lines):
        if "stopped on an error" in line or "cannot start" in line or "Error" in line.split(":", 1)[0]:
            return line.strip()[:200]
    return lines[-1].strip()[:200] if lines else "?"


def _archive_rows(path: Path) -> int:
    """Rows in the archive's Parquet files (every event the workers archived, repeats included)."""
    import pyarrow.parquet as pq

    n = 0
    for f in path.rglob("*.parquet"):
        with contextlib.suppress(Exception):
            n += pq.ParquetFile(f).metadata.num_rows
    return n


def _archive_repeats(path: Path) -> dict[str, Any]:
    """Archive rows that repeat an earlier row's request id, entry type and time, with the files
    that hold each (named by partition and first offset): where a repeat came from."""
    import pyarrow.parquet as pq

    seen: dict[tuple[str, str, float], str] = {}
    repeats: list[dict[str, str]] = []
    for f in sorted(path.rglob("*.parquet")):
        try:
            rows = pq.read_table(f, columns=["request_id", "type", "ts"]).to_pylist()
        except Exception:  # noqa: BLE001 - a file being written, or cut by the full disk
            continue
        for r in rows:
            if not r["request_id"]:
                continue
            key = (str(r["request_id"]), str(r["type"]), float(r["ts"]))
            if key in seen:
                repeats.append({"request_id": key[0], "type": key[1], "first": seen[key], "again": f.name})
            else:
                seen[key] = f.name
    return {"count": len(repeats), "sample": repeats[:5]}


def _print(fig: dict[str, Any]) -> None:
    print("\n== soak figures ==")  # noqa: T201
    for e in fig.get("events", []):
        print(f"  {e}")  # noqa: T201
    for k, v in fig.items():
        if k in ("events", "rss_mb"):
            continue
        print(f"{k:40} {v}")  # noqa: T201
    for name, r in fig.get("rss_mb", {}).items():
        for life in r["lifetimes"]:
            print(f"rss {name:10} {life}")  # noqa: T201


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    p.add_argument("--rate", type=float, default=40.0, help="offered audit lines per second (default 40)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kills", type=int, default=10, help="SIGKILLs of a worker (default 10)")
    p.add_argument(
        "--webhook-outage", type=float, default=None, help="seconds (default min(600, duration/3))"
    )
    p.add_argument("--poison-every", type=float, default=20.0, help="seconds between poison records")
    p.add_argument("--archive-mb", type=int, default=64, help="size of the archive's tmpfs")
    p.add_argument("--rounds", type=int, default=60, help="traffic rounds of the real OpenBao log")
    p.add_argument("--rss-every", type=float, default=10.0)
    p.add_argument("--no-chaos", action="store_true", help="the same run without the schedule (a baseline)")
    p.add_argument("--no-broker-restart", action="store_true", help="leave the broker restart out")
    p.add_argument("--settle", type=float, default=180.0, help="seconds to wait for the workers to finish")
    p.add_argument("--workdir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args(argv)
    fig = run(args)
    _print(fig)
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
