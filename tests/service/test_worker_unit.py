"""The worker's batch logic without a broker: replay skipping, checkpoints, verdict feedback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from alerts.store import Store
from ingest.codec import encode_entry
from ingest.dedup import Deduplicator
from ingest.parse import Parser
from ingest.sources.base import RawRecord
from ingest.sources.kafka import KafkaPosition
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
