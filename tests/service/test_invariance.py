"""One answer at any scale: ``replay``, ``run`` 1x1 and ``run`` 4 partitions x 2 workers (one killed).

The recorded log is a generated organisation (real OpenBao, :func:`vaultwatch.demo.orgs.generate_org`,
cached under ``var/eval``) with cross-identity threats in it: password spraying and credential
stuffing across accounts of other identities, peer-group habits, area ownership. It goes through
``vaultwatch replay``, through ``vaultwatch run`` with one partition and one worker, and through
``vaultwatch run`` with four partitions and two workers sharing the group on PostgreSQL, one of them
killed with SIGKILL mid-stream and restarted. Every detector's alert ids must be the same in the
three, with no duplicate rows.

The behavioural core is the one exception, asserted for what it is: its peer-group and
organisation priors and its multivariate model are learned from the identities a partition's engine
sees, so ``behaviour-risk`` is partition-invariant only between ``replay`` and one partition.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa

from ingest.dedup import Deduplicator
from tests.service.test_worker import _config, _create_topic, _send, _start
from vaultwatch.demo.orgs import generate_org
from vaultwatch.demo.servers import KafkaBroker
from vaultwatch.service.cross import describe
from vaultwatch.service.replay import read_events
from vaultwatch.service.worker import _Checkpoint

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SEED = 3  # a CI organisation of the evaluation (tests/bench/test_eval_orgs.py)
BEHAVIOUR = "behaviour-risk"
#: Detectors whose alerts name the audit stream the entry came from: a file path in a replay,
#: ``kafka:<topic>`` in ``run`` (the topics of the two scales differ too). Compared by count.
STREAM_NAMED = frozenset({"plaintext-secret-in-audit", "audit-device-gap", "audit-stream-silence"})


@pytest.fixture(scope="module")
def org_log() -> Path:
    org = generate_org(SEED, size="small", workdir=ROOT / "var" / "eval")
    return org.audit_path


@pytest.fixture(scope="module")
def replayed(org_log: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("replay") / "alerts.jsonl"
    subprocess.run(
        [sys.executable, "-m", "vaultwatch.cli", "replay", str(org_log), "--alerts-out", str(out), "--json"],
        check=True,
        capture_output=True,
    )
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    return {a["id"]: a["detector"] for a in alerts}


def _produce(broker: KafkaBroker, topic: str, log: Path) -> dict[int, int]:
    """What the shipper does: one entry per event (second copies dropped), keyed by identity."""
    dedup = Deduplicator()
    return _send(broker, topic, (ev for ev in read_events([log]) if not dedup.is_duplicate(ev)))


def _progress(
    db: str, group: str, ends: dict[int, int], sources: int
) -> tuple[bool, str, list[dict[str, Any]]]:
    """Both stages done: stage-1 offsets at the ends, every stage-2 partition with every source
    idle and nothing buffered."""
    eng = sa.create_engine(db)
    try:
        with eng.connect() as c:
            offsets = c.execute(sa.text("SELECT * FROM consumer_offsets")).mappings().all()
            cps = c.execute(
                sa.text("SELECT key, blob FROM checkpoints WHERE key LIKE :k"), {"k": f"cross/{group}.xid/%"}
            ).all()
    except sa.exc.SQLAlchemyError as exc:
        return False, f"store not ready: {type(exc).__name__}", []
    finally:
        eng.dispose()
    got = {int(r["partition"]): int(r["offset"]) for r in offsets if r["group_id"] == group}
    if not all(got.get(p, 0) >= n for p, n in ends.items()):
        return False, f"stage 1 at {got}, ends {ends}", []
    states = [describe(msgspec.msgpack.decode(bytes(blob), type=_Checkpoint).engine) for _, blob in cps]
    if not states:
        return False, "no stage-2 checkpoint yet", []
    for st in states:
        if len(st["idle"]) < sources or st["pending"]:
            return False, f"stage 2: {states}", states
    return True, f"stage 2: {states}", states


def _wait_done(
    db: str,
    group: str,
    ends: dict[int, int],
    sources: int,
    procs: list[subprocess.Popen[bytes]],
    timeout: float = 150,
) -> list[dict[str, Any]]:
    """Wait until both stages are done; the stage-2 partitions' states."""
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        done, why, states = _progress(db, group, ends, sources)
        if done:
            # Nothing was judged out of the canonical order (no entry later than the lateness).
            assert all(st["late"] == 0 for st in states), states
            return states
        for p in procs:
            assert p.poll() is None, f"worker exited early with {p.returncode}"
        time.sleep(0.5)
    raise AssertionError(f"not done in time: {why}")


def _alerts(db: str) -> list[tuple[str, str]]:
    eng = sa.create_engine(db)
    try:
        with eng.connect() as c:
            return [(r[0], r[1]) for r in c.execute(sa.text("SELECT id, detector FROM alerts"))]
    finally:
        eng.dispose()


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


@pytest.fixture
def broker(kafka_broker: KafkaBroker) -> Iterator[KafkaBroker]:
    yield kafka_broker


