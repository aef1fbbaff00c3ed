"""Mount-aware access model, roles inferred from behaviour, and ``sensitive-first-access``, on
real OpenBao entries in three layouts: KV v2 mounted at ``logos/`` (the seed's ACL), the same
secrets under a prefix of a shared KV v2 mount (``secret/logos/pxl-core/...``), and a KV v1
mount with a prefix. Policies carry names unlike the default model's, as a real organisation's
would.

One OpenBao server records one entry of every kind of access per layout; tests replay them at
chosen event times (``retime``) to build days of habit around a single deviating event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from detect import Engine
from detect.policy import AccessModelDetector, RotationTracker, default_policy, parse_policy
from detect.policy_data import DEFAULT_POLICY_TOML
from detect.rules import default_rules
from detect.sensitive import SensitiveFirstAccess, area_of_path
from detect.types import Finding
from ingest.event import AuditEvent
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer

from .conftest import CANARY_SECRET, AuditCapture, Ctx, retime

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0
HOUR, DAY = 3600.0, 86400.0
LAYOUTS = ("root", "shared", "kv1")
#: Where each layout keeps the service's secrets: (mount, prefix inside the mount, KV version).
WHERE = {"root": ("logos", "", 2), "shared": ("secret", "logos/", 2), "kv1": ("team-kv", "logos/", 1)}
_BROAD = 'path "*" { capabilities = ["read", "list", "create", "update"] }'
#: Policy names nothing in the default model knows. Each is broad: Vault allows what the model
#: and the behaviour judge.
POLICIES = {"svc-a7": _BROAD, "bld-q2": _BROAD, "eng-x": _BROAD, "kr-9": _BROAD, "new-team": _BROAD}
#: Narrow grants (so that Vault names which one granted a read): a team's own secrets, and an
#: on-call grant on the runtime secrets (an access role of its own), in every layout.
POLICIES["team-t"] = "".join(
    f'path "{p}/*" {{ capabilities = ["read", "list", "create", "update"] }}\n'
    for p in ("logos/data/team", "logos/metadata/team", "secret/data/logos/team", "team-kv/logos/team")
)
POLICIES["pager-z"] = "".join(
    f'path "{p}/*" {{ capabilities = ["read"] }}\n'
    for p in (
        "logos/data/pxl-core/runtime",
        "secret/data/logos/pxl-core/runtime",
        "team-kv/logos/pxl-core/runtime",
    )
)
#: Actors: display name -> policies.
ACTORS = {
    "svc1": ["svc-a7"],
    "svc2": ["svc-a7"],
    "svc3": ["svc-a7"],  # a scaled-out instance, first seen late
    "ci1": ["bld-q2"],
    "dev1": ["eng-x"],
    "dev2": ["eng-x"],
    "rot1": ["kr-9"],
    "nobody": ["default"],  # no grant at all: Vault denies
    "fresh": ["new-team"],  # a brand-new group
    "tm1": ["team-t"],  # a team whose policy grants its own secrets only
    "tm2": ["team-t"],
    "oncall1": ["team-t", "pager-z"],  # ...one of them on call: runtime reads granted by pager-z
    "ops1": ["eng-x", "svc-a7"],  # a person who holds the service's policy besides their own
}


class Recorded:
    """One real response entry per (layout, actor, action)."""

    def __init__(self, events: dict[tuple[str, str, str], AuditEvent]) -> None:
        self.events = events

    def __call__(self, layout: str, actor: str, action: str, ts: float) -> AuditEvent:
        return retime(self.events[(layout, actor, action)], ts)


def _secret(layout: str, area: str, name: str) -> tuple[str, str, int]:
    mount, prefix, version = WHERE[layout]
    if area == "team":  # the developers' own secrets, outside the protected tree
        return mount, f"{prefix}team/{name}", version
    return mount, f"{prefix}pxl-core/{area}/{name}", version


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    work = tmp_path_factory.mktemp("bao-sensitive")
    log = work / "audit.log"
    srv = OpenBaoServer(work, devices=[AuditDevice("file", "file", {"file_path": str(log)})])
    events: dict[tuple[str, str, str], AuditEvent] = {}
    try:
        srv.start()
        c = srv.client()
        cap = AuditCapture(log)
        c.sys.enable_secrets_engine("kv", path="logos", options={"version": "2"})
        c.sys.enable_secrets_engine("kv", path="team-kv", options={"version": "1"})
        for name, body in POLICIES.items():
            c.sys.create_or_update_policy(name, body)
        tokens = {
            who: c.auth.token.create(policies=pols, display_name=who, ttl="30m")["auth"]["client_token"]
            for who, pols in ACTORS.items()
        }

        def put(client: Any, layout: str, area: str, name: str) -> None:
            mount, path, version = _secret(layout, area, name)
            if version == 2:
                client.secrets.kv.v2.create_or_update_secret(
                    path, secret={"v": CANARY_SECRET}, mount_point=mount
                )
            else:
                client.write(f"{mount}/{path}", v=CANARY_SECRET)

        def get(client: Any, layout: str, area: str, name: str) -> None:
            mount, path, version = _secret(layout, area, name)
            try:
                if version == 2:
                    client.secrets.kv.v2.read_secret_version(
                        path, mount_point=mount, raise_on_deleted_version=False
                    )
                else:
                    client.read(f"{mount}/{path}")
            except Exception:  # noqa: BLE001 - the refusal is what gets audited
                pass

        for layout in LAYOUTS:
            for area, name in (("runtime", "jwt-key"), ("runtime", "api-key"), ("build", "registry-token")):
                put(c, layout, area, name)
            put(c, layout, "team", "notes")
        cap.take()

        def names(client: Any, layout: str, area: str, name: str) -> None:
            mount, path, version = _secret(layout, area, name)
            folder = path.rsplit("/", 1)[0]
            if version == 2:
                client.secrets.kv.v2.list_secrets(folder, mount_point=mount)
            else:
                client.list(f"{mount}/{folder}")

        def meta(client: Any, layout: str, area: str, name: str) -> None:
            mount, path, _ = _secret(layout, area, name)
            client.secrets.kv.v2.read_secret_metadata(path, mount_point=mount)

        def record(layout: str, who: str, action: str) -> None:
            client = srv.client(token=tokens[who])
            verb, area, name = action.split(":")
            try:
                {"write": put, "list": names, "meta": meta}.get(verb, get)(client, layout, area, name)
            except Exception:  # noqa: BLE001 - the refusal is what gets audited
                pass
            got = [e for e in cap.take() if e.is_response]
            assert len(got) == 1, (layout, who, action, [e.path for e in got])
            events[(layout, who, action)] = got[0]

        for layout in LAYOUTS:
            for who in ACTORS:
                for action in (
                    "read:runtime:jwt-key",
                    "read:runtime:api-key",
                    "read:build:registry-token",
                    "read:team:notes",
                    "write:runtime:jwt-key",
                    "list:runtime:jwt-key",
                ):
                    record(layout, who, action)
                if WHERE[layout][2] == 2:  # KV v2 keeps metadata apart
                    record(layout, who, "meta:runtime:jwt-key")
    finally:
        srv.cleanup()
    for ev in events.values():
        assert CANARY_SECRET not in msgspec.json.encode(ev).decode()
    yield Recorded(events)


def habit(rec: Recorded, layout: str, days: int, *, start: float = T0) -> list[AuditEvent]:
    """``days`` of ordinary work: the two runtime instances read runtime secrets four times a
    day, the pipeline reads build secrets, developers read their team's notes, the rotator
    writes the JWT key every night."""
    out: list[AuditEvent] = []
    for d in range(days):
        base = start + d * DAY
        out.append(rec(layout, "rot1", "write:runtime:jwt-key", base + 2 * HOUR))
        for h in range(4):
            ts = base + (8 + 3 * h) * HOUR
            out.append(rec(layout, "svc1", "read:runtime:jwt-key", ts))
            out.append(rec(layout, "svc2", "read:runtime:api-key", ts + 60))
            out.append(rec(layout, "ci1", "read:build:registry-token", ts + 120))
            out.append(rec(layout, "dev1", "read:team:notes", ts + 180))
            out.append(rec(layout, "dev2", "read:team:notes", ts + 240))
            out.append(rec(layout, "nobody", "read:team:notes", ts + 300))
    return out


def feed(det: Any, events: list[AuditEvent]) -> list[Finding]:
    ctx = Ctx()
    out: list[Finding] = []
    for ev in events:
        out.extend(det.observe(ev, ctx))
    return out


def after(rec: Recorded, layout: str, days: int, *acts: tuple[str, str]) -> list[AuditEvent]:
    """Events of ``acts`` (actor, action) one hour apart on the day after ``days`` of habit."""
    t = T0 + days * DAY + 10 * HOUR
    return [rec(layout, who, action, t + i * HOUR) for i, (who, action) in enumerate(acts)]


# -- item 1: paths inside their mount ------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_secret_target_knows_the_mount(rec: Recorded, layout: str) -> None:
    from detect.policy import secret_target

    mount, path, version = _secret(layout, "runtime", "jwt-key")
    t = secret_target(rec(layout, "svc1", "read:runtime:jwt-key", T0))
    assert t.path == f"{mount}/{path}" and t.mount == f"{mount}/" and t.op == "read"
    assert t.inner == path and t.api == ("data" if version == 2 else "plain")
    w = secret_target(rec(layout, "rot1", "write:runtime:jwt-key", T0))
    assert w.path == t.path and w.op in ("create", "update")


@pytest.mark.parametrize("layout", ["root", "shared"])
def test_secret_target_infers_kv2_in_entries_naming_no_mount(rec: Recorded, layout: str) -> None:
    """Vault 1.12 and older log no mount: the KV v2 shape of the path gives it."""
    from detect.policy import secret_target

    ev = rec(layout, "svc1", "read:runtime:jwt-key", T0)
    assert ev.response is not None
    old = msgspec.structs.replace(
        ev,
        request=msgspec.structs.replace(ev.request, mount_point=None, mount_type=None),
        response=msgspec.structs.replace(ev.response, mount_point=None, mount_type=None),
    )
    assert old.mount_point is None and old.mount_type is None
    mount, path, _ = _secret(layout, "runtime", "jwt-key")
    assert secret_target(old)[:4] == (f"{mount}/{path}", "read", "data", f"{mount}/")


def test_glob_match_inside_and_across_mounts() -> None:
    from detect.policy import glob_match

    assert glob_match("logos/pxl-core/*", "logos/pxl-core/runtime/jwt", "logos/")
    assert glob_match("logos/pxl-core/*", "secret/logos/pxl-core/runtime/jwt", "secret/")
    assert glob_match("logos/pxl-core/*", "any-name-kv/logos/pxl-core/x", "any-name-kv/")
    assert glob_match("logos/pxl-core/*", "logos/pxl-core/x")  # no mount known: full path
    assert not glob_match("logos/pxl-core/*", "secret/logos/pxl-core/x")  # ...and only that
    assert not glob_match("logos/pxl-core/*", "secret/other/logos/pxl-core/x", "secret/")
    assert glob_match("secret/::logos/pxl-core/*", "secret/logos/pxl-core/x", "secret/")
    assert not glob_match("secret/::logos/pxl-core/*", "kv/logos/pxl-core/x", "kv/")
    assert not glob_match("secret/::logos/pxl-core/*", "logos/pxl-core/x", "logos/")


def _site_policy() -> str:
    """The default model with the organisation's own policy names in the matchers."""
    text = DEFAULT_POLICY_TOML.replace('policy = "pxl-core-runtime"', 'policy = "svc-a7"')
    text = text.replace('policy = "pxl-core-ci"', 'policy = "bld-q2"')
    return text.replace('policy = "developer"', 'policy = "eng-x"')


