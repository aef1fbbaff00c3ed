"""The worker's batch logic without a broker: replay skipping, checkpoints, verdict feedback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from alerts.store import Store
from ingest.codec import encode_entry
from ingest.dedup import Deduplicator
from ingest.kafka_config import ConsumerSettings
from ingest.parse import Parser
from ingest.sources.base import RawRecord
from ingest.sources.kafka import KafkaPosition
from vaultwatch.errors import ArchiveError
from vaultwatch.service.metrics import Metrics
from vaultwatch.service.worker import Worker, WorkerConfig, _Checkpoint, checkpoint_key


def _records(lines: list[bytes]) -> list[RawRecord]:
    parser, dedup = Parser(), Deduplicator()
    out: list[RawRecord] = []
    for line in lines:
        ev = parser.parse(line)
        if not dedup.is_duplicate(ev):
            out.append(
                RawRecord(
                    encode_entry(ev), KafkaPosition("t", 0, len(out)), "kafka:t", ev.identity.key.encode()
                )
            )
    return out


@pytest.fixture
def worker(tmp_path: Path) -> Any:
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    store.migrate()
    w = Worker(
        WorkerConfig(topic="t", group_id="g", checkpoint_interval=0),
        source_factory=lambda **k: None,
        store=store,
    )
    yield w
    store.close()


@pytest.mark.integration
def test_checkpoint_replay_skip_and_verdict_feedback(worker: Worker, openbao: Any) -> None:
    from vaultwatch.cli.demo import drive_traffic, setup_org

    drive_traffic(openbao, setup_org(openbao.client()), 10)
    recs = _records(openbao.audit_log.read_bytes().splitlines())
    half = len(recs) // 2
    first = worker.process_batch(recs[:half])
    rest = worker.process_batch(recs[half:])
    alerts = {a.id: a for a in first + rest}
    assert alerts, "the demo traffic has attacks"
    with worker.store.transaction(read_only=True) as tx:
        blob = tx.load_checkpoint(checkpoint_key("g", "t", 0))
    cp = msgspec.msgpack.decode(blob, type=_Checkpoint)
    assert cp.offset == len(recs)
    # Re-delivered records (at-least-once transport) are skipped: state already has them.
    assert worker.process_batch(recs[:10]) == []
    assert worker.stats["skipped_replayed"] == 10
    # An analyst marks one alert a false positive: the engine owning the identity learns it.
    target = next(a for a in alerts.values() if not a.identity.key.startswith("secret:"))
    with worker.store.transaction() as tx:
        tx.record_verdict(target.id, "false_positive", actor="analyst@example", comment="expected")
    worker._apply_verdicts(0.0)
    assert worker.stats["verdicts"] == 1
    st = worker.parts[("t", 0)]
    assert st.verdict_id >= 1 and st.dirty
    worker.process_batch([])
    with worker.store.transaction(read_only=True) as tx:
        cp2 = msgspec.msgpack.decode(tx.load_checkpoint(checkpoint_key("g", "t", 0)), type=_Checkpoint)
    assert cp2.verdict_id == st.verdict_id  # applied once, remembered across restarts
    worker._apply_verdicts(0.0)
    assert worker.stats["verdicts"] == 1


class _RecreatableSource:
    """The two calls the worker makes when a topic's id changes (a fake behind the source API)."""

    def __init__(self) -> None:
        self.id = "id-1"
        self.seeks: list[tuple[str, int]] = []

    def topic_id(self, topic: str) -> str:
        return self.id

    def seek_to_beginning(self, topic: str, partition: int) -> None:
        self.seeks.append((topic, partition))

    def commit(self, record: RawRecord) -> None:
        pass


@pytest.mark.integration
def test_a_recreated_topic_is_read_again_and_its_resent_entries_skipped(
    worker: Worker, openbao: Any, tmp_path: Path
) -> None:
    from vaultwatch.cli.demo import drive_traffic, setup_org

    drive_traffic(openbao, setup_org(openbao.client()), 10)
    recs = _records(openbao.audit_log.read_bytes().splitlines())
    half = len(recs) // 2
    # The reference: one worker, one log, no outage.
    ref_store = Store(f"sqlite:///{tmp_path / 'ref.db'}")
    ref_store.migrate()
    ref = Worker(
        WorkerConfig(topic="t", group_id="g", checkpoint_interval=0),
        source_factory=lambda **k: None,
        store=ref_store,
    )
    want = {a.id for a in ref.process_batch(recs)}
    ref_store.close()

    source = _RecreatableSource()
    worker._source = source
    got = {a.id for a in worker.process_batch(recs[:half])}
    # The broker comes back without its data (or the topic is deleted and created again): a new
    # topic id, offsets from 0, and a shipper that re-sends from its own checkpoint, 20 entries
    # back. Before, the worker skipped every record below its old offset: ``half`` new entries.
    source.id = "id-2"
    resent = recs[half - 20 :]
    again = [RawRecord(r.data, KafkaPosition("t", 0, i), r.source, r.key) for i, r in enumerate(resent)]
    assert worker.process_batch(again[:50]) == []
    assert source.seeks == [("t", 0)]
    assert worker.stats["topic_recreated"] == 1
    got |= {a.id for a in worker.process_batch(again)}
    assert worker.stats["skipped_resent"] == 20
    assert worker.stats["skipped_replayed"] == 0
    assert got == want
    # Offsets leave the worker in sequence after the old log's (archive, cross stage), and the
    # state remembers the new id across a restart.
    with worker.store.transaction(read_only=True) as tx:
        cp = msgspec.msgpack.decode(tx.load_checkpoint(checkpoint_key("g", "t", 0)), type=_Checkpoint)
    assert (cp.topic_id, cp.base, cp.offset) == ("id-2", half, len(resent))


