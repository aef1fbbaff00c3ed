"""Baseline math: forward decay, space-saving bounds, serialisation, templates, hour-of-week tails."""

from __future__ import annotations

import math
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detect.baseline import (
    SMALL_HOURS,
    SMALL_TOPK,
    Baseline,
    Clock,
    Mark,
    Suspect,
    TopK,
    Window,
    hour_of_week,
    pack_rid,
    unpack_rid,
)
from detect.behaviour import how_tail
from detect.templates import area_of, directory_of, net_of, other_names, own_names, subnet_of, template_path

DAY = 86400.0


def test_forward_decay_equals_direct_decay() -> None:
    clock = Clock(t0=1000.0, tau_short=10 * DAY, tau_long=180 * DAY)
    c = TopK(k=4)
    times = [1000.0, 1000.0 + 3 * DAY, 1000.0 + 20 * DAY]
    for t in times:
        wl, ws = clock.weights(t)
        c.observe("x", wl, ws)
    now = 1000.0 + 30 * DAY
    sl, ss = clock.scale(now)
    direct_short = sum(math.exp(-(now - t) / (10 * DAY)) for t in times)
    direct_long = sum(math.exp(-(now - t) / (180 * DAY)) for t in times)
    assert c.items["x"][1] * ss == pytest.approx(direct_short)
    assert c.lower("x") * sl == pytest.approx(direct_long)
    # Ten days of silence divide the short count by e; the long one barely moves.
    sl2, ss2 = clock.scale(now + 10 * DAY)
    assert c.items["x"][1] * ss2 == pytest.approx(direct_short / math.e)
    assert c.lower("x") * sl2 > 0.9 * direct_long


def test_space_saving_evicts_smallest_and_records_error() -> None:
    c = TopK(k=3)
    for v, n in (("a", 5), ("b", 3), ("c", 1)):
        for _ in range(n):
            c.observe(v, 1.0, 1.0)
    assert c.observe("d", 1.0, 1.0) is True
    assert set(c.items) == {"a", "b", "d"}
    assert c.items["d"] == [2.0, 2.0, 1.0]
    assert c.lower("d") == 1.0
    assert c.lower("missing") == 0.0
    assert c.new_l == 4.0 and c.tot_l == 10.0


def test_novelty_rate_is_calibrated() -> None:
    stable, churn = TopK(k=64), TopK(k=64)
    for i in range(1000):
        stable.observe(f"s{i % 3}", 1.0, 1.0)
        churn.observe(f"c{i % 500}", 1.0, 1.0)
    assert stable.novelty_rate(1.0) < 0.005
    assert churn.novelty_rate(1.0) > 0.05


def test_baseline_roundtrips_through_msgpack() -> None:
    b = Baseline(key="entity:x", names=("alice",), first_ts=1.0, last_ts=2.0)
    b.feats["dir"] = TopK(k=8)
    b.feats["dir"].observe("secret/data/a/*", 1.5, 2.5)
    b.window.add_read("secret/data/a/b")
    b.window.event_ids += [pack_rid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"), "not-a-uuid"]
    data = msgspec.msgpack.encode(b)
    back = msgspec.msgpack.decode(data, type=Baseline)
    assert back == b
    assert len(data) < 3000


def test_threat_state_roundtrips_and_stays_plain() -> None:
    """The threat detectors' state (a suspect use, denials, first reads) is plain data."""
    b = Baseline(key="entity:x", who="role ci (approle)", days_seen=6)
    b.suspect = Suspect(
        address="203.0.113.7",
        subnet="203.0.113.0/24",
        first_ts=10.0,
        last_ts=12.0,
        net=60.0,
        hour=28.0,
        net_note="new /24, never seen in the organisation",
        hour_note="3 h from its usual hours (09:00-17:59 UTC)",
        at="03:10",
        reads=["kv/data/a"],
        emitted=88.0,
        told=1,
    )
    b.denials = [Mark(ts=11.0, what="read sys/audit")]
    b.firsts = [Mark(ts=11.0, what="kv/data/users/bob/notes", weight=2.0)]
    b.first_total, b.first_from = 3.0, 5.0
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(b), type=Baseline)
    assert back == b
    # An old snapshot without the new fields loads with empty threat state.
    old = msgspec.msgpack.decode(msgspec.msgpack.encode({"key": "entity:y"}), type=Baseline)
    assert old.suspect is None and not old.firsts and old.days_seen == 0


