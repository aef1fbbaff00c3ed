"""Contract checks run over every detector, in the spirit of river's ``check_estimator``.

The detectors are discovered through the public surface (:func:`detect.default_rules` plus the
behavioural core, :data:`detect.BEHAVIOUR_DETECTOR`), never listed by hand, and each one must:

* fire at least once on its triggering stream (a detector that never fires proves nothing);
* be deterministic: the same events through two fresh engines give the same alerts and ids;
* survive a snapshot: snapshot mid-stream, restore into a fresh engine, continue, and get
  exactly the alerts of the uninterrupted run;
* explain itself: 1 to 5 reasons, a severity in :data:`detect.SEVERITIES`, a score 0-100, and
  an alert that round-trips through the ``vaultwatch.alert/v1`` JSON;
* read no wall clock: ``time.time`` and friends, and ``datetime.now``, raise while it runs.

Events are real ``AuditEvent`` objects made the way every event is made: audit entries (JSON
lines in Vault's format) parsed by :class:`ingest.parse.Parser`. Each detector has its own small
stream, so the whole suite runs in a couple of seconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

import detect
from detect import (
    BEHAVIOUR_DETECTOR,
    SEVERITIES,
    Alert,
    Engine,
    decode_alert,
    default_rules,
    encode_alert,
)
from ingest.event import AuditEvent
from ingest.parse import Parser

#: Monday 2026-03-02 00:00 UTC.
T0 = 1772409600.0
MIN, HOUR, DAY = 60.0, 3600.0, 86400.0


def _hmac(value: str) -> str:
    return "hmac-sha256:" + hashlib.sha256(value.encode()).hexdigest()


def _token(name: str, policies: list[str], *, entity: str | None = None, **extra: Any) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "client_token": _hmac(f"token-{name}"),
        "accessor": _hmac(f"accessor-{name}"),
        "display_name": name,
        "policies": policies,
        "token_policies": policies,
        "token_type": "service",
    }
    if entity:
        auth["entity_id"] = entity
    auth.update(extra)
    return auth


#: Who makes the requests (the auth block of their entries).
WHO: dict[str, dict[str, Any]] = {
    "root": _token("root", ["root"]),
    "admin": _token("oidc-admin", ["default", "admin"], entity="e-admin"),
    "bob": _token("userpass-bob", ["default"], entity="e-bob"),
    "maker": _token("token-maker", ["default", "token-maker"]),
    "ci": _token("token-ci", ["default", "pxl-core-ci"]),
    "runtime": _token("approle", ["default", "pxl-core-runtime"], entity="e-runtime"),
    "alice": _token("oidc-alice", ["default", "dev-team0"], entity="e-alice"),
    "anon": {},
}


class Log:
    """Writes audit entries (request + response per call) and parses them, like any source."""

    def __init__(self) -> None:
        self.parser = Parser()
        self.n = 0

    def call(
        self,
        who: str,
        op: str,
        path: str,
        ts: float,
        *,
        mount: str | None = None,
        mount_type: str | None = None,
        data: dict[str, Any] | None = None,
        error: str | None = None,
        response: dict[str, Any] | None = None,
        ip: str = "10.0.0.9",
    ) -> list[AuditEvent]:
        self.n += 1
        req: dict[str, Any] = {
            "id": f"00000000-0000-4000-8000-{self.n:012d}",
            "operation": op,
            "path": path,
            "namespace": {"id": "root"},
            "remote_address": f"{ip}:40000",
        }
        if mount is not None:
            req["mount_point"] = mount
            req["mount_type"] = mount_type or "kv"
        if data is not None:
            req["data"] = data
        auth = dict(WHO[who])
        if error and "permission denied" in error:
            auth["policy_results"] = {"allowed": False}
        out = []
        for i, kind in enumerate(("request", "response")):
            t = dt.datetime.fromtimestamp(ts + 0.001 * i, dt.UTC).isoformat().replace("+00:00", "Z")
            entry: dict[str, Any] = {"time": t, "type": kind, "auth": auth, "request": req}
            if kind == "response":
                entry["response"] = response if response is not None else {}
            if error:
                entry["error"] = error
            out.append(self.parser.parse(json.dumps(entry).encode()))
        return out


def _kv(log: Log, who: str, op: str, path: str, ts: float, **kw: Any) -> list[AuditEvent]:
    """A KV v2 call on the ``logos/`` mount (``path`` without the mount)."""
    return log.call(who, op, f"logos/{path}", ts, mount="logos/", mount_type="kv", **kw)


def _issued(policies: list[str], ttl: int) -> dict[str, Any]:
    return {"auth": {**_token("token", policies), "token_ttl": ttl}}


# -- one triggering stream per detector -------------------------------------------------------------
def _root_token_use(log: Log) -> list[AuditEvent]:
    return log.call("bob", "read", "sys/mounts", T0) + log.call("root", "read", "sys/mounts", T0 + MIN)


def _audit_tampering(log: Log) -> list[AuditEvent]:
    return log.call("admin", "read", "sys/audit", T0) + log.call(
        "admin", "delete", "sys/audit/file", T0 + MIN
    )


def _policy_change(log: Log) -> list[AuditEvent]:
    body = {"policy": _hmac("path ...")}
    return log.call("bob", "read", "sys/policies/acl/x", T0) + log.call(
        "bob", "update", "sys/policies/acl/x", T0 + MIN, data=body
    )


def _auth_method_change(log: Log) -> list[AuditEvent]:
    return log.call("admin", "update", "sys/auth/backdoor", T0, data={"type": _hmac("userpass")})


def _secrets_engine_change(log: Log) -> list[AuditEvent]:
    return log.call("admin", "delete", "sys/mounts/legacy", T0)


def _plaintext_secret_in_audit(log: Log) -> list[AuditEvent]:
    return _kv(log, "admin", "read", "data/app/x", T0) + _kv(
        log, "admin", "update", "data/app/db", T0 + MIN, data={"username": "canary-in-clear"}
    )


def _token_excessive_ttl(log: Log) -> list[AuditEvent]:
    ok = log.call("admin", "update", "auth/token/create", T0, response=_issued(["default"], 3600))
    long = log.call(
        "admin", "update", "auth/token/create", T0 + MIN, response=_issued(["default"], 48 * 3600)
    )
    return ok + long


def _orphan_token(log: Log) -> list[AuditEvent]:
    return log.call("admin", "update", "auth/token/create-orphan", T0, response=_issued(["default"], 3600))


def _token_privilege_escalation(log: Log) -> list[AuditEvent]:
    subset = log.call("maker", "update", "auth/token/create", T0, response=_issued(["token-maker"], 3600))
    beyond = log.call(
        "maker", "update", "auth/token/create", T0 + MIN, response=_issued(["pxl-core-runtime"], 3600)
    )
    return subset + beyond


def _login_failure_burst(log: Log) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for i in range(7):
        out += log.call(
            "anon",
            "update",
            "auth/userpass/login/bob",
            T0 + 20 * i,
            error="invalid credentials",
            ip="203.0.113.7",
        )
    return out


def _permission_denied_burst(log: Log) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for i in range(8):
        out += _kv(
            log,
            "bob",
            "read",
            f"data/other/s{i}",
            T0 + 10 * i,
            error="1 error occurred:\n\t* permission denied\n\n",
        )
    return out


def _list_sweep(log: Log) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for i in range(24):
        out += _kv(log, "bob", "list", f"metadata/d{i}/", T0 + 3 * i)
    return out


def _secret_destruction(log: Log) -> list[AuditEvent]:
    return _kv(log, "admin", "update", "data/pxl-core/runtime/old", T0) + _kv(
        log, "admin", "update", "destroy/pxl-core/runtime/old", T0 + MIN, data={"versions": [1]}
    )


def _raft_snapshot(log: Log) -> list[AuditEvent]:
    return log.call("admin", "read", "sys/storage/raft/snapshot", T0)


def _key_export(log: Log) -> list[AuditEvent]:
    enc = log.call("admin", "update", "transit/encrypt/app", T0, mount="transit/", mount_type="transit")
    exp = log.call(
        "admin", "read", "transit/export/encryption-key/exp", T0 + MIN, mount="transit/", mount_type="transit"
    )
    return enc + exp


def _access_model_violation(log: Log) -> list[AuditEvent]:
    return _kv(log, "ci", "read", "data/pxl-core/build/registry-token", T0) + _kv(
        log, "ci", "read", "data/pxl-core/runtime/jwt-key", T0 + MIN
    )


def _rotation_overdue(log: Log) -> list[AuditEvent]:
    # Written once, then only read: the daily JWT key is overdue a day (plus grace) later.
    out = _kv(log, "runtime", "update", "data/pxl-core/runtime/jwt-key", T0, data={"v": _hmac("k")})
    for i in range(1, 4):
        out += _kv(log, "runtime", "read", "data/pxl-core/runtime/jwt-key", T0 + i * 12 * HOUR)
    return out


def _sensitive_first_access(log: Log) -> list[AuditEvent]:
    """A week of habit (the runtime service reads its secrets, CI its build secrets), then the
    CI token reads a runtime secret: one event, no window."""
    out: list[AuditEvent] = []
    for day in range(8):
        for h in range(4):
            ts = T0 + day * DAY + (8 + 3 * h) * HOUR
            out += _kv(log, "runtime", "read", "data/pxl-core/runtime/jwt-key", ts)
            out += _kv(log, "ci", "read", "data/pxl-core/build/registry-token", ts + MIN)
    return out + _kv(log, "ci", "read", "data/pxl-core/runtime/jwt-key", T0 + 8 * DAY + 10 * HOUR)


def _behaviour(log: Log) -> list[AuditEvent]:
    """Two quiet weeks of working-hours reads in a few directories, then a night of mass reads
    and denials from a never-seen network (stolen credentials)."""
    out: list[AuditEvent] = []
    for day in range(14):
        if day % 7 >= 5:
            continue
        for i in range(20):
            ts = T0 + day * DAY + 9 * HOUR + i * 20 * MIN
            out += log.call(
                "alice",
                "read",
                f"secret/data/team0/app{i % 3}/config",
                ts,
                mount="secret/",
                ip=f"10.1.0.{2 + i % 3}",
            )
    night = T0 + 15 * DAY + 2 * HOUR
    for i in range(150):
        path = f"secret/data/team{i % 5}/svc{i}/key"
        out += log.call("alice", "read", path, night + 6 * i, mount="secret/", ip="198.51.100.23")
    for i in range(30):
        out += log.call(
            "alice",
            "read",
            f"secret/data/prod/x{i}",
            night + 950 + 5 * i,
            mount="secret/",
            error="1 error occurred:\n\t* permission denied\n\n",
            ip="198.51.100.23",
        )
    return out


# -- correlating detectors (detect/correlate.py) ------------------------------------------------------
def _session_hijack(log: Log) -> list[AuditEvent]:
    out = log.call("bob", "read", "secret/data/dev/notes", T0, ip="10.20.0.5")
    return out + log.call("bob", "read", "secret/data/dev/notes", T0 + MIN, ip="185.220.101.4")


def _credential_stuffing(log: Log) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for i in range(4):
        out += log.call(
            "anon",
            "update",
            f"auth/userpass/login/user{i}",
            T0 + 30 * i,
            error="invalid credentials",
            ip=f"198.51.100.{10 + i}",
        )
    return out


def _accessor_enumeration(log: Log) -> list[AuditEvent]:
    out = log.call("bob", "read", "auth/token/lookup-self", T0)
    return out + log.call("bob", "list", "auth/token/accessors", T0 + 8 * DAY)


def _capability_probing(log: Log) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for i in range(12):
        out += log.call("ci", "update", "sys/capabilities-self", T0 + 5 * i, data={"paths": [_hmac(f"p{i}")]})
    return out


def _mass_revocation(log: Log) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for i in range(6):
        out += log.call(
            "admin", "update", "auth/token/revoke-accessor", T0 + 10 * i, data={"accessor": _hmac(f"a{i}")}
        )
    return out


def _approle(log: Log, who: str, op: str, sub: str, ts: float, **kw: Any) -> list[AuditEvent]:
    return log.call(who, op, f"auth/approle/{sub}", ts, mount="auth/approle/", mount_type="approle", **kw)


def _secret_id_minting(log: Log) -> list[AuditEvent]:
    out = _approle(log, "ci", "update", "role/app-a/secret-id", T0)
    return out + _approle(log, "maker", "update", "role/app-a/secret-id", T0 + 8 * DAY)


def _approle_role_change(log: Log) -> list[AuditEvent]:
    out = _approle(log, "admin", "read", "role/app-a", T0)
    return out + _approle(
        log,
        "bob",
        "update",
        "role/app-a",
        T0 + 8 * DAY,
        data={"token_policies": [_hmac("admin")], "bind_secret_id": False},
    )


def _identity_change(log: Log) -> list[AuditEvent]:
    out = log.call("bob", "read", "identity/entity/id/e-admin", T0, mount="identity/", mount_type="identity")
    body = {
        "name": _hmac("role-id"),
        "canonical_id": _hmac("e-admin"),
        "mount_accessor": _hmac("auth_approle_1"),
    }
    return out + log.call(
        "bob",
        "update",
        "identity/entity-alias",
        T0 + 8 * DAY,
        mount="identity/",
        mount_type="identity",
        data=body,
    )


def _dynamic_credential_burst(log: Log) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for i in range(25):
        out += log.call(
            "runtime", "read", "database/creds/app", T0 + 4 * i, mount="database/", mount_type="database"
        )
    return out


def _seal_attempt(log: Log) -> list[AuditEvent]:
    return log.call("bob", "read", "sys/health", T0) + log.call(
        "bob", "update", "sys/seal", T0 + MIN, error="1 error occurred:\n\t* permission denied\n\n"
    )


# -- audit completeness (detect/completeness.py) ------------------------------------------------------
def _from(events: list[AuditEvent], source: str) -> list[AuditEvent]:
    return [msgspec.structs.replace(e, source=source) for e in events]


def _audit_device_gap(log: Log) -> list[AuditEvent]:
    """Two devices write the same 60 requests; then device b misses three, then both go on."""
    out: list[AuditEvent] = []
    for i in range(72):
        evs = log.call("bob", "read", "secret/data/dev/notes", T0 + 10 * i)
        out += _from(evs, "a.log") + ([] if 60 <= i < 63 else _from(evs, "b.log"))
    return sorted(out, key=lambda e: e.ts)


def _audit_stream_silence(log: Log) -> list[AuditEvent]:
    """Mon-Wed the stream delivers 60 entries an hour from 9:00 to 13:00; on Thursday it stops
    at 10:00 and resumes at 12:00."""
    out: list[AuditEvent] = []
    for day in range(4):
        for m in range(0, 240, 2):
            ts = T0 + day * DAY + 9 * HOUR + m * MIN
            if day == 3 and HOUR <= m * MIN < 3 * HOUR:
                continue
            out += _from(log.call("ci", "read", "secret/data/ci/build", ts), "audit.log")
    return out


TRIGGERS: dict[str, Callable[[Log], list[AuditEvent]]] = {
    "root-token-use": _root_token_use,
    "audit-tampering": _audit_tampering,
    "policy-change": _policy_change,
    "auth-method-change": _auth_method_change,
    "secrets-engine-change": _secrets_engine_change,
    "plaintext-secret-in-audit": _plaintext_secret_in_audit,
    "token-excessive-ttl": _token_excessive_ttl,
    "orphan-token": _orphan_token,
    "token-privilege-escalation": _token_privilege_escalation,
    "login-failure-burst": _login_failure_burst,
    "permission-denied-burst": _permission_denied_burst,
    "list-sweep": _list_sweep,
    "secret-destruction": _secret_destruction,
    "raft-snapshot": _raft_snapshot,
    "key-export": _key_export,
    "session-hijack": _session_hijack,
    "credential-stuffing": _credential_stuffing,
    "accessor-enumeration": _accessor_enumeration,
    "capability-probing": _capability_probing,
    "mass-revocation": _mass_revocation,
    "secret-id-minting": _secret_id_minting,
    "approle-role-change": _approle_role_change,
    "identity-change": _identity_change,
    "dynamic-credential-burst": _dynamic_credential_burst,
    "seal-attempt": _seal_attempt,
    "access-model-violation": _access_model_violation,
    "rotation-overdue": _rotation_overdue,
    "sensitive-first-access": _sensitive_first_access,
    "audit-device-gap": _audit_device_gap,
    "audit-stream-silence": _audit_stream_silence,
    BEHAVIOUR_DETECTOR: _behaviour,
}

#: Every detector the engine runs by default, found through the public surface.
DETECTORS = [d.name for d in default_rules({})] + [BEHAVIOUR_DETECTOR]


def test_every_detector_is_discovered_and_has_a_trigger() -> None:
    assert len(DETECTORS) == len(set(DETECTORS))
    assert [d.name for d in Engine().detectors] == DETECTORS[:-1]
    assert set(TRIGGERS) == set(DETECTORS), "a new detector needs a triggering stream here"


# -- running ----------------------------------------------------------------------------------------
def _engine(name: str) -> Engine:
    """A fresh engine running only ``name`` (the behavioural core or one pluggable detector)."""
    if name == BEHAVIOUR_DETECTOR:
        return Engine({"model_enabled": False}, seed=5, detectors=[])
    (det,) = [d for d in default_rules({}) if d.name == name]
    return Engine({"behaviour_enabled": False, "model_enabled": False}, seed=5, detectors=[det])


def _stream(name: str) -> list[AuditEvent]:
    events = TRIGGERS[name](Log())
    assert events == sorted(events, key=lambda e: e.ts)
    return events


def _feed(eng: Engine, events: list[AuditEvent], out: dict[str, Alert]) -> None:
    for ev in events:
        for a in eng.process(ev):
            out[a.id] = a


def _end(events: list[AuditEvent]) -> float:
    return events[-1].ts + 3 * DAY


def _run(name: str, events: list[AuditEvent]) -> dict[str, Alert]:
    eng = _engine(name)
    out: dict[str, Alert] = {}
    _feed(eng, events, out)
    for a in eng.flush(_end(events)):
        out[a.id] = a
    return out


@pytest.fixture(scope="module")
def streams() -> dict[str, list[AuditEvent]]:
    return {name: _stream(name) for name in DETECTORS}


@pytest.fixture(scope="module")
def runs(streams: dict[str, list[AuditEvent]]) -> dict[str, dict[str, Alert]]:
    return {name: _run(name, streams[name]) for name in DETECTORS}


# -- the checks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DETECTORS)
def test_fires_on_its_trigger(name: str, runs: dict[str, dict[str, Alert]]) -> None:
    mine = [a for a in runs[name].values() if a.detector == name]
    assert mine, f"{name} never fired on its triggering stream"
    # Only the detector under test runs, so every alert is its own.
    assert all(a.detector == name for a in runs[name].values())


@pytest.mark.parametrize("name", DETECTORS)
def test_deterministic(
    name: str, streams: dict[str, list[AuditEvent]], runs: dict[str, dict[str, Alert]]
) -> None:
    again = _run(name, streams[name])
    assert list(again) == list(runs[name])
    assert [encode_alert(a) for a in again.values()] == [encode_alert(a) for a in runs[name].values()]


@pytest.mark.parametrize("name", DETECTORS)
def test_snapshot_round_trip(
    name: str, streams: dict[str, list[AuditEvent]], runs: dict[str, dict[str, Alert]]
) -> None:
    events = streams[name]
    # Cut inside the trigger: a window or burst half seen must carry over the snapshot.
    cut = len(events) // 2
    first = _engine(name)
    out: dict[str, Alert] = {}
    _feed(first, events[:cut], out)
    blob = first.snapshot()
    resumed = _engine(name)
    resumed.restore(blob)
    _feed(resumed, events[cut:], out)
    for a in resumed.flush(_end(events)):
        out[a.id] = a
    assert {k: encode_alert(a) for k, a in out.items()} == {k: encode_alert(a) for k, a in runs[name].items()}
    # And the restored state is the state: a second snapshot of it restores the same.
    assert resumed.snapshot() == _restored(name, resumed.snapshot()).snapshot()


def _restored(name: str, blob: bytes) -> Engine:
    eng = _engine(name)
    eng.restore(blob)
    return eng


@pytest.mark.parametrize("name", DETECTORS)
def test_explanation_severity_and_score(name: str, runs: dict[str, dict[str, Alert]]) -> None:
    for a in runs[name].values():
        assert 1 <= len(a.explanation) <= 5, (a.title, a.explanation)
        for r in a.explanation:
            assert r.feature and isinstance(r.observed, str) and isinstance(r.baseline, str)
            assert 0.0 <= r.weight
        assert a.severity in SEVERITIES
        assert isinstance(a.score, int) and 0 <= a.score <= 100
        assert a.title and a.dedup_key and a.identity.key
        assert a.id.startswith("va_") and a.count >= 1
        assert a.first_seen <= a.last_seen
        assert decode_alert(encode_alert(a)) == a


class _NoClock(dt.datetime):
    @classmethod
    def now(cls, tz: Any = None) -> Any:
        raise AssertionError("detect read the wall clock (datetime.now)")

    @classmethod
    def utcnow(cls) -> Any:
        raise AssertionError("detect read the wall clock (datetime.utcnow)")

    @classmethod
    def today(cls) -> Any:
        raise AssertionError("detect read the wall clock (datetime.today)")


def _detect_modules() -> Iterator[Any]:
    for mod_name, mod in list(sys.modules.items()):
        if mod is not None and (mod_name == "detect" or mod_name.startswith("detect.")):
            yield mod


@pytest.mark.parametrize("name", DETECTORS)
def test_reads_no_wall_clock(
    name: str,
    streams: dict[str, list[AuditEvent]],
    runs: dict[str, dict[str, Alert]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("detect read the wall clock (time)")

    for fn in (
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "localtime",
        "gmtime",
    ):
        monkeypatch.setattr(time, fn, refuse)
    for mod in _detect_modules():
        if getattr(mod, "datetime", None) is dt.datetime:
            monkeypatch.setattr(mod, "datetime", _NoClock)
        if getattr(mod, "date", None) is dt.date:
            monkeypatch.setattr(mod, "date", _NoClock)
    events = streams[name]
    eng = _engine(name)
    out: dict[str, Alert] = {}
    _feed(eng, events, out)
    for a in eng.flush(_end(events)):
        out[a.id] = a
    eng.restore(eng.snapshot())
    monkeypatch.undo()
    assert list(out) == list(runs[name])


def test_public_names_used_here_are_exported() -> None:
    for name in (
        "BEHAVIOUR_DETECTOR",
        "SEVERITIES",
        "Engine",
        "default_rules",
        "encode_alert",
        "decode_alert",
    ):
        assert name in detect.__all__
