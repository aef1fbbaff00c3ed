"""The parser against real logs (HashiCorp Vault fixture, OpenBao written here) and bad input."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac.exceptions
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import REASONS, REDACTED, AuditEvent, Deduplicator, ParseError, Parser
from ingest.codec import encode_entry
from ingest.identity import split_address
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer

CANARY_PASSWORD = "canary-pw-7f3a9c1e"
CANARY_SECRET = "canary-secret-b41d2e88"


# --------------------------------------------------------------------------------------------
# A real OpenBao server, three audit devices: default, log_raw, and a prefixed one.
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bao_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("bao-parse")
    devices = [
        AuditDevice("file", "file", {"file_path": str(work / "audit.log")}),
        AuditDevice("file", "raw", {"file_path": str(work / "raw.log"), "log_raw": "true"}),
        AuditDevice("file", "pfx", {"file_path": str(work / "prefixed.log"), "prefix": "VAULT-AUDIT "}),
    ]
    srv = OpenBaoServer(work / "srv", devices=devices, extra_config="allow_audit_log_prefixing = true\n")
    srv.start()
    try:
        root = srv.client()
        root.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
        root.secrets.kv.v2.create_or_update_secret(
            path="app/db", secret={"password": CANARY_SECRET}, mount_point="kv"
        )
        root.sys.create_or_update_acl_policy("reader", 'path "kv/data/app/*" { capabilities = ["read"] }')
        root.sys.enable_auth_method("userpass")
        root.auth.userpass.create_or_update_user("alice", password=CANARY_PASSWORD, policies=["reader"])
        alice = srv.client(token="")
        alice.auth.userpass.login("alice", CANARY_PASSWORD)
        alice.secrets.kv.v2.read_secret_version("app/db", mount_point="kv", raise_on_deleted_version=False)
        with pytest.raises(hvac.exceptions.Forbidden):
            alice.secrets.kv.v2.read_secret_version(
                "other/x", mount_point="kv", raise_on_deleted_version=False
            )
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
            srv.client(token="").auth.userpass.login("alice", "wrong-password")
        with pytest.raises(hvac.exceptions.Forbidden):
            srv.client(token="bogus-token").secrets.kv.v2.read_secret_version(
                "app/db", mount_point="kv", raise_on_deleted_version=False
            )
        ci = root.auth.token.create(policies=["reader"], ttl="10m", display_name="ci-bot")["auth"][
            "client_token"
        ]
        srv.client(token=ci).secrets.kv.v2.read_secret_version(
            "app/db", mount_point="kv", raise_on_deleted_version=False
        )
        # A response-wrapped read (hvac's KV helper has no wrap option).
        root.adapter.request("GET", "v1/kv/data/app/db", headers={"X-Vault-Wrap-TTL": "60"})
        root.sys.list_enabled_audit_devices()
    finally:
        srv.stop()
    yield {
        "hmac": (work / "audit.log").read_bytes().splitlines(),
        "raw": (work / "raw.log").read_bytes().splitlines(),
        "prefixed": (work / "prefixed.log").read_bytes().splitlines(),
    }
    srv.cleanup()


def _parse_all(lines: list[bytes], parser: Parser | None = None) -> list[AuditEvent]:
    parser = parser or Parser()
    return [parser.parse(line) for line in lines if line.strip()]


# --------------------------------------------------------------------------------------------
# Real logs
# --------------------------------------------------------------------------------------------
def test_hashicorp_vault_fixture_parses_without_failure(shared_fixture: Any) -> None:
    path = shared_fixture("vault-audit-learn-monitoring.log")
    lines = Path(path).read_bytes().splitlines()
    events = _parse_all(lines)
    assert len(events) == len(lines) == 1397
    kinds = Counter(e.identity.kind for e in events)
    assert kinds["entity"] > 0 and kinds["login"] > 0 and kinds["root"] > 0
    # Every event has a key, a time and an outcome.
    assert all(e.identity.key and e.ts > 0 and e.outcome for e in events)
    assert {e.type for e in events} == {"request", "response"}
    # The real log has denials and failed logins; the classifier must see them.
    outcomes = Counter(e.outcome for e in events)
    assert outcomes["denied"] > 0 and outcomes["login_failed"] > 0


@pytest.mark.integration
def test_openbao_log_parses_with_identities_and_outcomes(bao_logs: dict[str, Any]) -> None:
    events = _parse_all(bao_logs["hmac"])
    assert events, "the server wrote nothing"
    assert not any(e.plaintext_fields for e in events), "the default device HMACs everything"
    keys = {e.identity.key for e in events}
    assert "login:userpass:alice" in keys
    assert any(k.startswith("entity:") for k in keys)
    assert any(k.startswith("root:") for k in keys)
    assert "token:token-ci-bot" in keys
    by_outcome = Counter(e.outcome for e in events if e.is_response)
    assert by_outcome["denied"] >= 2  # ACL deny + bogus token
    assert by_outcome["login_failed"] >= 1
    # The ACL-denied read keeps the caller's identity; the bogus token does not have one.
    denied = [e for e in events if e.is_response and e.outcome == "denied"]
    assert any(e.identity.kind == "entity" for e in denied)
    assert any(e.identity.kind == "anonymous" for e in denied)
    # Request and response of one request share the id.
    ids = Counter(e.request_id for e in events if e.request_id)
    assert max(ids.values()) == 2
    wrapped = [e for e in events if e.response is not None and e.response.wrap_info is not None]
    assert wrapped and wrapped[0].response and wrapped[0].response.wrap_info
    assert wrapped[0].response.wrap_info.token.startswith("hmac-sha256:")  # type: ignore[union-attr]


@pytest.mark.integration
def test_log_raw_values_are_redacted_and_marked(bao_logs: dict[str, Any]) -> None:
    raw_lines = bao_logs["raw"]
    assert any(CANARY_SECRET.encode() in line for line in raw_lines), "log_raw should hold the canary"
    events = _parse_all(raw_lines)
    marked = [e for e in events if e.plaintext_fields]
    assert marked
    assert any("request.data.password" in e.plaintext_fields for e in marked)
    assert any(f.startswith("response.data.data") for e in marked for f in e.plaintext_fields)
    assert any("auth.client_token" in e.plaintext_fields for e in marked)
    for e in events:
        for blob in (repr(e), msgspec.json.encode(e), encode_entry(e)):
            text = blob if isinstance(blob, str) else blob.decode()
            assert CANARY_SECRET not in text and CANARY_PASSWORD not in text
    assert any(REDACTED in encode_entry(e).decode() for e in marked)


@pytest.mark.integration
def test_prefix_option_is_stripped(bao_logs: dict[str, Any]) -> None:
    lines = bao_logs["prefixed"]
    assert lines and all(line.startswith(b"VAULT-AUDIT ") for line in lines)
    with_prefix = _parse_all(lines, Parser(prefix="VAULT-AUDIT "))
    without = _parse_all(lines)  # found by scanning to the first "{"
    assert [e.request_id for e in with_prefix] == [e.request_id for e in without]


@pytest.mark.integration
def test_two_devices_deduplicate_on_request_id_and_type(bao_logs: dict[str, Any]) -> None:
    a, b = _parse_all(bao_logs["hmac"]), _parse_all(bao_logs["raw"])
    both = a + b
    dedup = Deduplicator()
    kept = [e for e in both if not dedup.is_duplicate(e)]
    # Each device writes every entry made while it exists; test messages are per device.
    shared = {e.dedup_key for e in a if e.dedup_key} & {e.dedup_key for e in b if e.dedup_key}
    assert len(shared) >= len(a) - 5  # device test messages and setup before a device existed
    assert dedup.duplicates == len(shared)
    assert len(kept) == len(both) - dedup.duplicates


@pytest.mark.integration
def test_syslog_wrapped_lines(bao_logs: dict[str, Any]) -> None:
    parser = Parser()
    for line in bao_logs["hmac"][:20]:
        rfc5424 = b"<110>1 2026-11-28T12:00:00Z vault-0 vault 1234 - - " + line
        rfc3164 = b"<110>Nov 28 12:00:00 vault-0 vault[1234]: @cee: " + line
        assert parser.parse(rfc5424) == parser.parse(rfc3164) == parser.parse(line)


@pytest.mark.integration
def test_codec_round_trip_is_exact(bao_logs: dict[str, Any]) -> None:
    parser = Parser()
    for line in bao_logs["hmac"] + bao_logs["raw"]:
        ev = parser.parse(line)
        assert parser.parse(encode_entry(ev)) == ev


# --------------------------------------------------------------------------------------------
# Variations derived from real entries
# --------------------------------------------------------------------------------------------
def _real_entry(shared_fixture: Any, pred: Any) -> dict[str, Any]:
    path = shared_fixture("openbao_audit_sample.jsonl")
    for line in Path(path).read_bytes().splitlines():
        d = json.loads(line)
        if pred(d):
            return d  # type: ignore[no-any-return]
    raise AssertionError("no matching entry")


def test_error_empty_or_absent(shared_fixture: Any) -> None:
    d = _real_entry(
        shared_fixture,
        lambda d: d["type"] == "response" and "error" not in d and "data" in d.get("response", {}),
    )
    p = Parser()
    absent = p.parse(json.dumps(d))
    d["error"] = ""
    empty = p.parse(json.dumps(d))
    assert absent.error is None and empty.error is None
    assert absent.outcome == empty.outcome


@pytest.mark.parametrize(
    ("addr", "ip", "port"),
    [
        ("10.1.2.3", "10.1.2.3", None),
        ("10.1.2.3:8200", "10.1.2.3", 8200),
        ("[2001:db8::1]:8200", "2001:db8::1", 8200),
        ("2001:db8::1", "2001:db8::1", None),
        ("[::1]", "::1", None),
        ("", None, None),
    ],
)
def test_remote_address_forms(addr: str, ip: str | None, port: int | None) -> None:
    assert split_address(addr) == (ip, port)


def test_remote_address_in_entry(shared_fixture: Any) -> None:
    d = _real_entry(shared_fixture, lambda d: "remote_address" in d.get("request", {}))
    d["request"]["remote_address"] = "[2001:db8::7]:51234"
    d["request"].pop("remote_port", None)
    ev = Parser().parse(json.dumps(d))
    assert (ev.remote_ip, ev.remote_port) == ("2001:db8::7", 51234)


def test_missing_request_id_is_kept_and_never_deduplicated(shared_fixture: Any) -> None:
    d = _real_entry(shared_fixture, lambda d: d["type"] == "request" and d["request"].get("id"))
    del d["request"]["id"]
    ev = Parser().parse(json.dumps(d))
    assert ev.request_id is None and ev.dedup_key is None
    dedup = Deduplicator()
    assert not dedup.is_duplicate(ev) and not dedup.is_duplicate(ev)


def test_unknown_fields_are_kept_redacted(shared_fixture: Any) -> None:
    d = _real_entry(shared_fixture, lambda d: d["type"] == "response" and "auth" in d)
    d["future_top"] = {"n": 1, "label": "plain-canary-value"}
    d["request"]["request_uri_v2"] = "hmac-sha256:abcd"
    d["auth"]["authorization_hint"] = 7
    ev = Parser().parse(json.dumps(d))
    assert ev.extra is not None
    assert ev.extra["future_top"]["n"] == 1
    assert ev.extra["future_top"]["label"] == REDACTED
    assert ev.extra["request.request_uri_v2"] == "hmac-sha256:abcd"
    assert ev.extra["auth.authorization_hint"] == 7
    assert "plain-canary-value" not in repr(ev)
    # Known fields decode the same as without the extras.
    assert ev.identity.key == Parser().parse(_real_line_without_extras(d)).identity.key
    # The codec puts unknown fields back where they were.
    again = Parser().parse(encode_entry(ev))
    assert again.extra == ev.extra


def _real_line_without_extras(d: dict[str, Any]) -> bytes:
    d = json.loads(json.dumps(d))
    d.pop("future_top")
    d["request"].pop("request_uri_v2")
    d["auth"].pop("authorization_hint")
    return json.dumps(d).encode()


def test_token_in_legacy_url_path_is_redacted(shared_fixture: Any) -> None:
    d = _real_entry(
        shared_fixture, lambda d: d["type"] == "request" and d["request"]["path"].startswith("auth/token/")
    )
    d["request"]["path"] = "auth/token/lookup/s.CanaryTokenValue123"
    ev = Parser().parse(json.dumps(d))
    assert "CanaryTokenValue" not in ev.path and "request.path" in ev.plaintext_fields


# --------------------------------------------------------------------------------------------
# Bad input: one documented error, a reason code, no content in the message
# --------------------------------------------------------------------------------------------
def _reason(line: bytes, **kw: Any) -> str:
    with pytest.raises(ParseError) as info:
        Parser(**kw).parse(line)
    assert info.value.reason in REASONS
    return info.value.reason


def test_bad_input_reasons(shared_fixture: Any) -> None:
    good = Path(shared_fixture("openbao_audit_sample.jsonl")).read_bytes().splitlines()[5]
    assert _reason(good[: len(good) // 2]) == "invalid_json"
    assert _reason(b"") == "no_json"
    assert _reason(b"<json:object>") == "not_audit"
    assert _reason(good.replace(b'"path":"', b'"path":"\xff\xfe', 1)) == "not_utf8"
    assert _reason(good.replace(b'"operation":"update"', b'"operation":17', 1)) == "wrong_type"
    assert _reason(good, max_line_bytes=100) == "too_large"
    d = json.loads(good)
    d["request"]["data"] = json.loads('{"a":' * 100 + "1" + "}" * 100)
    deep = json.dumps(d).encode()
    assert _reason(deep) == "too_deep"
    assert _reason(b"{" * 200_000) in {"too_deep", "invalid_json"}


def test_five_megabyte_line_is_refused_before_decoding() -> None:
    line = (
        b'{"time":"2026-01-01T00:00:00Z","type":"request","request":{"data":{"x":"'
        + b"a" * 5_000_000
        + b'"}}}'
    )
    assert _reason(line) == "too_large"


def test_error_messages_never_carry_values(shared_fixture: Any) -> None:
    good = Path(shared_fixture("openbao_audit_sample.jsonl")).read_bytes().splitlines()[5]
    bad = good.replace(b'"operation":"update"', b'"operation":{"v":"' + CANARY_SECRET.encode() + b'"}', 1)
    with pytest.raises(ParseError) as info:
        Parser().parse(bad)
    assert CANARY_SECRET not in str(info.value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    try:
        ev = Parser().parse(data)
    except ParseError as exc:
        assert exc.reason in REASONS
    else:
        assert isinstance(ev, AuditEvent)


_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_json = st.recursive(
    _json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(
        [
            "time",
            "type",
            "auth",
            "request",
            "response",
            "error",
            "request.path",
            "request.data",
            "auth.policies",
            "auth.metadata",
            "request.remote_port",
            "response.data",
            "auth.policy_results",
        ]
    ),
    value=_json,
)
def test_mutated_real_entries_raise_only_parse_error(field: str, value: Any) -> None:
    base = {
        "time": "2026-11-28T12:31:52.1Z",
        "type": "response",
        "auth": {"display_name": "token", "policies": ["root"], "token_type": "service"},
        "request": {"id": "x", "operation": "read", "path": "kv/data/a", "namespace": {"id": "root"}},
        "response": {"mount_type": "kv"},
    }
    parts = field.split(".")
    node: dict[str, Any] = base
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value
    try:
        ev = Parser().parse(json.dumps(base))
    except ParseError as exc:
        assert exc.reason in REASONS
    else:
        assert ev.identity.key


@given(
    st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from(["request", "response"])), max_size=200),
    st.integers(min_value=1, max_value=10),
)
def test_dedup_window_is_bounded(keys: list[tuple[str, str]], window: int) -> None:
    d = Deduplicator(window=window)
    for k in keys:
        d.seen(k)
        assert len(d) <= window