@pytest.mark.parametrize("layout", LAYOUTS)
def test_access_model_holds_in_every_layout(rec: Recorded, layout: str) -> None:
    """Regression: before globs matched inside mounts, under ``secret/`` every runtime read was
    a high violation and a developer reading runtime secrets raised nothing."""
    policy = parse_policy(_site_policy(), "site.toml")
    det = AccessModelDetector(policy)
    assert feed(det, habit(rec, layout, 2)) == []  # runtime, CI and developers at work: quiet
    for who, action, role in (
        ("dev1", "read:runtime:jwt-key", "developer"),
        ("ci1", "read:runtime:api-key", "ci"),
        ("svc1", "write:runtime:jwt-key", "runtime"),
        ("svc1", "read:build:registry-token", "runtime"),
    ):
        found = feed(det, [rec(layout, who, action, T0 + 3 * DAY)])
        assert [(f.labels["role"], f.severity, f.labels["role_source"]) for f in found] == [
            (role, "high", "config")
        ], (who, action)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rotation_in_every_layout(rec: Recorded, layout: str) -> None:
    """Written nightly: never overdue. Not written: overdue (the old full-path matching never
    tracked ``secret/logos/...`` or ``team-kv/logos/...`` at all)."""
    rt = RotationTracker()
    found = feed(rt, habit(rec, layout, 5))
    assert found == [] and rt.due(T0 + 5 * DAY + 2 * HOUR) == []
    mount, path, _ = _secret(layout, "runtime", "jwt-key")
    assert f"{mount}/{path}" in rt.state()["secrets"]
    late = rt.due(T0 + 6 * DAY + 6 * HOUR)
    assert [f.paths for f in late] == [(f"{mount}/{path}",)]
    assert "not rotated" in late[0].title


