"""The parser's one-pass fast path, its identity cache and the deduplicator's window (issue 17).

The fast path (:meth:`Parser._build_clean`) must make exactly the event the general path
(:meth:`Parser._build_general`, which redacts) makes, or hand the entry over; these tests compare
the two on real lines and on the fuzz campaign's mutations of them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.fuzz import generate, load_seeds
from ingest import Deduplicator, ParseError, Parser
from ingest.event import Entry
from ingest.identity import resolve_identity

_DECODE = msgspec.json.Decoder(Entry)


def _fast_and_general(line: bytes) -> tuple[object, object] | None:
    """(fast-path event or None, general-path event) of a line that decodes strictly, else None."""
    try:
        entry = _DECODE.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    try:
        general: object = Parser()._build_general(entry, None, None)
    except ParseError as exc:
        general = exc.reason
    try:
        fast: object = Parser()._build_clean(entry, None)
    except ParseError as exc:
        fast = exc.reason
    return fast, general


@pytest.mark.parametrize(
    "name",
    ["openbao_audit_sample.jsonl", "openbao_audit_sample_raw.jsonl", "vault-audit-learn-monitoring.log"],
)
def test_fast_path_makes_the_general_paths_event_on_real_lines(
    name: str, shared_fixture: Callable[[str], Path]
) -> None:
    lines = [line for line in shared_fixture(name).read_bytes().splitlines() if line.strip()]
    fast_taken = 0
    for line in lines:
        pair = _fast_and_general(line)
        assert pair is not None
        fast, general = pair
        if fast is not None:
            fast_taken += 1
            assert fast == general, line[:200]
    if name.endswith("_raw.jsonl"):
        # log_raw: tokens in clear on every authenticated line; those go the general way.
        assert fast_taken < len(lines) // 2
    else:
        # Entries with an error text go the general way (the text is scrubbed); audited headers
        # without credentials (user-agent) do not.
        assert fast_taken >= 0.85 * len(lines)


def test_fast_path_makes_the_general_paths_event_on_mutated_lines() -> None:
    seeds, _ = load_seeds(limit=300)
    compared = fast_taken = 0
    for line, _tree in islice(generate(seeds, seed=17), 6000):
        pair = _fast_and_general(line)
        if pair is None:
            continue
        fast, general = pair
        compared += 1
        if fast is not None:
            fast_taken += 1
            assert fast == general, line[:300]
    assert compared > 1000 and fast_taken > 300


def _line(token: str, accessor: str, rid: str = "r1") -> bytes:
    return (
        b'{"time":"2026-01-01T00:00:00Z","type":"response","auth":{"client_token":"hmac-sha256:'
        + token.encode()
        + b'","accessor":"hmac-sha256:'
        + accessor.encode()
        + b'","display_name":"token","policies":["default"]},"request":{"id":"'
        + rid.encode()
        + b'","operation":"read","path":"kv/data/x"},"response":{}}'
    )


def test_identity_cache_is_bounded_and_counted() -> None:
    p = Parser(identity_cache_size=3)
    keys = [p.parse(_line(f"{i:04x}", f"a{i:03x}")).identity.key for i in range(5)]
    assert len(set(keys)) == 5  # generic display name: keyed by the accessor
    stats = p.identity_cache_stats()
    assert stats == {"size": 3, "bound": 3, "lookups": 5, "misses": 5, "evictions": 2}
    # The three newest tokens are cached: hits, no new resolution.
    assert [p.parse(_line(f"{i:04x}", f"a{i:03x}")).identity.key for i in (2, 3, 4)] == keys[2:]
    assert p.identity_cache_stats()["misses"] == 5
    # An evicted token resolves again, to the same identity.
    assert p.parse(_line("0000", "a000")).identity.key == keys[0]
    assert p.identity_cache_stats()["misses"] == 6
    with pytest.raises(ValueError):
        Parser(identity_cache_size=0)


def test_identity_cache_checks_what_the_identity_depends_on() -> None:
    p = Parser()
    first = p.parse(_line("beef", "a001")).identity
    # The same token text with another accessor is resolved again, not served from the cache.
    other = p.parse(_line("beef", "a002")).identity
    assert first.key != other.key and other.accessor == "hmac-sha256:a002"
    assert p.identity_cache_stats()["misses"] == 2 and p.identity_cache_stats()["size"] == 2
    assert p.parse(_line("beef", "a001")).identity == first and p.identity_cache_stats()["misses"] == 2


def _approle(token: str, entity: str, metadata: str = '{"role_name":"web"}') -> bytes:
    return (
        b'{"time":"2026-01-01T00:00:00Z","type":"response","auth":{"client_token":"hmac-sha256:'
        + token.encode()
        + b'","accessor":"hmac-sha256:a'
        + token.encode()
        + b'","display_name":"approle","policies":["default","web"],"token_type":"service",'
        + b'"entity_id":"'
        + entity.encode()
        + b'","metadata":'
        + metadata.encode()
        + b'},"request":{"id":"r1","operation":"read","path":"kv/data/x","client_id":"'
        + entity.encode()
        + b'"},"response":{}}'
    )


def test_cached_identities_share_their_repeated_parts() -> None:
    """Tokens of one role hold one display name, policy set, token type, role name and metadata
    between them (and the client id is the entity id's string): the same values as resolving
    each entry on its own, kept once."""
    p = Parser()
    lines = [_approle(f"{i:04x}", f"e{i}") for i in range(3)]
    a, b, c = (p.parse(line).identity for line in lines)
    assert a.key != b.key != c.key
    for x in (b, c):
        assert x.policies is a.policies and x.metadata is a.metadata and x.role_name is a.role_name
        assert x.display_name is a.display_name and x.token_type is a.token_type
    assert a.client_id is a.entity_id
    for line, ident in zip(lines, (a, b, c), strict=True):
        entry = msgspec.json.decode(line, type=Entry)
        assert entry.auth is not None and entry.request is not None
        assert ident == resolve_identity(entry.auth, entry.request, "kv/data/x", None)
    # Metadata with other than strings is kept as decoded (1 and true are equal, not the same).
    d = p.parse(_approle("d001", "e9", '{"role_name":"web","n":1}')).identity
    e = p.parse(_approle("d002", "e10", '{"role_name":"web","n":true}')).identity
    assert d.metadata == {"role_name": "web", "n": 1} and e.metadata == {"role_name": "web", "n": True}
    assert d.metadata is not e.metadata and e.metadata is not None and e.metadata["n"] is True


class _ReferenceDedup:
    """The window as first written (an OrderedDict of the last ``window`` keys)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.keys: OrderedDict[tuple[str, str], None] = OrderedDict()

    def seen(self, key: tuple[str, str]) -> bool:
        if key in self.keys:
            return True
        self.keys[key] = None
        if len(self.keys) > self.window:
            self.keys.popitem(last=False)
        return False


@given(
    st.lists(st.tuples(st.sampled_from("abcdefg"), st.sampled_from(["request", "response"])), max_size=300),
    st.integers(min_value=1, max_value=8),
)
def test_dedup_keeps_exactly_the_last_window_keys(keys: list[tuple[str, str]], window: int) -> None:
    d, ref = Deduplicator(window=window), _ReferenceDedup(window)
    expected = [ref.seen(k) for k in keys]
    assert [d.seen(k) for k in keys] == expected
    assert len(d) == len(ref.keys) and d.duplicates == sum(expected)


def test_dedup_forgets_the_oldest_key_first() -> None:
    d = Deduplicator(window=2)
    assert [d.seen(k) for k in [("a", "request"), ("b", "request"), ("c", "request")]] == [False] * 3
    assert d.seen(("a", "request")) is False  # a had left the window: new again (and b leaves)
    assert d.seen(("c", "request")) is True and d.seen(("b", "request")) is False


def _with_headers(headers: bytes) -> bytes:
    return _line("cafe", "a0ca").replace(b'"path":"kv/data/x"', b'"path":"kv/data/x","headers":' + headers)


def test_audited_headers_without_credentials_stay_on_the_fast_path() -> None:
    p = Parser()
    for _ in range(2):  # the second time from the clean-header memory
        line = _with_headers(b'{"user-agent":["curl/8.5.0"]}')
        entry = _DECODE.decode(line)
        assert p._build_clean(entry, None) is not None
        ev = p.parse(line)
        assert ev.request.headers == {"user-agent": ["curl/8.5.0"]} and not ev.plaintext_fields
    # A credential, or a secret-shaped value under a name remembered as clean, is still redacted.
    for headers, field in (
        (b'{"authorization":["Bearer abcdef"]}', "request.headers.authorization"),
        (b'{"user-agent":["hvs.AAAAAAAAAAAAAAAAAAAAAAAAAA"]}', "request.headers.user-agent"),
    ):
        ev = p.parse(_with_headers(headers))
        assert ev.plaintext_fields == (field,)
        assert "[REDACTED]" in msgspec.json.encode(ev.request.headers).decode()
