"""Realistic traffic against a real OpenBao server, on a compressed clock, with labelled attacks.

:class:`Traffic` sets up an organisation on a real OpenBao server (a KV v2 mount ``logos/``,
policies, AppRole services, CI pipelines, a rotation job, humans on userpass, admins), then
replays weeks of its working life as *real* requests through hvac, in a few seconds of wall time.
Every identity speaks from its own pretend address: the server is started with a second listener
that trusts ``X-Forwarded-For`` from loopback (:func:`forwarding_listener`), so the audit entries'
``request.remote_address`` differs per identity without rewriting anything.

The clock is compressed: each request is stamped with a *simulated* time when it is made, and
:meth:`Traffic.rewrite` copies the server's own audit log, replacing only each entry's top-level
``time``. Entries are matched to requests by position: the file audit device writes both entries
of a request before the HTTP response returns, so the log's size after each call bounds that
call's entries (checked against the ``request_id`` hvac returns, when it returns one). Nothing is
invented: every line of the output is a line the server wrote.

Attacks (:data:`ATTACK_KINDS`) are injected after a warm-up; each is labelled with the request
ids it made, so a detector's alerts can be scored per scenario (see :class:`GeneratedLog`).

The module is long (about 1100 lines) because it is one organisation: the setup, each kind of
benign actor and each attack share the same identities, paths and simulated clock, and are read
together when a scenario's ground truth is in doubt.

>>> forwarding_listener(8300).count("x_forwarded_for_authorized_addrs")
1
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

from ..errors import VaultwatchError
from .servers import AuditDevice, OpenBaoServer, free_port

__all__ = [
    "ATTACK_KINDS",
    "BENIGN",
    "SETUP",
    "SIM_START",
    "App",
    "GeneratedLog",
    "Scenario",
    "Traffic",
    "TrafficError",
    "forwarding_listener",
    "generate",
    "iter_labelled",
    "traffic_server",
]

log = logging.getLogger(__name__)

#: Simulated start: a Monday, 00:00 UTC. Office hours and weekends are reckoned in UTC.
SIM_START: Final = datetime(2026, 9, 7, tzinfo=UTC)
BENIGN: Final = "benign"
SETUP: Final = "setup"
DAY: Final = 86400.0
HOUR: Final = 3600.0
MOUNT: Final = "logos"

#: Every attack kind :meth:`Traffic.plan_attacks` can inject, in schedule order.
ATTACK_KINDS: Final = (
    "stolen-credential",
    "enumeration",
    "brute-force",
    "privilege-escalation-policy",
    "privilege-escalation-token",
    "slow-harvest",
    "root-token-use",
    "audit-tampering",
    "mass-read",
    "developer-reads-runtime",
    "secret-destruction",
    "hmac-disabled-leak",
    "backdoor-auth-method",
)


class TrafficError(VaultwatchError, RuntimeError):
    """The generator could not set up the organisation or match the log to its requests."""


def forwarding_listener(port: int) -> str:
    """HCL for a second listener on ``127.0.0.1:port`` that trusts ``X-Forwarded-For`` from loopback.

    The dev listener cannot be configured, so the generator talks to this one; the audit entries
    then carry the forwarded client address as ``request.remote_address``.
    """
    return (
        'listener "tcp" {\n'
        f'  address = "127.0.0.1:{port}"\n'
        "  tls_disable = true\n"
        '  x_forwarded_for_authorized_addrs = "127.0.0.1/32"\n'
        "  x_forwarded_for_reject_not_present = false\n"
        "}\n"
    )


# -- the organisation -------------------------------------------------------------------------
@dataclass(frozen=True)
class App:
    """One application: its runtime and build secrets, how many instances run, its pod subnet."""

    name: str
    runtime: tuple[str, ...]
    build: tuple[str, ...]
    instances: int
    subnet: int
    deploy_days: tuple[int, ...]  # weekdays, 0 = Monday
    pipelines: tuple[int, int]  # CI runs per weekday (min, max)


APPS: Final = (
    App(
        "pxl-core",
        ("jwt-key", "api-keys", "tls", "db"),
        ("registry-token", "cosign-key"),
        4,
        1,
        (),  # pxl-core deploys from its pipelines (see Traffic._pipeline)
        (2, 4),
    ),
    App("billing", ("db", "stripe-key", "webhook-secret"), ("registry-token",), 3, 2, (2,), (1, 4)),
    App("search", ("es-creds", "api-keys"), ("registry-token",), 2, 3, (0,), (1, 3)),
    App("notify", ("smtp", "twilio-token"), ("registry-token",), 2, 4, (3,), (1, 3)),
)
SHARED_SECRETS: Final = (
    "shared/dev/sandbox-db",
    "shared/dev/feature-flags",
    "shared/dev/test-oauth",
    "shared/observability/grafana-api",
)
DEVELOPERS: Final = ("alice", "bob", "carol", "dana", "erik", "fatima")
ADMINS: Final = ("ops-kim", "ops-lee", "ops-ravi")
NEW_HIRE: Final = "noor"
CI_RUNNERS: Final = ("10.40.0.11", "10.40.0.12", "10.40.0.13", "10.40.0.14")
ROTATOR_ADDR: Final = "10.50.0.5"
BOOTSTRAP_ADDR: Final = "10.0.0.2"


def _policies() -> dict[str, str]:
    """The ACL policies of the organisation (HCL), by name."""
    pol: dict[str, str] = {}
    for app in APPS:
        pol[f"{app.name}-runtime"] = (
            f'path "{MOUNT}/data/{app.name}/runtime/*" {{ capabilities = ["read"] }}\n'
        )
        pol[f"{app.name}-ci"] = f'path "{MOUNT}/data/{app.name}/build/*" {{ capabilities = ["read"] }}\n'
    # A legacy over-broad grant the search team never cleaned up: what the slow harvest abuses.
    pol["search-runtime"] += f'path "{MOUNT}/data/*" {{ capabilities = ["read"] }}\n'
    pol["rotator"] = (
        f'path "{MOUNT}/data/+/runtime/*" {{ capabilities = ["create", "update", "read"] }}\n'
        f'path "{MOUNT}/metadata/+/runtime/*" {{ capabilities = ["read"] }}\n'
        f'path "{MOUNT}/data/+/build/registry-token" {{ capabilities = ["create", "update"] }}\n'
        # Misconfiguration: the job was once allowed to manage its own policy.
        'path "sys/policies/acl/rotator" { capabilities = ["create", "update", "read"] }\n'
    )
    pol["developer"] = (
        f'path "{MOUNT}/data/shared/*" {{ capabilities = ["read"] }}\n'
        f'path "{MOUNT}/data/shared/dev/*" {{ capabilities = ["create", "update", "read"] }}\n'
        f'path "{MOUNT}/metadata/*" {{ capabilities = ["list"] }}\n'
    )
    pol["oncall"] = f'path "{MOUNT}/data/+/runtime/*" {{ capabilities = ["read"] }}\n'
    pol["admin"] = (
        'path "sys/*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }\n'
        'path "auth/*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }\n'
        f'path "{MOUNT}/*" {{ capabilities = ["create", "read", "update", "delete", "list"] }}\n'
    )
    for user in (*DEVELOPERS, *ADMINS):
        pol[f"user-{user}"] = _user_policy(user)
    return pol


def _user_policy(user: str) -> str:
    return (
        f'path "{MOUNT}/data/users/{user}/*" {{ capabilities = ["create", "read", "update", "delete"] }}\n'
        f'path "{MOUNT}/metadata/users/{user}/*" {{ capabilities = ["list", "read"] }}\n'
    )


def _put_policy(h: Any, *, name: str, hcl: str) -> Any:
    return h.sys.create_or_update_policy(name, hcl)


def _read_metadata(h: Any, *, path: str) -> Any:
    return h.secrets.kv.v2.read_secret_metadata(path=path, mount_point=MOUNT)


# -- actors and the recorder ------------------------------------------------------------------
@dataclass
class Actor:
    """One caller: a service instance, a CI pipeline, the rotation job, a human, or an attacker."""

    name: str
    kind: str
    address: str
    login: Callable[[Any], Any] | None = None  # hvac call that returns a login response
    token: str | None = None
    expires: float = 0.0  # simulated time the token expires
    ttl: float = 4 * HOUR

    def __repr__(self) -> str:  # the token never shows
        return f"Actor({self.name!r}, {self.kind!r}, {self.address!r})"


@dataclass(frozen=True)
class Call:
    """One real request: its simulated time, the audit log size after it, and its label.

    ``start_offset`` is the audit log's size just before the request (-1 without an audit log):
    the entries between the two offsets are the request's own, whatever other clients of the
    server write between two requests.
    """

    ts: float
    end_offset: int
    label: str
    request_id: str | None
    start_offset: int = -1


@dataclass(frozen=True)
class Scenario:
    """One injected attack: its kind, who did it, when, and which request is the trigger.

    ``single_event`` marks attacks where one request is the attack (a policy write, root token
    use, an audit device change...); ``trigger`` is that request's index in ``request_ids``.
    """

    kind: str
    title: str
    actor: str
    start_ts: float
    single_event: bool = False
    trigger: int = 0
    request_ids: tuple[str, ...] = ()


@dataclass
class GeneratedLog:
    """The rewritten audit log and its ground truth.

    ``labels`` maps each request id to ``benign``, ``setup`` or an attack kind;
    ``scenarios`` holds one :class:`Scenario` per injected attack (with its request ids, in order);
    ``canaries`` are secret values an attack wrote that must never appear in any alert.
    """

    path: Path
    labels: dict[str, str] = field(repr=False)
    scenarios: dict[str, Scenario] = field(repr=False)
    canaries: tuple[str, ...] = field(repr=False)
    requests: int
    entries: int
    start: datetime
    days: int
    warmup_days: int
    entry_labels: list[str] = field(default_factory=list, repr=False)


@dataclass(order=True)
class _Planned:
    ts: float
    seq: int
    label: str = field(compare=False)
    run: Callable[[], None] = field(compare=False)


# -- the generator ----------------------------------------------------------------------------
class Traffic:
    """Drive an organisation's requests against a real OpenBao server on a simulated clock.

    ``url`` must be a listener that trusts ``X-Forwarded-For`` from loopback (see
    :func:`forwarding_listener` and :func:`traffic_server`); ``audit_log`` is the file device's
    path on this machine (``None`` drives the same traffic without a simulated clock: no rewrite).
    Typical use: ``setup()``, ``plan_benign(days)``, ``plan_attacks(warmup_days)``, ``run()``,
    then ``rewrite(out)``. Everything random comes from ``seed``.
    """

    def __init__(
        self,
        url: str,
        root_token: str,
        audit_log: str | Path | None,
        *,
        seed: int = 0,
        start: datetime = SIM_START,
    ) -> None:
        import hvac

        self._hvac = hvac
        self.client = hvac.Client(url=url, token=root_token)
        self.audit_log = Path(audit_log) if audit_log is not None else None
        self.rng = random.Random(seed)
        self.start = start
        self.t0 = start.timestamp()
        self.calls: list[Call] = []
        self.scenarios: dict[str, Scenario] = {}
        self.canaries: list[str] = []
        self._root_token = root_token
        self._plan: list[_Planned] = []
        self._seq = 0
        self._now = self.t0 - DAY  # setup happens the day before
        self._label = SETUP
        self._instances: dict[str, list[Actor]] = {}
        self._ci: dict[str, Actor] = {}
        self._humans: dict[str, Actor] = {}
        self._creds: dict[str, dict[str, str]] = {}
        self._passwords: dict[str, str] = {}
        self._versions: dict[str, int] = {}
        self._pod_counter: dict[int, int] = {}
        self.days = 0
        self.warmup_days = 0
        self._new_hire_day = 10**9

    def __repr__(self) -> str:
        return f"Traffic(audit_log={str(self.audit_log)!r}, calls={len(self.calls)})"

    def close(self) -> None:
        """Close the HTTP session."""
        self.client.adapter.close()

    def __enter__(self) -> Traffic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the request primitive -----------------------------------------------------------------
    def _secret(self, nbytes: int = 16) -> str:
        return f"{self.rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    def call(
        self,
        actor: Actor | None,
        fn: Callable[[Any], Any],
        *,
        gap: tuple[float, float] = (0.4, 4.0),
        anonymous: bool = False,
    ) -> Any:
        """Make one real request as ``actor`` (root when None) at the current simulated time.

        Vault errors (denials, refused operations, bad logins) are part of the traffic: they are
        recorded and return None. ``anonymous`` sends no token (logins). The simulated clock then
        advances by a random ``gap``.
        """
        token = self._root_token if actor is None else actor.token
        if anonymous:
            token = None
        address = BOOTSTRAP_ADDR if actor is None else actor.address
        self.client.token = token
        self.client.session.headers["X-Forwarded-For"] = address
        begin = os.stat(self.audit_log).st_size if self.audit_log is not None else -1
        result: Any = None
        try:
            result = fn(self.client)
        except self._hvac.exceptions.VaultError as exc:
            log.debug("expected refusal in traffic: %s", type(exc).__name__)
        end = os.stat(self.audit_log).st_size if self.audit_log is not None else -1
        rid = result.get("request_id") if isinstance(result, dict) else None
        self.calls.append(Call(self._now, end, self._label, rid or None, begin))
        self._now += self.rng.uniform(*gap)
        return result

    def _at(self, ts: float) -> None:
        self._now = max(self._now, ts)

    def _schedule(self, ts: float, label: str, run: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._plan, _Planned(ts, self._seq, label, run))

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Create the mount, secrets, policies, auth methods and identities (as root, the day before)."""
        c = None
        self._label = SETUP
        self._at(self.t0 - DAY + 15 * HOUR)
        self.call(c, lambda h: h.sys.enable_secrets_engine("kv", path=MOUNT, options={"version": "2"}))
        self.call(c, lambda h: h.sys.enable_auth_method("approle"))
        self.call(c, lambda h: h.sys.enable_auth_method("userpass"))
        for name, hcl in _policies().items():
            self.call(c, partial(_put_policy, name=name, hcl=hcl))
        for app in APPS:
            for sec in app.runtime:
                self._write_kv(c, f"{app.name}/runtime/{sec}")
            for sec in app.build:
                self._write_kv(c, f"{app.name}/build/{sec}")
        for path in SHARED_SECRETS:
            self._write_kv(c, path)
        for app in APPS:
            self._approle(f"{app.name}", [f"{app.name}-runtime"], "4h")
            self._approle(f"ci-{app.name}", [f"{app.name}-ci"], "10m")
        self._approle("rotator", ["rotator"], "30m")
        for user in DEVELOPERS:
            pols = ["developer", f"user-{user}"] + (["oncall"] if user == "dana" else [])
            self._userpass(user, pols)
        for user in ADMINS:
            self._userpass(user, ["admin", "developer", f"user-{user}"])
        self._build_actors()

    def _write_kv(self, actor: Actor | None, path: str, key: str = "value") -> None:
        self._versions[path] = self._versions.get(path, 0) + 1
        data = {key: self._secret(), "rotated": str(self._versions[path])}
        self.call(
            actor,
            lambda h: h.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point=MOUNT),
        )

    def _approle(self, role: str, policies: list[str], ttl: str) -> None:
        self.call(
            None,
            lambda h: h.auth.approle.create_or_update_approle(role, token_policies=policies, token_ttl=ttl),
        )
        rid = self.call(None, lambda h: h.auth.approle.read_role_id(role))
        sid = self.call(None, lambda h: h.auth.approle.generate_secret_id(role))
        if not rid or not sid:
            raise TrafficError(f"could not create AppRole {role!r}")
        self._creds[role] = {"role_id": rid["data"]["role_id"], "secret_id": sid["data"]["secret_id"]}

    def _userpass(self, user: str, policies: list[str]) -> None:
        password = self._secret(12)
        self._passwords[user] = password
        self.call(None, lambda h: h.auth.userpass.create_or_update_user(user, password, policies=policies))
        for note in ("notes", "ssh-config"):
            self._write_kv(None, f"users/{user}/{note}")

    def _approle_login(self, role: str) -> Callable[[Any], Any]:
        creds = self._creds[role]
        return lambda h: h.auth.approle.login(creds["role_id"], creds["secret_id"], use_token=False)

    def _userpass_login(self, user: str, password: str | None = None) -> Callable[[Any], Any]:
        pw = self._passwords[user] if password is None else password
        return lambda h: h.auth.userpass.login(user, pw, use_token=False)

    def _pod_address(self, app: App) -> str:
        n = self._pod_counter.get(app.subnet, 10) + 1
        self._pod_counter[app.subnet] = n
        return f"10.20.{app.subnet}.{n % 240 + 10}"

    def _build_actors(self) -> None:
        for app in APPS:
            self._instances[app.name] = [
                Actor(f"{app.name}-{i}", "service", self._pod_address(app), self._approle_login(app.name))
                for i in range(app.instances)
            ]
            self._ci[app.name] = Actor(
                f"ci-{app.name}", "ci", CI_RUNNERS[0], self._approle_login(f"ci-{app.name}"), ttl=600.0
            )
        self._rotator = Actor("rotator", "rotation", ROTATOR_ADDR, self._approle_login("rotator"), ttl=1800.0)
        for i, user in enumerate((*DEVELOPERS, *ADMINS)):
            kind = "admin" if user in ADMINS else "human"
            self._humans[user] = Actor(
                user, kind, f"10.30.0.{20 + i}", self._userpass_login(user), ttl=12 * HOUR
            )

    def ensure_login(self, actor: Actor, *, force: bool = False) -> bool:
        """Log ``actor`` in when its token is missing or expired (simulated time); True on success."""
        if not force and actor.token and self._now < actor.expires:
            return True
        if actor.login is None:
            return bool(actor.token)
        resp = self.call(actor, actor.login, anonymous=True)
        if not resp or "auth" not in resp:
            return False
        actor.token = resp["auth"]["client_token"]
        actor.expires = self._now + actor.ttl
        return True

    def read(self, actor: Actor | None, path: str, *, gap: tuple[float, float] = (0.4, 4.0)) -> Any:
        """KV v2 read of ``logos/<path>`` as ``actor``."""
        return self.call(
            actor,
            lambda h: h.secrets.kv.v2.read_secret_version(
                path=path, mount_point=MOUNT, raise_on_deleted_version=True
            ),
            gap=gap,
        )

    def list(self, actor: Actor | None, path: str, *, gap: tuple[float, float] = (0.4, 4.0)) -> Any:
        """KV v2 LIST of ``logos/metadata/<path>`` as ``actor``."""
        return self.call(actor, lambda h: h.secrets.kv.v2.list_secrets(path=path, mount_point=MOUNT), gap=gap)

    # -- benign life ---------------------------------------------------------------------------
    def plan_benign(self, days: int) -> None:
        """Plan ``days`` simulated days of the organisation's ordinary work (and its hard cases)."""
        self.days = days
        rng = self.rng
        self._new_hire_day = min(17, days - 1)
        for app in APPS:
            for inst in self._instances[app.name]:
                phase = rng.uniform(0, 4 * HOUR)
                t = self.t0 + phase
                while t < self.t0 + days * DAY:
                    self._schedule(t, BENIGN, partial(self._service_refresh, app, inst))
                    t += 4 * HOUR + rng.uniform(-600, 600)
        for d in range(days):
            day = self.t0 + d * DAY
            weekday = d % 7
            workday = weekday < 5
            # Scheduled rotation at 02:00 every night; registry tokens weekly on Sunday.
            self._schedule(day + 2 * HOUR, BENIGN, partial(self._rotate, d))  # cron: 02:00 sharp
            if not workday:
                if rng.random() < 0.3:
                    who = rng.choice(ADMINS)
                    self._schedule(day + rng.uniform(10, 20) * HOUR, BENIGN, partial(self._admin_check, who))
                continue
            for app in APPS:
                if weekday in app.deploy_days:
                    self._schedule(day + rng.uniform(10, 16) * HOUR, BENIGN, partial(self._deploy, app))
                for _ in range(rng.randint(*app.pipelines)):
                    self._schedule(
                        day + rng.uniform(9, 18.5) * HOUR,
                        BENIGN,
                        partial(self._pipeline, app, release=rng.random() < 0.4),
                    )
            for user in DEVELOPERS:
                if rng.random() < 0.93:
                    self._plan_workday(user, day)
            if d > self._new_hire_day:
                self._plan_workday(NEW_HIRE, day)
            for user in ADMINS:
                if rng.random() < 0.6:
                    self._plan_admin_day(user, day)
        self._plan_hard_cases(days)

    def _plan_hard_cases(self, days: int) -> None:
        # A legitimate policy change by an admin, in office hours (week 3, Tuesday).
        d = min(15, days - 1)
        self._schedule(self.t0 + d * DAY + 14.3 * HOUR, BENIGN, self._policy_change)
        # A new team member: the admin creates the account, she starts the same morning.
        d = self._new_hire_day
        self._schedule(self.t0 + d * DAY + 9.3 * HOUR, BENIGN, self._onboard_new_hire)
        self._plan_workday(NEW_HIRE, self.t0 + d * DAY, start=10.0)

    def _service_refresh(self, app: App, inst: Actor) -> None:
        if self.ensure_login(inst):
            for sec in app.runtime:
                self.read(inst, f"{app.name}/runtime/{sec}")

    def _deploy(self, app: App) -> None:
        # A rolling deploy: every pod is replaced (new address), logs in and reads everything.
        for inst in self._instances[app.name]:
            inst.address = self._pod_address(app)
            if self.ensure_login(inst, force=True):
                for sec in app.runtime:
                    self.read(inst, f"{app.name}/runtime/{sec}")
            self._now += self.rng.uniform(5, 40)

    def _pipeline(self, app: App, *, release: bool) -> None:
        ci = self._ci[app.name]
        ci.address = self.rng.choice(CI_RUNNERS)
        if not self.ensure_login(ci, force=True):
            return
        self.read(ci, f"{app.name}/build/registry-token")
        if release and len(app.build) > 1:
            self.read(ci, f"{app.name}/build/{app.build[1]}")
        if app is APPS[0]:
            # Every pxl-core pipeline deploys (its registry-token read is the deploy marker of the
            # organisation's rotation schedule): the database credentials are rotated within the
            # hour, then the pods roll and pick them up.
            soon = self._now + self.rng.uniform(3, 20) * 60
            self._schedule(soon, BENIGN, partial(self._rotate_paths, (f"{app.name}/runtime/db",)))
            self._schedule(soon + self.rng.uniform(10, 25) * 60, BENIGN, partial(self._deploy, app))

    def _rotate_paths(self, paths: Sequence[str]) -> None:
        rot = self._rotator
        if not self.ensure_login(rot, force=True):
            return
        for path in paths:
            self.call(rot, partial(_read_metadata, path=path))
            self._write_kv(rot, path)

    def _rotate(self, d: int) -> None:
        # The nightly job follows the rotation schedule: pxl-core's JWT key daily, its API keys
        # weekly, TLS monthly; one runtime secret of every other app per night; registry tokens
        # weekly.
        core = APPS[0]
        paths = [f"{core.name}/runtime/jwt-key"]
        if d % 7 == 6:
            paths.append(f"{core.name}/runtime/api-keys")
        if d % 28 == 20:
            paths.append(f"{core.name}/runtime/tls")
        paths += [f"{app.name}/runtime/{app.runtime[d % len(app.runtime)]}" for app in APPS[1:]]
        self._rotate_paths(paths)
        if d % 7 == 6:
            for app in APPS:
                self._write_kv(self._rotator, f"{app.name}/build/registry-token")

    def _plan_workday(self, user: str, day: float, start: float | None = None) -> None:
        rng = self.rng
        begin = day + (start if start is not None else rng.gauss(8.8, 0.5)) * HOUR
        end = day + rng.uniform(16.5, 18.5) * HOUR
        vpn = rng.random() < 0.2
        self._schedule(begin, BENIGN, lambda: self._human_login(user, vpn))
        for _ in range(rng.randint(4, 9)):
            self._schedule(rng.uniform(begin + 300, end), BENIGN, lambda: self._human_task(user))

    def _human_login(self, user: str, vpn: bool) -> None:
        actor = self._humans.get(user)
        if actor is None:  # not onboarded (yet)
            return
        octet = actor.address.rsplit(".", 1)[1]
        actor.address = f"10.31.0.{octet}" if vpn else f"10.30.0.{octet}"
        if self.rng.random() < 0.03:
            # A mistyped password: one failed login, then the right one.
            bad = self._userpass_login(user, password=self._passwords[user][:-1] + "x")
            self.call(actor, bad, gap=(3, 8), anonymous=True)
        self.ensure_login(actor, force=True)

    def _human_task(self, user: str) -> None:
        actor = self._humans.get(user)
        if actor is None or not self.ensure_login(actor):
            return
        r = self.rng.random()
        if r < 0.35:
            self.read(actor, self.rng.choice(SHARED_SECRETS))
        elif r < 0.55:
            self._write_kv(actor, f"users/{user}/{self.rng.choice(('notes', 'ssh-config', 'scratch'))}")
        elif r < 0.7:
            self.read(actor, f"users/{user}/notes")
        elif r < 0.82:
            self.list(actor, "shared/dev/")
        elif r < 0.9:
            self.list(actor, f"users/{user}/")
        elif r < 0.96:
            self._write_kv(actor, "shared/dev/feature-flags", key="flags")
        else:
            # A typo: one denied read, then the intended one.
            self.read(actor, "shraed/dev/sandbox-db")
            self.read(actor, "shared/dev/sandbox-db")

    def _plan_admin_day(self, user: str, day: float) -> None:
        rng = self.rng
        begin = day + rng.uniform(8.5, 10.5) * HOUR
        self._schedule(begin, BENIGN, lambda: self._human_login(user, False))
        for _ in range(rng.randint(2, 5)):
            self._schedule(rng.uniform(begin + 300, day + 18 * HOUR), BENIGN, lambda: self._admin_task(user))

    def _admin_task(self, user: str) -> None:
        actor = self._humans[user]
        if not self.ensure_login(actor):
            return
        ops: list[Callable[[Any], Any]] = [
            lambda h: h.sys.list_acl_policies(),
            lambda h: h.sys.read_acl_policy(
                self.rng.choice(("developer", "admin", "rotator", "pxl-core-runtime"))
            ),
            lambda h: h.sys.list_auth_methods(),
            lambda h: h.sys.list_mounted_secrets_engines(),
            lambda h: h.auth.userpass.list_user(),
            lambda h: h.auth.token.lookup_self(),
            # pxl-core is off limits to humans in the organisation's access model.
            lambda h: h.secrets.kv.v2.list_secrets(
                path=f"{self.rng.choice(APPS[1:]).name}/", mount_point=MOUNT
            ),
        ]
        self.call(actor, self.rng.choice(ops))

    def _admin_check(self, user: str) -> None:
        actor = self._humans[user]
        actor.address = f"10.31.0.{actor.address.rsplit('.', 1)[1]}"
        if self.ensure_login(actor, force=True):
            self.call(actor, lambda h: h.sys.list_mounted_secrets_engines())

    def _policy_change(self) -> None:
        admin = self._humans["ops-kim"]
        if not self.ensure_login(admin):
            return
        hcl = (
            _policies()["developer"]
            + f'path "{MOUNT}/metadata/shared/*" {{ capabilities = ["read", "list"] }}\n'
        )
        self.call(admin, lambda h: h.sys.read_acl_policy("developer"))
        self.call(admin, lambda h: h.sys.create_or_update_acl_policy("developer", hcl))

    def _onboard_new_hire(self) -> None:
        admin = self._humans["ops-kim"]
        if not self.ensure_login(admin):
            return
        password = self._secret(12)
        self._passwords[NEW_HIRE] = password
        self.call(
            admin, lambda h: h.sys.create_or_update_acl_policy(f"user-{NEW_HIRE}", _user_policy(NEW_HIRE))
        )
        self.call(
            admin,
            lambda h: h.auth.userpass.create_or_update_user(
                NEW_HIRE, password, policies=["developer", f"user-{NEW_HIRE}"]
            ),
        )
        self._humans[NEW_HIRE] = Actor(
            NEW_HIRE, "human", "10.30.0.40", self._userpass_login(NEW_HIRE), ttl=12 * HOUR
        )

    # -- attacks -------------------------------------------------------------------------------
    def plan_attacks(
        self, warmup_days: int = 14, kinds: Sequence[str] = ATTACK_KINDS, *, spacing: float = 1.0
    ) -> None:
        """Plan the attacks named in ``kinds`` after ``warmup_days`` of benign traffic.

        Each kind has its own day slot (one a day, at a time of day that suits it); ``spacing``
        scales the gap between slots, e.g. ``0.25`` packs all thirteen into about four days for a
        short demo.
        """
        self.warmup_days = warmup_days
        unknown = set(kinds) - set(ATTACK_KINDS)
        if unknown:
            raise TrafficError(f"unknown attack kinds: {sorted(unknown)}")
        slots = {
            # kind: (day offset after warm-up, hour of day, title, actor, single_event, trigger)
            "stolen-credential": (
                1,
                3.2,
                "pxl-core AppRole credentials used from a new address at night",
                "pxl-core",
                False,
                0,
            ),
            "enumeration": (2, 13.7, "a developer LISTs every folder of the KV mount", "bob", False, 0),
            "brute-force": (3, 22.1, "password guessing against carol's userpass account", "carol", False, 0),
            "privilege-escalation-policy": (
                4,
                1.5,
                "the rotation job rewrites its own policy",
                "rotator",
                True,
                1,
            ),
            "privilege-escalation-token": (
                5,
                23.2,
                "an admin login from a new address mints an orphan admin token",
                "ops-kim",
                True,
                1,
            ),
            "slow-harvest": (
                6,
                0.5,
                "one new secret per hour over days through an over-broad grant",
                "search",
                False,
                0,
            ),
            "root-token-use": (7, 4.3, "the root token reads secrets at night", "root", True, 0),
            "audit-tampering": (8, 19.75, "attempts to add and remove audit devices", "ops-ravi", True, 1),
            "mass-read": (9, 12.2, "an admin reads every secret in minutes", "ops-lee", False, 0),
            "developer-reads-runtime": (
                10,
                15.5,
                "a developer reads production runtime secrets",
                "dana",
                True,
                1,
            ),
            "secret-destruction": (
                11,
                20.5,
                "KV versions destroyed and metadata deleted",
                "ops-ravi",
                True,
                1,
            ),
            "hmac-disabled-leak": (
                12,
                2.7,
                "audit HMAC disabled on the mount, then a plaintext write",
                "ops-lee",
                True,
                1,
            ),
            "backdoor-auth-method": (
                13,
                3.1,
                "a new userpass auth method enabled as a backdoor",
                "ops-ravi",
                True,
                1,
            ),
        }
        for kind in kinds:
            day, hour, title, actor, single, trigger = slots[kind]
            ts = self.t0 + (warmup_days + day * spacing) * DAY + hour * HOUR
            self.scenarios[kind] = Scenario(kind, title, actor, ts, single, trigger)
            runner = getattr(self, "_attack_" + kind.replace("-", "_"))
            if kind == "slow-harvest":
                runner(ts)
            else:
                self._schedule(ts, kind, runner)

    def plan_attack_at(self, kind: str, ts: float, *, title: str = "", actor: str = "") -> None:
        """Plan one attack of ``kind`` at simulated time ``ts``, outside :meth:`plan_attacks`' day
        slots (the demo's live attacks). A subclass may add kinds: ``kind`` runs the method
        ``_attack_<kind with underscores>``."""
        runner = getattr(self, "_attack_" + kind.replace("-", "_"), None)
        if runner is None:
            raise TrafficError(f"unknown attack kind: {kind!r}")
        self.scenarios[kind] = Scenario(kind, title or kind, actor, ts)
        if kind == "slow-harvest":
            runner(ts)
        else:
            self._schedule(ts, kind, runner)

    def _attacker(
        self, name: str, address: str, login: Callable[[Any], Any] | None, token: str | None = None
    ) -> Actor:
        return Actor(name, "attacker", address, login, token=token, ttl=4 * HOUR)

    def _attack_stolen_credential(self) -> None:
        app = APPS[0]
        # Quiet on purpose: the usual secrets, no probing, no denial. Only the address (a network
        # nobody in the organisation ever used) and the hour give it away.
        thief = self._attacker("pxl-core", "203.0.113.45", self._approle_login(app.name))
        if self.ensure_login(thief):
            for sec in app.runtime:
                self.read(thief, f"{app.name}/runtime/{sec}")

    def _attack_enumeration(self) -> None:
        bob = self._humans["bob"]
        if not self.ensure_login(bob):
            return
        folders = ["", "shared/", "users/"] + [f"{a.name}/" for a in APPS]
        folders += [f"{a.name}/{part}/" for a in APPS for part in ("runtime", "build")]
        folders += [f"users/{u}/" for u in (*DEVELOPERS, *ADMINS)]
        for folder in folders:
            self.list(bob, folder, gap=(0.2, 1.0))  # a script: faster than a human

    def _attack_brute_force(self) -> None:
        guesser = self._attacker("carol", "198.51.100.23", None)
        for _ in range(30):
            self.call(
                guesser, self._userpass_login("carol", password=self._secret(6)), gap=(4, 10), anonymous=True
            )

    def _attack_privilege_escalation_policy(self) -> None:
        rot = self._rotator
        if not self.ensure_login(rot, force=True):
            return
        hcl = (
            _policies()["rotator"]
            + f'path "{MOUNT}/*" {{ capabilities = ["create", "read", "update", "delete", "list"] }}\n'
        )
        self.call(rot, lambda h: h.sys.create_or_update_acl_policy("rotator", hcl))
        self.read(rot, "pxl-core/build/cosign-key")
        self.read(rot, "billing/build/registry-token")

    def _attack_privilege_escalation_token(self) -> None:
        admin = self._attacker("ops-kim", "198.51.100.77", self._userpass_login("ops-kim"))
        if not self.ensure_login(admin):
            return
        resp = self.call(
            admin,
            lambda h: h.auth.token.create(
                policies=["admin"], no_parent=True, display_name="svc-backup", ttl="720h"
            ),
        )
        if resp and "auth" in resp:
            minted = self._attacker("svc-backup", "198.51.100.77", None, token=resp["auth"]["client_token"])
            self.read(minted, "pxl-core/runtime/db")
            self.read(minted, "billing/runtime/stripe-key")

    def _attack_slow_harvest(self, ts: float) -> None:
        harvester = self._attacker("search", "10.20.3.250", self._approle_login("search"))
        targets = [
            f"{a.name}/{part}/{s}"
            for a in APPS
            if a.name != "search"
            for part, names in (("runtime", a.runtime), ("build", a.build))
            for s in names
        ]
        targets += list(SHARED_SECRETS)
        targets += [f"users/{u}/{n}" for u in (*DEVELOPERS, *ADMINS) for n in ("notes", "ssh-config")]
        for i, path in enumerate(targets[:40]):

            def step(p: str = path) -> None:
                if self.ensure_login(harvester):
                    self.read(harvester, p)

            self._schedule(ts + i * HOUR + self.rng.uniform(0, 600), "slow-harvest", step)

    def _attack_root_token_use(self) -> None:
        root = self._attacker("root", "203.0.113.9", None, token=self._root_token)
        self.call(root, lambda h: h.sys.list_auth_methods())
        self.read(root, "billing/runtime/db")
        self.read(root, "pxl-core/runtime/jwt-key")

    def _attack_audit_tampering(self) -> None:
        admin = self._humans["ops-ravi"]
        if not self.ensure_login(admin, force=True):
            return
        self.call(
            admin, lambda h: h.sys.enable_audit_device("file", path="x", options={"file_path": "/dev/null"})
        )
        self.call(admin, lambda h: h.sys.disable_audit_device("file"))

    def _attack_mass_read(self) -> None:
        admin = self._humans["ops-lee"]
        if not self.ensure_login(admin, force=True):
            return
        paths = [
            f"{a.name}/{part}/{s}"
            for a in APPS
            for part, names in (("runtime", a.runtime), ("build", a.build))
            for s in names
        ]
        paths += list(SHARED_SECRETS) + [
            f"users/{u}/{n}" for u in (*DEVELOPERS, *ADMINS) for n in ("notes", "ssh-config")
        ]
        for path in paths:
            self.read(admin, path, gap=(0.2, 1.5))

    def _attack_developer_reads_runtime(self) -> None:
        dana = self._humans["dana"]
        if not self.ensure_login(dana, force=True):
            return
        self.read(dana, "pxl-core/runtime/jwt-key")
        self.read(dana, "pxl-core/runtime/db")

    def _attack_secret_destruction(self) -> None:
        admin = self._humans["ops-ravi"]
        if not self.ensure_login(admin, force=True):
            return
        self.call(
            admin,
            lambda h: h.secrets.kv.v2.destroy_secret_versions(
                path="billing/runtime/stripe-key", versions=[1, 2, 3], mount_point=MOUNT
            ),
        )
        self.call(
            admin,
            lambda h: h.secrets.kv.v2.delete_metadata_and_all_versions(
                path="pxl-core/build/cosign-key", mount_point=MOUNT
            ),
        )

    def _attack_hmac_disabled_leak(self) -> None:
        admin = self._attacker("ops-lee", "203.0.113.70", self._userpass_login("ops-lee"))
        if not self.ensure_login(admin):
            return
        self.call(
            admin, lambda h: h.sys.tune_mount_configuration(MOUNT, audit_non_hmac_request_keys=["password"])
        )
        canary = f"canary-{self._secret(10)}"
        self.canaries.append(canary)
        self.call(
            admin,
            lambda h: h.secrets.kv.v2.create_or_update_secret(
                path="shared/dev/sandbox-db", secret={"password": canary}, mount_point=MOUNT
            ),
        )

    def _attack_backdoor_auth_method(self) -> None:
        admin = self._attacker("ops-ravi", "203.0.113.66", self._userpass_login("ops-ravi"))
        if not self.ensure_login(admin):
            return
        self.call(admin, lambda h: h.sys.enable_auth_method("userpass", path="backup"))
        password = self._secret(12)
        self.call(
            admin,
            lambda h: h.auth.userpass.create_or_update_user(
                "svc-sync", password, policies=["admin"], mount_point="backup"
            ),
        )
        self.call(
            admin,
            lambda h: h.auth.userpass.login("svc-sync", password, mount_point="backup", use_token=False),
            anonymous=True,
        )

    # -- run and rewrite -----------------------------------------------------------------------
    def run(self) -> int:
        """Execute every planned action in simulated-time order; return the number of requests."""
        before = len(self.calls)
        plan = self._plan
        heapq.heapify(plan)
        while plan:  # a heap: actions may schedule follow-ups (a deploy after a pipeline)
            item = heapq.heappop(plan)
            self._at(item.ts)
            self._label = item.label
            item.run()
        self._label = BENIGN
        made = len(self.calls) - before
        log.info("traffic: %d requests over %d simulated days", made, self.days)
        return made

    def rewrite(self, out: str | Path) -> GeneratedLog:
        """Copy the server's audit log to ``out`` with each entry's ``time`` set to its simulated time.

        Entries written before the first recorded request (the dev server's own bootstrap) get
        the setup time. Raises :class:`TrafficError` if a request id hvac returned is not among
        the entries its call wrote, which would mean the positional match is wrong.
        """
        out = Path(out)
        calls = self.calls
        if not calls:
            raise TrafficError("no requests were recorded")
        if self.audit_log is None:
            raise TrafficError("no audit log was given: the traffic ran on the real clock only")
        labels: dict[str, str] = {}
        entry_labels: list[str] = []
        issued: dict[str, float] = {}  # token accessor (HMAC) -> simulated issue time
        setup_ts = calls[0].ts
        ids_by_call: list[set[str]] = [set() for _ in calls]
        order: dict[str, list[str]] = {}
        idx = 0
        offset = 0
        entries = 0
        with open(self.audit_log, "rb") as src, open(out, "wb") as dst:
            for line in src:
                start = offset
                offset += len(line)
                if not line.strip():
                    continue
                while idx < len(calls) and start >= calls[idx].end_offset:
                    idx += 1
                if idx >= len(calls):
                    raise TrafficError("audit entries after the last recorded request")
                call = calls[idx]
                entry = json.loads(line)
                rid = (entry.get("request") or {}).get("id")
                label = call.label
                if rid:
                    ids_by_call[idx].add(rid)
                    if rid not in labels:
                        labels[rid] = label
                        if label not in (BENIGN, SETUP):
                            order.setdefault(label, []).append(rid)
                entry_labels.append(label)
                dst.write(_with_times(line, entry, call.ts, issued, setup_ts))
                entries += 1
        for i, call in enumerate(calls):
            if call.request_id and call.request_id not in ids_by_call[i]:
                raise TrafficError(f"request {i} not matched to its audit entries")
        for kind, sc in list(self.scenarios.items()):
            self.scenarios[kind] = Scenario(
                sc.kind,
                sc.title,
                sc.actor,
                sc.start_ts,
                sc.single_event,
                sc.trigger,
                tuple(order.get(kind, ())),
            )
        return GeneratedLog(
            path=out,
            labels=labels,
            scenarios=dict(self.scenarios),
            canaries=tuple(self.canaries),
            requests=len(calls),
            entries=entries,
            start=self.start,
            days=self.days,
            warmup_days=self.warmup_days,
            entry_labels=entry_labels,
        )

    def request_labels(self, first: int = 0) -> dict[str, str]:
        """Request id -> label of every audit entry that ``calls[first:]`` wrote, on the real clock.

        Unlike :meth:`rewrite`, which gives every line of the log to some request, an entry
        counts here only when it lies between a call's ``start_offset`` and ``end_offset``: what
        other clients of the server (vaultwatch's own API, say) wrote between two requests
        belongs to none. Failed requests (a refused login) have their ids too, which hvac does
        not return.
        """
        calls = self.calls[first:]
        if self.audit_log is None or not calls:
            return {}
        labels: dict[str, str] = {}
        idx = 0
        offset = max(calls[0].start_offset, 0)
        with open(self.audit_log, "rb") as src:
            src.seek(offset)
            for line in src:
                start = offset
                offset += len(line)
                while idx < len(calls) and start >= calls[idx].end_offset:
                    idx += 1
                if idx >= len(calls):
                    break
                call = calls[idx]
                if start < call.start_offset or not line.strip():
                    continue
                rid = (json.loads(line).get("request") or {}).get("id")
                if rid:
                    labels.setdefault(rid, call.label)
        return labels