# -- item 2: roles from behaviour when no matcher fits ----------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_roles_inferred_from_behaviour(rec: Recorded, layout: str) -> None:
    det = AccessModelDetector()  # the default model: none of these policy names match it
    assert all(
        default_policy().role_for(rec(layout, w, "read:team:notes", T0).identity) is None for w in ACTORS
    )
    # Never from one event: on day one nothing is inferred, so nothing is judged.
    early = habit(rec, layout, 1) + [rec(layout, "fresh", "write:runtime:jwt-key", T0 + 20 * HOUR)]
    assert feed(det, early) == []
    assert feed(det, habit(rec, layout, 3, start=T0 + DAY)) == []  # habitual reads stay quiet
    assert feed(det, habit(rec, layout, 4, start=T0 + 4 * DAY)) == []
    # Nor before a week: a weekly habit (an on-call shift's read) must have had the chance to show.
    young = AccessModelDetector()
    assert feed(young, habit(rec, layout, 4)) == []
    assert feed(young, [rec(layout, "dev1", "read:runtime:jwt-key", T0 + 4 * DAY)]) == []
    cases = {
        ("svc1", "write:runtime:jwt-key"): ("runtime", "reads only"),
        ("svc2", "read:build:registry-token"): ("runtime", "reads only"),
        ("ci1", "read:runtime:api-key"): ("ci", "reads only"),
        ("dev1", "read:runtime:jwt-key"): ("developer", "never touched a protected path"),
    }
    for (who, action), (role, basis) in cases.items():
        found = feed(det, [rec(layout, who, action, T0 + 9 * DAY)])
        assert len(found) == 1, (who, action)
        f = found[0]
        assert f.labels == {"role": role, "operation": f.labels["operation"], "role_source": "behaviour"}
        assert f.reasons[0].observed == f"{role} (inferred)"
        assert f.reasons[0].baseline.startswith("role inferred from behaviour: " + basis), f.reasons[
            0
        ].baseline
        assert f"{role}-like identity" in f.title
    # The same habitual reads, after inference: still quiet (the role never makes habit alert).
    assert feed(det, habit(rec, layout, 1, start=T0 + 10 * DAY)) == []
    # The rotator wrote protected secrets while learning: no role, nothing judged.
    assert feed(det, [rec(layout, "rot1", "read:build:registry-token", T0 + 11 * DAY)]) == []
    # State is plain data and round-trips.
    again = AccessModelDetector()
    again.load(json.loads(json.dumps(det.state())))
    assert [f.title for f in feed(again, [rec(layout, "ci1", "read:runtime:jwt-key", T0 + 12 * DAY)])] == [
        f.title for f in feed(det, [rec(layout, "ci1", "read:runtime:jwt-key", T0 + 12 * DAY)])
    ]