def _by_detector(ids: dict[str, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for aid, det in ids.items():
        out.setdefault(det, set()).add(aid)
    return out


def test_replay_and_run_at_two_scales_raise_the_same_alerts(
    org_log: Path,
    replayed: dict[str, str],
    broker: KafkaBroker,
    pg_fresh_url: str,
    tmp_path: Path,
) -> None:
    cross = {"login-failure-burst", "credential-stuffing", "sensitive-first-access"}
    assert cross <= set(replayed.values()), Counter(replayed.values())
    tag = f"{random.randrange(1 << 30):x}"

    # 1 partition x 1 worker
    t1 = f"inv1-{tag}"
    _create_topic(broker, t1, 1)
    ends1 = _produce(broker, t1, org_log)
    db1 = f"sqlite:///{tmp_path / 'one.db'}"
    proc = _start(_config(tmp_path, broker, t1, "one", db1), tmp_path, "one")
    try:
        _wait_done(db1, "one", ends1, 1, [proc])
    finally:
        assert _stop(proc) == 0, (tmp_path / "one.log").read_text()[-3000:]
    one = _alerts(db1)
    assert len(one) == len({a for a, _ in one}), "duplicate alert rows (1x1)"
    _same(replayed, dict(one), behaviour=True)

    # 4 partitions x 2 workers on PostgreSQL, one killed mid-stream and restarted
    t4 = f"inv4-{tag}"
    _create_topic(broker, t4, 4)
    ends4 = _produce(broker, t4, org_log)
    assert len(ends4) == 4
    # The archive is shared by both workers and flushed every 0.2 s, checkpoints every 1.5 s: the
    # killed worker leaves files past its checkpoints, which its partitions' next owner rewinds.
    archive = tmp_path / "archive"
    cfg = _config(tmp_path, broker, t4, "four", pg_fresh_url, archive, batch=50)
    a = _start(cfg, tmp_path, "four-a", 1.5)
    b = _start(cfg, tmp_path, "four-b", 1.5)
    try:
        _wait_past_checkpoint(pg_fresh_url, "four", ends4, archive, t4, [a, b], tmp_path / "four-a.log")
        a.kill()  # SIGKILL mid-stream
        a.wait(timeout=30)
        a = _start(cfg, tmp_path, "four-a", 1.5)
        _wait_done(pg_fresh_url, "four", ends4, 4, [a, b], timeout=180)
    finally:
        for p in (a, b):
            if p.poll() is None:
                assert _stop(p) == 0, (tmp_path / "four-b.log").read_text()[-3000:]
    four = _alerts(pg_fresh_url)
    assert len(four) == len({x for x, _ in four}), "duplicate alert rows (4x2)"
    _same(replayed, dict(four), behaviour=False)
    # The event archive holds every event once, though a worker died between its flushes.
    rows = ds.dataset(str(archive), format="parquet", partitioning="hive").to_table().to_pylist()
    assert len(rows) == sum(ends4.values())
    keys = Counter((r["ts"], r["request_id"], r["type"], r["identity_key"]) for r in rows)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1][:3]
    logs = "".join((tmp_path / f"four-{w}.log").read_text(errors="replace") for w in "ab")
    assert "file(s) of inv4-" in logs, "no archive file was written past a checkpoint before the kill"


def _same(want: dict[str, str], got: dict[str, str], *, behaviour: bool) -> None:
    """The same alert ids, detector by detector (by count for :data:`STREAM_NAMED`)."""

    def keep(det: str) -> bool:
        return det not in STREAM_NAMED and (behaviour or det != BEHAVIOUR)

    w = {k: v for k, v in want.items() if keep(v)}
    g = {k: v for k, v in got.items() if keep(v)}
    assert g == w, _diff(w, g)
    named_w = Counter(v for v in want.values() if v in STREAM_NAMED)
    named_g = Counter(v for v in got.values() if v in STREAM_NAMED)
    assert named_g == named_w


def _wait_past_checkpoint(
    db: str,
    group: str,
    ends: dict[int, int],
    archive: Path,
    topic: str,
    procs: list[subprocess.Popen[bytes]],
    log: Path,
    timeout: float = 60,
) -> None:
    """Until a partition of the worker logging to ``log`` has an archive file past its
    checkpointed offset, mid-stream."""
    deadline = time.monotonic() + timeout
    total = sum(ends.values())
    while time.monotonic() < deadline:
        eng = sa.create_engine(db)
        try:
            with eng.connect() as c:
                rows = c.execute(
                    sa.text('SELECT "partition", "offset" FROM consumer_offsets WHERE group_id = :g'),
                    {"g": group},
                ).all()
        except sa.exc.SQLAlchemyError:
            rows = []
        finally:
            eng.dispose()
        done = {int(p): int(o) for p, o in rows}
        assert sum(done.values()) < total, "the stream ended before the kill: nothing was mid-stream"
        owned = _owned(log, topic)
        name = topic.replace("-", "_")  # as the archive writes a topic into a file name
        for f in archive.glob(f"date=*/hour=*/part-k{name}-*.parquet"):
            part, first = f.name[len(f"part-k{name}-") :].split("-o")
            if int(part) in owned and int(first.split("-")[0]) >= done.get(int(part), 0):
                return
        for p in procs:
            assert p.poll() is None, f"worker exited with {p.returncode}"
        time.sleep(0.02)
    raise AssertionError("no archive file past a checkpoint before the kill")


def _owned(log: Path, topic: str) -> set[int]:
    """The input partitions the worker logging to ``log`` was last assigned."""
    owned: set[int] = set()
    marker = "partitions assigned: "
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if marker in line and f"('{topic}'," in line:
            owned = {int(p) for p in re.findall(rf"\('{re.escape(topic)}', (\d+)\)", line)}
        elif "partitions revoked: " in line and f"('{topic}'," in line:
            owned = set()
    return owned


def _diff(want: dict[str, str], got: dict[str, str]) -> str:
    missing = Counter(want[k] for k in set(want) - set(got))
    extra = Counter(got[k] for k in set(got) - set(want))
    return f"missing {dict(missing)}, extra {dict(extra)}"
