"""The parser's contract: any bytes give an AuditEvent or a ParseError with a reason code.

The three single-line triggers of issue 18 each made ``Parser.parse`` raise ``ValueError`` and stop
``replay`` / ``inspect``; they are pinned here, with the bounds the parser now enforces.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ingest import REASONS, ParseError, Parser
from ingest.identity import MAX_PORT, split_address
from ingest.parse import MAX_TIME, MIN_TIME
from ingest.pipeline import IngestPipeline, iter_events
from ingest.quarantine import MemoryQuarantine
from ingest.sources.base import RawRecord


def _line(**over: Any) -> bytes:
    entry: dict[str, Any] = {
        "time": "2026-01-01T00:00:00Z",
        "type": "request",
        "auth": {"token_type": "default"},
        "request": {
            "id": "r1",
            "operation": "update",
            "path": "auth/userpass/login/alice",
            "namespace": {"id": "root"},
            "remote_address": "10.0.0.5:51000",
        },
    }
    for key, value in over.items():
        if key.startswith("request_"):
            entry["request"][key[8:]] = value
        else:
            entry[key] = value
    return json.dumps(entry).encode()


def _outcome(line: bytes) -> str:
    """``event`` or ``ParseError:<reason>``; anything else propagates and fails the test."""
    try:
        Parser().parse(line)
    except ParseError as exc:
        assert exc.reason in REASONS
        return f"ParseError:{exc.reason}"
    return "event"


# -- the three triggers from the issue ---------------------------------------------------------
def test_unicode_digit_port_is_not_a_port() -> None:
    ev = Parser().parse(_line(request_remote_address="1.2.3.4:\u00b2"))
    assert ev.remote_ip == "1.2.3.4" and ev.remote_port is None


def test_five_thousand_digit_port_is_not_a_port() -> None:
    ev = Parser().parse(_line(request_remote_address="1.2.3.4:" + "9" * 5000))
    assert ev.remote_ip == "1.2.3.4" and ev.remote_port is None


def test_zoneless_time_at_year_one_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as info:
        Parser().parse(_line(time="0001-01-01T00:00:00"))
    assert info.value.reason == "wrong_type"


# -- explicit bounds ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("1.2.3.4:0", ("1.2.3.4", 0)),
        ("1.2.3.4:65535", ("1.2.3.4", 65535)),
        ("1.2.3.4:65536", ("1.2.3.4", None)),
        ("1.2.3.4:0065535", ("1.2.3.4", None)),  # longer than 5 digits
        ("1.2.3.4:\u0661\u0662", ("1.2.3.4", None)),  # Arabic-Indic digits
        ("1.2.3.4:\uff11", ("1.2.3.4", None)),  # fullwidth 1
        ("1.2.3.4:+80", ("1.2.3.4", None)),
        ("1.2.3.4: 80", ("1.2.3.4", None)),
        ("1.2.3.4:", ("1.2.3.4", None)),
        ("[::1]:8200", ("::1", 8200)),
        ("[::1]:\u00b9", ("::1", None)),
        ("[::1]:" + "1" * 5000, ("::1", None)),
        ("::1", ("::1", None)),
        ("", (None, None)),
    ],
)
def test_split_address_bounds(addr: str, expected: tuple[str | None, int | None]) -> None:
    assert split_address(addr) == expected
    assert MAX_PORT == 65535


@pytest.mark.parametrize("port", [-1, 65536, 10**30, -(10**30)])
def test_remote_port_field_out_of_range_is_dropped(port: int) -> None:
    line = _line(request_remote_address="10.0.0.5", request_remote_port=port)
    ev = Parser().parse(line)
    assert ev.remote_port is None and ev.request.remote_port is None


def test_remote_port_field_in_range_is_kept() -> None:
    ev = Parser().parse(_line(request_remote_address="10.0.0.5", request_remote_port=443))
    assert ev.remote_port == 443


@pytest.mark.parametrize(
    "time",
    [
        "0001-01-01T00:00:00",
        "0001-01-01T00:00:00+05:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-05:00",
        "9999-12-31T23:59:59.999999",
        "1969-12-31T23:59:59Z",
        "2201-01-01T00:00:00Z",
    ],
)
def test_times_out_of_range_are_parse_errors(time: str) -> None:
    assert _outcome(_line(time=time)) == "ParseError:wrong_type"


@pytest.mark.parametrize(
    "time", ["1970-01-01T00:00:00Z", "2026-01-01T00:00:00+14:00", "2199-12-31T23:59:59Z"]
)
def test_times_in_range_parse(time: str) -> None:
    ev = Parser().parse(_line(time=time))
    assert MIN_TIME <= ev.time <= MAX_TIME and ev.time.tzinfo is not None


def test_zoneless_time_in_range_is_read_as_utc() -> None:
    ev = Parser().parse(_line(time="2026-01-01T00:00:00"))
    assert ev.time.utcoffset() is not None and ev.ts == 1767225600.0


@pytest.mark.parametrize(
    "field",
    ["num_uses", "remaining_uses", "token_ttl"],
)
@pytest.mark.parametrize("value", [10**400, -(10**400), 2**63, -(2**63) - 1])
def test_huge_auth_integers_are_bounded(field: str, value: int) -> None:
    line = b'{"time":"2026-01-01T00:00:00Z","type":"request","auth":{"%s":%d}}' % (field.encode(), value)
    assert _outcome(line) in {"event", "ParseError:wrong_type", "ParseError:invalid_json"}


@pytest.mark.parametrize(
    "line",
    [
        b'{"time":"2026-01-01T00:00:00Z","type":"request","request":{"wrap_ttl":' + b"9" * 5000 + b"}}",
        b'{"time":"2026-01-01T00:00:00Z","type":"request","request":{"remote_port":' + b"9" * 5000 + b"}}",
        b'{"time":"2026-01-01T00:00:00Z","type":"request","zz":' + b"9" * 5000 + b"}",
        b'{"time":"2026-01-01T00:00:00Z","type":"request","zz":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"time":"2026-01-01T00:00:00Z","type":"request","request":{"data":'
        + b'{"a":' * 5000
        + b"1"
        + b"}" * 5000
        + b"}}",
        b'{"time":"2026-01-01T00:00:00Z","type":"request","error":"\\ud800"}',
        b'{"time":"2026-01-01T00:00:00Z","type":"\\u0000"}',
        b'{"time":"2026-01-01T00:00:00Z","type":"request","request":{"path":"auth/token/lookup/\\udfff"}}',
    ],
)
def test_hostile_lines_obey_the_contract(line: bytes) -> None:
    assert _outcome(line) in {"event"} | {f"ParseError:{r}" for r in REASONS}


# -- a remaining bug on one record never stops a pipeline ------------------------------------
class _BuggyParser(Parser):
    """Raises a non-ParseError on lines holding ``BUG`` (in the guarded or unguarded step)."""

    def __init__(self, *, guarded: bool) -> None:
        super().__init__()
        self.guarded = guarded

    def parse_unguarded(self, line: bytes | str, *, source: str | None = None) -> Any:
        if b"BUG" in (line if isinstance(line, bytes) else line.encode()):
            raise KeyError("boom")
        return super().parse_unguarded(line, source=source)

    def parse(self, line: bytes | str, *, source: str | None = None) -> Any:
        if self.guarded:
            return super().parse(line, source=source)
        return self.parse_unguarded(line, source=source)


@pytest.mark.parametrize("guarded", [True, False])
def test_an_unexpected_exception_on_one_record_is_quarantined(guarded: bool) -> None:
    good = [_line(request_id=f"r{i}") for i in range(3)]
    recs = [
        RawRecord(good[0], 0, "t"),
        RawRecord(b'{"BUG":1}', 1, "t"),
        RawRecord(good[1], 2, "t"),
        RawRecord(_line(time="0001-01-01T00:00:00"), 3, "t"),
        RawRecord(good[2], 4, "t"),
    ]
    q = MemoryQuarantine()
    events, stats = IngestPipeline(_BuggyParser(guarded=guarded), q).process(recs)
    assert [e.request_id for e in events] == ["r0", "r1", "r2"]
    assert stats.quarantined == {"internal": 1, "wrong_type": 1}
    assert [r.position for r in q.records] == ["1", "3"] and q.records[0].line() == b'{"BUG":1}'
    assert q.records[0].detail == "unexpected KeyError"


def test_iter_events_survives_the_three_triggers(tmp_path: Any) -> None:
    log = tmp_path / "audit.log"
    bad = [
        _line(request_id="b1", request_remote_address="1.2.3.4:\u00b2"),
        _line(request_id="b2", request_remote_address="1.2.3.4:" + "9" * 5000),
        _line(request_id="b3", time="0001-01-01T00:00:00"),
    ]
    log.write_bytes(b"\n".join([_line(request_id="g1"), *bad, _line(request_id="g2")]) + b"\n")
    q = MemoryQuarantine()
    ids = [e.request_id for e in iter_events(log, quarantine=q)]
    assert ids == ["g1", "b1", "b2", "g2"] and q.counts == {"wrong_type": 1}