def test_own_and_other_names() -> None:
    assert own_names("lumen-users-jonas", None, "auth/lumen-users/") == ("jonas",)
    assert own_names("lumen-users-jonas") == ("users-jonas",)  # without the mount: a guess
    assert own_names("okta-ivan", "ivan", "auth/okta/") == ("ivan",)
    assert own_names("apps", None, "auth/apps/") == ()
    names = {"jonas": "entity:j", "ivan": "entity:i"}
    assert other_names("users/data/users/jonas/notes", names, ("ivan",)) == ["jonas"]
    assert other_names("users/data/users/ivan/notes", names, ("ivan",)) == []
    assert net_of("10.52.78.0/24") == "10.52" and net_of("2001:db8:0:1::/64") == "2001:db8"


def test_rescale_keeps_decayed_counts() -> None:
    clock = Clock(t0=0.0, tau_short=10 * DAY, tau_long=180 * DAY)
    c = TopK(k=4)
    wl, ws = clock.weights(5 * DAY)
    c.observe("v", wl, ws)
    now = 8 * DAY
    before = (c.lower("v") * clock.scale(now)[0], c.short("v") * clock.scale(now)[1])
    fl, fs = clock.scale(6 * DAY)
    c.rescale(fl, fs)
    clock.t0 = 6 * DAY
    after = (c.lower("v") * clock.scale(now)[0], c.short("v") * clock.scale(now)[1])
    assert after == pytest.approx(before)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(min_value=1, max_value=8),
    stream=st.lists(st.tuples(st.integers(0, 20), st.floats(0, 40 * DAY)), min_size=1, max_size=200),
)
def test_topk_invariants(k: int, stream: list[tuple[int, float]]) -> None:
    """Never more than K values; the stored lower bound never exceeds the true decayed count, the
    stored upper bound never falls below it (space-saving guarantees, under forward decay)."""
    clock = Clock(t0=0.0, tau_short=10 * DAY, tau_long=180 * DAY)
    c = TopK(k=k)
    stream = sorted(stream, key=lambda x: x[1])
    true: dict[str, float] = {}
    for v, t in stream:
        wl, ws = clock.weights(t)
        c.observe(str(v), wl, ws)
        true[str(v)] = true.get(str(v), 0.0) + wl
        assert len(c.items) <= k
    total = sum(true.values())
    assert c.tot_l == pytest.approx(total)
    for val, (up, _, err) in c.items.items():
        assert up - err <= true[val] * (1 + 1e-9) + 1e-9
        assert up >= true[val] * (1 - 1e-9) - 1e-9
    # Any value heavier than total/k is guaranteed to be kept.
    for val, n in true.items():
        if n > total / k * (1 + 1e-9):
            assert val in c.items


