"""``credential-stuffing`` on real OpenBao login entries (the shared ``bao_scenario``).

Each entry is a real userpass login response (failed or succeeded), re-timed and moved to another
source address: what a botnet replaying a leaked list looks like next to what a large
organisation's morning looks like (many people logging in from addresses new to the log).
"""

from __future__ import annotations

import msgspec
import pytest

from detect.correlate import correlate_rules
from detect.types import Detector, Finding
from ingest.event import AuditEvent

from .conftest import Scenario, retime, run

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0
PAGED = ("medium", "high", "critical")


def _stuffing() -> Detector:
    (det,) = [d for d in correlate_rules({}) if d.name == "credential-stuffing"]
    return det


def _moved(events: list[AuditEvent], start: float, ips: list[str], step: float = 20.0) -> list[AuditEvent]:
    """The response entries of ``events``, one per address of ``ips`` (cycled), ``step`` apart."""
    resp = [e for e in events if e.is_response]
    return [
        msgspec.structs.replace(retime(resp[i % len(resp)], start + i * step), remote_ip=ip)
        for i, ip in enumerate(ips)
    ]


def _paged(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.severity in PAGED]


def test_a_morning_of_logins_from_new_addresses_is_no_stuffing(bao_scenario: Scenario) -> None:
    """Regression (scoreboard, a large organisation: 27 addresses new to the log logged in to 14
    accounts within 30 minutes with 2 typos, and raised a high wave and six criticals). Most of
    the attempts succeeded: people, not a leaked list."""
    s = bao_scenario
    people = _moved(s["login_after_burst"], T0, [f"100.118.132.{i}" for i in range(10, 22)])
    typos = _moved(s["spray"], T0 + 30.0, ["100.118.132.40", "100.118.132.41"])
    assert {e.outcome for e in people} == {"ok"} and {e.outcome for e in typos} == {"login_failed"}
    morning = sorted([*people, *typos], key=lambda e: e.ts)
    assert _paged(run(_stuffing(), morning)) == []


def test_a_leaked_list_replayed_from_many_addresses_is_stuffing(bao_scenario: Scenario) -> None:
    s = bao_scenario
    fails = _moved(s["spray"], T0, [f"185.220.{i}.7" for i in range(1, 7)])
    hit = _moved(s["login_after_burst"], T0 + 200.0, ["45.133.9.9"])
    found = _paged(run(_stuffing(), [*fails, *hit]))
    assert [f.severity for f in found] == ["high", "critical"], [(f.severity, f.title) for f in found]
    assert "userpass" in found[0].title and "user0" in found[0].title
    assert "bob" in found[1].title and "45.133.9.9" in found[1].title