# -- item 5: sensitive first access ---------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_sensitive_first_access_on_protected_areas(rec: Recorded, layout: str) -> None:
    det = SensitiveFirstAccess()
    assert feed(det, habit(rec, layout, 8)) == []
    mount, path, _ = _secret(layout, "runtime", "jwt-key")
    area = area_of_path(f"{mount}/{path}")
    found = feed(det, after(rec, layout, 8, ("ci1", "read:runtime:jwt-key")))
    assert len(found) == 1
    f = found[0]
    assert f.detector == "sensitive-first-access" and f.severity == "high" and f.alerting
    assert f.title == (
        f"First read of {area} (protected secrets) by token-ci1: Vault allowed it; "
        "its peers (1 identity sharing policies bld-q2): 0 reads in 8 days"
    )
    text = " | ".join(r.observed for r in f.reasons)
    assert f"first read of {area} by token-ci1" in text
    assert "its peers (1 identity sharing policies bld-q2): 0 reads" in text
    assert "readers so far: 2 identities sharing policies svc-a7 (" in text
    assert f.labels["protected"] == "true" and f.event_ids
    assert CANARY_SECRET not in msgspec.json.encode(f).decode()
    # Each deviation: runtime -> build, developer -> runtime (denied by Vault: medium).
    assert [x.severity for x in feed(det, after(rec, layout, 8, ("svc1", "read:build:registry-token")))] == [
        "high"
    ]
    assert [x.severity for x in feed(det, after(rec, layout, 8, ("nobody", "read:runtime:api-key")))] == [
        "medium"
    ]
    # Once alerted, the same identity's next read of the area is not a first any more.
    assert feed(det, after(rec, layout, 8, ("ci1", "read:runtime:api-key"))) == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_first_list_of_a_sensitive_area_pages(rec: Recorded, layout: str) -> None:
    """A short metadata walk (fewer lists than list-sweep's threshold) is caught here: lowering a
    first list (names, not values) lost it in the evaluation, so a list stays a first access."""
    det = SensitiveFirstAccess()
    feed(det, habit(rec, layout, 8))
    listed = feed(det, after(rec, layout, 8, ("ci1", "list:runtime:jwt-key")))
    assert [f.labels["operation"] for f in listed] == ["list"]
    assert listed[0].severity in ("medium", "high")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sensitive_first_access_stays_quiet_on_benign_firsts(rec: Recorded, layout: str) -> None:
    det = SensitiveFirstAccess()
    feed(det, habit(rec, layout, 8))
    quiet = after(
        rec,
        layout,
        3,
        ("svc3", "read:runtime:jwt-key"),  # scale-out: a new instance of the runtime group
        ("rot1", "write:runtime:jwt-key"),  # the rotator's nightly write
        ("dev1", "write:runtime:jwt-key"),  # a write: not a first *read* (judged elsewhere)
        ("fresh", "read:team:notes"),  # a brand-new group of new identities
        ("fresh", "read:runtime:jwt-key"),
    )
    assert feed(det, quiet) == []
    # Before the stream holds a week of history, everything is a first and nothing alerts (a
    # weekly habit, an on-call shift's read, must have had the chance to show).
    cold = SensitiveFirstAccess()
    assert (
        feed(cold, habit(rec, layout, 1)[:10] + after(rec, layout, 0, ("ci1", "read:runtime:jwt-key"))) == []
    )
    week = SensitiveFirstAccess()
    assert feed(week, habit(rec, layout, 5) + after(rec, layout, 5, ("ci1", "read:runtime:jwt-key"))) == []