_TIME_RE: Final = re.compile(rb'^\{"time":"[^"]*"')


def _rfc3339(ts: float, *, fraction: bool = True) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if fraction else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


def _with_times(
    line: bytes, entry: dict[str, Any], ts: float, issued: dict[str, float], setup_ts: float
) -> bytes:
    """The same entry on the simulated clock: its ``time`` and its tokens' ``token_issue_time``.

    ``token_issue_time`` is wall-clock time too; left alone, a token would look issued weeks
    after its own use. A token's simulated issue time is that of the response that issued it
    (matched by accessor HMAC); tokens issued before the log began get the setup time.
    """
    resp_auth = (entry.get("response") or {}).get("auth") or {}
    if resp_auth.get("accessor"):
        issued.setdefault(resp_auth["accessor"], ts)
    changed = False
    for auth in (entry.get("auth"), resp_auth):
        if isinstance(auth, dict) and auth.get("token_issue_time"):
            when = issued.get(auth.get("accessor") or "", setup_ts)
            auth["token_issue_time"] = _rfc3339(when, fraction=False)
            changed = True
    if not changed:
        stamp = b'{"time":"' + _rfc3339(ts).encode() + b'"'
        new, n = _TIME_RE.subn(stamp, line, count=1)
        if n == 1:
            return new
    # Re-encode the entry as a whole, keeping the server's key order.
    entry["time"] = _rfc3339(ts)
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def traffic_server(
    workdir: str | Path | None = None, *, devices: list[AuditDevice] | None = None
) -> tuple[OpenBaoServer, str]:
    """An (unstarted) OpenBao dev server with a forwarding listener, and that listener's URL.

    Use it as ``with server:``; give the URL to :class:`Traffic` or :func:`generate`. ``devices``
    as for :class:`~vaultwatch.demo.servers.OpenBaoServer` (keep a file device for the rewrite).
    """
    port = free_port()
    server = OpenBaoServer(workdir, devices=devices, extra_config=forwarding_listener(port))
    return server, f"http://127.0.0.1:{port}"


