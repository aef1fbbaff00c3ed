"""The streaming service (``vaultwatch run``'s worker) against the real broker, in one run.

* **Throughput**: the pipeline worker (built by :func:`vaultwatch.service.wiring.build_worker`: SQLite
  store, event archive on) consuming a pre-filled topic, as a ratio to a bare kafka-python
  consumer reading the same topic in the same run. Target (issue 17): 0.5. Both rates are measured from the
  end of the first batch to the end of the last, so the ~3 s consumer-group join is left out of
  both.
* **Latency**: events produced at a steady rate (default 2,000/s), each stamped with the time it
  is produced; every 100th is a marker, a developer reading a runtime secret under a fresh
  identity, which raises one ``access-model-violation`` alert. Latency is the alert row's
  ``created_at`` (the store's commit clock) minus the marker entry's ``time``. Target: p99 < 1 s;
  to the signed webhook, p99 < group_wait (1 ms here) + 1 s.
  Also to delivery: the worker routes alerts (one group per identity and detector) and an
  :class:`alerts.deliver.DeliveryWorker` posts signed webhooks to a loopback receiver, which
  records when each arrived. The steady producer runs in its own process.
* **Scale-out** (``python -m bench.bench_run --scale-out``, not in the table): two ``vaultwatch
  run`` processes sharing a 4-partition topic on PostgreSQL, each running both stages (identity
  partitions and the cross-identity repartition topic); a steady producer at the offered rate;
  consumer lag sampled every second, events each worker handled per second, and the
  ``access-model-violation`` markers' event-time → alert-row latency (that detector runs in the
  cross stage, so the figure covers both stages and the repartition hop).
* **Memory**: RSS growth of one detection engine per 10,000 active identities, the identities
  made by rewriting the entity id of real service entries. Target: <= 30 MB.

The input is a real OpenBao audit log (:func:`bench.common.real_openbao_log`), re-keyed by identity
as the shipper does it. Tansu's ListOffsets answer lags behind the log, so expected end offsets
come from the producer's acknowledgements.
"""

from __future__ import annotations

import gc
import re
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import Row, real_openbao_log, scaled_lines
from detect.partition import SCOPES
from ingest.codec import encode_entry
from ingest.kafka_config import import_kafka
from ingest.parse import Parser
from vaultwatch.service.cross import DEFAULT_LATENESS

_TIME = re.compile(rb'^\{"time":"[^"]*"')
_REQ_ID = re.compile(rb'"id":"([0-9a-f-]{36})"')


def _stamp(line: bytes, ts: float) -> bytes:
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"
    return _TIME.sub(b'{"time":"' + t.encode() + b'"', line, count=1)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _keyed(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(key, value) as the shipper produces them: the redacted entry keyed by identity."""
    parse = Parser().parse
    out = []
    for line in lines:
        ev = parse(line)
        out.append((ev.identity.key.encode(), encode_entry(ev)))
    return out


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    import_kafka()
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> dict[int, int]:
    kafka = import_kafka()
    prod = kafka.KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=5, batch_size=256 * 1024)
    try:
        futures = [prod.send(topic, value=v, key=k) for k, v in records]
        prod.flush()
        ends: dict[int, int] = {}
        for f in futures:
            md = f.get(timeout=60)
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    finally:
        prod.close()
    return ends


def _settings(bootstrap: str, topic: str, group: str, work: Path, max_poll_records: int = 1000) -> Any:
    from vaultwatch.settings import ArchiveConfig, KafkaConfig, Settings, StoreConfig

    return Settings(
        kafka=KafkaConfig(
            bootstrap=bootstrap, topic=topic, group_id=group, max_poll_records=max_poll_records
        ),
        store=StoreConfig(url=f"sqlite:///{work / f'{group}.db'}"),
        archive=ArchiveConfig(enabled=True, path=work / f"archive-{group}"),
    )


class _BatchClock:
    """Stands in the worker's ``metrics`` slot: when each batch ended and how many records."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def observe_batch(self, worker: Any, batch: list[Any], alerts: list[Any]) -> None:
        if batch:
            self.marks.append((time.perf_counter(), len(batch)))


def _rate(marks: list[tuple[float, int]]) -> float:
    """Records per second from the end of the first batch to the end of the last."""
    if len(marks) < 2:
        return 0.0
    n = sum(c for _, c in marks[1:])
    return n / (marks[-1][0] - marks[0][0])


def bare_consume(bootstrap: str, topic: str, total: int) -> float:
    """A plain kafka-python consumer group member reading ``total`` records."""
    kafka = import_kafka()
    consumer = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=[bootstrap],
        group_id=f"bare-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=10000,
        max_poll_records=1000,
    )
    marks: list[tuple[float, int]] = []
    seen = 0
    deadline = time.monotonic() + 120
    try:
        while seen < total and time.monotonic() < deadline:
            got = consumer.poll(timeout_ms=500, max_records=1000)
            n = sum(len(v) for v in got.values())
            if n:
                seen += n
                marks.append((time.perf_counter(), n))
    finally:
        consumer.close()
    if seen < total:
        raise RuntimeError(f"bare consumer read {seen} of {total}")
    return _rate(marks)