@pytest.mark.parametrize("layout", ["shared", "kv1"])
def test_sensitive_first_access_on_areas_one_group_reads(rec: Recorded, layout: str) -> None:
    """No protected glob at all: an area only one peer group reads is sensitive once that habit
    is established (a week of stream, reads over two days)."""
    det = SensitiveFirstAccess(policy=parse_policy("protected = []"))
    assert feed(det, habit(rec, layout, 8)) == []
    found = feed(det, after(rec, layout, 8, ("dev1", "read:build:registry-token")))
    assert len(found) == 1 and found[0].labels["protected"] == "false"
    assert found[0].labels["owner"] == "policies:bld-q2"
    assert "read mostly by 1 identity sharing policies bld-q2" in found[0].reasons[2].baseline
    # A second colleague doing the same makes it the group's habit: the third is quiet.
    assert len(feed(det, after(rec, layout, 8, ("dev2", "read:build:registry-token")))) == 1
    assert feed(det, after(rec, layout, 9, ("dev1", "read:team:notes"))) == []
    # The developers' notes (the policy-less account is refused them: its tries count for nothing)
    # are the developers' area: the pipeline reading them is a first access too.
    found = feed(det, after(rec, layout, 9, ("ci1", "read:team:notes")))
    assert [f.labels["owner"] for f in found] == ["policies:eng-x"]
    assert "2 identities sharing policies eng-x (65 reads over 8 days)" in found[0].reasons[2].observed
    # Before a week of stream, the same area is not owned yet.
    young = SensitiveFirstAccess(policy=parse_policy("protected = []"))
    feed(young, habit(rec, layout, 4))
    assert feed(young, after(rec, layout, 4, ("dev1", "read:build:registry-token"))) == []


