"""The alert store against both SQLite and a real PostgreSQL (the ``pg_url`` fixture)."""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from alerts import schema
from alerts.errors import AlertNotFound, InvalidTransition, SilenceError, StoreError
from alerts.outbox import Outbox
from alerts.silence import Matcher, parse_matcher
from alerts.store import VERSION_TABLE, AlertQuery, OutboxEntry, Store, merge_occurrences, to_epoch
from detect.alert import MAX_EVENT_IDS, Alert, AlertIdentity

T0 = to_epoch("2026-01-01T00:00:00Z")


def iso(offset: float) -> str:
    """RFC 3339 text for ``T0 + offset`` seconds."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(T0 + offset, UTC).isoformat().replace("+00:00", "Z")


def make_alert(
    n: int,
    *,
    detector: str = "root-token-use",
    severity: str = "high",
    score: int = 70,
    identity: str = "entity:alice",
    seen: float = 0.0,
    last: float | None = None,
    count: int = 1,
    events: tuple[str, ...] = (),
    title: str | None = None,
    paths: tuple[str, ...] = ("secret/data/app",),
    labels: dict[str, str] | None = None,
) -> Alert:
    return Alert(
        id=f"va_{n:04d}",
        detector=detector,
        title=title or f"alert number {n}",
        severity=severity,  # type: ignore[arg-type]
        score=score,
        identity=AlertIdentity(key=identity),
        first_seen=iso(seen),
        last_seen=iso(seen if last is None else last),
        count=count,
        event_ids=events or (f"req-{n}",),
        paths=paths,
        dedup_key=f"{detector}:{identity}",
        labels=labels or {},
    )


def url_of(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


@contextmanager
def private_schema(pg_url: str) -> Iterator[str]:
    """A URL like ``pg_url`` whose connections use a fresh schema of their own (dropped after).

    ``pg_url`` is shared by the whole session; every store test wants empty tables.
    """
    base = sa.engine.make_url(pg_url)
    name = f"vw_store_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base.set(query={}))
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        yield base.set(query={"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'alerts.db'}"
        else:
            url = stack.enter_context(private_schema(request.getfixturevalue("pg_url")))
        s = stack.enter_context(Store(url))
        s.migrate()
        yield s


# -- schema ------------------------------------------------------------------------------------


def test_migrate_is_idempotent_and_matches_the_table_definitions(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    assert store.migrate() == "0001"
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert context.get_current_revision() == "0001"
        diffs = compare_metadata(context, schema.metadata)
    assert diffs == []


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'a.db'}") as s:
        s.migrate()
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_store_implements_the_outbox_protocol_exactly() -> None:
    for name, member in inspect.getmembers(Outbox, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert inspect.signature(getattr(Store, name)) == inspect.signature(member), name


def test_database_password_never_shows_in_repr_or_errors() -> None:
    canary = "canary-Pa55w0rd-7f3a"
    s = Store(f"postgresql://vw:{canary}@127.0.0.1:1/nowhere")
    try:
        assert canary not in repr(s)
        with pytest.raises(StoreError) as info:
            s.depth()
        assert canary not in str(info.value)
        assert canary not in repr(info.value.__cause__)
    finally:
        s.close()


def test_unknown_database_scheme_is_refused() -> None:
    with pytest.raises(StoreError, match="unsupported database"):
        Store("mysql://127.0.0.1/x")


# -- alerts ------------------------------------------------------------------------------------


def test_add_alerts_inserts_then_merges_occurrences_idempotently(store: Store) -> None:
    first = store.add_alerts([make_alert(1, count=2, events=("r1", "r2")), make_alert(2)], now=T0)
    assert first.inserted == ("va_0001", "va_0002") and first.merged == ()

    again = make_alert(1, seen=-60, last=300, count=5, events=("r2", "r3"), paths=("sys/raw",))
    second = store.add_alerts([again], now=T0 + 1)
    assert second.inserted == () and second.merged == ("va_0001",)
    stored = store.get_alert("va_0001").alert
    assert stored.count == 5
    assert to_epoch(stored.first_seen) == T0 - 60 and to_epoch(stored.last_seen) == T0 + 300
    assert stored.event_ids == ("r1", "r2", "r3")
    assert stored.paths == ("secret/data/app", "sys/raw")
    assert sorted(store.event_alerts("r3")) == ["va_0001"]

    # Same input again: nothing changes; a stale re-emission never lowers the count.
    store.add_alerts([again, make_alert(1, count=1, events=("r1",))], now=T0 + 2)
    assert store.get_alert("va_0001").alert == stored
    assert store.list_alerts().total == 2


def test_re_adding_keeps_the_lifecycle_status(store: Store) -> None:
    store.add_alerts([make_alert(1)], now=T0)
    store.transition("va_0001", "acknowledged", "alice", now=T0 + 1)
    store.add_alerts([make_alert(1, count=3)], now=T0 + 2)
    detail = store.get_alert("va_0001")
    assert detail.alert.status == "acknowledged" and detail.alert.count == 3
    assert [h.to_status for h in detail.history] == ["open", "acknowledged"]


def test_event_ids_are_capped(store: Store) -> None:
    store.add_alerts([make_alert(2, events=tuple(f"c{i}" for i in range(700)))], now=T0)
    assert len(store.get_alert("va_0002").alert.event_ids) == MAX_EVENT_IDS
    store.add_alerts([make_alert(1, events=tuple(f"a{i}" for i in range(400)))], now=T0)
    store.add_alerts([make_alert(1, events=tuple(f"b{i}" for i in range(400)))], now=T0)
    stored = store.get_alert("va_0001").alert
    assert len(stored.event_ids) == MAX_EVENT_IDS
    assert stored.event_ids[:400] == tuple(f"a{i}" for i in range(400))
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(sa.func.count())
            .select_from(schema.alert_events)
            .where(schema.alert_events.c.alert_id == "va_0001")
        ).scalar_one()
    assert rows == MAX_EVENT_IDS


def test_a_bad_alert_rejects_the_batch_and_writes_nothing(store: Store) -> None:
    bad = msgspec.structs.replace(make_alert(2), last_seen="yesterday")
    with pytest.raises(StoreError, match="yesterday"):
        store.add_alerts([make_alert(1), bad])
    assert store.list_alerts().total == 0


def test_merge_is_order_independent() -> None:
    a = make_alert(1, count=2, events=("x",), last=10)
    b = make_alert(1, count=7, events=("x", "y"), seen=-5, last=3)
    ab, ba = merge_occurrences(a, b), merge_occurrences(b, a)
    assert (ab.count, ab.first_seen, ab.last_seen) == (ba.count, ba.first_seen, ba.last_seen)
    assert set(ab.event_ids) == set(ba.event_ids) == {"x", "y"}


# -- lifecycle and verdicts --------------------------------------------------------------------


def test_lifecycle_transitions_are_validated_and_recorded(store: Store) -> None:
    store.add_alerts([make_alert(1)], now=T0)
    store.transition("va_0001", "acknowledged", "alice", "looking", now=T0 + 1)
    store.transition("va_0001", "resolved", "alice", "rotated the token", now=T0 + 2)
    with pytest.raises(InvalidTransition, match="resolved to acknowledged"):
        store.transition("va_0001", "acknowledged", "bob", now=T0 + 3)
    with pytest.raises(InvalidTransition):
        store.transition("va_0001", "closed", "bob")
    with pytest.raises(AlertNotFound):
        store.transition("va_9999", "resolved", "bob")
    reopened = store.transition("va_0001", "open", "bob", "came back", now=T0 + 4)
    assert reopened.status == "open"
    history = store.get_alert("va_0001").history
    assert [(h.from_status, h.to_status, h.actor) for h in history] == [
        (None, "open", "vaultwatch"),
        ("open", "acknowledged", "alice"),
        ("acknowledged", "resolved", "alice"),
        ("resolved", "open", "bob"),
    ]
    assert history[2].comment == "rotated the token" and history[2].at == T0 + 2


def test_verdicts_are_read_back_since_a_time(store: Store) -> None:
    store.add_alerts([make_alert(1), make_alert(2, detector="rare-path", identity="entity:bob")], now=T0)
    store.record_verdict("va_0001", "false_positive", "alice", "known batch job", now=T0 + 10)
    store.record_verdict("va_0002", "true_positive", "alice", now=T0 + 20)
    with pytest.raises(StoreError, match="unknown verdict"):
        store.record_verdict("va_0001", "maybe", "alice")
    with pytest.raises(AlertNotFound):
        store.record_verdict("va_0404", "benign", "alice")
    recent = store.verdicts_since(T0 + 15)
    assert [(v.alert_id, v.verdict, v.detector, v.identity_key) for v in recent] == [
        ("va_0002", "true_positive", "rare-path", "entity:bob")
    ]
    assert [v.verdict for v in store.get_alert("va_0001").verdicts] == ["false_positive"]


# -- queries -----------------------------------------------------------------------------------


def _populate(store: Store) -> None:
    alerts = [
        make_alert(1, severity="critical", score=95, detector="root-token-use", seen=0),
        make_alert(2, severity="high", score=80, detector="rare-path", identity="entity:bob", seen=100),
        make_alert(
            3, severity="medium", score=50, detector="rare-path", seen=200, paths=("sys/policy/100%",)
        ),
        make_alert(4, severity="low", score=20, detector="rate-spike", identity="entity:bob", seen=300),
        make_alert(5, severity="info", score=5, detector="rate-spike", seen=400, title="Token Storm on pki"),
    ]
    store.add_alerts(alerts, now=T0)
    store.transition("va_0004", "resolved", "alice", now=T0)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (AlertQuery(), ["va_0005", "va_0004", "va_0003", "va_0002", "va_0001"]),
        (AlertQuery(status=("open",)), ["va_0005", "va_0003", "va_0002", "va_0001"]),
        (AlertQuery(severity=("high", "low")), ["va_0004", "va_0002"]),
        (AlertQuery(min_severity="medium"), ["va_0003", "va_0002", "va_0001"]),
        (AlertQuery(detector=("rare-path",)), ["va_0003", "va_0002"]),
        (AlertQuery(identity="entity:bob"), ["va_0004", "va_0002"]),
        (AlertQuery(since=T0 + 150, until=T0 + 350), ["va_0004", "va_0003"]),
        (AlertQuery(text="token storm"), ["va_0005"]),
        (AlertQuery(text="100%"), ["va_0003"]),
        (AlertQuery(text="%"), ["va_0003"]),
        (AlertQuery(sort="score", descending=False), ["va_0005", "va_0004", "va_0003", "va_0002", "va_0001"]),
        (AlertQuery(sort="severity"), ["va_0001", "va_0002", "va_0003", "va_0004", "va_0005"]),
    ],
)
def test_list_alerts_filters_and_sorts(store: Store, query: AlertQuery, expected: list[str]) -> None:
    _populate(store)
    page = store.list_alerts(query)
    assert [a.id for a in page.items] == expected
    assert page.total == len(expected)
    assert page.next_cursor is None


@pytest.mark.parametrize("sort", ["last_seen", "score", "severity", "count"])
@pytest.mark.parametrize("descending", [True, False])
def test_keyset_pagination_visits_every_alert_once(store: Store, sort: str, descending: bool) -> None:
    # Many ties (score, severity, count repeat) so the id tie-breaker is exercised.
    alerts = [
        make_alert(
            i,
            score=(i * 7) % 5 * 10,
            severity=("low", "high", "critical")[i % 3],
            count=i % 4 + 1,
            seen=i % 6,
        )
        for i in range(23)
    ]
    store.add_alerts(alerts, now=T0)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = store.list_alerts(AlertQuery(sort=sort, descending=descending, limit=5, cursor=cursor))  # type: ignore[arg-type]
        assert page.total == 23
        seen.extend(a.id for a in page.items)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 5
    assert sorted(seen) == sorted(a.id for a in alerts) and len(seen) == len(set(seen))
    with pytest.raises(StoreError, match="another sort"):
        first = store.list_alerts(AlertQuery(sort=sort, descending=descending, limit=5))  # type: ignore[arg-type]
        store.list_alerts(AlertQuery(sort="first_seen", limit=5, cursor=first.next_cursor))


def test_bad_cursor_and_limits_are_clear_errors(store: Store) -> None:
    with pytest.raises(StoreError, match="invalid cursor"):
        store.list_alerts(AlertQuery(cursor="not-a-cursor!"))
    with pytest.raises(StoreError, match="limit"):
        store.list_alerts(AlertQuery(limit=0))


# -- silences ----------------------------------------------------------------------------------


def test_silences_match_with_every_operator_and_expire(store: Store) -> None:
    crit = make_alert(1, severity="critical", labels={"env": "prod"})
    med = make_alert(2, severity="medium", identity="approle:ci", labels={"env": "dev"})
    sil = store.create_silence(
        ["detector=root-token-use", "severity=~high|critical", "identity!=approle:ci", "env!~dev|test"],
        starts_at=T0 + 10,
        ends_at=T0 + 100,
        created_by="alice",
        comment="maintenance",
        now=T0,
    )
    assert not store.is_silenced(crit, T0 + 5)  # not started yet
    assert store.silenced_by(crit, T0 + 10) == [sil.id]
    assert not store.is_silenced(med, T0 + 50)
    assert not store.is_silenced(crit, T0 + 100)  # ended
    listed = store.list_silences()
    assert [(s.id, s.comment, s.created_by) for s in listed] == [(sil.id, "maintenance", "alice")]
    assert str(listed[0].matchers[1]) == "severity=~high|critical"

    store.expire_silence(sil.id)
    assert not store.is_silenced(crit, T0 + 50)
    assert store.list_silences(active_at=T0 + 50) == []
    assert store.list_silences()[0].expired
    with pytest.raises(AlertNotFound):
        store.expire_silence("nope")


@pytest.mark.parametrize(
    "matchers",
    [[], ["severity=~"], ["severity=~(unclosed"], ["bad name=x"], ["severity~~x"]],
)
def test_invalid_silences_are_refused(store: Store, matchers: list[str]) -> None:
    with pytest.raises(SilenceError):
        store.create_silence(matchers, starts_at=T0, ends_at=T0 + 1, created_by="alice")
    assert store.list_silences() == []


def test_silence_must_end_after_it_starts(store: Store) -> None:
    with pytest.raises(SilenceError, match="end after"):
        store.create_silence(["severity=low"], starts_at=T0, ends_at=T0, created_by="alice")


# -- unit of work ------------------------------------------------------------------------------


def _entry(n: int, endpoint: str = "soc/webhook/default") -> OutboxEntry:
    return OutboxEntry(
        receiver=endpoint.split("/")[0],
        channel="webhook",
        endpoint=endpoint,
        message_id=f"msg-{endpoint}-{n}",
        payload={"n": n},
    )


def test_one_transaction_writes_alerts_outbox_checkpoint_and_offsets_together(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction() as tx:
        tx.add_alerts([make_alert(1)], now=T0)
        tx.enqueue([_entry(1)], now=T0)
        tx.save_checkpoint("engine", b"\x00snapshot\xff")
        tx.save_offsets("vaultwatch", {("vault-audit", 0): 10})
        raise Boom
    assert store.list_alerts().total == 0 and store.depth() == 0
    assert store.load_checkpoint("engine") is None and store.load_offsets("vaultwatch") == {}

    with store.transaction() as tx:
        tx.add_alerts([make_alert(1)], now=T0)
        tx.enqueue([_entry(1)], now=T0)
        tx.save_checkpoint("engine", b"\x00snapshot\xff")
        tx.save_offsets("vaultwatch", {("vault-audit", 0): 10, ("vault-audit", 1): 7})
    with store.transaction() as tx:
        tx.save_checkpoint("engine", b"v2")
        tx.save_offsets("vaultwatch", {("vault-audit", 0): 12})
    assert store.list_alerts().total == 1 and store.depth() == 1
    assert store.load_checkpoint("engine") == b"v2"
    assert store.load_offsets("vaultwatch") == {("vault-audit", 0): 12, ("vault-audit", 1): 7}
    assert store.load_offsets("other-group") == {}


# -- outbox ------------------------------------------------------------------------------------


def test_outbox_hands_out_items_in_order_per_endpoint(store: Store) -> None:
    a, b = "soc/webhook/default", "pager/pagerduty/default"
    assert store.enqueue([_entry(1, a), _entry(2, a), _entry(1, b), _entry(3, a)], now=100) == 4
    assert store.enqueue([_entry(1, a)], now=101) == 0  # same message id: ignored
    first = store.claim_due(100)
    assert [(i.endpoint, i.payload["n"]) for i in first] == [(a, 1), (b, 1)]
    assert all(i.attempts == 0 and i.state == "pending" for i in first)
    assert store.claim_due(100) == []  # both heads are leased

    a1, b1 = first
    store.mark_retry(a1.id, 101, 130, "http 503")
    store.mark_delivered(b1.id, 101)
    # a's head waits for its retry time; its later items are not delivered past it.
    assert store.claim_due(120) == []
    retry = store.claim_due(130)
    assert [(i.id, i.attempts, i.last_reason) for i in retry] == [(a1.id, 1, "http 503")]
    store.mark_failed(a1.id, 131, "gave up")
    second = store.claim_due(131)
    assert [i.payload["n"] for i in second] == [2]
    store.mark_delivered(second[0].id, 132)
    assert [i.payload["n"] for i in store.claim_due(132)] == [3]

    states = {(i.endpoint, i.payload["n"]): i.state for i in store.outbox_items()}
    assert states == {(a, 1): "failed", (a, 2): "delivered", (a, 3): "pending", (b, 1): "delivered"}
    assert store.outbox_items(state="failed")[0].last_reason == "gave up"


def test_an_expired_lease_is_claimable_again(store: Store) -> None:
    store.enqueue([_entry(1)], now=100)
    (item,) = store.claim_due(100, lease_seconds=30)
    assert store.claim_due(129) == []
    (again,) = store.claim_due(130)
    assert again.id == item.id


def test_claim_limit_depth_age_and_disabled_endpoints(store: Store) -> None:
    endpoints = [f"r{i}/webhook/default" for i in range(5)]
    store.enqueue([_entry(n, e) for n in range(3) for e in endpoints], now=100)
    assert store.depth() == 15
    assert store.oldest_pending_age(160) == 60.0
    assert len(store.claim_due(100, limit=2)) == 2
    store.disable_endpoint(endpoints[0], 110, "http 410")
    assert store.depth() == 12
    assert {i.state for i in store.outbox_items(endpoint=endpoints[0])} == {"disabled"}
    for e in endpoints:
        for item in store.outbox_items(endpoint=e, state="pending"):
            store.mark_delivered(item.id, 120)
    assert store.depth() == 0 and store.oldest_pending_age(200) is None
    with pytest.raises(StoreError, match="no outbox item"):
        store.mark_delivered(999_999, 200)


def test_outbox_protocol_is_usable_through_the_protocol_type(store: Store) -> None:
    outbox: Outbox = store
    store.enqueue([_entry(1)], now=1)
    (item,) = outbox.claim_due(1)
    outbox.mark_delivered(item.id, 2)
    assert outbox.depth() == 0


# -- concurrency -------------------------------------------------------------------------------


def _run_threads(n: int, target: object) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def wrap(k: int) -> None:
        try:
            barrier.wait()
            target(k)  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(k,)) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    return errors


def test_concurrent_writers_of_the_same_alerts_leave_one_row_each(store: Store) -> None:
    alerts = [make_alert(i, count=1) for i in range(120)]
    others = [Store(url_of(store)) for _ in range(3)]
    try:

        def insert(k: int) -> None:
            s = others[k]
            # Each writer sends the same alerts in its own batches and order, with its own count.
            ordered = alerts if k % 2 == 0 else list(reversed(alerts))
            for start in range(0, len(ordered), 20):
                batch = [msgspec.structs.replace(a, count=k + 1) for a in ordered[start : start + 20]]
                s.add_alerts(batch, now=T0)

        assert _run_threads(3, insert) == []
    finally:
        for s in others:
            s.close()
    page = store.list_alerts(AlertQuery(limit=1000))
    assert page.total == 120
    assert {a.count for a in page.items} == {3}
    with store.engine.connect() as conn:
        created = conn.execute(
            sa.select(sa.func.count())
            .select_from(schema.status_history)
            .where(schema.status_history.c.from_status.is_(None))
        ).scalar_one()
    assert created == 120


def test_concurrent_claims_never_hand_out_an_item_twice(store: Store) -> None:
    store.enqueue([_entry(n, f"r{e}/webhook/default") for n in range(2) for e in range(40)], now=100)
    others = [Store(url_of(store)) for _ in range(2)]
    claimed: list[list[int]] = [[], []]
    try:

        def claim(k: int) -> None:
            for _ in range(10):
                claimed[k].extend(i.id for i in others[k].claim_due(100, limit=7))

        assert _run_threads(2, claim) == []
    finally:
        for s in others:
            s.close()
    ids = claimed[0] + claimed[1]
    assert len(ids) == len(set(ids)) == 40  # one head per endpoint, each leased once


_event = st.text(alphabet="abcdef", min_size=1, max_size=3)
_occurrence = st.builds(
    lambda count, first, span, events: make_alert(
        1, count=count, seen=first, last=first + span, events=events
    ),
    st.integers(1, 50),
    st.integers(-1000, 1000),
    st.integers(0, 1000),
    st.lists(_event, min_size=1, max_size=8, unique=True).map(tuple),
)


@given(st.lists(_occurrence, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_merging_occurrences_is_idempotent_and_order_free(occurrences: list[Alert], rnd: Any) -> None:
    def fold(items: list[Alert]) -> Alert:
        merged = items[0]
        for item in items[1:]:
            merged = merge_occurrences(merged, item)
        return merged

    once = fold(occurrences)
    shuffled = list(occurrences)
    rnd.shuffle(shuffled)
    other = fold(shuffled)
    assert (once.count, once.first_seen, once.last_seen) == (other.count, other.first_seen, other.last_seen)
    assert set(once.event_ids) == set(other.event_ids) == {e for o in occurrences for e in o.event_ids}
    assert fold([once, *occurrences]) == once  # replaying changes nothing
    assert once.count == max(o.count for o in occurrences)


def test_sqlite_readers_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'a.db'}") as s:
        s.migrate()
        s.add_alerts([make_alert(1)], now=T0)
        with s.transaction() as tx:
            tx.add_alerts([make_alert(2)], now=T0)
            # Another connection reads the last commit at once instead of queueing on the lock.
            started = time.perf_counter()
            assert [a.id for a in s.list_alerts().items] == ["va_0001"]
            assert s.depth() == 0
            assert time.perf_counter() - started < 5
        assert s.list_alerts().total == 2


@pytest.mark.integration
def test_workers_migrating_at_once_on_postgresql_all_succeed(pg_url: str) -> None:
    with private_schema(pg_url) as url:
        stores = [Store(url) for _ in range(3)]
        revisions: list[str] = []
        try:
            assert _run_threads(3, lambda k: revisions.append(stores[k].migrate())) == []
        finally:
            for s in stores:
                s.close()
    assert revisions == ["0001"] * 3


def test_matchers_from_dicts_and_quoted_text() -> None:
    assert parse_matcher({"name": "env", "op": "!=", "value": "dev"}) == Matcher("env", "!=", "dev")
    assert parse_matcher('team = "blue team"') == Matcher("team", "=", "blue team")
    assert parse_matcher("severity!~info|low").matches({"severity": "high"})
    assert parse_matcher("missing=").matches({})  # an absent label is the empty string
    with pytest.raises(SilenceError):
        parse_matcher({"name": "env", "op": "~", "value": "x"})
