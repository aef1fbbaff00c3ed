"""Learned rotation schedules and a secret's own lateness (issue 14), on a real OpenBao's entries.

A secret outside every configured rotation class but rewritten by a job on a steady period is
tracked as if it had a class with that period, whatever it is called; secrets people edit now and
then never get a schedule. The grace after a period also covers the lateness the secret itself
showed on earlier rotations, never a whole skipped period.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from detect.policy import RotationTracker, job_cadence, learned_period
from detect.types import Finding
from ingest.event import AuditEvent

from .conftest import CANARY_SECRET, Scenario, retime, run

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0
HOUR, DAY = 3600.0, 86400.0


def _write(s: Scenario, name: str) -> list[AuditEvent]:
    """The real request/response pair writing ``secret/bulk/<name>`` (a path no class covers)."""
    return [e for e in s["bulk_setup"] if e.path == f"secret/data/bulk/{name}"]


def _at(events: list[AuditEvent], ts: float) -> list[AuditEvent]:
    return [retime(e, ts + i * 0.001) for i, e in enumerate(events)]


def _writes(rt: RotationTracker, events: list[AuditEvent], times: list[float]) -> list[Finding]:
    out: list[Finding] = []
    for t in times:
        out += run(rt, _at(events, t))
    return out


def test_a_secret_rewritten_daily_gets_a_learned_schedule(bao_scenario: Scenario) -> None:
    s0 = _write(bao_scenario, "s0")
    assert s0 and all(e.path == "secret/data/bulk/s0" for e in s0)
    rt = RotationTracker(learn=True)
    times = [T0 + d * DAY + (d % 3) * 600.0 for d in range(7)]  # 02:00-ish, minutes of jitter
    assert _writes(rt, s0, times) == []
    last = times[-1]
    assert rt.due(last + 1.09 * DAY) == []  # within the 10% grace
    late = rt.due(last + 1.2 * DAY)
    assert len(late) == 1
    f = late[0]
    assert f.detector == "rotation-overdue" and f.severity == "medium"
    assert f.paths == ("secret/bulk/s0",) and f.labels["rotation_class"] == "learned schedule"
    assert (
        "learned schedule: written every ~1d by token on 7 earlier occasions, each within 10% of the "
        "period (a job's cadence); last" in f.reasons[0].baseline
    )
    assert rt.due(last + 1.5 * DAY) == []  # once per missed period
    assert len(rt.due(last + 2.2 * DAY)) == 1
    # The schedule and the write history survive a restart, without any secret value.
    blob = json.dumps(rt.state())
    assert CANARY_SECRET not in blob
    twin = RotationTracker(learn=True)
    twin.load(json.loads(blob))
    assert len(twin.due(last + 3.2 * DAY)) == 1
    # The job resumes: the lapse (a skip) does not unlearn the schedule.
    assert _writes(twin, s0, [last + 3.3 * DAY]) == []
    assert twin.due(last + 4.3 * DAY) == []
    assert len(twin.due(last + 4.5 * DAY)) == 1


def test_a_secret_edited_irregularly_never_gets_a_schedule(bao_scenario: Scenario) -> None:
    s1 = _write(bao_scenario, "s1")
    rt = RotationTracker(learn=True)
    times = [T0, T0 + 2 * HOUR, T0 + 3 * DAY, T0 + 4 * DAY, T0 + 11 * DAY]
    assert _writes(rt, s1, times) == []
    assert rt.due(T0 + 60 * DAY) == []
    # Two writes are no schedule; nor is a period under an hour.
    assert learned_period([0.0, DAY]) is None
    assert learned_period([0.0, 1800.0, 3600.0, 5400.0]) is None
    assert learned_period([0.0, DAY, 2 * DAY]) == (DAY, 2)


def test_configured_classes_keep_precedence(bao_scenario: Scenario) -> None:
    # jwt-key is in the daily "jwt-signing-keys" class: written weekly, it is judged daily.
    jwt = [e for e in bao_scenario["setup"] if e.path.endswith("runtime/jwt-key")]
    rt = RotationTracker(learn=True)
    found = _writes(rt, jwt, [T0 + w * 7 * DAY for w in range(4)])
    assert found and {f.labels["rotation_class"] for f in found} == {"jwt-keys"}


def test_a_job_that_habitually_runs_late_is_not_overdue(bao_scenario: Scenario) -> None:
    """Regression (eval: "not rotated for 30.2h (every 1d)" at medium on a daily secret whose job
    often ran hours late). The grace covers the lateness the secret showed before."""
    jwt = [e for e in bao_scenario["setup"] if e.path.endswith("runtime/jwt-key")]
    rt = RotationTracker()
    times = [T0, T0 + 30 * HOUR, T0 + 2 * DAY, T0 + 3 * DAY + 5 * HOUR, T0 + 4 * DAY]
    found = _writes(rt, jwt, times)
    # The first late runs are news (beyond 10% of a day), later ones are the job's habit.
    assert len(found) == 1
    assert _writes(rt, jwt, [T0 + 5 * DAY + 6 * HOUR]) == []
    # A skipped rotation (a whole period) still is overdue.
    last = T0 + 5 * DAY + 6 * HOUR
    assert rt.due(last + 1.2 * DAY) == []
    late = rt.due(last + 1.4 * DAY)
    assert len(late) == 1 and "every 1d" in late[0].title


# -- default on: a job's schedule, never a person's habit (issue 14 work item 2) --------------------
def _by(events: list[AuditEvent], key: str) -> list[AuditEvent]:
    """The same real entries, made by another identity (a colleague editing the same secret)."""
    return [msgspec.structs.replace(e, identity=msgspec.structs.replace(e.identity, key=key)) for e in events]


def test_learned_schedules_are_on_by_default(bao_scenario: Scenario) -> None:
    """Regression (eval: rotation-overdue 16/20, the skipped rotations of secrets outside the
    configured globs were missed): a job's daily rewrite is learned without any setting."""
    s0 = _write(bao_scenario, "s0")
    rt = RotationTracker()
    times = [T0 + d * DAY + (d % 3) * 40.0 for d in range(8)]  # a scheduler: seconds of jitter
    assert _writes(rt, s0, times) == []
    assert [f.labels["rotation_class"] for f in rt.due(times[-1] + 1.2 * DAY)] == ["learned schedule"]