def test_sensitive_state_round_trips_mid_stream(rec: Recorded) -> None:
    events = habit(rec, "shared", 8) + after(
        rec, "shared", 8, ("ci1", "read:runtime:jwt-key"), ("svc2", "read:build:registry-token")
    )
    whole = [f.dedup_key for f in feed(SensitiveFirstAccess(), events)]
    assert len(whole) == 2
    first = SensitiveFirstAccess()
    cut = len(events) // 2
    feed(first, events[:cut])
    blob = json.dumps(first.state())
    resumed = SensitiveFirstAccess()
    resumed.load(json.loads(blob))
    assert [f.dedup_key for f in feed(resumed, events[cut:])] == whole
    assert resumed.state() == json.loads(json.dumps(resumed.state()))


def test_registered_and_configurable(tmp_path: Path) -> None:
    assert "sensitive-first-access" in [d.name for d in default_rules({})]
    assert "sensitive-first-access" in [d.name for d in Engine().detectors]
    det = SensitiveFirstAccess({"sensitive_owner_history_days": 3, "unrelated_key": 1})
    assert det.cfg.sensitive_owner_history_days == 3.0
    from detect.errors import ConfigError

    with pytest.raises(ConfigError, match="sensitive_min_history_days"):
        SensitiveFirstAccess({"sensitive_min_history_days": -1})
    with pytest.raises(ConfigError, match="must be an AccessPolicy"):
        SensitiveFirstAccess({"policy": "protected = []"})


# -- regressions from the evaluation (issue 14 work item 1) ---------------------------------------
def _team(rec: Recorded, layout: str, days: int, *, start: float = T0) -> list[AuditEvent]:
    """:func:`habit` plus a team (one member on call) reading its own notes every day."""
    out = habit(rec, layout, days, start=start)
    for d in range(days):
        base = start + d * DAY
        for i, who in enumerate(("tm1", "tm2", "oncall1")):
            out.append(rec(layout, who, "read:team:notes", base + (9 + i) * HOUR + 30))
    return sorted(out, key=lambda e: e.ts)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_credential_that_alerted_once_is_judged_again_days_later(rec: Recorded, layout: str) -> None:
    """Regression (eval: runtime -> build missed): a service credential stolen and used to read
    build secrets once (alerted), then used the same way days later, raised nothing the second
    time: the first alert had made the area "known" to the identity for good."""
    det = SensitiveFirstAccess()
    feed(det, habit(rec, layout, 8))
    act = ("svc1", "read:build:registry-token")
    assert [f.severity for f in feed(det, after(rec, layout, 8, act))] == ["high"]
    # The rest of that session is the open alert's.
    assert feed(det, after(rec, layout, 8, act)) == []
    assert [f.severity for f in feed(det, after(rec, layout, 11, act))] == ["high"]
    # Three distinct days make it the identity's habit: then it is quiet.
    assert len(feed(det, after(rec, layout, 12, act))) == 1
    assert feed(det, after(rec, layout, 13, act)) == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_refused_try_does_not_make_an_area_familiar(rec: Recorded, layout: str) -> None:
    """Regression (eval: ci -> runtime missed): a refused list while the stream was young made
    the identity "known" to the area, so its refused reads a week later raised nothing."""
    det = SensitiveFirstAccess()
    early = habit(rec, layout, 2) + [rec(layout, "nobody", "list:runtime:jwt-key", T0 + 2 * DAY + 5 * HOUR)]
    feed(det, early + habit(rec, layout, 6, start=T0 + 3 * DAY))
    found = feed(det, after(rec, layout, 9, ("nobody", "read:runtime:api-key")))
    assert [(f.severity, f.labels["operation"]) for f in found] == [("medium", "read")]


@pytest.mark.parametrize("layout", ["root", "shared"])
def test_reading_one_secrets_metadata_is_not_a_first_access(rec: Recorded, layout: str) -> None:
    """Regression (eval: a rotation job checking a secret's versions before rewriting it raised a
    high "first list"): the metadata of one secret is neither its value nor an area's names."""
    det = SensitiveFirstAccess()
    feed(det, habit(rec, layout, 8))
    ev = rec(layout, "ci1", "meta:runtime:jwt-key", T0 + 8 * DAY + 10 * HOUR)
    assert "/metadata/" in ev.path and ev.path.endswith("pxl-core/runtime/jwt-key")
    assert feed(det, [ev]) == []
    # Listing the area (its names) still is one.
    assert len(feed(det, after(rec, layout, 8, ("dev1", "list:runtime:jwt-key")))) == 1