class _AssignedSource:
    """A source that owns partitions 0 and 1 of ``t`` and records the worker's seeks."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def assignment(self) -> list[tuple[str, int]]:
        return [("t", 0), ("t", 1)]

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.seeks.append((topic, partition, offset))

    def commit(self, record: RawRecord) -> None:
        pass


class _DiskFullOnce:
    """An archive whose disk is full for partition 1 until ``full`` is cleared."""

    def __init__(self) -> None:
        self.full = True
        self.rows: set[tuple[str, int, int]] = set()

    def append(self, event: Any, position: tuple[str, int, int] | None = None) -> None:
        assert position is not None
        if self.full and position[1] == 1:
            raise ArchiveError("cannot write archive partition: No space left on device")
        self.rows.add(position)

    def flush(self) -> None:
        pass

    def drop_buffered(self, topic: str, partition: int) -> int:
        return 0

    def rewind(self, topic: str, partition: int, offset: int, *, since: float | None = None) -> int:
        self.rows = {r for r in self.rows if r[1] != partition or r[2] < offset}
        return 0


@pytest.mark.integration
def test_a_batch_that_fails_part_way_loses_no_partition(worker: Worker, openbao: Any) -> None:
    """The archive's disk fills while partition 1's records are handled; partition 0's records of
    the same batch were taken from Kafka but not handled. The rewind must send both back: before,
    it sought only the partitions with state, and partition 0 (no checkpoint yet) went on from
    past the records it never saw."""
    from vaultwatch.cli.demo import drive_traffic, setup_org

    drive_traffic(openbao, setup_org(openbao.client()), 5)
    recs = _records(openbao.audit_log.read_bytes().splitlines())
    half = len(recs) // 2
    p1 = [RawRecord(r.data, KafkaPosition("t", 1, i), r.source, r.key) for i, r in enumerate(recs[:half])]
    p0 = [RawRecord(r.data, KafkaPosition("t", 0, i), r.source, r.key) for i, r in enumerate(recs[half:])]
    source, archive = _AssignedSource(), _DiskFullOnce()
    worker._source, worker.archive = source, archive
    with pytest.raises(ArchiveError):
        worker.process_batch(p1 + p0)  # partition 1 first: it fails before partition 0 is reached
    worker._rewind()
    assert sorted(source.seeks) == [("t", 0, 0), ("t", 1, 0)]
    archive.full = False
    worker.process_batch(p1 + p0)  # what Kafka delivers after those seeks
    assert archive.rows == {(r.position.topic, r.position.partition, r.position.offset) for r in p1 + p0}


class _LostLogSource(_RecreatableSource):
    """Owns partition 0 of ``t``; records seeks (the broker may lose its log under it)."""

    settings = ConsumerSettings(group_id="g")

    def __init__(self) -> None:
        super().__init__()
        self.offsets: list[tuple[str, int, int]] = []

    def assignment(self) -> list[tuple[str, int]]:
        return [("t", 0)]

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.offsets.append((topic, partition, offset))


class _Marks:
    """Stands in for the cross-stage producer: keeps the marks."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, int, bool]] = []

    def send(self, records: list[Any]) -> None:
        pass

    def mark(self, src: int, off: int, ts: float, *, idle: bool = False, at: float = 0.0) -> None:
        self.marks.append((src, off, idle))

    def flush(self) -> None:
        pass