def test_a_person_editing_daily_at_office_hours_gets_no_schedule(bao_scenario: Scenario) -> None:
    """Regression (eval: ~100 false alerts when learned schedules were on): people who edit a
    secret about daily, hours apart from one day to the next, kept a ratio-1.5 "schedule" and
    were "overdue" on their first day off. A period kept to minutes is a job's; hours are not."""
    s1 = _write(bao_scenario, "s1")
    rt = RotationTracker(learn=True)  # the default now; explicit, as it was when the alerts came
    drift = [0.0, 3.0, 1.0, 5.0, 2.0, 4.0, 0.5, 3.5]  # office hours: 09:00-14:00
    times = [T0 + d * DAY + h * HOUR for d, h in enumerate(drift)]
    assert learned_period(times) is not None  # regular enough for the old rule
    assert not job_cadence(times, DAY)
    assert _writes(rt, s1, times) == []
    assert rt.due(times[-1] + 3 * DAY) == []


def test_a_secret_two_people_take_turns_on_gets_no_schedule(bao_scenario: Scenario) -> None:
    s1 = _write(bao_scenario, "s1")
    other = _by(s1, "entity:colleague")
    rt = RotationTracker(learn=True)
    for d in range(8):
        run(rt, _at(s1 if d % 2 else other, T0 + d * DAY))
    assert rt.due(T0 + 12 * DAY) == []
    # Three precise occasions are not enough to tell a job from a coincidence.
    lone = RotationTracker()
    assert _writes(lone, s1, [T0, T0 + DAY, T0 + 2 * DAY]) == []
    assert lone.due(T0 + 6 * DAY) == []
    # The writers survive a restart with the schedule.
    job = RotationTracker()
    _writes(job, s1, [T0 + d * DAY for d in range(5)])
    twin = RotationTracker()
    twin.load(json.loads(json.dumps(job.state())))
    assert [f.paths for f in twin.due(T0 + 5.2 * DAY)] == [("secret/bulk/s1",)]


def test_a_person_on_a_precise_cadence_gets_no_schedule(bao_scenario: Scenario) -> None:
    """Regression (the demo: a developer's scratch secret, written every day at the same minute,
    was "not rewritten for 47.7h" the day she stopped): the writer logged in with a username
    (Vault's userpass, LDAP, Okta and RADIUS tokens carry ``username`` in their metadata), so the
    cadence is a person's habit, not a job's, however regular."""
    s0 = _write(bao_scenario, "s0")
    person = [
        msgspec.structs.replace(
            e,
            identity=msgspec.structs.replace(e.identity, key="entity:alice", metadata={"username": "alice"}),
        )
        for e in s0
    ]
    times = [T0 + d * DAY + (d % 3) * 40.0 for d in range(8)]  # the precision of a scheduler
    rt = RotationTracker()
    assert _writes(rt, person, times) == []
    assert rt.due(times[-1] + 3 * DAY) == []
    # The same writes by a machine's token are a job's schedule.
    job = RotationTracker()
    _writes(job, s0, times)
    assert [f.labels["rotation_class"] for f in job.due(times[-1] + 1.2 * DAY)] == ["learned schedule"]
