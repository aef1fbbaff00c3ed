"""The Kafka dead-letter queue is sealed like the quarantine file (issue 18), on a real broker.

Before: ``DeadLetterQueue`` produced each refused record byte for byte, with the parser's detail
in a header, so a poison line from a ``log_raw`` device put its secret in the DLQ topic in clear.
Now the value is a Fernet token under the quarantine key and only metadata stays readable;
``vaultwatch quarantine list|show|requeue kafka://HOST:PORT/TOPIC`` reads the records back.

The producer here is the real ``vaultwatch ship --stdin --dlq``; the topic's bytes are read back
with a plain Kafka consumer from Tansu.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ingest import DEFAULT_MAX_LINE_BYTES
from ingest.quarantine import generate_key_file
from ingest.sources.checkpoint import DEFAULT_HEAD_BYTES
from vaultwatch.cli import main
from vaultwatch.demo.servers import KafkaBroker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CANARY = "s.CANARYdlq7e41c0ffee0000secret"
C = CANARY.encode()
GOOD = (
    b'{"time":"2026-11-28T10:00:00.000000Z","type":"request","auth":{"display_name":"token-ci",'
    b'"policies":["default"],"token_type":"service"},"request":{"id":"0f0e5a3c-1111-2222-3333-444455556666",'
    b'"operation":"read","path":"secret/data/app","remote_address":"10.0.0.1:5000"}}'
)
POISON = [
    # A log_raw request cut short: the token is in clear.
    b'{"time":"2026-11-28T00:00:00Z","type":"request","auth":{"client_token":"' + C + b'","poli',
    # Not UTF-8, with the secret inside.
    b"\xff\xfe\x00password=" + C + b" \xc3\x28",
    # Over the parser's size limit (2 MiB), the secret at both ends.
    b'{"type":"request","request":{"data":{"password":"' + C + b"x" * 2_200_000 + C + b'"}}}',
    # A year-1 time without a zone, a raw token beside it.
    b'{"type":"request","time":"0001-01-01T00:00:00","auth":{"client_token":"' + C + b'"}}',
]
#: What the DLQ receives: a line over the size limit reaches it as its head (the source keeps
#: DEFAULT_HEAD_BYTES of it and reports it too_large).
RECEIVED = [p if len(p) <= DEFAULT_MAX_LINE_BYTES else p[:DEFAULT_HEAD_BYTES] for p in POISON]


def _read_topic(bootstrap: str, topic: str, want: int) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    try:
        end = time.monotonic() + 20
        parts: set[int] | None = None
        while not parts and time.monotonic() < end:
            parts = c.partitions_for_topic(topic)
            time.sleep(0 if parts else 0.2)
        assert parts, f"topic {topic} never appeared"
        c.assign([TopicPartition(topic, p) for p in parts])
        out: list[Any] = []
        while len(out) < want and time.monotonic() < end:
            out.extend(r for recs in c.poll(timeout_ms=500).values() for r in recs)
        return out
    finally:
        c.close()


@pytest.fixture
def shipped(kafka_broker: KafkaBroker, topic: str, tmp_path: Path) -> dict[str, Any]:
    key = generate_key_file(tmp_path / "keys" / "dlq.key")
    data = GOOD + b"\n" + b"\n".join(POISON) + b"\n"
    proc = subprocess.run(
        [sys.executable, "-m", "vaultwatch.cli", "ship", "--stdin", "--bootstrap", kafka_broker.bootstrap,
         "--topic", topic, "--quarantine-key-file", str(key), "--stats"],  # the DLQ: the default
        input=data, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert C not in proc.stdout + proc.stderr
    stats = json.loads(proc.stdout)
    assert sum(stats["quarantined"].values()) == len(POISON)
    url = f"kafka://{kafka_broker.bootstrap}/{topic}.dlq"
    return {"key": key, "url": url, "bootstrap": kafka_broker.bootstrap, "dlq": f"{topic}.dlq"}


def test_no_canary_in_the_dlq_topic_and_the_metadata_stays_readable(shipped: dict[str, Any]) -> None:
    got = _read_topic(shipped["bootstrap"], shipped["dlq"], len(POISON))
    assert len(got) == len(POISON)
    for m in got:
        raw = (m.key or b"") + (m.value or b"") + b"".join(k.encode() + v for k, v in m.headers)
        assert C not in raw and b"CANARYdlq" not in raw
        assert b"password" not in m.value  # nothing of the line in clear
        h = {k: v.decode() for k, v in m.headers}
        assert h["vaultwatch.sealed"] == "fernet-zlib-v1"
        assert h["vaultwatch.reason"] and h["vaultwatch.source"] == "stdin" and h["vaultwatch.id"]
        assert "vaultwatch.detail" not in h  # the parser's detail may quote the line: sealed too
    sizes = sorted(int(dict(m.headers)["vaultwatch.size"].decode()) for m in got)
    assert sizes == sorted(len(p) for p in RECEIVED)


def test_quarantine_lists_shows_and_requeues_dlq_records(
    shipped: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, key = shipped["url"], str(shipped["key"])
    assert main(["quarantine", "list", url, "--json"]) == 0
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert len(rows) == len(POISON) and CANARY not in out.out + out.err
    assert {r["reason"] for r in rows} >= {"too_large", "invalid_json"}

    assert main(["quarantine", "show", url, rows[0]["id"][:10], "--key-file", key, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == rows[0]["id"] and CANARY in shown["line"]

    out_file = tmp_path / "requeued.log"
    assert main(["quarantine", "requeue", url, "--key-file", key, "--out", str(out_file)]) == 0
    assert "4 line(s)" in capsys.readouterr().err
    assert sorted(out_file.read_bytes().splitlines()) == sorted(RECEIVED)  # byte for byte
    assert os.stat(out_file).st_mode & 0o077 == 0


def test_the_wrong_key_and_discard_are_refused_without_a_secret(
    shipped: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = shipped["url"]
    other = generate_key_file(tmp_path / "other.key")
    out_file = tmp_path / "x.log"
    assert main(["quarantine", "requeue", url, "--key-file", str(other), "--out", str(out_file)]) == 2
    err = capsys.readouterr().err
    assert "wrong quarantine key" in err and CANARY not in err and not out_file.exists()
    assert main(["quarantine", "discard", url, "abc"]) == 2
    assert "retention" in capsys.readouterr().err
    assert main(["quarantine", "list", "kafka://nohost"]) == 2


def test_a_record_too_big_for_one_message_is_cut_and_says_so(tmp_path: Path) -> None:
    from ingest.errors import ParseError
    from ingest.quarantine import DlqSealer, dlq_record, open_records

    key = generate_key_file(tmp_path / "k.key")
    sealer = DlqSealer(key_file=key, max_value_bytes=64 * 1024)
    line = C + os.urandom(200_000)  # incompressible
    value, headers = sealer.seal(line, ParseError("too_large", "x"), source="s", position="p")
    assert len(value) <= 64 * 1024 and C not in value
    h = dict(headers)
    assert h["vaultwatch.truncated"] == "true" and h["vaultwatch.size"] == str(len(line))
    rec = dlq_record(value, [(k, v.encode()) for k, v in headers])
    (opened,) = open_records([rec], key_file=key)
    assert line.startswith(opened.line()) and opened.line().startswith(C) and opened.size == len(line)
    small, small_headers = sealer.seal(b"short " + C, ParseError("no_json", "x"), source="s", position="q")
    assert "vaultwatch.truncated" not in dict(small_headers)
    (back,) = open_records([dlq_record(small, [(k, v.encode()) for k, v in small_headers])], key_file=key)
    assert back.line() == b"short " + C


def test_a_record_put_again_after_a_rewind_is_listed_once(
    kafka_broker: KafkaBroker, topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker that re-reads its records after a fault (a store outage, a broker that came back
    empty) puts a refused record to the DLQ again: the DLQ is at-least-once; its reader shows each
    refused record once and says how many copies it skipped."""
    from ingest.errors import ParseError
    from ingest.kafka_config import KafkaSettings
    from ingest.sources.kafka import DeadLetterQueue
    from vaultwatch.cli.quarantine import read_dlq

    key = generate_key_file(tmp_path / "k.key")
    dlq = DeadLetterQueue(f"{topic}.dlq", kafka=KafkaSettings(kafka_broker.bootstrap), key_file=key)
    try:
        for _ in range(2):  # read, refused, rewound, read and refused again
            for i, line in enumerate(POISON[:2]):
                dlq.put(line, ParseError("invalid_json", "x"), source="kafka:t", position=f"t:0:{i}")
            dlq.flush()
    finally:
        dlq.close()
    records, unsealed, repeated = read_dlq([kafka_broker.bootstrap], f"{topic}.dlq")
    assert (len(records), unsealed, repeated) == (2, 0, 2)
    assert main(["quarantine", "list", f"kafka://{kafka_broker.bootstrap}/{topic}.dlq", "--json"]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 2 and "2 repeated copies" in out.err and CANARY not in out.err