@pytest.mark.integration
def test_after_the_broker_lost_the_log_a_rewind_reads_it_again_and_never_says_idle(
    tmp_path: Path, openbao: Any
) -> None:
    """Soak finding: the broker came back empty, the worker saw the new topic id, then a failed
    send made it rewind. The rewind sought to the checkpoint's offset in the *old* log, past the
    new log's end: the partition read nothing, had no lag, and was announced idle, so the cross
    stage passed the times of records it had not seen yet (10,396 records judged late)."""
    from vaultwatch.cli.demo import drive_traffic, setup_org

    drive_traffic(openbao, setup_org(openbao.client()), 5)
    recs = _records(openbao.audit_log.read_bytes().splitlines())
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    store.migrate()
    out = _Marks()
    try:
        w = Worker(
            WorkerConfig(topic="t", group_id="g", checkpoint_interval=0),
            source_factory=lambda **k: None,
            store=store,
            cross_out=out,
        )
        source = _LostLogSource()
        w._source = source
        w._on_assigned(source.assignment())
        w.process_batch(recs)  # checkpointed at len(recs), topic id-1
        source.id = "id-2"  # the broker lost its data; then a send fails and the worker rewinds
        w._rewind()
        assert source.offsets == [] and source.seeks == [("t", 0)]  # the new log, from its start
        # Nothing read yet (the new log may be empty): the partition is quiet, with "no lag".
        clock = [1000.0]
        w._clock = lambda: clock[0]
        out.marks.clear()
        for _ in range(2):
            w._idle_at = float("-inf")
            w._cross_marks([])
            clock[0] += w.cfg.idle_after + 1.0
        assert not [m for m in out.marks if m[2]], "announced idle on a log it has not read"
        assert w.stats["topic_recreated"] == 1
        # A worker (stage 1 or 2) that is assigned the partition afterwards and polls nothing at
        # all (its fetch position is past the new log's end) sees the new log on an empty poll.
        fresh = Worker(
            WorkerConfig(topic="t", group_id="g", checkpoint_interval=0),
            source_factory=lambda **k: None,
            store=store,
        )
        again = _LostLogSource()
        again.id = "id-2"
        fresh._source = again
        fresh._on_assigned(again.assignment())
        fresh.process_batch([])
        assert again.seeks == [("t", 0)] and fresh.stats["topic_recreated"] == 1
    finally:
        store.close()


class _JoiningSource:
    """A group consumer whose join either never completes (``stalls``) or gives it partition 0."""

    settings = ConsumerSettings(group_id="g")
    join_limit = 46.0

    def __init__(self, hooks: dict[str, Any], *, stalls: bool, worker: Worker) -> None:
        self.hooks, self.stalls, self.worker = hooks, stalls, worker
        self.closed = self.stopped = False
        self.revoke_took: float | None = None
        self.owned_then: set[tuple[str, int]] = set()

    def batches(self, max_records: int = 1000, timeout: float = 1.0) -> Any:
        if not self.stalls:
            self.hooks["on_assigned"]([("t", 0)])
        polls = 0
        while not self.closed and not self.stopped:
            polls += 1
            if not self.stalls and polls > 3:
                self.owned_then = set(self.worker._owned)
                self.worker.stop()
            if polls > 300:  # never replaced: end the run so the test fails rather than hangs
                self.worker.stop()
            yield []

    def join_stalled(self) -> float | None:
        return 120.0 if self.stalls else None

    def topic_id(self, topic: str) -> str | None:
        return None

    def close(self) -> None:
        # kafka-python revokes what the member held when it closes: that must not wait for the
        # worker's loop, which is the one closing it.
        t = time.monotonic()
        self.hooks["on_revoked"]([("t", 0)])
        self.revoke_took = time.monotonic() - t
        self.closed = True

    def stop(self) -> None:
        self.stopped = True


def test_a_consumer_whose_join_stalled_is_replaced_and_the_new_one_is_used(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    store.migrate()
    made: list[_JoiningSource] = []

    def factory(**hooks: Any) -> _JoiningSource:
        src = _JoiningSource(hooks, stalls=not made, worker=w)
        made.append(src)
        return src

    metrics = Metrics()
    w = Worker(
        WorkerConfig(topic="t", group_id="g", poll_timeout=0.01),
        source_factory=factory,
        store=store,
        metrics=metrics,
    )
    w._recheck_at = -10.0
    try:
        w.run()
    finally:
        store.close()
    assert len(made) == 2, "the stalled consumer was not replaced"
    assert 'vaultwatch_consumers_replaced_total{group="g"} 1.0' in metrics.render().decode()
    assert made[0].closed and made[0].revoke_took is not None and made[0].revoke_took < 1.0
    assert made[1].stopped and made[1].closed  # the new one ran until stop(), then shut down
    assert w.stats["consumers_replaced"] == 1 and w.stats["errors"] == 0
    assert made[1].owned_then == {("t", 0)}  # the new consumer's partitions were taken


def test_a_consumer_still_within_its_join_limit_is_kept(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    store.migrate()
    made: list[_JoiningSource] = []

    def factory(**hooks: Any) -> _JoiningSource:
        src = _JoiningSource(hooks, stalls=False, worker=w)
        made.append(src)
        return src

    w = Worker(WorkerConfig(topic="t", group_id="g", poll_timeout=0.01), source_factory=factory, store=store)
    try:
        w.run()
    finally:
        store.close()
    assert len(made) == 1 and w.stats["consumers_replaced"] == 0
