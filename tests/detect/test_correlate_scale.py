"""Cross-identity detectors at the scale of a large organisation, on real OpenBao entries.

Regressions from the scoreboard's large organisations (``bench.eval --size large``): a morning of
hundreds of people logging in from addresses new to the log was "credential stuffing" (49 false
alerts in one organisation), a leaked list replayed during such a morning hid behind the people's
successes, fresh machine instances logging in during a wave were "stuffed passwords that worked",
and a capability probe that straddled a window boundary became its own habit halfway through.

Every entry is a real OpenBao audit entry (userpass and AppRole logins, ``sys/capabilities-self``
checks by many tokens of one policy), re-timed and moved to other source addresses: what a
morning, a botnet and a fleet look like is the same entries at other times and places.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import hvac.exceptions
import msgspec
import pytest

from detect.correlate import correlate_rules
from detect.types import Detector, Finding
from ingest.event import AuditEvent
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer

from .conftest import AuditCapture, retime, run

pytestmark = pytest.mark.integration

#: 07:00 UTC: the start of a working day.
T0 = 1_800_000_000.0 - (1_800_000_000.0 % 86400.0) + 7 * 3600.0
DAY = 86400.0
PAGED = ("medium", "high", "critical")
PEOPLE = 30
PEERS = 20
PASSWORD = "pw-of-a-person-3Fq"


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[AuditEvent]]]:
    """Per step, the response entries OpenBao wrote for it."""
    work = tmp_path_factory.mktemp("bao-scale")
    log = work / "audit.log"
    srv = OpenBaoServer(work, devices=[AuditDevice("file", "file", {"file_path": str(log)})])
    steps: dict[str, list[AuditEvent]] = {}

    def take(name: str) -> None:
        steps[name] = [e for e in cap.take() if e.is_response]

    try:
        srv.start()
        cap = AuditCapture(log)
        c = srv.client()
        c.sys.enable_auth_method("userpass", path="people")
        c.sys.tune_auth_method("people", user_lockout_config={"lockout_disable": True})
        for i in range(PEOPLE):
            c.write(f"auth/people/users/person{i}", password=PASSWORD, token_policies="default")
        c.sys.enable_auth_method("approle", path="fleet")
        c.write("auth/fleet/role/web", token_policies="default")
        role_id = c.read("auth/fleet/role/web/role-id")["data"]["role_id"]
        secret_id = c.write("auth/fleet/role/web/secret-id")["data"]["secret_id"]
        c.sys.create_or_update_policy("svc", 'path "secret/data/svc/*" { capabilities = ["read"] }')
        tokens = [
            c.auth.token.create(policies=["svc"], ttl="1h")["auth"]["client_token"] for _ in range(PEERS)
        ]
        cap.take()
        anon = srv.client(token="")
        for i in range(PEOPLE):
            with contextlib.suppress(hvac.exceptions.VaultError):
                anon.auth.userpass.login(f"person{i}", "a-typo", mount_point="people")
        take("failed")
        for i in range(PEOPLE):
            anon.auth.userpass.login(f"person{i}", PASSWORD, mount_point="people", use_token=False)
        take("ok")
        for _ in range(3):
            anon.auth.approle.login(role_id, secret_id, mount_point="fleet", use_token=False)
        take("machine")
        for tok in tokens:
            srv.client(token=tok).write("sys/capabilities-self", paths=["secret/data/svc/config"])
        take("peer_checks")
        prober = srv.client(token=tokens[0])
        for i in range(15):
            prober.write("sys/capabilities-self", paths=[f"secret/data/other-{i}/key"])
        take("probe")
    finally:
        srv.cleanup()
    yield steps


def _det(name: str) -> Detector:
    (det,) = [d for d in correlate_rules({"warmup_hours": 1.0}) if d.name == name]
    return det


def _paged(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.severity in PAGED]


def _at(event: AuditEvent, ts: float, ip: str) -> AuditEvent:
    return msgspec.structs.replace(retime(event, ts), remote_ip=ip)


def _account(event: AuditEvent) -> str:
    return (event.request.path or event.path).rsplit("/", 1)[-1]


def _morning(bao: dict[str, list[AuditEvent]], start: float) -> list[AuditEvent]:
    """Everyone logs in within half an hour, each from a fresh address of the VPN pool; a third
    mistype first and retype a few seconds later from the same address."""
    out: list[AuditEvent] = []
    for i, ok in enumerate(bao["ok"]):
        ip = f"100.70.{i // 200}.{i % 200 + 10}"
        at = start + i * 55.0
        if i % 3 == 0:
            out.append(_at(bao["failed"][i], at, ip))
        out.append(_at(ok, at + 6.0, ip))
    return out


def _botnet(bao: dict[str, list[AuditEvent]], start: float, victims: range, hit: int) -> list[AuditEvent]:
    """A leaked list replayed from one address per attempt, each in a different network; the
    password of account ``hit`` works, from the last address."""
    out = [_at(bao["failed"][v], start + k * 40.0, f"185.{100 + k}.7.{k + 1}") for k, v in enumerate(victims)]
    return [*out, _at(bao["ok"][hit], start + len(victims) * 40.0, "45.133.9.9")]


def _sorted(*parts: list[AuditEvent]) -> list[AuditEvent]:
    return sorted((e for p in parts for e in p), key=lambda e: e.ts)


# -- credential stuffing --------------------------------------------------------------------------------
def test_a_large_morning_with_typos_is_no_stuffing(bao: dict[str, list[AuditEvent]]) -> None:
    """Regression (org-101, large: 49 false alerts). Thirty people, ten typos, all from addresses
    no request ever came from: the typos were completed by the same account from the same place."""
    morning = _morning(bao, T0)
    assert sum(e.outcome == "login_failed" for e in morning) == 10
    assert not _paged(run(_det("credential-stuffing"), morning))


def test_a_leaked_list_replayed_during_the_morning_is_stuffing(bao: dict[str, list[AuditEvent]]) -> None:
    """Regression: six failures among thirty successes are a fifth of the attempts; the wave is
    what the failures say, so a busy hour does not hide it. The stuffed success is critical; the
    people logging in from the VPN pool meanwhile are not."""
    attack = _botnet(bao, T0 + 600.0, range(20, 26), hit=27)
    morning = _morning(bao, T0)
    found = _paged(run(_det("credential-stuffing"), _sorted(morning, attack)))
    assert [f.severity for f in found] == ["high", "critical"], [(f.severity, f.title) for f in found]
    wave, hit = found
    assert "people" in wave.title
    # A typo that is retyped seconds later may complete the wave; the list's attempts make it.
    failed = {e.request_id for e in [*attack, *morning] if e.outcome == "login_failed"}
    assert set(wave.event_ids) <= failed
    assert len(set(wave.event_ids) & {e.request_id for e in attack}) >= 2
    assert _account(bao["ok"][27]) in hit.title and "45.133.9.9" in hit.title
    assert attack[-1].request_id in hit.event_ids


def test_a_stuffed_password_that_worked_before_the_wave_formed_is_reported(
    bao: dict[str, list[AuditEvent]],
) -> None:
    """Regression (org-102): the list's second attempt worked; the wave formed three attempts later
    and the success inside its window went unreported."""
    fails = [_at(bao["failed"][v], T0 + k * 40.0, f"185.{100 + k}.7.1") for k, v in enumerate(range(3))]
    hit = _at(bao["ok"][5], T0 + 20.0, "5.188.71.120")
    found = _paged(run(_det("credential-stuffing"), _sorted(fails, [hit])))
    assert [f.severity for f in found] == ["high", "critical"]
    assert "5.188.71.120" in found[1].title and hit.request_id in found[1].event_ids


def test_machine_logins_from_fresh_instances_are_no_stuffed_passwords(
    bao: dict[str, list[AuditEvent]],
) -> None:
    """Regression (org-102: four criticals). New instances of a service log in with AppRole from
    addresses nobody used, while a wave runs on a password mount: a role_id and secret_id are no
    password from a leaked list."""
    attack = _botnet(bao, T0, range(6), hit=7)[:-1]
    fleet = [_at(bao["machine"][i % 3], T0 + 100.0 + i * 30.0, f"10.64.94.{116 + i}") for i in range(4)]
    assert {e.mount_type for e in fleet} == {"approle"}
    found = _paged(run(_det("credential-stuffing"), _sorted(attack, fleet)))
    assert [f.severity for f in found] == ["high"], [(f.severity, f.title) for f in found]
    assert not {e.request_id for e in fleet} & set(found[0].event_ids)


def test_one_day_of_logins_from_a_network_is_no_habit(bao: dict[str, list[AuditEvent]]) -> None:
    """Regression (a held-out small organisation): a brute-forced password worked from 203.0.113.7
    the day before; that one success made 203.0/16 the account's "usual place", and the list's
    failure on it from 203.0.113.133 did not count, so the wave never formed."""
    brute = [_at(bao["failed"][3], T0 + i * 3.0, "203.0.113.7") for i in range(12)]
    brute.append(_at(bao["ok"][3], T0 + 40.0, "203.0.113.7"))
    day = T0 + DAY
    wave = [
        _at(bao["failed"][0], day, "5.188.10.54"),
        _at(bao["failed"][3], day + 30.0, "203.0.113.133"),
        _at(bao["failed"][5], day + 70.0, "203.0.113.206"),
    ]
    found = _paged(run(_det("credential-stuffing"), brute + wave))
    assert [f.severity for f in found] == ["high"] and wave[-1].request_id in found[0].event_ids
    # A place the account logs in from on two days is its habit: its failure there is the person.
    habit = [_at(bao["ok"][3], T0 + d * DAY - 3600.0, "203.0.113.7") for d in range(2)]
    assert not _paged(run(_det("credential-stuffing"), habit + wave))


def test_stuffing_state_round_trips_mid_wave(bao: dict[str, list[AuditEvent]]) -> None:
    events = _sorted(_morning(bao, T0), _botnet(bao, T0 + 600.0, range(20, 26), hit=27))
    whole = [(f.severity, f.title) for f in _paged(run(_det("credential-stuffing"), events))]
    cut = next(i for i, e in enumerate(events) if e.remote_ip == "185.102.7.3")
    first = _det("credential-stuffing")
    found = run(first, events[:cut])
    second = _det("credential-stuffing")
    second.load(json.loads(json.dumps(first.state())))
    found += run(second, events[cut:])
    assert [(f.severity, f.title) for f in _paged(found)] == whole and whole


# -- capability probing ------------------------------------------------------------------------------
def test_a_probe_straddling_a_window_boundary_is_no_habit_of_itself(bao: dict[str, list[AuditEvent]]) -> None:
    """Regression (org-102): 15 distinct paths checked in 11 seconds, 8 of them before a 10-minute
    boundary; those 8 became the identity's "usual" and raised its bar to 33."""
    boundary = T0 - (T0 % 600.0) + 8 * DAY
    probes = [retime(e, boundary - 5.6 + i * 0.7) for i, e in enumerate(bao["probe"])]
    assert sum(e.ts < boundary for e in probes) == 8
    found = _paged(run(_det("capability-probing"), probes))
    assert len(found) == 1 and "15 distinct paths" not in found[0].title, [f.title for f in found]
    assert "no checks before" in found[0].reasons[1].observed


