"""The access model and the rotation tracker: loading, matching, violations, deadlines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detect.errors import ConfigError, DetectError
from detect.policy import (
    AccessModelDetector,
    PolicyError,
    RotationTracker,
    default_policy,
    parse_duration,
    parse_policy,
    secret_target,
)
from detect.rules import default_rules
from ingest.event import Identity
from vaultwatch.settings import load_policy

from .conftest import CANARY_SECRET, Scenario, retime, run

T0 = 1_800_000_000.0
HOUR, DAY = 3600.0, 86400.0

GOOD_ROLE = """
[[roles]]
name = "ops"
match = [{ policy = "ops" }]
allow = [{ path = "kv/*", operations = ["read"] }]
"""


# -- loading --------------------------------------------------------------------------------------
def test_default_policy_encodes_the_seed() -> None:
    p = default_policy()
    assert [r.name for r in p.roles] == ["runtime", "ci", "developer"]
    runtime, ci, dev = p.roles
    assert runtime.confined and ci.confined and not dev.confined
    assert ci.max_token_ttl == HOUR and dev.allow == ()
    assert {c.name: c.every for c in p.rotation} == {
        "jwt-keys": DAY,
        "api-keys": 7 * DAY,
        "tls-certificates": 30 * DAY,
        "database-credentials": None,
    }
    assert p.rotation_class("logos/pxl-core/runtime/db-creds").on_deploy  # type: ignore[union-attr]
    approle = Identity(
        key="entity:x", kind="entity", display_name="approle", metadata={"role_name": "pxl-core-runtime"}
    )
    assert p.role_for(approle) is runtime
    userpass = Identity(key="entity:y", kind="entity", display_name="userpass-alice", policies=("default",))
    assert p.role_for(userpass) is dev
    assert (
        p.role_for(Identity(key="login:userpass:alice", kind="login", display_name="userpass-alice")) is None
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("roles = [", "not valid TOML"),
        ("colour = 1", "top level: unknown key(s) colour"),
        ("version = 2", "unsupported policy version"),
        ("[[roles]]\nname = 'x'\nmatch = []", "roles[0] (x).match: expected a non-empty list"),
        ("[[roles]]\nname = 'x'\nmatch = [{}]", "empty matcher would match every identity"),
        ("[[roles]]\nname = 'x'\nmatch = [{ polcy = 'a' }]", "unknown key(s) polcy"),
        (
            "[[roles]]\nname = 'x'\nmatch = [{ policy = 'a' }]\nallow = [{ path = 'kv/*', operations = ['wirte'] }]",
            "roles[0] (x).allow[0].operations[0]: unknown operation 'wirte'",
        ),
        ("[[roles]]\nname = 'x'\nmax_token_ttl = '1 fortnight'\nmatch = [{ policy = 'a' }]", "max_token_ttl"),
        ("[[roles]]\nname = 'x'\nmatch = [{ auth_mount = 'approle' }]", 'like "auth/approle/"'),
        (GOOD_ROLE + GOOD_ROLE, "duplicate role name(s) ops"),
        ("[[rotation]]\nname = 'k'\npaths = ['a/*']", "exactly one of every"),
        ("[[rotation]]\nname = 'k'\npaths = ['a/*']\nevery = '1d'\non = 'deploy'", "exactly one of every"),
        ("[[rotation]]\nname = 'k'\npaths = ['a/*']\nevery = -5", "must be positive"),
        ("[[rotation]]\nname = 'k'\npaths = []\nevery = '1d'", "at least one path glob"),
        ("[rotation_deploy]\npaths = ['a']\nroles = ['ci']", "rotation_deploy.roles: unknown role(s) ci"),
    ],
)
def test_bad_policy_files_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "site.toml")
    assert str(info.value).startswith("site.toml: ")
    assert message in str(info.value)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, DetectError)


def test_load_policy_from_file(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text(GOOD_ROLE)
    assert [r.name for r in load_policy(f).roles] == ["ops"]
    with pytest.raises(PolicyError, match="missing.toml: cannot read policy file"):
        load_policy(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "bin.toml")
    assert load_policy(None).source == default_policy().source
    # detect reads no files: the shell loads the file and hands over the parsed policy.
    rules = default_rules({"policy": load_policy(f)})
    access = next(d for d in rules if d.name == "access-model-violation")
    assert isinstance(access, AccessModelDetector) and access.policy.roles[0].name == "ops"
    with pytest.raises(ConfigError, match="detect reads no files"):
        default_rules({"policy_file": str(f)})
    with pytest.raises(ConfigError, match="must be an AccessPolicy"):
        default_rules({"policy": GOOD_ROLE})


def test_detect_reads_no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default policy is data: building every detector opens nothing."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("detect opened a file")

    monkeypatch.setattr("builtins.open", refuse)
    monkeypatch.setattr(Path, "read_text", refuse)
    monkeypatch.setattr(Path, "read_bytes", refuse)
    monkeypatch.setattr(Path, "open", refuse)
    names = {d.name for d in default_rules({})}
    assert {"access-model-violation", "rotation-overdue"} <= names
    assert [r.name for r in default_policy().roles] == ["runtime", "ci", "developer"]


def test_parse_duration() -> None:
    assert [parse_duration(v) for v in (90, "90s", "25h", "7d", "2w", "1.5h")] == [
        90.0,
        90.0,
        25 * HOUR,
        7 * DAY,
        14 * DAY,
        1.5 * HOUR,
    ]
    for bad in ("soon", True, 0, "-1h", float("inf")):
        with pytest.raises(PolicyError):
            parse_duration(bad)


# -- access model on real entries -----------------------------------------------------------------
@pytest.mark.integration
def test_secret_target_strips_the_kv2_api_segment(bao_scenario: Scenario) -> None:
    s = bao_scenario
    ev = [e for e in s["runtime_write"] if e.is_response][0]
    assert secret_target(ev)[:3] == ("logos/pxl-core/runtime/jwt-key", "update", "data")
    ev = [e for e in s["destroy"] if e.is_response][0]
    assert secret_target(ev)[:3] == ("logos/pxl-core/runtime/old-key", "delete", "destroy")
    ev = [e for e in s["kv1_delete"] if e.is_response][0]
    assert secret_target(ev)[:3] == ("legacy/app", "delete", "plain")


@pytest.mark.integration
def test_access_model_violations(bao_scenario: Scenario) -> None:
    s = bao_scenario
    for benign in ("runtime_ok", "ci_token", "ci_build_read", "developer_ok", "setup", "policy_write"):
        assert run(AccessModelDetector(), s[benign]) == [], benign
    cases = {
        "runtime_write": (
            "high",
            "runtime identity update logos/pxl-core/runtime/jwt-key",
            "Vault allowed it",
        ),
        "ci_runtime_allowed": ("high", "ci identity read logos/pxl-core/runtime/api-key", "Vault allowed it"),
        "ci_runtime_denied": ("medium", "ci identity read logos/pxl-core/runtime/jwt-key", "denied"),
        "developer_build_read": (
            "high",
            "developer identity read logos/pxl-core/build/registry-token",
            "allowed",
        ),
        "developer_denied": ("medium", "developer identity read logos/pxl-core/runtime/jwt-key", "denied"),
    }
    for step, (severity, what, verdict) in cases.items():
        found = run(AccessModelDetector(), s[step])
        assert [f.severity for f in found] == [severity], step
        assert what in found[0].title and verdict in found[0].title, found[0].title
        assert found[0].family == "policy" and found[0].alerting
        assert found[0].event_ids == (s[step][-1].request_id,)
        assert found[0].reasons[0].feature == "role"


@pytest.mark.integration
def test_ci_token_ttl_over_the_role_maximum(bao_scenario: Scenario) -> None:
    s = bao_scenario
    det = AccessModelDetector()
    found = run(det, s["ci_long_token"])
    # Reported at issue (attributed to the creator) and not again when the token is used.
    assert len(found) == 1 and found[0].severity == "medium"
    assert "ci token issued with TTL 2d (role maximum 1h)" in found[0].title
    assert found[0].identity.is_root
    # A detector that only sees the token in use reports it there, once.
    use_only = [e for e in s["ci_long_token"] if "registry-token" in e.path]
    fresh = AccessModelDetector()
    used = run(fresh, use_only + use_only)
    assert (
        len(used) == 1 and "in use" in used[0].title and used[0].identity.display_name == "token-ci-nightly"
    )
    again = AccessModelDetector()
    again.load(json.loads(json.dumps(fresh.state())))
    assert run(again, use_only) == []


@pytest.mark.integration
def test_custom_policy_confines_a_role_everywhere(bao_scenario: Scenario) -> None:
    policy = parse_policy(
        """
        protected = ["logos/*"]
        housekeeping = ["auth/token/lookup-self"]
        [[roles]]
        name = "break-glass"
        confined = true
        match = [{ policy = "root" }]
        allow = [{ path = "logos/*", operations = ["read", "list"] }]
        """
    )
    det = AccessModelDetector(policy)
    found = run(det, bao_scenario["audit_list"])
    assert {f.paths[0] for f in found} == {"sys/audit", "sys/mounts"}
    assert run(AccessModelDetector(policy), bao_scenario["list_few"]) == []


# -- rotation -------------------------------------------------------------------------------------
def at(events: list, ts: float) -> list:
    return [retime(e, ts + i * 0.001) for i, e in enumerate(events)]


@pytest.mark.integration
def test_rotation_overdue_once_per_period(bao_scenario: Scenario) -> None:
    s = bao_scenario
    rt = RotationTracker()
    assert run(rt, at(s["setup"], T0)) == []  # jwt, api, tls and db secrets written at T0
    # Daily, with the default grace of 10% (2.4h): a nightly job running late is not a miss.
    assert rt.due(T0 + 26 * HOUR) == []
    late = rt.due(T0 + 27 * HOUR)
    assert [f.paths for f in late] == [("logos/pxl-core/runtime/jwt-key",)]
    f = late[0]
    assert f.detector == "rotation-overdue" and f.family == "rotation" and f.severity == "medium"
    assert f.identity.key == "secret:logos/pxl-core/runtime/jwt-key"
    assert f.first_ts == pytest.approx(T0 + 26.4 * HOUR, abs=1.0)
    assert "not rotated for 27h (every 1d)" in f.title and f.reasons[1].observed == "36m"
    assert f.event_ids and f.event_ids[0] in {e.request_id for e in s["setup"]}
    assert rt.due(T0 + 30 * HOUR) == []  # same overdue period: reported once
    assert len(rt.due(T0 + 51 * HOUR)) == 1  # next missed period
    # Missed periods while idle are skipped, not replayed one by one; three missed is high.
    assert [x.severity for x in rt.due(T0 + 4 * DAY + HOUR)] == ["high"]
    # A new write resets the clock.
    assert run(rt, at(s["runtime_write"], T0 + 4 * DAY + 2 * HOUR)) == []
    assert rt.due(T0 + 5 * DAY + 4 * HOUR) == []
    assert len(rt.due(T0 + 5 * DAY + 5 * HOUR)) == 1
    # Weekly (grace 16.8h) and monthly (grace 3d) classes.
    assert "api-keys" not in {x.labels["rotation_class"] for x in rt.due(T0 + 7 * DAY + 16 * HOUR)}
    assert {x.labels["rotation_class"] for x in rt.due(T0 + 7 * DAY + 17 * HOUR)} == {"api-keys"}
    assert "tls-certificates" not in {x.labels["rotation_class"] for x in rt.due(T0 + 32 * DAY)}
    assert "tls-certificates" in {x.labels["rotation_class"] for x in rt.due(T0 + 33 * DAY + HOUR)}


def test_rotation_grace_is_configurable() -> None:
    policy = parse_policy("[[rotation]]\nname = 'k'\npaths = ['kv/k']\nevery = '1d'\ngrace = 0")
    assert policy.rotation[0].slack == 0.0
    assert (
        parse_policy("[[rotation]]\nname = 'k'\npaths = ['kv/k']\nevery = '1d'\ngrace = '1h'")
        .rotation[0]
        .slack
        == HOUR
    )
    assert default_policy().rotation[0].slack == 0.1 * DAY


@pytest.mark.integration
def test_rotation_via_observe_and_first_sight(bao_scenario: Scenario) -> None:
    s = bao_scenario
    rt = RotationTracker()
    assert run(rt, at(s["runtime_ok"], T0)) == []  # only a read: tracked from first sight
    found = run(rt, at(s["developer_ok"], T0 + 27 * HOUR))  # any later event moves time on
    assert len(found) == 1 and "not written since first seen" in found[0].reasons[0].observed
    assert found[0].event_ids == ()


@pytest.mark.integration
def test_database_credentials_rotate_on_deploy(bao_scenario: Scenario) -> None:
    s = bao_scenario
    rt = RotationTracker()
    run(rt, at(s["setup"], T0))
    assert run(rt, at(s["ci_build_read"], T0 + HOUR)) == []  # the registry-token read marks a deploy
    assert rt.due(T0 + 1.9 * HOUR) == []
    late = rt.due(T0 + 2.1 * HOUR)
    assert len(late) == 1 and late[0].labels["rotation_class"] == "database-credentials"
    assert "not rotated after the deploy" in late[0].title
    assert rt.due(T0 + 5 * HOUR) == []
    # The same read by a developer (or an operator checking by hand) is not a deploy.
    rt3 = RotationTracker()
    run(rt3, at(s["setup"], T0))
    run(rt3, at(s["developer_build_read"], T0 + HOUR))
    assert rt3.due(T0 + 3 * HOUR) == []
    # Deploy followed by a rewrite within the hour: nothing to report; state survives a restart.
    rt2 = RotationTracker()
    run(rt2, at(s["setup"], T0))
    run(rt2, at(s["ci_build_read"], T0 + HOUR))
    restored = RotationTracker()
    restored.load(json.loads(json.dumps(rt2.state())))
    assert run(restored, at(s["plaintext_write"], T0 + 1.5 * HOUR)) == []  # writes db-creds
    assert restored.due(T0 + 3 * HOUR) == []
    blob = json.dumps(restored.state())
    assert CANARY_SECRET not in blob