def _run_worker(
    settings: Any, until: Any, timeout: float = 180, instrument: Callable[[Any], None] | None = None
) -> tuple[Any, _BatchClock]:
    from vaultwatch.service.wiring import build_worker, run_both

    worker = build_worker(settings, checkpoint_interval=5.0)
    if instrument is not None:
        instrument(worker)
    clock = _BatchClock()
    worker.metrics = clock
    t = threading.Thread(target=run_both, args=(worker,), daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    try:
        while not until(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
        t.join(timeout=30)
        if worker.dlq is not None:
            worker.dlq.close()
        worker.store.close()
    return worker, clock


def throughput(bootstrap: str, work: Path, n: int, repeat: int = 2) -> dict[str, float]:
    """Best of ``repeat`` interleaved runs of each reader: the machine is shared, so the best
    run is the one least disturbed by other load."""
    topic = f"bench-tput-{uuid.uuid4().hex[:6]}"
    _create_topic(bootstrap, topic, 1)
    records = _keyed(scaled_lines(real_openbao_log(), n))
    ends = _produce(bootstrap, topic, records)
    total = sum(ends.values())
    bare, rate = 0.0, 0.0
    for i in range(repeat):
        bare = max(bare, bare_consume(bootstrap, topic, total))
        s = _settings(bootstrap, topic, f"bench-worker-{i}", work)
        worker, clock = _run_worker(s, lambda w: w.stats["records"] >= total)
        if worker.stats["records"] < total:
            raise RuntimeError(f"worker read {worker.stats['records']} of {total}")
        rate = max(rate, _rate(clock.marks))
    # Where the worker's time goes: parsing and detection alone, in process, on the same values.
    from detect.engine import Engine

    parse = Parser().parse
    engine = Engine(seed=0)
    t0 = time.perf_counter()
    for _, value in records:
        engine.process(parse(value))
    detect_only = len(records) / (time.perf_counter() - t0)
    out = {
        "records": float(total),
        "bare_consumer_per_s": bare,
        "worker_per_s": rate,
        "parse_and_detect_only_per_s": detect_only,
        "ratio_worker_to_bare": rate / bare,
        "ratio_worker_to_parse_and_detect_only": rate / detect_only,
    }
    if rate / bare < THROUGHPUT_TARGET:
        out |= worker_costs(bootstrap, topic, work, total)
    return out


#: Where the worker's time goes (:func:`worker_costs`): its methods timed, by what they do.
_WORKER_PARTS = (
    ("parser.parse", "parse"),
    ("_handle", "detection (stage 1: hour flush, routing, identity detectors)"),
    ("_archive", "archive append"),
    ("cross_out.send", "cross records onto Kafka (stage 1's producer)"),
    ("_cross_marks", "cross marks onto Kafka"),
    ("_run_tasks", "time-driven tasks"),
    ("cross_out.flush", "waiting for the cross stage's acknowledgements (before a checkpoint)"),
    ("archive.flush", "archive flush (before a checkpoint)"),
    ("_snapshot", "engine snapshot (checkpoint encoding)"),
    ("_write", "store write (alerts, checkpoints, Kafka commit)"),
    ("router.ingest", "routing the alerts"),
    ("process_batch", "batch bookkeeping"),
)
_COST = "us_per_record:"


def worker_costs(bootstrap: str, topic: str, work: Path, total: int) -> dict[str, float]:
    """One more worker run over the same topic with its stages timed (:class:`bench.profile._Timers`,
    own times): microseconds per record of each (keys ``us_per_record:<part>``), the rest of the
    batch-to-batch time (Kafka polls, the stage-2 thread holding the GIL) and, for reference, the
    stage-2 worker's own batches (another thread)."""
    from bench.profile import _overhead, _Timers

    timers = _Timers()

    def instrument(worker: Any) -> None:
        for attr, label in _WORKER_PARTS:
            owner_name, _, method = attr.rpartition(".")
            owner = getattr(worker, owner_name) if owner_name else worker
            if owner is not None and hasattr(owner, method):
                setattr(owner, method, timers.wrap(label, getattr(owner, method)))
        if worker.cross_worker is not None:
            cw = worker.cross_worker
            cw.process_batch = timers.wrap("stage 2 (its own thread)", cw.process_batch)

    s = _settings(bootstrap, topic, "bench-worker-timed", work)
    worker, clock = _run_worker(s, lambda w: w.stats["records"] >= total, instrument=instrument)
    rate = _rate(clock.marks)
    own = timers.net_own(_overhead())
    n = max(int(worker.stats["records"]), 1)  # what it read, should it stop short of ``total``
    out = {f"{_COST}{k}": v / n * 1e6 for k, v in own.items()}
    main = sum(v for k, v in out.items() if "own thread" not in k)
    out[f"{_COST}Kafka polls and the rest (GIL shared with stage 2)"] = (
        max(1e6 / rate - main, 0.0) if rate else 0.0
    )
    out["timed_worker_per_s"] = rate
    return out


def explain_throughput(row: Row, tput: dict[str, float]) -> Row:
    """The worker row's why: its parts in us/record (a timed run, same topic), and the budget."""
    costs = {k[len(_COST) :]: v for k, v in tput.items() if k.startswith(_COST)}
    bare_us = 1e6 / tput["bare_consumer_per_s"]
    worker_us = 1e6 / tput["worker_per_s"]
    budget = bare_us / THROUGHPUT_TARGET
    timed = tput.get("timed_worker_per_s", 0.0)
    why = [
        f"bare consumer {bare_us:.1f} us/record; worker {worker_us:.1f}; parse + detection alone, "
        f"in process: {1e6 / tput['parse_and_detect_only_per_s']:.1f}",
    ]
    if costs:
        main = {k: v for k, v in costs.items() if "own thread" not in k}
        whole = sum(main.values()) or 1.0
        why.append(
            f"timed worker run ({1e6 / timed if timed else 0:.1f} us/record), own us/record and share:"
        )
        why += [
            f"  {k:60s} {v:8.1f} {v / whole * 100:5.1f} %"
            for k, v in sorted(main.items(), key=lambda kv: -kv[1])[:7]
        ]
        why += [f"  {k:60s} {v:8.1f} (beside the above)" for k, v in costs.items() if "own thread" in k]
    top = max((k for k in costs if "own thread" not in k), key=lambda k: costs[k], default="-")
    takes = (
        f"reaching {THROUGHPUT_TARGET:g} needs the worker at <= {budget:.1f} us/record; today "
        f"{worker_us:.1f} ({worker_us - budget:.1f} to cut; the largest part, {top}, is "
        f"{costs.get(top, 0.0):.1f})"
    )
    return row.explained(why, takes)


def _marker_template(lines: list[bytes]) -> tuple[list[bytes], bytes]:
    """The request and response entries of a developer reading a runtime secret, and its entity id."""
    parse = Parser().parse
    for line in lines:
        ev = parse(line)
        developer = (ev.identity.display_name or "").startswith("userpass-")
        if developer and ev.identity.entity_id and "pxl-core/runtime/" in (ev.path or ""):
            rid = _REQ_ID.search(line)
            assert rid is not None
            pair = [ln for ln in lines if rid.group(0) in ln]
            return pair, ev.identity.entity_id.encode()
    raise RuntimeError("no developer read of a runtime secret in the bench log")


def steady_producer(bootstrap: str, topic: str, rate: int, seconds: float, out: str) -> None:
    """Produce ``rate`` events/s for ``seconds``, each stamped when sent; every 100th is a marker.

    Runs in its own process, so that it does not share the interpreter lock with the worker it
    measures. Writes ``{"sent": n, "seconds": s, "markers": [identity keys]}`` to ``out``.
    """
    import json

    base = scaled_lines(real_openbao_log(), 20_000)
    pair, entity = _marker_template(base)
    parse = Parser().parse
    prod = import_kafka().KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=1)
    markers: list[str] = []
    sent = 0
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    src: Iterator[bytes] = iter(base * 10)
    try:
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            for _ in range(per_tick):
                i += 1
                now = time.time()
                if i % 100 == 0:
                    ent = str(uuid.uuid4()).encode()
                    rid = str(uuid.uuid4()).encode()
                    for line in pair:
                        line = _REQ_ID.sub(b'"id":"' + rid + b'"', line.replace(entity, ent), count=1)
                        ev = parse(_stamp(line, now))
                        prod.send(topic, value=encode_entry(ev), key=ev.identity.key.encode())
                        sent += 1
                    markers.append(f"entity:{ent.decode()}")
                else:
                    ev = parse(_stamp(next(src), now))
                    prod.send(topic, value=encode_entry(ev), key=ev.identity.key.encode())
                    sent += 1
            # Steady pace: sleep to the next tick boundary rather than a fixed delay.
            delay = start + (i // per_tick) * tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        took = time.perf_counter() - start
        prod.flush()
    finally:
        prod.close()
    Path(out).write_text(json.dumps({"sent": sent, "seconds": took, "markers": markers}))


class _Hook:
    """A loopback HTTP receiver that records when each webhook body arrived."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        got = self.received = []  # type: list[tuple[float, bytes]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                got.append((time.time(), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


#: One notification per (identity, detector), sent at the router's next tick.
ROUTES: dict[str, Any] = {
    "receivers": [{"name": "soc", "integrations": [{"channel": "webhook", "name": "bench"}]}],
    "route": {
        "receiver": "soc",
        "group_by": ["identity", "detector"],
        "group_wait": "1ms",
        "group_interval": "1m",
        "repeat_interval": "1h",
    },
}


def _delivery(store: Any, hook: _Hook) -> tuple[Any, dict[str, Any]]:
    """A started :class:`~alerts.deliver.DeliveryWorker` posting to ``hook``, and its channels."""
    import base64
    import os

    from alerts.channels import build_channels, load_config
    from alerts.deliver import DeliveryWorker
    from alerts.secrets import SecretResolver

    cfg = load_config(
        {
            "delivery": {"allow_loopback": True, "attempt_timeout": 5, "lease_seconds": 30},
            "receivers": [
                {"name": "soc", "webhook": [{"name": "bench", "url": "env:U", "signing_secrets": ["env:S"]}]}
            ],
        }
    )
    whsec = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    channels = build_channels(cfg, SecretResolver(env={"U": hook.url, "S": whsec}))
    worker = DeliveryWorker(store, channels, policy=cfg.retry_policy(), poll_interval=0.05).start()
    return worker, channels


#: The detector the latency markers trigger (the seed's core rule; a stage-2 detector).
MARKER_DETECTOR = "access-model-violation"


def latency(
    bootstrap: str, work: Path, rate: int, seconds: float, max_poll_records: int = 1000
) -> dict[str, float]:
    import json
    import multiprocessing

    import sqlalchemy as sa

    from vaultwatch.service.wiring import build_worker, open_store, run_both

    topic = f"bench-lat-{uuid.uuid4().hex[:6]}"
    _create_topic(bootstrap, topic, 1)
    warm = scaled_lines(real_openbao_log(), 1)[0]
    s = _settings(bootstrap, topic, f"bench-latency-{max_poll_records}", work, max_poll_records)
    s = s.model_copy(update={"routes": ROUTES})
    worker = build_worker(s, checkpoint_interval=5.0)
    hook = _Hook()
    delivery_store = open_store(s)
    delivery, channels = _delivery(delivery_store, hook)
    clock = _BatchClock()
    worker.metrics = clock
    t = threading.Thread(target=run_both, args=(worker,), daemon=True)
    t.start()
    result = work / "producer.json"
    try:
        # The group forms (first record consumed) before the clock starts.
        _produce(bootstrap, topic, [(b"warm", encode_entry(Parser().parse(_stamp(warm, time.time()))))])
        while worker.stats["records"] < 1:
            time.sleep(0.05)
        proc = multiprocessing.get_context("spawn").Process(
            target=steady_producer, args=(bootstrap, topic, rate, seconds, str(result))
        )
        proc.start()
        proc.join(timeout=seconds + 120)
        if proc.exitcode != 0:
            raise RuntimeError(f"the producer process failed ({proc.exitcode})")
        done = json.loads(result.read_text())
        deadline = time.monotonic() + 60
        while worker.stats["records"] < done["sent"] + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        markers = set(done["markers"])
        while len(_delivered(hook, markers)) < len(markers) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
        t.join(timeout=30)
        if worker.dlq is not None:
            worker.dlq.close()
        delivery.stop()
        for ch in channels.values():
            ch.close()
        delivery_store.close()
        hook.close()
    with worker.store.engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT identity_key, first_seen, created_at FROM alerts WHERE detector = :d"),
            {"d": MARKER_DETECTOR},
        ).all()
    worker.store.close()
    lat = sorted(r.created_at - r.first_seen for r in rows if r.identity_key in markers)
    if not lat:
        raise RuntimeError("no marker alert reached the store")
    q = statistics.quantiles(lat, n=100)
    hooked = _delivered(hook, markers)
    wq = statistics.quantiles(sorted(hooked.values()), n=100) if len(hooked) > 1 else [0.0] * 99
    sizes = [n for _, n in clock.marks[1:]]
    gaps = [b[0] - a[0] for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
    return {
        "offered_events_per_s": done["sent"] / done["seconds"],
        "markers": float(len(markers)),
        "marker_alerts": float(len(lat)),
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": lat[-1] * 1000,
        "webhook_deliveries": float(len(hooked)),
        "webhook_p50_ms": wq[49] * 1000,
        "webhook_p99_ms": wq[98] * 1000,
        "mean_batch_records": statistics.fmean(sizes) if sizes else 0.0,
        "max_gap_between_batches_ms": max(gaps, default=0.0) * 1000,
        "worker_events_per_s": _rate(clock.marks),
    }


def _delivered(hook: _Hook, markers: set[str]) -> dict[str, float]:
    """Marker identity -> seconds from its entry's ``time`` to the webhook's arrival."""
    import json

    from alerts.store import to_epoch

    out: dict[str, float] = {}
    for at, body in list(hook.received):
        for alert in json.loads(body).get("alerts", []):
            key = alert["identity"]["key"]
            if key in markers and alert["detector"] == "access-model-violation" and key not in out:
                out[key] = at - to_epoch(alert["first_seen"])
    return out


def memory_in_fresh_process(identities: int) -> dict[str, float]:
    """:func:`memory` in a new interpreter: in the bench's own process, the memory the worker
    runs before it freed is reused by the engine, and the growth reads as 0."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        out: dict[str, float] = pool.apply(memory, (identities,))
    return out


def memory(identities: int) -> dict[str, float]:
    """RSS growth of one engine holding ``identities`` active service identities."""
    from detect.engine import Engine

    lines = [ln for ln in real_openbao_log().read_bytes().splitlines() if ln.strip()]
    parse = Parser().parse
    # A runtime service's reads (AppRole identity with an entity): request + response entries.
    template: list[bytes] = []
    entity = b""
    for line in lines:
        ev = parse(line)
        if (ev.identity.display_name or "").startswith("approle") and ev.identity.entity_id and ev.path:
            if "pxl-core/runtime/" in ev.path:
                entity = entity or ev.identity.entity_id.encode()
                if ev.identity.entity_id.encode() == entity:
                    template.append(line)
        if len(template) >= 6:
            break
    t0 = time.time() - 1800

    def synthetic(i: int) -> Iterator[bytes]:
        ent = f"{i:08x}-0000-4000-8000-{i:012x}".encode()
        for j, line in enumerate(template):
            line = _REQ_ID.sub(b'"id":"' + str(uuid.UUID(int=i << 8 | j // 2)).encode() + b'"', line, count=1)
            yield _stamp(line.replace(entity, ent), t0 + i * (1500 / identities) + j * 0.01)

    engine = Engine(seed=0)
    for line in synthetic(10**9):  # warm: imports, detectors, first allocations
        engine.process(parse(line))
    del lines
    gc.collect()
    rss = [_rss_mb()]
    half = identities // 2
    t = time.perf_counter()
    events = 0
    for i in range(identities):
        for line in synthetic(i):
            engine.process(parse(line))
            events += 1
        if i + 1 == half:
            gc.collect()
            rss.append(_rss_mb())
    took = time.perf_counter() - t
    gc.collect()
    rss.append(_rss_mb())
    n = len(engine.identities())
    # The second half's growth: memory the process freed earlier (parsing the log) and then
    # reused for the first identities would hide part of the cost in the whole-run figure.
    marginal = (rss[2] - rss[1]) / (identities - half) * 10_000
    return {
        "identities": float(n),
        "events": float(events),
        "engine_events_per_s": events / took,
        "rss_growth_mb": rss[2] - rss[0],
        "mb_per_10k_identities_whole_run": (rss[2] - rss[0]) / n * 10_000,
        "mb_per_10k_identities": marginal,
        "snapshot_bytes_per_identity": len(engine.snapshot()) / n,
    }


THROUGHPUT = "run worker / bare kafka-python consume of the same topic"
THROUGHPUT_TARGET = 0.5
LATENCY = "run: event time -> alert row at 2,000 events/s, p99"
WEBHOOK = "event time -> signed webhook, same run, p99"
MEMORY = "worker RSS per 10k active identities"
#: ROUTES' group_wait: the webhook target is p99 < group_wait + 1 s.
_GROUP_WAIT_MS = 1.0


def rows(n: int = 30_000, rate: int = 2000, seconds: float = 20.0, identities: int = 20_000) -> list[Row]:
    """Issue 17's rows for ``run``: each part measured on its own, a failed part says why."""
    from vaultwatch.demo.servers import KafkaBroker

    out: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, KafkaBroker() as broker:
            work = Path(tmp)
            try:
                tput = throughput(broker.bootstrap, work, n)
                _show("throughput", tput)
                row = Row.ratio(THROUGHPUT, tput["ratio_worker_to_bare"], THROUGHPUT_TARGET)
                out.append(row if row.met else explain_throughput(row, tput))
            except Exception as exc:
                out.append(Row.missing(THROUGHPUT, ">= 0.5", _why(exc)))
            try:
                lat = latency(broker.bootstrap, work, rate, seconds)
                _show("latency", lat)
                offered = f"offered {lat['offered_events_per_s']:.0f}/s"
                limit = 1.0 + _GROUP_WAIT_MS / 1000
                for r in (
                    Row.at_most(LATENCY, lat["p99_ms"] / 1000, 1.0, "s", offered),
                    Row.at_most(WEBHOOK, lat["webhook_p99_ms"] / 1000, limit, "s", "group_wait 1 ms"),
                ):
                    out.append(r if r.met else explain_latency(r, lat))
            except Exception as exc:
                out += [
                    Row.missing(LATENCY, "< 1 s", _why(exc)),
                    Row.missing(WEBHOOK, "< 1.001 s", _why(exc)),
                ]
    except Exception as exc:  # no broker: the three Kafka rows say so
        have = {r.name for r in out}
        out += [r for r in _kafka_rows(_why(exc)) if r.name not in have]
    try:
        mem = memory_in_fresh_process(identities)
        _show("memory", mem)
        row = Row(MEMORY, "<= 30 MB", mem["mb_per_10k_identities"], mem["mb_per_10k_identities"] <= 30, "MB")
        out.append(row if row.met else explain_memory(row, mem))
    except Exception as exc:
        out.append(Row.missing(MEMORY, "<= 30 MB", _why(exc)))
    return out


def explain_latency(row: Row, lat: dict[str, float]) -> Row:
    """A latency row's why: the distribution and the batches of the same run."""
    hook = row.name == WEBHOOK
    pre = "webhook_" if hook else ""
    why = [
        f"offered {lat['offered_events_per_s']:.0f} events/s; p50 {lat[pre + 'p50_ms']:.0f} ms, "
        f"p99 {lat[pre + 'p99_ms']:.0f} ms" + ("" if hook else f", max {lat['max_ms']:.0f} ms"),
        f"batches: {lat['mean_batch_records']:.0f} records on average, the longest gap between two "
        f"{lat['max_gap_between_batches_ms']:.0f} ms",
    ]
    offered, kept = lat["offered_events_per_s"], lat.get("worker_events_per_s", 0.0)
    if kept:
        why.append(
            f"the worker took {kept:.0f} events/s while {offered:.0f} were offered"
            + (": it fell behind, and the queue is most of the latency" if kept < 0.98 * offered else "")
        )
    if MARKER_DETECTOR in SCOPES:
        why.append(
            f"the marker alert ({MARKER_DETECTOR}) is a stage-2 detector: it waits for every "
            f"source's mark to pass its time plus --cross-lateness ({DEFAULT_LATENESS:g} s), a floor "
            "above the target"
        )
    limit = float(row.target.split()[1])
    takes = (
        f"meeting it needs p99 under {limit * 1000:.0f} ms; today {lat[pre + 'p99_ms']:.0f} ms "
        f"({lat[pre + 'p99_ms'] - limit * 1000:.0f} ms to cut): a worker that keeps up, and "
        "--cross-lateness well under 1 s (more records judged late) or a stage-1 marker"
    )
    return row.explained(why, takes)


def explain_memory(row: Row, mem: dict[str, float]) -> Row:
    """The memory row's why: the RSS per identity against what each identity's state serialises to."""
    per_id_kb = mem["mb_per_10k_identities"] * 1024 / 10_000
    why = [
        f"{mem['identities']:.0f} identities; RSS growth {mem['rss_growth_mb']:.1f} MB "
        f"({mem['mb_per_10k_identities_whole_run']:.1f} MB per 10k over the whole run, "
        f"{mem['mb_per_10k_identities']:.1f} over its second half)",
        f"{per_id_kb:.2f} KB of RSS per identity; its state snapshots to "
        f"{mem['snapshot_bytes_per_identity'] / 1024:.2f} KB",
    ]
    takes = f"<= 30 MB per 10k needs <= {30 * 1024 / 10_000:.2f} KB per identity; today {per_id_kb:.2f}"
    return row.explained(why, takes)


def _kafka_rows(reason: str) -> list[Row]:
    return [
        Row.missing(THROUGHPUT, ">= 0.5", reason),
        Row.missing(LATENCY, "< 1 s", reason),
        Row.missing(WEBHOOK, "< 1.001 s", reason),
    ]


def failed_rows(reason: str) -> list[Row]:
    return [*_kafka_rows(reason), Row.missing(MEMORY, "<= 30 MB", reason)]


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:120]


def _show(part: str, figures: dict[str, float]) -> None:
    for k, v in figures.items():
        print(f"  {part}_{k:40s} {v:14.2f}")


def scale_out(
    bootstrap: str,
    db: str,
    work: Path,
    rate: int = 1000,
    seconds: float = 30.0,
    workers: int = 2,
    partitions: int = 4,
) -> dict[str, Any]:
    """``workers`` ``vaultwatch run`` processes on a ``partitions``-partition topic (see the module)."""
    import json
    import multiprocessing
    import os
    import subprocess
    import sys

    import sqlalchemy as sa

    topic = f"bench-scale-{uuid.uuid4().hex[:6]}"
    group = f"scale-{uuid.uuid4().hex[:6]}"
    _create_topic(bootstrap, topic, partitions)
    cfg = work / "scale.toml"
    cfg.write_text(
        f"""
[kafka]
bootstrap = "{bootstrap}"
topic = "{topic}"
group_id = "{group}"
max_poll_records = 500

[store]
url = "{db}"

[archive]
enabled = true
path = "{work / "scale-archive"}"
"""
    )
    procs = []
    for i in range(workers):
        log = open(work / f"scale-{i}.log", "wb")  # noqa: SIM115 - handed to the child
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "vaultwatch.cli", "--log-level", "INFO", "run", "--config", str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        )
        log.close()
    eng = sa.create_engine(db)

    def committed() -> int:
        try:
            with eng.connect() as c:
                rows = c.execute(
                    sa.text('SELECT "offset" FROM consumer_offsets WHERE group_id = :g'), {"g": group}
                ).all()
        except sa.exc.SQLAlchemyError:
            return 0
        return sum(int(r[0]) for r in rows)

    result = work / "scale-producer.json"
    samples: list[tuple[float, int, int]] = []  # (seconds, produced so far, committed)
    try:
        deadline = time.monotonic() + 60
        while not all(
            (work / f"scale-{i}.log").read_text(errors="replace").count("partitions assigned")
            for i in range(workers)
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not join the group")
            time.sleep(0.2)
        time.sleep(4.0)  # both groups (stage 1 and the cross stage) settle
        proc = multiprocessing.get_context("spawn").Process(
            target=steady_producer, args=(bootstrap, topic, rate, seconds, str(result))
        )
        t0 = time.monotonic()
        proc.start()
        while proc.is_alive() or time.monotonic() - t0 < seconds + 30:
            el = time.monotonic() - t0
            sent = min(int(el * rate), int(seconds * rate * 1.02))
            samples.append((el, sent, committed()))
            if not proc.is_alive() and result.exists():
                total = json.loads(result.read_text())["sent"]
                if samples[-1][2] >= total:
                    break
            time.sleep(1.0)
        proc.join(timeout=30)
        done = json.loads(result.read_text())
        markers = set(done["markers"])
        deadline = time.monotonic() + 60
        lat: list[float] = []
        while time.monotonic() < deadline:
            with eng.connect() as c:
                rows = c.execute(
                    sa.text("SELECT identity_key, first_seen, created_at FROM alerts WHERE detector = :d"),
                    {"d": MARKER_DETECTOR},
                ).all()
            lat = sorted(r.created_at - r.first_seen for r in rows if r.identity_key in markers)
            if len(lat) >= len(markers):
                break
            time.sleep(1.0)
    finally:
        for p in procs:
            p.send_signal(15)
        for p in procs:
            p.wait(timeout=60)
        eng.dispose()
    per_worker = []
    for i in range(workers):
        text = (work / f"scale-{i}.log").read_text(errors="replace")
        stats = [ln for ln in text.splitlines() if ln.startswith("stopped: ")]
        per_worker.append(stats[-1] if stats else "?")
    lags = [(round(t, 1), max(0, done["sent"] * min(1.0, t / done["seconds"]) - c)) for t, _, c in samples]
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0] if lat else float("nan")] * 99
    return {
        "offered_events_per_s": done["sent"] / done["seconds"],
        "events": done["sent"],
        "markers": len(markers),
        "marker_alerts": len(lat),
        "p50_s": q[49],
        "p99_s": q[98],
        "max_s": lat[-1] if lat else float("nan"),
        "lag_over_time": lags,
        "workers": per_worker,
    }


def main() -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m bench.bench_run")
    ap.add_argument("--scale-out", action="store_true", help="only the 2 workers x 4 partitions load test")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--db", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    if args.scale_out:
        from vaultwatch.demo.servers import KafkaBroker

        with tempfile.TemporaryDirectory() as tmp, KafkaBroker() as broker:
            out = scale_out(broker.bootstrap, _fresh_schema(args.db), Path(tmp), args.rate, args.seconds)
        print(json.dumps(out, indent=1))
        return
    for r in rows():
        print(f"{r.name}: {r.note if r.value is None else f'{r.value:.2f} {r.unit}'} (target {r.target})")


def _fresh_schema(base: str) -> str:
    """A new PostgreSQL schema for one load test (its URL)."""
    import sqlalchemy as sa

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(base)
    with eng.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    return f"{base}?options=-csearch_path%3D{schema}"


if __name__ == "__main__":
    main()