@pytest.mark.parametrize("layout", ["shared", "kv1"])
def test_a_pipelines_few_deploy_day_reads_make_an_area_its_own(rec: Recorded, layout: str) -> None:
    """Regression (eval: runtime -> build missed): a pipeline reads its build secrets on deploy
    days only (3 reads over 2 days); no one else ever reads them. A runtime service reading them
    is a first access even without a protected glob."""
    det = SensitiveFirstAccess(policy=parse_policy("protected = []"))
    stream = [e for e in habit(rec, layout, 8) if e.identity.display_name != "token-ci1"]
    stream += [
        rec(layout, "ci1", "read:build:registry-token", T0 + 1 * DAY + 15 * HOUR),
        rec(layout, "ci1", "read:build:registry-token", T0 + 1 * DAY + 15 * HOUR + 60),
        rec(layout, "ci1", "read:build:registry-token", T0 + 5 * DAY + 16 * HOUR),
    ]
    assert feed(det, sorted(stream, key=lambda e: e.ts)) == []
    found = feed(det, after(rec, layout, 8, ("svc1", "read:build:registry-token")))
    assert [f.labels["owner"] for f in found] == ["policies:bld-q2"]
    assert "(secrets of 1 identity sharing policies bld-q2)" in found[0].title


@pytest.mark.parametrize("layout", ["shared", "kv1"])
def test_an_area_belongs_to_the_holders_of_its_readers_policy(rec: Recorded, layout: str) -> None:
    """Regression (eval: ci -> runtime missed): people who hold the service's policy besides their
    own also read its secrets, so no single peer group made 80% of the reads and the area had
    no owner. It belongs to the holders of the policy every reader shares."""
    det = SensitiveFirstAccess(policy=parse_policy("protected = []"))
    stream = habit(rec, layout, 8)
    for d in range(8):
        for h in (9, 13, 16):
            stream.append(rec(layout, "ops1", "read:runtime:jwt-key", T0 + d * DAY + h * HOUR + 90))
    assert feed(det, sorted(stream, key=lambda e: e.ts)) == []
    found = feed(det, after(rec, layout, 8, ("ci1", "read:runtime:jwt-key")))
    assert [(f.severity, f.labels["owner"]) for f in found] == [("high", "policies:svc-a7")]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_on_call_grant_used_for_what_it_is_for_stays_low(rec: Recorded, layout: str) -> None:
    """Regression (eval: 7 of 9 false sensitive-first-access alerts, 4 access-model ones): an
    on-call person's first read of the service's secrets, granted by the on-call policy alone
    (the entry's ``policy_results`` name it), is what that policy is for: low, still recorded.
    A colleague whose team policy does not grant it is refused (medium); a developer whose
    policy's uses so far were its own team's secrets is granted it (high)."""
    det = SensitiveFirstAccess()
    model = AccessModelDetector()
    stream = _team(rec, layout, 8)
    assert feed(det, stream) == []
    assert feed(model, stream) == []
    oncall = after(rec, layout, 8, ("oncall1", "read:runtime:jwt-key"))
    assert [g.name for g in oncall[0].auth.policy_results.granting_policies] == ["pager-z"]  # type: ignore[union-attr]
    found = feed(det, oncall)
    assert [f.severity for f in found] == ["low"]
    assert "granted by policy `pager-z` (its first use)" in found[0].title
    assert found[0].reasons[-1].feature == "grant"
    inferred = feed(model, oncall)
    assert [(f.severity, f.labels["role_source"]) for f in inferred] == [("low", "behaviour")]
    refused = feed(det, after(rec, layout, 8, ("tm1", "read:runtime:jwt-key")))
    granted = feed(det, after(rec, layout, 8, ("dev1", "read:runtime:jwt-key")))
    outside = feed(model, after(rec, layout, 8, ("dev1", "read:runtime:api-key")))
    assert [f.severity for f in refused + granted + outside] == ["medium", "high", "high"]
    # The grant book is part of the state.
    again = SensitiveFirstAccess()
    again.load(json.loads(json.dumps(det.state())))
    assert again.state() == det.state()