class _DictTopK:
    """The counter as first written (``items: {value: [long, short, error]}``): the reference."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.items: dict[str, list[float]] = {}
        self.new_l = self.new_s = self.tot_l = self.tot_s = 0.0

    def observe(self, value: str, wl: float, ws: float) -> bool:
        self.tot_l += wl
        self.tot_s += ws
        it = self.items.get(value)
        if it is not None:
            it[0] += wl
            it[1] += ws
            return False
        self.new_l += wl
        self.new_s += ws
        if len(self.items) >= self.k:
            victim = min(self.items, key=lambda v: self.items[v][0])
            floor = self.items.pop(victim)
            self.items[value] = [floor[0] + wl, floor[1] + ws, floor[0]]
        else:
            self.items[value] = [wl, ws, 0.0]
        return True

    def payload(self) -> dict[str, Any]:
        return {"k": self.k, "items": self.items, "new_l": self.new_l, "new_s": self.new_s,
                "tot_l": self.tot_l, "tot_s": self.tot_s}  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    k=st.integers(min_value=1, max_value=2 * SMALL_TOPK),
    stream=st.lists(
        st.tuples(st.integers(0, 3 * SMALL_TOPK), st.sampled_from([0.5, 1.0, 2.0])), max_size=150
    ),
    cut=st.integers(min_value=0, max_value=150),
)
def test_flat_counter_matches_the_dict_counter_and_restores_from_it(
    k: int, stream: list[tuple[int, float]], cut: int
) -> None:
    """The flat layout counts, evicts (on ties too: few distinct weights) and orders its values as
    the dict layout did, small or past SMALL_TOPK; a counter saved in the dict layout (a snapshot
    from before) restores at any point with every count, and goes on the same."""
    ref, c = _DictTopK(k), TopK(k=k)
    for i, (n, w) in enumerate(stream):
        if i == cut:
            c = msgspec.msgpack.decode(msgspec.msgpack.encode(ref.payload()), type=TopK)
            assert list(c.items.items()) == list(ref.items.items())
        v = f"value-{n}"
        assert c.observe(v, w, w / 4) == ref.observe(v, w, w / 4)
        assert list(c.items.items()) == list(ref.items.items())
        assert (c.new_l, c.new_s, c.tot_l, c.tot_s) == (ref.new_l, ref.new_s, ref.tot_l, ref.tot_s)
        assert len(c) == len(ref.items) and list(c) == list(ref.items) and v in c
        assert (c.lower(v), c.short(v), c.long(v)) == (
            ref.items[v][0] - ref.items[v][2],
            ref.items[v][1],
            ref.items[v][0],
        )
    assert c.top(3, 1.0) == [
        (v, round(x[0], 3)) for v, x in sorted(ref.items.items(), key=lambda kv: (-kv[1][0], kv[0]))[:3]
    ]
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(c), type=TopK)
    assert back == c and list(back.items.items()) == list(ref.items.items())


def test_an_old_baseline_with_dict_counters_restores() -> None:
    """A Baseline from a snapshot written before the flat counters: small counters are converted,
    large ones kept as a table, and every count survives."""
    small = _DictTopK(3)
    for v, w in (("a", 2.0), ("b", 1.0), ("a", 1.0), ("c", 1.0), ("d", 0.5)):  # d evicts b (first of two 1.0)
        small.observe(v, w, w)
    big = _DictTopK(64)
    for i in range(SMALL_TOPK + 5):
        big.observe(f"v{i}", 1.0 + i, 1.0)
    old = {"key": "entity:x", "feats": {"dir": small.payload(), "op_template": big.payload()}}
    b = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=Baseline)
    c = b.feats["dir"]
    assert c.table is None and c.cells == ["a", 3.0, 3.0, 0.0, "c", 1.0, 1.0, 0.0, "d", 1.5, 1.5, 1.0]
    assert c.lower("d") == 0.5 and c.short("a") == 3.0 and (c.tot_l, c.new_l) == (5.5, 4.5)
    t = b.feats["op_template"]
    assert t.table is not None and len(t) == SMALL_TOPK + 5 and t.lower("v7") == 8.0
    assert list(t.items.items()) == list(big.items.items())


@settings(max_examples=60, deadline=None)
@given(gap=st.floats(0, 400 * DAY), t=st.floats(0, 100 * DAY))
def test_decay_is_monotone(gap: float, t: float) -> None:
    clock = Clock(t0=0.0, tau_short=10 * DAY, tau_long=180 * DAY)
    wl, ws = clock.weights(t)
    a = clock.scale(t + gap)
    b = clock.scale(t + gap + DAY)
    assert wl * b[0] <= wl * a[0] <= 1.0 + 1e-9
    assert ws * b[1] <= ws * a[1] <= 1.0 + 1e-9


@pytest.mark.parametrize(
    ("path", "names", "want"),
    [
        ("secret/data/users/alice/x", ("alice",), "secret/data/users/{user}/x"),
        ("secret/data/users/bob/x", ("alice",), "secret/data/users/bob/x"),
        ("sys/leases/lookup/1b4e28ba-2fa1-11d2-883f-0016d3cca427", (), "sys/leases/lookup/{uuid}"),
        ("secret/data/build/12345", (), "secret/data/build/{n}"),
        ("pki/cert/0a1b2c3d4e5f6a7b", (), "pki/cert/{hex}"),
        ("auth/token/lookup/hmac-sha256:abc", (), "auth/token/lookup/{hmac}"),
        ("database/creds/ro/Xy7pQ2rT9wLm4kZs8vBn3cDf", (), "database/creds/ro/{id}"),
        ("secret/data/payments-service/config", (), "secret/data/payments-service/config"),
        ("", (), "/"),
    ],
)
def test_templates(path: str, names: tuple[str, ...], want: str) -> None:
    assert template_path(path, names) == want


def test_directory_area_names_subnets() -> None:
    assert directory_of("secret/data/logos/pxl-core/runtime/db") == "secret/data/logos/pxl-core/runtime/*"
    assert directory_of("sys") == "sys/*"
    assert area_of("secret/data/runtime/svc1/db") == "secret/data/runtime/*"
    assert area_of("secret/data/x") == "secret/data/*"
    assert own_names("userpass-alice") == ("alice",)
    assert own_names("oidc-bob@example.com") == ("bob@example.com", "bob")
    assert own_names("root") == ()
    assert subnet_of("10.1.2.3") == "10.1.2.0/24"
    assert subnet_of("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
    assert subnet_of("fe80::1") == "fe80:0:0:0::/64"


def test_hour_of_week_and_tail() -> None:
    monday = 1772409600.0  # 2026-03-02 00:00 UTC, a Monday
    assert hour_of_week(monday) == 0
    assert hour_of_week(monday + 6 * DAY + 23 * 3600) == 167
    office = [0.0] * 168
    for d in range(5):
        for h in range(9, 18):
            office[d * 24 + h] = 10.0
    assert how_tail(office, 10) > 0.3  # Monday 10:00
    assert how_tail(office, 3) < 0.01  # Monday 03:00
    uniform = [1.0 if i % 3 else 0.0 for i in range(168)]
    assert how_tail(uniform, 0) > 0.05  # sampling holes of an always-on identity are not rare


@pytest.mark.parametrize(
    "module",
    [
        "detect.templates",
        "detect.baseline",
        "detect.risk",
        "detect.config",
        "detect.engine",
        "detect.behaviour",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0


def test_request_ids_pack_to_bytes_and_back_unchanged() -> None:
    rid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    assert pack_rid(rid) == bytes.fromhex(rid.replace("-", ""))
    assert unpack_rid(pack_rid(rid)) == rid
    # Anything that is not a canonical UUID string stays as it is (so comes back the same).
    odd = (rid.upper(), "{" + rid[1:-1] + "}", rid.replace("-", ""), "x" * 36, "", "abc")
    spaced = (rid[:-2] + " 0", rid[:-4] + " 0 0", rid[:9] + "4b5a-6978-8796-a5b4c-3d2e1f0", rid[:-1] + "é")
    for other in odd + spaced:
        assert pack_rid(other) == other and unpack_rid(pack_rid(other)) == other
    for i in range(2000):  # random canonical ids all pack, and come back the same
        u = str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15_F39CC0605CEDC834) % (1 << 128)))
        assert isinstance(pack_rid(u), bytes) and unpack_rid(pack_rid(u)) == u


def test_window_reads_count_distinct_paths_past_the_small_list() -> None:
    w = Window(hour=1)
    assert w.distinct_reads() == 0 and w.reads is None
    paths = [f"kv/data/p{i % 40}" for i in range(100)]
    for n, p in enumerate(paths, 1):
        w.add_read(p)
        assert w.distinct_reads() == len(set(paths[:n]))
    assert w.reads is None and w.many_reads == set(paths)
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(w), type=Window)
    assert back == w and back.vector() == w.vector() == (0, 40, 0, 0)


def test_window_and_baseline_from_a_snapshot_before_lazy_lists() -> None:
    """The stored layout before: reads a set, request ids strings, empty lists present."""
    rids = ["0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "req-7"]
    old_win = {"hour": 5, "events": 3, "reads": ["a", "b"], "addresses": [], "event_ids": rids}
    old = {"key": "entity:y", "window": old_win, "new_times": [], "denials": [], "firsts": []}
    b = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=Baseline)
    assert b.window.distinct_reads() == 2 and b.window.vector() == (3, 2, 0, 0)
    assert b.window.request_ids() == tuple(rids)
    assert b.new_times is None and b.denials is None and b.firsts is None
    assert b == Baseline(key="entity:y", window=b.window)
    many = {"hour": 5, "reads": [f"p{i}" for i in range(30)]}
    w = msgspec.msgpack.decode(msgspec.msgpack.encode(many), type=Window)
    assert w.distinct_reads() == 30 and w.reads is None
    w.add_read("p0")
    w.add_read("q")
    assert w.distinct_reads() == 31
    # Restored, the baseline encodes to what a new one with the same state encodes to.
    assert msgspec.msgpack.encode(b) == msgspec.msgpack.encode(
        msgspec.msgpack.decode(msgspec.msgpack.encode(b), type=Baseline)
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 167), st.floats(0.001, 1e6)),
        max_size=40,
    ),
    st.floats(0.01, 1.0),
)
def test_hour_histogram_matches_the_dict_it_replaced(adds: list[tuple[int, float]], fl: float) -> None:
    """Small (flat pairs) or large (dict), the histogram is the dict as first written: same values,
    same order (sums over it add in the same order), same after rescale and a snapshot."""
    b = Baseline(key="entity:x")
    ref: dict[int, float] = {}
    for how, w in adds:
        b.add_hour(how, w)
        ref[how] = ref.get(how, 0.0) + w
        assert b.hour_items() == list(ref.items())
    assert b.hours() == ref and all(b.hour(h) == ref.get(h, 0.0) for h in range(168))
    dense = [0.0] * 168
    for h, x in ref.items():
        dense[h] = x
    assert b.hours_dense() == dense
    assert (b.how is not None) == (len(ref) > SMALL_HOURS)
    assert (b.how_pairs is not None) == (0 < len(ref) <= SMALL_HOURS)
    b.rescale(fl, 1.0)
    ref = {i: x * fl for i, x in ref.items()}
    assert b.hour_items() == list(ref.items())
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(b), type=Baseline)
    assert back == b and back.hour_items() == list(ref.items())


@pytest.mark.parametrize("active", [0, 3, SMALL_HOURS, SMALL_HOURS + 5])
def test_hour_histogram_from_snapshots_before(active: int) -> None:
    """Stored before: a sparse dict (the layout main writes) or a dense list of 168 (older)."""
    hours = {(h * 37) % 168: 0.5 + h for h in range(active)}
    dense = [hours.get(i, 0.0) for i in range(168)]
    for how in (hours, dense):
        old = {"key": "entity:y", "how": how, "how_total": sum(hours.values())}
        b = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=Baseline)
        want = list(hours.items()) if how is hours else sorted(hours.items())
        assert b.hour_items() == want and b.hours_dense() == dense
        assert (b.how_pairs is not None) == (0 < active <= SMALL_HOURS)
        b.add_hour(5, 1.0)
        assert b.hour(5) == hours.get(5, 0.0) + 1.0