def test_a_fleet_of_peers_does_not_raise_one_members_bar(bao: dict[str, list[AuditEvent]]) -> None:
    """Twenty tokens of one policy each check one path every hour for a week (twenty checks per
    window across the group); one of them then probes fifteen paths. A peer's habit is what one
    member does, not the group's sum, or the bar would grow with the size of the fleet."""
    checks = bao["peer_checks"]
    assert len({e.identity.key for e in checks}) == PEERS
    habit = [retime(e, T0 + h * 3600.0 + i * 2.0) for h in range(7 * 24) for i, e in enumerate(checks)]
    probes = [retime(e, T0 + 8 * DAY + i * 3.0) for i, e in enumerate(bao["probe"])]
    found = _paged(run(_det("capability-probing"), habit + probes))
    assert len(found) == 1 and found[0].identity.key == probes[0].identity.key
    # Benign: the fleet's own hourly checks never alert.
    assert not _paged(run(_det("capability-probing"), habit))


def test_an_identity_that_checks_many_paths_daily_is_judged_by_that_habit(
    bao: dict[str, list[AuditEvent]],
) -> None:
    daily = [retime(e, T0 + d * DAY + i * 2.0) for d in range(8) for i, e in enumerate(bao["probe"])]
    found = run(_det("capability-probing"), daily)
    assert not _paged([f for f in found if f.last_ts >= T0 + DAY])
