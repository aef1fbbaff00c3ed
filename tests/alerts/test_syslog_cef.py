"""Syslog + CEF: escaping proven by property tests against a strict parser, and real listeners."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.channels.syslog import (
    SD_ID,
    SyslogChannel,
    cef_header_escape,
    cef_value_escape,
    format_cef,
    format_record,
    frame_octet_counting,
)
from alerts.ssrf import Guard
from detect.alert import AlertIdentity, Reason
from tests.alerts.receivers import (
    ParseFailure,
    SyslogTcpReceiver,
    SyslogUdpReceiver,
    make_tls,
    parse_5424,
    parse_cef,
    split_octet_counted,
)
from tests.alerts.test_deliver import make_alert, payload

LOOPBACK = Guard(allow_loopback=True)
NOW = 1_764_325_800.123

# Strings rich in everything that could break a field or a record.
nasty = st.text(
    alphabet=st.one_of(
        st.sampled_from(list('|=\\]["\n\r\x00 \t=|\\CEF:<>1-') + ["\u2028", "é", "😀", "\x7f", "\x1b"]),
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
    ),
    max_size=60,
)


def _alert(title: str, detector: str, name: str, key: str, path: str, reason: str) -> dict[str, Any]:
    return make_alert(
        1,
        title=title,
        detector=detector,
        identity=AlertIdentity(key=key, display_name=name),
        paths=(path,),
        explanation=(Reason(feature=reason, observed="o", baseline="b", weight=1.0),),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=nasty, detector=nasty, name=nasty, key=nasty, path=nasty, reason=nasty)
def test_escaping_round_trips_and_never_forges(
    title: str, detector: str, name: str, key: str, path: str, reason: str
) -> None:
    alert = _alert(title, detector, name, key, path, reason)
    record = format_record(alert, now=NOW, hostname="host-1")
    # nothing a line-based or C-string consumer splits on survives raw
    assert not any(b < 0x20 or b == 0x7F for b in record)
    rec = parse_5424(record)
    header, ext = rec.cef_header, rec.cef_ext
    assert header[0] == "0" and header[1:4] == ["vaultwatch", "vaultwatch", "0.1.0"]
    assert header[4] == detector
    assert header[5] == title
    assert header[6] == "8"  # high
    expected_user = name or key or "unknown"  # the display name, else the identity key
    assert ext.get("suser", "") == expected_user
    assert ext.get("cs1", "") == key
    assert ext.get("cs3", "") == path
    assert ext["msg"] == f"{reason}: observed o (baseline b)"
    assert ext["externalId"] == alert["id"]
    assert set(ext) <= {
        "externalId", "act", "suser", "cs1Label", "cs1", "cs2Label", "cs2", "cs3Label", "cs3",
        "cs4Label", "cn1Label", "cn1", "cnt", "start", "end", "msg",
    }  # fmt: skip
    assert rec.sd == {SD_ID: {"id": alert["id"], "detector": detector, "severity": "high", "identity": key}}
    assert (rec.pri, rec.hostname, rec.app_name, rec.msgid) == (13 * 8 + 3, "host-1", "vaultwatch", "alert")
    # two framed records stay exactly two records
    stream = frame_octet_counting(record) + frame_octet_counting(record)
    assert [parse_5424(f).cef_header for f in split_octet_counted(stream)] == [header, header]


@settings(max_examples=200, deadline=None)
@given(value=nasty)
def test_escape_functions_are_reversible(value: str) -> None:
    header, ext = parse_cef(
        f"CEF:0|{cef_header_escape(value)}|p|1|sig|name|5|k={cef_value_escape(value) or 'x'}"
    )
    assert header[1] == value
    assert ext["k"] == (value or "x")


@pytest.mark.parametrize(
    "bad",
    [
        "CEF:0|a|b|c|d|e|5|k=v=w",  # unescaped = in a value
        "CEF:0|a|b|c|d|e|5|k=v\\q",  # unknown escape
        "CEF:0|a|b|c|d|e\n|5|k=v",  # raw newline
        "CEF:0|a|b|c|d|e|5",  # short header
        "CEF:0|a|b|c|d|e|5|k=a k=b",  # duplicate key
    ],
)
def test_strict_parser_rejects_malformed(bad: str) -> None:
    with pytest.raises(ParseFailure):
        parse_cef(bad)


def test_cef_known_output() -> None:
    alert = make_alert(1, title="a|b", identity=AlertIdentity(key="k", display_name="x=y\\z"))
    cef = format_cef(alert)
    assert cef.startswith("CEF:0|vaultwatch|vaultwatch|0.1.0|root-token-use|a\\|b|8|externalId=va_")
    assert "suser=x\\=y\\\\z " in cef
    assert "cs1Label=identityKey cs1=k " in cef


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_records_reach_a_real_listener(transport: Literal["udp", "tcp"]) -> None:
    receiver = SyslogUdpReceiver() if transport == "udp" else SyslogTcpReceiver()
    with receiver as rx:
        ch = SyslogChannel(
            host="127.0.0.1", port=rx.port, transport=transport, guard=LOOPBACK, hostname="vw-1"
        )
        evil = make_alert(2, title="x\n<13>1 - forged - - - - CEF:0|evil|x|1|1|forged|10|")
        d = ch.send(payload(make_alert(1), evil), message_id="m")
        ch.close()
        assert d.ok and d.reason == "sent 2 record(s)"
        records = rx.wait_for(2)
    assert len(records) == 2  # the forged line stayed inside its field
    assert [r.cef_ext["externalId"] for r in records] == [make_alert(1)["id"], make_alert(2)["id"]]
    assert records[1].cef_header[5] == evil["title"]
    assert records[0].hostname == "vw-1"


@pytest.mark.integration
def test_records_over_tls(tmp_path: Any) -> None:
    tls = make_tls(tmp_path)
    with SyslogTcpReceiver(tls=tls.server) as rx:
        guard = Guard(allow_loopback=True, tls_context=tls.client, resolver=lambda h, p: ["127.0.0.1"])
        ch = SyslogChannel(host="hooks.test", port=rx.port, transport="tls", guard=guard)
        d = ch.send(payload(make_alert(1), make_alert(2), make_alert(3)), message_id="m")
        ch.close()
        assert d.ok, d.reason
        records = rx.wait_for(3)
    assert [r.cef_ext["externalId"] for r in records] == [make_alert(n)["id"] for n in (1, 2, 3)]
