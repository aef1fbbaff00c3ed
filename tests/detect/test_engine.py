"""The engine end to end: learning mode, risk alerts, aggregation, feedback, snapshot/restore,
and precision/recall on a multi-week workload.

The workload is built from real audit entries written by OpenBao (the shared reference sample,
or a live server when the sample is absent): each generated event is a real parsed entry with its
time, identity, path, address and request id changed, so detection sees realistic shapes over
weeks of event time without weeks of wall time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import detect
from detect.alert import Alert, Reason
from detect.engine import Engine, EngineState
from detect.errors import VerdictError
from detect.types import Finding
from ingest.event import AuditEvent, Identity
from ingest.parse import Parser

DAY = 86400.0
HOUR = 3600.0
#: Monday 2026-03-02 00:00 UTC.
T0 = 1772409600.0


class Seeds(msgspec.Struct):
    """Real entries to reshape: request + response of an ok read, a denied read and a list."""

    read: tuple[AuditEvent, AuditEvent]
    denied: tuple[AuditEvent, AuditEvent]
    listing: tuple[AuditEvent, AuditEvent]


def seeds_from_lines(lines: list[bytes]) -> Seeds:
    p = Parser()
    evs = [p.parse(line) for line in lines if line.strip()]
    by_id: dict[str, dict[str, AuditEvent]] = {}
    for e in evs:
        if e.identity.kind == "entity" and e.request_id:
            by_id.setdefault(e.request_id, {})[e.type] = e
    pairs = [(d["request"], d["response"]) for d in by_id.values() if "request" in d and "response" in d]
    read = next(p for p in pairs if p[1].operation == "read" and p[1].outcome == "ok")
    denied = next(p for p in pairs if p[1].outcome == "denied")
    listing = next(p for p in pairs if p[1].operation == "list")
    return Seeds(read=read, denied=denied, listing=listing)


def generate_seed_lines(server: Any) -> list[bytes]:
    """Real traffic through hvac: a userpass user reads, is denied, lists."""
    client = server.client()
    client.sys.enable_auth_method("userpass")
    client.sys.create_or_update_policy(
        "kv-reader",
        'path "secret/data/app/*" { capabilities = ["read"] }\n'
        'path "secret/metadata/app/*" { capabilities = ["list"] }',
    )
    client.auth.userpass.create_or_update_user("alice", password="pw-alice", policies=["kv-reader"])
    client.secrets.kv.v2.create_or_update_secret("app/db", secret={"k": "v"}, mount_point="secret")
    user = server.client(token="")
    user.auth.userpass.login("alice", "pw-alice")
    user.secrets.kv.v2.read_secret_version("app/db", mount_point="secret", raise_on_deleted_version=False)
    try:
        user.secrets.kv.v2.read_secret_version(
            "other/x", mount_point="secret", raise_on_deleted_version=False
        )
    except Exception:  # noqa: BLE001 - the denial is the point
        pass
    user.secrets.kv.v2.list_secrets("app/", mount_point="secret")
    for c in (client, user):
        c.adapter.close()
    return Path(server.audit_log).read_bytes().splitlines()


def load_seeds() -> Seeds:
    """Seed entries from the shared OpenBao sample, or from a live OpenBao server without it."""
    shared = Path(__file__).resolve().parents[3] / "shared" / "reference" / "openbao_audit_sample.jsonl"
    if shared.exists():
        return seeds_from_lines(shared.read_bytes().splitlines())
    from vaultwatch.demo.servers import OpenBaoServer

    with OpenBaoServer() as srv:
        return seeds_from_lines(generate_seed_lines(srv))


class Actor(msgspec.Struct):
    ident: Identity
    kind: str  # dev | svc | ci
    dirs: list[str]
    subnets: list[str]
    tz: int = 0


class Workload:
    """Deterministic generator of reshaped real entries."""

    def __init__(self, seeds: Seeds, seed: int = 1) -> None:
        self.s = seeds
        self.rng = random.Random(seed)
        self.n = 0

    def event(
        self,
        actor: Actor,
        ts: float,
        path: str,
        *,
        op: str = "read",
        outcome: str = "ok",
        ip: str | None = None,
    ) -> list[AuditEvent]:
        self.n += 1
        rid = f"{self.n:08x}-0000-4000-8000-{self.rng.getrandbits(48):012x}"
        pair = self.s.listing if op == "list" else self.s.denied if outcome == "denied" else self.s.read
        if ip is None:
            net = self.rng.choice(actor.subnets)
            ip = f"{net}.{self.rng.randint(2, 40)}"
        mount = path.split("/", 1)[0] + "/"
        out = []
        for i, base in enumerate(pair):
            t = ts + 0.002 * i
            req = msgspec.structs.replace(base.request, id=rid, operation=op, path=path, mount_point=mount)
            resp = base.response
            if resp is not None:
                resp = msgspec.structs.replace(resp, mount_point=mount)
            out.append(
                msgspec.structs.replace(
                    base,
                    ts=t,
                    time=base.time.fromtimestamp(t, base.time.tzinfo),
                    identity=actor.ident,
                    path=path,
                    request=req,
                    response=resp,
                    outcome=("pending" if i == 0 and outcome == "ok" else outcome),
                    remote_ip=ip,
                )
            )
        return out


def make_org(n_teams: int = 3, devs: int = 4, services: int = 6) -> list[Actor]:
    actors: list[Actor] = []
    for t in range(n_teams):
        team = f"team{t}"
        dirs = [f"secret/data/{team}/app{a}" for a in range(6)]
        for d in range(devs):
            name = f"dev{t}{d}"
            ident = Identity(
                key=f"entity:{name}",
                kind="entity",
                entity_id=name,
                display_name=f"oidc-{name}",
                policies=("default", f"dev-{team}"),
            )
            actors.append(Actor(ident, "dev", dirs, [f"10.{t}.{d}", "10.200.0"], tz=(d % 3) - 1))
    for s in range(services):
        ident = Identity(
            key=f"entity:svc{s}",
            kind="entity",
            entity_id=f"svc{s}",
            display_name="approle",
            policies=("default", f"runtime-svc{s}"),
        )
        actors.append(Actor(ident, "svc", [f"secret/data/runtime/svc{s}"], [f"10.50.{s}"]))
    ci = Identity(
        key="entity:ci", kind="entity", entity_id="ci", display_name="approle-ci", policies=("default", "ci")
    )
    ci_dirs = [f"secret/data/team{t}/app{a}" for t in range(n_teams) for a in range(6)]
    actors.append(Actor(ci, "ci", ci_dirs, ["10.60.0"]))
    return actors


def benign(w: Workload, actors: list[Actor], days: int, start: float = T0) -> list[AuditEvent]:
    """A realistic org: developers on weekdays, services around the clock, CI builds."""
    rng = w.rng
    out: list[AuditEvent] = []
    for actor in actors:
        for day in range(days):
            d0 = start + day * DAY
            weekday = day % 7 < 5
            if actor.kind == "dev":
                if not weekday or rng.random() < 0.08:
                    continue
                n = rng.randint(15, 60)
                begin = d0 + (8 + actor.tz) * HOUR + rng.uniform(0, 2 * HOUR)
                favourite = rng.sample(actor.dirs, 3)
                for _ in range(n):
                    ts = begin + rng.uniform(0, 8 * HOUR)
                    dir_ = rng.choice(favourite if rng.random() < 0.8 else actor.dirs)
                    r = rng.random()
                    if r < 0.08:
                        out += w.event(actor, ts, dir_.replace("/data/", "/metadata/") + "/", op="list")
                    elif r < 0.10:
                        other = f"secret/data/team{rng.randint(0, 2)}/app{rng.randint(0, 5)}/config"
                        out += w.event(actor, ts, other, outcome="denied")
                    else:
                        leaf = rng.choice(
                            ["config", "db", "api-key", "tls", f"feature{rng.randint(0, day // 3)}"]
                        )
                        out += w.event(actor, ts, f"{dir_}/{leaf}")
            elif actor.kind == "svc":
                t = d0 + rng.uniform(0, 300)
                while t < d0 + DAY:
                    out += w.event(actor, t, f"{actor.dirs[0]}/{rng.choice(['db', 'api'])}")
                    if rng.random() < 0.05:
                        out += w.event(actor, t + 1, f"database/creds/{actor.dirs[0].rsplit('/', 1)[1]}")
                    t += rng.uniform(240, 360)
            else:
                for _ in range(rng.randint(3, 12)):
                    t = d0 + rng.uniform(0, DAY)
                    for dir_ in rng.sample(actor.dirs, min(len(actor.dirs), rng.randint(2, 8))):
                        for leaf in ("config", "db"):
                            t += rng.uniform(0.5, 3)
                            out += w.event(actor, t, f"{dir_}/{leaf}")
    out.sort(key=lambda e: (e.ts, e.request_id or "", e.type))
    return out


def attacks(w: Workload, actors: list[Actor], at: float) -> dict[str, list[AuditEvent]]:
    """The injected attacks, each on its own day after ``at``."""
    rng = w.rng
    dev = next(a for a in actors if a.ident.key == "entity:dev01")
    dev2 = next(a for a in actors if a.ident.key == "entity:dev12")
    dev3 = next(a for a in actors if a.ident.key == "entity:dev20")
    dev4 = next(a for a in actors if a.ident.key == "entity:dev03")
    svc = next(a for a in actors if a.ident.key == "entity:svc2")
    out: dict[str, list[AuditEvent]] = {}
    # Stolen credentials used from a new address at night (Tuesday 02:00 UTC).
    t = at + 1 * DAY + 2 * HOUR
    ev: list[AuditEvent] = []
    for i in range(12):
        path = f"{rng.choice(dev.dirs)}/{rng.choice(['config', 'db', 'tls'])}"
        ev += w.event(dev, t + i * 45, path, ip="203.0.113.77")
    out["stolen-credentials"] = ev
    # Mass read by a service identity.
    t = at + 2 * DAY + 14 * HOUR
    ev = []
    for i in range(300):
        ev += w.event(svc, t + i * 2, f"secret/data/team{i % 3}/app{i % 6}/s{i}")
    out["mass-read"] = ev
    # Slow and low: one new secret every 8 minutes for 20 hours.
    t = at + 3 * DAY + 6 * HOUR
    ev = []
    for i in range(150):
        ev += w.event(dev2, t + i * 480, f"secret/data/team{(i % 2) * 2}/app{i % 6}/hist{i}")
    out["slow-and-low"] = ev
    # A developer touching runtime secrets, in working hours, from the usual network.
    t = at + 4 * DAY + 11 * HOUR
    ev = []
    for i, leaf in enumerate(("db", "api", "db")):
        ev += w.event(dev3, t + i * 120, f"secret/data/runtime/svc{i + 1}/{leaf}", ip="10.2.0.9")
    out["runtime-secrets"] = ev
    # Enumeration: LIST everything, many denied.
    t = at + 5 * DAY + 15 * HOUR
    ev = []
    for i in range(120):
        path = f"secret/metadata/team{i % 3}/app{i % 6}/" if i % 3 else f"secret/metadata/x{i}/"
        ev += w.event(dev4, t + i * 5, path, op="list", outcome="ok" if i % 3 else "denied")
    out["enumeration"] = ev
    return out


# -- the engine over weeks ------------------------------------------------------------------------

Tagged = list[tuple[AuditEvent, str | None]]


@pytest.fixture(scope="module")
def month() -> Tagged:
    """Four weeks of benign traffic, then a week with five injected attacks."""
    w = Workload(load_seeds(), seed=1)
    actors = make_org()
    days = 28
    tagged: Tagged = [(e, None) for e in benign(w, actors, days + 7)]
    for name, evs in attacks(w, actors, T0 + days * DAY).items():
        tagged += [(e, name) for e in evs]
    tagged.sort(key=lambda t: (t[0].ts, t[1] is not None))
    return tagged


def _run(events: Iterator[AuditEvent] | list[AuditEvent], eng: Engine | None = None) -> list[Alert]:
    eng = eng or Engine({}, seed=3, detectors=[])
    out: dict[str, Alert] = {}
    last = 0.0
    for ev in events:
        last = ev.ts
        for a in eng.process(ev):
            out[a.id] = a
    for a in eng.flush(last + DAY):
        out[a.id] = a
    return list(out.values())


def test_precision_and_recall_on_a_month(month: Tagged) -> None:
    alerts = _run(e for e, _ in month)
    attack_of = {e.request_id: name for e, name in month if name}
    benign_events = sum(1 for _, name in month if name is None)
    caught: set[str] = set()
    false_alerts = []
    for a in alerts:
        names = {attack_of[i] for i in a.event_ids if i in attack_of}
        if names:
            caught |= names
        elif a.severity in ("medium", "high", "critical"):
            false_alerts.append(a)
    assert caught == {"stolen-credentials", "mass-read", "slow-and-low", "runtime-secrets", "enumeration"}
    assert len(false_alerts) / benign_events * 10_000 <= 0.05, [a.title for a in false_alerts]
    for a in alerts:
        assert a.detector == "behaviour-risk"
        assert 1 <= len(a.explanation) <= 5
        assert a.severity in ("medium", "high") and 0 < a.score <= 100
        assert 0 < len(a.event_ids) <= 500
        assert abs(sum(r.weight for r in a.explanation) - 1.0) < 0.05 or len(a.explanation) == 5
    stolen = next(a for a in alerts if a.identity.key == "entity:dev01")
    assert "203.0.113.77" in stolen.source_addresses
    assert any("203.0.113.0/24" in r.observed for r in stolen.explanation)
    runtime = next(a for a in alerts if a.identity.key == "entity:dev20")
    assert any("peers: 0 of 3" in r.baseline for r in runtime.explanation)
    # A burst updates one alert instead of raising hundreds.
    mass = [a for a in alerts if a.identity.key == "entity:svc2"]
    assert len(mass) == 1 and mass[0].count > 1


def test_replay_is_deterministic_and_snapshot_restore_is_equivalent(month: Tagged) -> None:
    events = [e for e, _ in month]
    cut = len(events) * 9 // 10  # inside the attack week
    straight = _run(events)
    assert _run(events) == straight
    first = Engine({}, seed=3, detectors=[])
    part1: dict[str, Alert] = {}
    for ev in events[:cut]:
        for a in first.process(ev):
            part1[a.id] = a
    snap = first.snapshot()
    assert len(snap) < 5_000_000
    second = Engine({}, seed=3, detectors=[])
    second.restore(snap)
    rest = _run(events[cut:], second)
    combined = {**part1, **{a.id: a for a in rest}}
    assert list(combined.values()) == straight


def _old_layout(snap: bytes) -> bytes:
    """``snap`` re-encoded as the engine wrote it before counters became flat lists: every TopK
    as ``items: {value: [long, short, error]}``, hour statistics and fired signals as empty
    containers (not omitted), habit subnets as lists."""
    raw = msgspec.msgpack.decode(snap)

    def topk(c: dict[str, Any]) -> dict[str, Any]:
        assert "items" in c or "cells" in c  # a counter, in the flat (small) or the table layout
        cells = c.pop("cells", [])
        items = c.pop("items", None) or {cells[i]: cells[i + 1 : i + 4] for i in range(0, len(cells), 4)}
        return {"new_l": 0.0, "new_s": 0.0, "tot_l": 0.0, "tot_s": 0.0, **c, "items": items}

    beh = raw["behaviour"]
    groups = [*beh["groups"].values(), beh["org"]]
    for owner in [*beh["identities"].values(), *groups]:
        owner["feats"] = {f: topk(c) for f, c in owner["feats"].items()}
    beh["mount_subnets"] = {m: topk(c) for m, c in beh["mount_subnets"].items()}
    for b in beh["identities"].values():
        hs = b["hstats"]
        hs["s1"], hs["s2"] = hs.get("s1") or [], hs.get("s2") or []
        b["window"]["fired"] = b["window"].get("fired") or {}
    return msgspec.msgpack.encode(raw)


def test_a_snapshot_in_the_old_counter_layout_restores_and_continues_the_same(month: Tagged) -> None:
    """A production upgrade: a checkpoint written before the flat counters restores, every count
    survives, and detection goes on exactly as if the engine had never stopped."""
    events = [e for e, _ in month]
    cut = len(events) * 9 // 10
    straight = _run(events)
    first = Engine({}, seed=3, detectors=[])
    part1: dict[str, Alert] = {}
    for ev in events[:cut]:
        for a in first.process(ev):
            part1[a.id] = a
    old = _old_layout(first.snapshot())
    assert b'"cells"' not in old and b"cells" not in old
    second = Engine({}, seed=3, detectors=[])
    second.restore(old)
    assert second.identities() == first.identities()
    for key in first.identities():
        # Per feature, the ten heaviest values and their decayed counts; the totals.
        assert second.identity_summary(key) == first.identity_summary(key)
        for horizon in ("long", "short"):
            assert second.baselines.total(key, horizon) == first.baselines.total(key, horizon) > 0
    assert second.baselines.count("entity:dev00", "mount", "secret/") > 0
    assert second.baselines.count("entity:dev00", "mount", "secret/") == first.baselines.count(
        "entity:dev00", "mount", "secret/"
    )
    # The whole restored state equals the state the new code had kept (sets compare unordered).
    state = msgspec.msgpack.decode(second.snapshot(), type=EngineState)
    assert state == msgspec.msgpack.decode(first.snapshot(), type=EngineState)
    rest = _run(events[cut:], second)
    assert list({**part1, **{a.id: a for a in rest}}.values()) == straight


def test_identity_state_is_small(month: Tagged) -> None:
    eng = Engine({"model_enabled": False}, detectors=[])
    eng.process_batch(e for e, _ in month[: len(month) // 2])
    sizes = [eng.identity_summary(k)["bytes"] for k in eng.identities()]
    assert max(sizes) < 16_000
    part = eng.snapshot(["entity:dev00"])
    mounts_before = eng.baselines.count("entity:dev00", "mount", "secret/")
    fresh = Engine({"model_enabled": False}, detectors=[])
    fresh.restore(part)
    assert fresh.identities() == ["entity:dev00"]
    assert fresh.identity_summary("entity:dev00")["events"] == eng.identity_summary("entity:dev00")["events"]
    # The restored baseline keeps working: the same next event scores the same in both engines.
    nxt = next(e for e, _ in month[len(month) // 2 :] if e.identity.key == "entity:dev00" and e.is_response)
    fresh.process(nxt)
    eng.process(nxt)
    for k in ("mount", "subnet"):
        value = "secret/" if k == "mount" else "10.0.0.0/24"
        assert fresh.baselines.count("entity:dev00", k, value) == pytest.approx(
            eng.baselines.count("entity:dev00", k, value)
        )
    # Merged into an engine that already runs under another landmark: counts are rescaled.
    other = Engine({"model_enabled": False}, detectors=[])
    other.process_batch(e for e, _ in month[-2000:] if e.identity.key != "entity:dev00")
    other.restore(part)
    assert other.baselines.count("entity:dev00", "mount", "secret/") == pytest.approx(mounts_before, rel=1e-6)


# -- alert aggregation, rules, feedback -----------------------------------------------------------


class _Burst:
    """A tiny detector behind the Detector protocol: flags every denied read."""

    name = "test-denied-read"

    def __init__(self) -> None:
        self.seen = 0

    def observe(self, event: AuditEvent, ctx: Any) -> list[Finding]:
        if not event.is_response or event.outcome != "denied":
            return []
        self.seen += 1
        assert isinstance(ctx.baselines.in_learning(event.identity.key, event.ts), bool)
        return [
            Finding(
                detector=self.name,
                title="denied read",
                severity="high",
                score=70.0,
                family="rule",
                identity=event.identity,
                dedup_key=f"{self.name}:{event.identity.key}",
                event_ids=(event.request_id or "",),
                paths=(event.path,),
                first_ts=event.ts,
                last_ts=event.ts,
                reasons=(Reason(feature="outcome", observed="denied", baseline="never", weight=1.0),),
            )
        ]

    def state(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])


def test_rule_findings_aggregate_and_feedback_suppresses() -> None:
    w = Workload(load_seeds(), seed=5)
    dev = make_org(1, 1, 0)[0]
    det = _Burst()
    eng = Engine({"model_enabled": False}, detectors=[det])
    burst: list[AuditEvent] = []
    for i in range(3):
        burst += w.event(dev, T0 + i * 60, "secret/data/other/x", outcome="denied")
    alerts = eng.process_batch(burst)
    assert len(alerts) == 1
    a = alerts[0]
    assert a.detector == "test-denied-read" and a.count == 3 and a.severity == "high"
    assert len(a.event_ids) == 3 and a.explanation[0].observed == "denied"
    # Outside the aggregation window: a new alert with a new id.
    later = eng.process_batch(w.event(dev, T0 + 7 * HOUR, "secret/data/other/x", outcome="denied"))
    assert len(later) == 1 and later[0].id != a.id and later[0].count == 1
    # False positive: the same finding for this identity is suppressed from now on.
    eng.verdict(later[0], "false_positive", now=T0 + 7 * HOUR + 1)
    assert eng.process_batch(w.event(dev, T0 + 20 * HOUR, "secret/data/other/x", outcome="denied")) == []
    # Detector state travels with the snapshot.
    fresh = Engine({"model_enabled": False}, detectors=[_Burst()])
    fresh.restore(eng.snapshot())
    assert fresh.detectors[0].state() == {"seen": 5}
    with pytest.raises(VerdictError):
        eng.verdict(a, "maybe", now=T0)


def test_feedback_on_behaviour_alerts(month: Tagged) -> None:
    events = [e for e, name in month if name in (None, "stolen-credentials")]
    eng = Engine({"model_enabled": False}, detectors=[])
    alerts = _run(events, eng)
    stolen = next(a for a in alerts if a.identity.key == "entity:dev01")
    now = events[-1].ts
    w = Workload(load_seeds(), seed=9)
    dev = next(a for a in make_org() if a.ident.key == "entity:dev01")
    again = w.event(dev, now + 2 * HOUR, "secret/data/team0/app1/config", ip="203.0.113.78")
    # False positive: the new network becomes known; seeing it again raises nothing.
    eng.verdict(stolen, "false_positive", now=now, comment="VPN exit")
    eng.process_batch(again)
    assert not [f for f in eng.last_findings if f.labels.get("value") == "203.0.113.0/24"]
    # True positive elsewhere: that identity's events stay out of its own baseline.
    eng2 = Engine({"model_enabled": False}, detectors=[])
    _run(events, eng2)
    before = eng2.baselines.count("entity:dev01", "subnet", "203.0.113.0/24")
    eng2.verdict(stolen, "true_positive", now=now)
    eng2.process_batch(w.event(dev, now + 3 * HOUR, "secret/data/team0/app1/config", ip="203.0.113.79"))
    assert eng2.baselines.count("entity:dev01", "subnet", "203.0.113.0/24") <= before


def test_public_surface_and_default_rules() -> None:
    for name in detect.__all__:
        assert hasattr(detect, name), name
    eng = Engine()
    # The rules are part of the engine, never optional.
    assert [d.name for d in eng.detectors] == [d.name for d in detect.default_rules({})]
    with pytest.raises(detect.ConfigError):
        Engine({"risk_threshold": "high"})
    with pytest.raises(detect.StateError):
        eng.restore(b"not msgpack")


def test_each_request_counts_once() -> None:
    w = Workload(load_seeds(), seed=11)
    dev = make_org(1, 1, 0)[0]
    eng = Engine({"model_enabled": False}, detectors=[])
    req, resp = w.event(dev, T0, "secret/data/team0/app0/db")
    eng.process(req)
    assert eng.stats["behaviour_events"] == 0  # waiting for its response
    eng.process(resp)
    assert eng.stats["behaviour_events"] == 1  # the response, with outcome and mount
    # A request whose response never comes is used on its own once the wait is over.
    lonely, _ = w.event(dev, T0 + 10, "sys/seal")
    eng.process(lonely)
    later, _ = w.event(dev, T0 + 300, "secret/data/team0/app0/db")
    eng.process(later)
    assert eng.stats["behaviour_events"] == 2
    assert eng.baselines.count("entity:dev00", "mount", "sys/") > 0
    eng.flush(T0 + 1000)
    assert eng.stats["behaviour_events"] == 3
    assert eng.stats["events"] == 4