def generate(
    url: str,
    root_token: str,
    audit_log: str | Path,
    out: str | Path,
    *,
    days: int = 28,
    warmup_days: int = 14,
    seed: int = 0,
    attacks: Sequence[str] | None = ATTACK_KINDS,
    spacing: float = 1.0,
) -> GeneratedLog:
    """Set up the organisation, drive ``days`` simulated days (attacks after ``warmup_days``), rewrite.

    ``url`` is a forwarding listener of a fresh OpenBao server (see :func:`forwarding_listener`).
    Pass ``attacks=None`` or ``()`` for benign traffic only; ``spacing`` as in
    :meth:`Traffic.plan_attacks`.
    """
    with Traffic(url, root_token, audit_log, seed=seed) as traffic:
        traffic.setup()
        traffic.plan_benign(days)
        if attacks:
            traffic.plan_attacks(warmup_days, attacks, spacing=spacing)
        traffic.run()
        return traffic.rewrite(out)


def iter_labelled(generated: GeneratedLog) -> Iterator[tuple[bytes, str]]:
    """Each line of the rewritten log with its label (``benign``, ``setup`` or an attack kind)."""
    with open(generated.path, "rb") as fh:
        lines = (ln for ln in fh if ln.strip())
        yield from zip(lines, generated.entry_labels, strict=True)
