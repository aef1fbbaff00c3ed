"""Each behavioural signal, learning mode and dormancy, on reshaped real OpenBao entries."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from detect.engine import Engine
from detect.types import Finding
from ingest.event import AuditEvent, Identity
from tests.detect.test_engine import DAY, HOUR, T0, Actor, Workload, benign, load_seeds, make_org

CONFIG = {"model_enabled": False}
HISTORY_DAYS = 16  # hour-of-week rarity needs two weeks of history


@pytest.fixture(scope="module")
def world() -> tuple[bytes, Workload, list[Actor]]:
    """An org with 16 days of benign history, learned once and snapshotted."""
    w = Workload(load_seeds(), seed=7)
    actors = make_org(n_teams=1, devs=4, services=2)
    eng = Engine(CONFIG, detectors=[])
    eng.process_batch(benign(w, actors, HISTORY_DAYS))
    return eng.snapshot(), w, actors


Run = Callable[[list[AuditEvent]], tuple[Engine, list[Finding]]]


@pytest.fixture
def run(world: tuple[bytes, Workload, list[Actor]]) -> Run:
    snap = world[0]

    def go(events: list[AuditEvent]) -> tuple[Engine, list[Finding]]:
        eng = Engine(CONFIG, detectors=[])
        eng.restore(snap)
        found: list[Finding] = []
        for ev in events:
            eng.process(ev)
            found += eng.last_findings
        return eng, found

    return go


def _actor(world: tuple[bytes, Workload, list[Actor]], key: str) -> Actor:
    return next(a for a in world[2] if a.ident.key == key)


# Monday of the third week, 11:00 UTC: a normal working hour.
WORK = T0 + 21 * DAY + 11 * HOUR


def signals(found: list[Finding]) -> dict[str, Finding]:
    return {f.labels["signal"]: f for f in found}


def test_new_network_is_judged_as_a_credential_use(
    world: tuple[bytes, Workload, list[Actor]], run: Run
) -> None:
    """A settled identity's new network is judged by the credential detector (network, peers,
    hour and what is touched together), not as novelty on its own."""
    w, dev = world[1], _actor(world, "entity:dev00")
    _, found = run(w.event(dev, WORK, f"{dev.dirs[0]}/config", ip="198.51.100.7"))
    sig = signals(found)
    assert "novelty.subnet" not in sig and "novelty.address" not in sig
    f = sig["credential.new_address"]
    assert f.alerting is False and f.family == "credential"
    assert f.labels["value"] == "198.51.100.7" and f.labels["feature"] == "address"
    assert "(198.51.100.0/24, never seen in the organisation)" in f.title and "reading 1 secret" in f.title
    assert f.score >= 75  # the network of strangers plus a secret read: alert level on its own
    assert f.event_ids and f.source_addresses == ("198.51.100.7",)
    # The usual network and paths raise nothing.
    _, calm = run(w.event(dev, WORK, f"{dev.dirs[0]}/config", ip=f"{dev.subnets[0]}.9"))
    assert not [c for c in calm if c.family in ("novelty", "credential")]


def test_new_area_with_peer_evidence(world: tuple[bytes, Workload, list[Actor]], run: Run) -> None:
    w, dev = world[1], _actor(world, "entity:dev01")
    eng, found = run(w.event(dev, WORK, "secret/data/runtime/svc0/db", ip=f"{dev.subnets[0]}.9"))
    f = signals(found)["novelty.area"]
    assert f.labels["value"] == "secret/data/runtime/*"
    assert f.title == "first access in area secret/data/runtime/* by this identity"
    assert f.score > 20


def test_unusual_hour(world: tuple[bytes, Workload, list[Actor]], run: Run) -> None:
    w, dev = world[1], _actor(world, "entity:dev02")
    sunday_3am = T0 + 20 * DAY + 3 * HOUR
    _, found = run(w.event(dev, sunday_3am, f"{dev.dirs[1]}/db", ip=f"{dev.subnets[0]}.9"))
    f = signals(found)["time.hour_of_week"]
    assert f.family == "time" and f.labels["value"] == "Sun 03:00 UTC"
    # Services run around the clock: no hour is unusual for them.
    svc = _actor(world, "entity:svc0")
    _, found = run(w.event(svc, sunday_3am, f"{svc.dirs[0]}/db", ip=f"{svc.subnets[0]}.3"))
    assert "time.hour_of_week" not in signals(found)


def test_mass_read_is_volume(world: tuple[bytes, Workload, list[Actor]], run: Run) -> None:
    w, dev = world[1], _actor(world, "entity:dev00")
    evs: list[AuditEvent] = []
    for i in range(80):
        evs += w.event(dev, WORK + i * 20, f"{dev.dirs[i % 6]}/item{i}", ip=f"{dev.subnets[0]}.9")
    _, found = run(evs)
    sig = signals(found)
    assert "volume.distinct" in sig
    assert sig["volume.distinct"].family == "volume"


def test_list_storm_and_errors(world: tuple[bytes, Workload, list[Actor]], run: Run) -> None:
    w, dev = world[1], _actor(world, "entity:dev03")
    evs: list[AuditEvent] = []
    for i in range(60):
        outcome = "denied" if i % 2 else "ok"
        evs += w.event(dev, WORK + i * 10, f"secret/metadata/x{i}/", op="list", outcome=outcome)
    _, found = run(evs)
    sig = signals(found)
    assert "volume.lists" in sig and "error.errors" in sig
    assert sig["error.errors"].family == "error"


def test_slow_harvest_is_caught_per_day(world: tuple[bytes, Workload, list[Actor]], run: Run) -> None:
    w, dev = world[1], _actor(world, "entity:dev01")
    evs: list[AuditEvent] = []
    for i in range(60):  # one new secret every 12 minutes: never a busy hour
        evs += w.event(dev, WORK - 2 * HOUR + i * 720, f"{dev.dirs[i % 6]}/h{i}", ip=f"{dev.subnets[0]}.9")
    _, found = run(evs)
    sig = signals(found)
    assert "volume.day_new" in sig
    assert "volume.distinct" not in sig


def test_learning_identity_never_alerts_on_novelty(
    world: tuple[bytes, Workload, list[Actor]], run: Run
) -> None:
    w = world[1]
    newbie = Actor(
        Identity(
            key="entity:newbie",
            kind="entity",
            entity_id="newbie",
            display_name="oidc-newbie",
            policies=("default", "dev-team0"),
        ),
        "dev",
        ["secret/data/team0/app0"],
        ["10.9.9"],
    )
    evs: list[AuditEvent] = []
    for i in range(30):  # new everything, at night, from a new network
        evs += w.event(newbie, T0 + 20 * DAY + 2 * HOUR + i * 60, f"secret/data/zone{i}/a/b", ip="192.0.2.1")
    eng, found = run(evs)
    assert eng.baselines.in_learning("entity:newbie", evs[-1].ts)
    alerts = eng.process_batch([])
    assert alerts == []
    assert not [a for a in eng.flush(evs[-1].ts + HOUR) if a.identity.key == "entity:newbie"]
    # Any novelty reported while learning comes from peer priors and is weighed down.
    assert all(f.score < 40 for f in found if f.family == "novelty")
    # A learning identity doing what its peers do raises nothing at all.
    eng2, calm = run(w.event(newbie, WORK, "secret/data/team0/app1/config", ip="10.0.0.9"))
    assert not [f for f in calm if f.family == "novelty"]


def test_dormant_identity_learns_again(world: tuple[bytes, Workload, list[Actor]], run: Run) -> None:
    w, dev = world[1], _actor(world, "entity:dev00")
    later = T0 + (HISTORY_DAYS + 40) * DAY + 11 * HOUR
    eng, _ = run(w.event(dev, WORK, f"{dev.dirs[0]}/config"))
    assert not eng.baselines.in_learning("entity:dev00", WORK)
    assert eng.baselines.in_learning("entity:dev00", later)
    eng.process_batch(w.event(dev, later, f"{dev.dirs[0]}/config", ip="192.0.2.44"))
    assert eng.baselines.in_learning("entity:dev00", later + 60)
    assert not [f for f in eng.last_findings if f.labels.get("signal") == "novelty.subnet"]


def test_baseline_view_and_summary(world: tuple[bytes, Workload, list[Actor]], run: Run) -> None:
    eng, _ = run([])
    view = eng.baselines
    assert view.total("entity:svc0") > 1000
    assert view.count("entity:svc0", "mount", "secret/") > 1000
    assert view.count("entity:svc0", "mount", "secret/", horizon="short") < view.count(
        "entity:svc0", "mount", "secret/"
    )
    assert view.count("entity:nobody", "mount", "secret/") == 0.0
    s = eng.identity_summary("entity:dev00")
    assert s["learning"] is False and s["events"] > 100
    assert len(s["hour_of_week"]) == 168 and s["rate_per_active_hour"] > 0
    assert s["top_directories"][0][0].startswith("secret/data/team0/")
    assert s["subnets"] and s["risk"] >= 0.0
    assert 1000 < s["bytes"] < 16_000
    assert eng.identity_summary("entity:nobody") == {}
