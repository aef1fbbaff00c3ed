"""The threat catalogue: every kind of attack the evaluation injects, planned from the seed.

Long because the catalogue keeps every threat kind's plan and requests side by side, so the labels
of all kinds follow one convention.

:func:`plan_threats` (pure) picks, for each kind in :data:`THREAT_KINDS`, a time after the
learning period and a target of the right kind in the spec (an identity whose credentials are
stolen, a mount, a policy, a secret...). :func:`schedule_threats` puts each on an
:class:`~vaultwatch.demo.org_life.Org`'s clock; its requests, failed ones included, are labelled
with the threat's instance. Kinds the dev server refuses (an audit device cannot be disabled or
enabled through the API in OpenBao 2.x; a dev server has no Raft storage to snapshot) are still
*attempted*: the refused request is what an audit log shows of such an attempt.

>>> len(THREAT_KINDS), "rotation-overdue" in THREAT_KINDS
(34, True)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from .org_driver import BENIGN, Actor
from .org_life import DAY, HARD_CASE_KINDS, HOUR, Org
from .org_spec import OrgSpec, Planned

__all__ = ["HARD_CASE_KINDS", "SINGLE_EVENT", "THREAT_KINDS", "plan_threats", "schedule_threats"]

THREAT_KINDS: Final = (
    "stolen-credential-new-address",
    "stolen-credential-odd-hour",
    "session-hijack",
    "brute-force",
    "password-spraying",
    "credential-stuffing",
    "list-enumeration",
    "metadata-walk",
    "permission-denied-burst",
    "accessor-enumeration",
    "capability-probing",
    "self-granted-policy",
    "token-privilege-escalation",
    "orphan-token-abuse",
    "entity-alias-takeover",
    "approle-role-change",
    "secret-id-minting",
    "sensitive-first-access",
    "exfiltration-fast",
    "exfiltration-slow",
    "secret-destruction",
    "mass-revocation",
    "mount-disable",
    "policy-delete",
    "seal-attempt",
    "audit-device-change",
    "hmac-off-tune",
    "plaintext-secret-in-stream",
    "dynamic-credential-burst",
    "generate-root",
    "root-token-use",
    "raft-snapshot",
    "transit-key-export",
    "rotation-overdue",
)

#: Kinds where one request is the attack (its index in ``request_ids`` is the label's ``trigger``).
SINGLE_EVENT: Final = frozenset(
    {
        "self-granted-policy",
        "token-privilege-escalation",
        "orphan-token-abuse",
        "entity-alias-takeover",
        "approle-role-change",
        "secret-id-minting",
        "sensitive-first-access",
        "secret-destruction",
        "mount-disable",
        "policy-delete",
        "seal-attempt",
        "audit-device-change",
        "hmac-off-tune",
        "plaintext-secret-in-stream",
        "generate-root",
        "root-token-use",
        "raft-snapshot",
        "transit-key-export",
    }
)

_NETS: Final = ("203.0.113", "198.51.100", "192.0.2", "45.133.{a}", "185.220.{a}", "91.198.{a}", "5.188.{a}")


# -- planning (pure) ---------------------------------------------------------------------------
def plan_threats(spec: OrgSpec) -> OrgSpec:
    """``spec`` with one planned threat of every kind (three sensitive-first-access variants)."""
    rng = random.Random(f"vaultwatch-threats:{spec.seed}:{spec.size}:{spec.days}")
    lo, hi = spec.learning_days, max(spec.learning_days, spec.days - 1)
    used_addresses: set[str] = set()

    def external() -> str:
        while True:
            net = rng.choice(_NETS).format(a=rng.randint(1, 250))
            addr = f"{net}.{rng.randint(2, 250)}"
            if addr not in used_addresses:
                used_addresses.add(addr)
                return addr

    humans = [h for h in spec.humans if not h.admin and h.start_day == 0 and not h.holiday]
    pw_humans = [h for h in humans if h.auth == "userpass"] or humans  # Vault passwords to attack
    # The policy-delete threat removes one app's CI policy; other threats leave that pipeline alone.
    minter_app = spec.drift.get("ci_secret_id_wildcard")
    deleted_app = rng.choice(
        [x for x in spec.apps if x.name not in (minter_app, "pxl-core")] or list(spec.apps)
    )
    admins = [h for h in spec.humans if h.admin]
    apps = list(spec.apps)

    def identity(kinds: tuple[str, ...]) -> dict[str, str]:
        kind = rng.choice(kinds)
        if kind == "service":
            return {"who": "service", "app": rng.choice(apps).name}
        if kind == "ci":
            return {"who": "ci", "app": rng.choice([x for x in apps if x is not deleted_app] or apps).name}
        if kind == "rotator":
            return {"who": "rotator"}
        return {"who": "human", "user": rng.choice(humans).username}

    def target_of(params: dict[str, Any]) -> str:
        who = params["who"]
        if who in ("service", "ci"):
            app = spec.app(params["app"])
            return f"{who}:{app.runtime_role if who == 'service' else app.ci_role}"
        if who == "rotator":
            return f"rotator:{spec.rotator_role}"
        return f"{who}:{params['user']}"

    def day() -> int:
        return rng.randint(lo, hi)

    def workday(tz: float) -> int:
        """A day after the learning period that is a weekday where the person lives."""
        for _ in range(100):
            d = rng.randint(lo, hi)
            local = datetime.fromtimestamp(spec.t0 + d * DAY + (12 - tz) * HOUR, UTC).weekday()
            if local < 5 and d not in spec.holidays.get(str(tz), ()):
                return d
        return lo

    def anyhour() -> float:
        return rng.uniform(0, 24)

    out: list[Planned] = []

    def add(kind: str, target: str, d: int, hour: float, instance: str = "", **params: Any) -> None:
        out.append(Planned(instance or kind, kind, target, d, round(hour % 24, 4), params))

    # Stolen credentials.
    p = identity(("service", "ci", "rotator", "human"))
    add("stolen-credential-new-address", target_of(p), day(), rng.uniform(9, 17), address=external(), **p)
    p = identity(("ci", "rotator", "human"))
    if p["who"] == "human":
        h = next(x for x in spec.humans if x.username == p["user"])
        hour = rng.uniform(1, 4.5) - h.tz
    elif p["who"] == "rotator":
        rot_hours = [r.hour for r in spec.rotations] or [2.0]
        hour = (max(rot_hours) + rng.uniform(6, 14)) % 24
        hour = hour if not 9 <= hour <= 18 else rng.uniform(20, 23.5)
    else:
        hour = rng.uniform(0.5, 4.5)
    vpn_net = spec.humans[0].vpn.rsplit(".", 1)[0]
    add(
        "stolen-credential-odd-hour",
        target_of(p),
        day(),
        hour,
        address=f"{vpn_net}.{rng.randint(200, 250)}",
        **p,
    )
    h = rng.choice(humans)
    add(
        "session-hijack",
        f"human:{h.username}",
        workday(h.tz),
        h.office[0] - h.tz + rng.uniform(1.5, 5),
        user=h.username,
        address=external(),
    )
    # Authentication attacks.
    h = rng.choice(pw_humans)
    add(
        "brute-force",
        f"human:{h.username}",
        day(),
        anyhour(),
        user=h.username,
        address=external(),
        attempts=rng.randint(10, 20),
        succeed=rng.random() < 0.5,
    )
    victims = [x.username for x in rng.sample(humans, min(len(humans), rng.randint(5, 10)))]
    add(
        "password-spraying",
        f"userpass:{spec.userpass_path}",
        day(),
        anyhour(),
        users=victims,
        address=external(),
        bogus=rng.randint(2, 4),
    )
    hits = [x.username for x in rng.sample(pw_humans, min(len(pw_humans), rng.randint(1, 2)))]
    others = [x.username for x in humans if x.username not in hits]
    victims = hits + rng.sample(others, min(len(others), rng.randint(4, 8)))
    rng.shuffle(victims)
    add(
        "credential-stuffing",
        f"userpass:{spec.userpass_path}",
        day(),
        anyhour(),
        users=victims,
        addresses=[external() for _ in range(rng.randint(12, 25))],
        hits=hits,
    )
    # Enumeration.
    p = identity(("human", "ci", "service"))
    add("list-enumeration", target_of(p), day(), anyhour(), address=_maybe(rng, external), **p)
    v2 = [m.path for m in spec.mounts if m.version == 2] or [spec.mounts[0].path]
    add(
        "metadata-walk",
        rng.choice(v2),
        day(),
        anyhour(),
        admin=rng.choice(admins).username,
        address=_maybe(rng, external),
    )
    p = identity(("human", "ci", "service"))
    add("permission-denied-burst", target_of(p), day(), anyhour(), address=_maybe(rng, external), **p)
    p = rng.choice(({"who": "admin", "user": rng.choice(admins).username}, identity(("human", "service"))))
    add("accessor-enumeration", "auth/token/accessors", day(), anyhour(), address=_maybe(rng, external), **p)
    p = identity(("human", "ci", "service"))
    add("capability-probing", target_of(p), day(), anyhour(), address=_maybe(rng, external), **p)
    # Privilege escalation.
    if spec.drift.get("self_policy"):
        add("self-granted-policy", spec.rotator_policy, day(), anyhour(), who="rotator")
    else:
        h = rng.choice(humans)
        add("self-granted-policy", spec.team_policies[h.team], day(), anyhour(), who="human", user=h.username)
    a = rng.choice(admins)
    add(
        "token-privilege-escalation",
        f"admin:{a.username}",
        day(),
        anyhour(),
        user=a.username,
        address=_maybe(rng, external),
    )
    a = rng.choice(admins)
    add("orphan-token-abuse", f"admin:{a.username}", day(), anyhour(), user=a.username, address=external())
    a = rng.choice(admins)
    victim = rng.choice([x for x in admins if x.entity])
    add(
        "entity-alias-takeover",
        f"entity:{victim.entity}",
        day(),
        anyhour(),
        user=a.username,
        victim=victim.username,
        address=external(),
        login=f"{rng.choice(('svc', 'sync', 'ops', 'bot'))}-{rng.randint(10, 99)}",
        # "alias": a machine login attached to a privileged entity; "group": an ordinary
        # person's entity made a member of a new group carrying the admin policy.
        variant=rng.choice(("alias", "group")),
        member=rng.choice(pw_humans).username,
    )
    app = rng.choice(apps)
    add(
        "approle-role-change",
        f"approle:{app.runtime_role}",
        day(),
        anyhour(),
        user=rng.choice(admins).username,
        app=app.name,
        address=external(),
    )
    minter = spec.drift.get("ci_secret_id_wildcard")
    victim_app = rng.choice([x for x in apps if x.name != minter] or apps)
    if minter:
        add(
            "secret-id-minting",
            f"approle:{victim_app.runtime_role}",
            day(),
            rng.uniform(9, 18),
            who="ci",
            app=minter,
            victim=victim_app.name,
        )
    else:
        add(
            "secret-id-minting",
            f"approle:{victim_app.runtime_role}",
            day(),
            anyhour(),
            who="admin",
            user=rng.choice(admins).username,
            victim=victim_app.name,
            address=external(),
        )
    # Sensitive first access: developer -> runtime, runtime -> build, CI -> runtime.
    broad_team = spec.drift.get("dev_broad_team")
    allowed = bool(broad_team) and rng.random() < 0.6
    pool = [x for x in humans if not x.oncall_app and (x.team == broad_team) == allowed] or humans
    h = rng.choice(pool)
    app = rng.choice(apps)
    add(
        "sensitive-first-access",
        f"{app.mount}/{app.base}/runtime",
        workday(h.tz),
        h.office[0] - h.tz + rng.uniform(1, 6),
        "sensitive-first-access/developer->runtime",
        who="human",
        user=h.username,
        app=app.name,
        expect="allowed" if allowed and h.team == broad_team else "denied",
    )
    grant = spec.drift.get("runtime_build_grant")
    app = spec.app(grant) if grant and rng.random() < 0.6 else rng.choice(apps)
    add(
        "sensitive-first-access",
        f"{app.mount}/{app.base}/build",
        day(),
        anyhour(),
        "sensitive-first-access/runtime->build",
        who="service",
        app=app.name,
        expect="allowed" if app.name == grant else "denied",
    )
    grant = spec.drift.get("ci_runtime_grant")
    if grant == deleted_app.name:
        grant = None
    app = (
        spec.app(grant)
        if grant and rng.random() < 0.6
        else rng.choice([x for x in apps if x is not deleted_app] or apps)
    )
    add(
        "sensitive-first-access",
        f"{app.mount}/{app.base}/runtime",
        day(),
        rng.uniform(9, 18),
        "sensitive-first-access/ci->runtime",
        who="ci",
        app=app.name,
        expect="allowed" if app.name == grant else "denied",
    )
    # Exfiltration.
    broad = spec.drift["broad_reader_app"]
    if rng.random() < 0.5:
        add(
            "exfiltration-fast",
            f"service:{spec.app(broad).runtime_role}",
            day(),
            anyhour(),
            who="service",
            app=broad,
            address=external(),
            count=rng.randint(30, 60),
        )
    else:
        a = rng.choice(admins)
        add(
            "exfiltration-fast",
            f"admin:{a.username}",
            day(),
            anyhour(),
            who="admin",
            user=a.username,
            address=external(),
            count=rng.randint(30, 60),
        )
    slow_day = rng.randint(lo, max(lo, spec.days - 3))
    add(
        "exfiltration-slow",
        f"service:{spec.app(broad).runtime_role}",
        slow_day,
        anyhour(),
        app=broad,
        count=rng.randint(12, 20),
    )
    # Destruction and disruption.
    a = rng.choice(admins)
    add(
        "secret-destruction",
        "kv",
        day(),
        anyhour(),
        user=a.username,
        address=_maybe(rng, external),
        count=rng.randint(2, 4),
    )
    add(
        "mass-revocation",
        "auth/token",
        day(),
        anyhour(),
        user=rng.choice(admins).username,
        address=_maybe(rng, external),
        count=rng.randint(8, 20),
    )
    archive = next(m.path for m in spec.mounts if m.purpose == "archive")
    add(
        "mount-disable",
        archive,
        day(),
        anyhour(),
        user=rng.choice(admins).username,
        address=_maybe(rng, external),
    )
    add(
        "policy-delete",
        deleted_app.ci_policy,
        day(),
        anyhour(),
        user=rng.choice(admins).username,
        address=_maybe(rng, external),
    )
    p = identity(("human", "service", "ci"))
    add("seal-attempt", "sys/seal", day(), anyhour(), address=_maybe(rng, external), **p)
    # Defence evasion.
    add(
        "audit-device-change",
        "sys/audit/file",
        day(),
        anyhour(),
        user=rng.choice(admins).username,
        address=_maybe(rng, external),
    )
    mounts = [m.path for m in spec.mounts if m.purpose != "archive"]
    add(
        "hmac-off-tune",
        rng.choice(mounts),
        day(),
        anyhour(),
        user=rng.choice(admins).username,
        keys=rng.sample(["password", "api_key", "private_key", "client_secret"], 2),
        address=_maybe(rng, external),
    )
    add(
        "plaintext-secret-in-stream",
        rng.choice(mounts),
        day(),
        anyhour(),
        user=rng.choice(admins).username,
        key=rng.choice(["db_password", "token", "secret_key"]),
        raw_attempt=rng.random() < 0.5,
        address=_maybe(rng, external),
    )
    # Dynamic credentials, root, export.
    pki = [x for x in spec.dyn if x.engine == "pki"]
    if pki:
        x = rng.choice(pki)
        add(
            "dynamic-credential-burst",
            f"{spec.pki_mount}/issue/{x.target}",
            day(),
            anyhour(),
            consumer=x.name,
            address=_maybe(rng, external),
            count=rng.randint(40, 80),
        )
    add("generate-root", "sys/generate-root", day(), anyhour(), address=external())
    add("root-token-use", "root", day(), anyhour(), address=external())
    add(
        "raft-snapshot",
        "sys/storage/raft/snapshot",
        day(),
        anyhour(),
        user=rng.choice(admins).username,
        address=_maybe(rng, external),
    )
    transit = [x.target for x in spec.dyn if x.engine == "transit"] or [f"{spec.transit_mount}-backup"]
    add(
        "transit-key-export",
        f"{spec.transit_mount}/keys/{rng.choice(transit)}",
        day(),
        anyhour(),
        user=rng.choice(admins).username,
        address=_maybe(rng, external),
    )
    # Rotation policy broken: a scheduled secret stops being rotated.
    daily = [r for r in spec.rotations if r.every == "daily"]
    if daily and spec.days - lo >= 3:
        r = rng.choice(daily)
        app = spec.app(r.app)
        skip = rng.randint(lo, max(lo, spec.days - 3))
        add(
            "rotation-overdue",
            f"{app.mount}/{app.base}/runtime/{r.secret}",
            skip,
            0.0,
            app=app.name,
            secret=r.secret,
            every=r.every,
        )
    return replace(spec, threats=tuple(out))


def _maybe(rng: random.Random, external: Callable[[], str]) -> str:
    """An external address half the time; "" = the identity's usual address."""
    return external() if rng.random() < 0.5 else ""


# -- execution -----------------------------------------------------------------------------------
def schedule_threats(org: Org) -> None:
    """Put every planned threat of ``org.spec`` on the organisation's clock."""
    for p in org.spec.threats:
        ts = org.when(p.day, p.hour)
        tag = org.label(p, threat=True, ts=ts, single_event=p.kind in SINGLE_EVENT)
        runner = _RUNNERS[p.kind]
        if p.kind == "exfiltration-slow":
            _exfiltration_slow(org, p, ts)
        elif p.kind == "rotation-overdue":
            _rotation_overdue(org, p, ts)
        else:
            org.schedule(ts, tag, partial(runner, org, p))


def _trigger(org: Org, p: Planned) -> None:
    """Mark the request just made as the one that is the attack (single-event kinds)."""
    org.labelled[p.instance].extra.setdefault("trigger_seq", len(org.d.calls))


def _outcome(org: Org, p: Planned, ok: bool) -> None:
    prev = org.labelled[p.instance].extra.get("outcome")
    now = "allowed" if ok else "denied"
    org.labelled[p.instance].extra["outcome"] = now if prev in (None, now) else "mixed"


def _creds(org: Org, p: Planned) -> Actor:
    """The credentials a threat uses, held by the attacker at the planned address."""
    params = p.params
    who = params.get("who", "")
    if who == "service":
        base = org.instances[params["app"]][0]
    elif who == "ci":
        base = org.ci[params["app"]]
    elif who == "rotator":
        base = org.rotator
    else:
        base = org.humans[params["user"]]
    thief = base.copy(
        name=f"{base.name}@{p.instance}", kind="attacker", address=params.get("address") or base.address
    )
    thief.token = None
    org.labelled[p.instance].extra.setdefault("actor", base.name)
    return thief


def _login(org: Org, thief: Actor) -> bool:
    return org.ensure_login(thief, force=True)


def _use_takeover(org: Org, actor: Actor) -> None:
    """What an attacker does with a login it just took over: look at the policies, read two
    service secrets."""
    if org.ensure_login(actor, force=True):
        org.d.req(actor, "LIST", "sys/policies/acl")
        for mount, path in org.rng.sample(_all_secrets(org, service_only=True), 2):
            org.kv_read(actor, mount, path)


def _all_secrets(org: Org, *, service_only: bool = False) -> list[tuple[str, str]]:
    spec = org.spec
    out = [
        (a.mount, org.app_path(a, part, s))
        for a in spec.apps
        for part, names in (("runtime", a.runtime), ("build", a.build))
        for s in names
    ]
    if not service_only:
        mounts = {m.team: m.path for m in spec.mounts if m.purpose == "team"}
        out += [(mounts[t], path) for t, paths in org.team_secrets.items() for path in paths]
    out += [(spec.user_mount, path) for paths in org.user_secrets.values() for path in paths]
    if not service_only:
        out += [(org.archive[0], path) for path in org.archive[1]]
    return [x for x in out if x[0] not in org.disabled_mounts and f"{x[0]}/{x[1]}" not in org.destroyed]


def _stolen(org: Org, p: Planned) -> None:
    thief = _creds(org, p)
    if not _login(org, thief):
        _outcome(org, p, False)
        return
    who = p.params["who"]
    if who == "service":
        app = org.spec.app(p.params["app"])
        for sec in app.runtime:
            _outcome(org, p, org.kv_read(thief, app.mount, org.app_path(app, "runtime", sec)).ok)
    elif who == "ci":
        app = org.spec.app(p.params["app"])
        for sec in app.build:
            _outcome(org, p, org.kv_read(thief, app.mount, org.app_path(app, "build", sec)).ok)
    elif who == "rotator":  # reading, not writing, every runtime secret
        for app in org.spec.apps:
            for sec in app.runtime:
                _outcome(
                    org, p, org.kv_read(thief, app.mount, org.app_path(app, "runtime", sec), gap=(0.3, 2)).ok
                )
    else:
        h = org.hspec(p.params["user"])
        mount = next(m.path for m in org.spec.mounts if m.purpose == "team" and m.team == h.team)
        for path in org.team_secrets.get(h.team, []):
            _outcome(org, p, org.kv_read(thief, mount, path, gap=(0.5, 3)).ok)


def _session_hijack(org: Org, p: Planned) -> None:
    name = p.params["user"]
    owner = org.humans[name]
    h = org.hspec(name)
    with org.d.tagged(BENIGN):
        owner.address = h.address
        if not org.ensure_login(owner):
            return
    thief = owner.copy(name=f"{name}@hijack", kind="attacker", address=p.params["address"])
    mount = next(m.path for m in org.spec.mounts if m.purpose == "team" and m.team == h.team)
    secrets = org.team_secrets.get(h.team, []) or ["x"]
    org.labelled[p.instance].extra["actor"] = name
    for i in range(6):
        with org.d.tagged(BENIGN):
            org.kv_read(owner, mount, org.rng.choice(secrets), gap=(5, 40))
        if i % 2 == 0:
            _outcome(org, p, org.kv_read(thief, mount, org.rng.choice(secrets), gap=(5, 40)).ok)
        else:
            _outcome(org, p, org.kv_read(thief, org.spec.user_mount, f"users/{name}/notes", gap=(5, 40)).ok)


def _brute_force(org: Org, p: Planned) -> None:
    user = p.params["user"]
    attacker = Actor(f"brute@{user}", "attacker", p.params["address"])
    path = f"auth/{org.spec.userpass_path}/login/{user}"
    for _ in range(int(p.params["attempts"])):
        org.d.req(attacker, "POST", path, {"password": org.secret_value(5)}, anonymous=True, gap=(1, 6))
    if p.params["succeed"]:
        r = org.d.req(attacker, "POST", path, {"password": org.passwords[user]}, anonymous=True)
        _outcome(org, p, r.ok)
        if r.ok:
            attacker.token = r.auth.get("client_token")
            org.kv_read(attacker, org.spec.user_mount, f"users/{user}/notes")
    else:
        _outcome(org, p, False)


def _spray(org: Org, p: Planned) -> None:
    attacker = Actor("sprayer", "attacker", p.params["address"])
    users = list(p.params["users"]) + [
        f"{org.rng.choice(('admin', 'test', 'deploy', 'jenkins', 'vault'))}{org.rng.randint(1, 9)}"
        for _ in range(int(p.params["bogus"]))
    ]
    org.rng.shuffle(users)
    for user in users:
        org.d.req(
            attacker,
            "POST",
            f"auth/{org.spec.userpass_path}/login/{user}",
            {"password": "Winter2026!"},
            anonymous=True,
            gap=(2, 12),
        )
    _outcome(org, p, False)


def _stuffing(org: Org, p: Planned) -> None:
    addresses = list(p.params["addresses"])
    hits = set(p.params["hits"])
    for i, user in enumerate(p.params["users"]):
        attacker = Actor("stuffer", "attacker", addresses[i % len(addresses)])
        pw = org.passwords[user] if user in hits else org.secret_value(6)
        r = org.d.req(
            attacker,
            "POST",
            f"auth/{org.spec.userpass_path}/login/{user}",
            {"password": pw},
            anonymous=True,
            gap=(3, 30),
        )
        _outcome(org, p, r.ok)
        if r.ok:
            attacker.token = r.auth.get("client_token")
            org.kv_read(attacker, org.spec.user_mount, f"users/{user}/notes", gap=(1, 5))


def _list_enumeration(org: Org, p: Planned) -> None:
    thief = _creds(org, p)
    if not _login(org, thief):
        return
    spec = org.spec
    folders: list[tuple[str, str]] = [(m.path, "") for m in spec.mounts]
    folders += [(a.mount, f"{a.base}/") for a in spec.apps] + [
        (a.mount, f"{a.base}/{part}/") for a in spec.apps for part in ("runtime", "build")
    ]
    folders += [(spec.user_mount, "users/")] + [
        (spec.user_mount, f"users/{u}/") for u in list(org.user_secrets)[:15]
    ]
    for mount, folder in folders:
        _outcome(org, p, org.kv_list(thief, mount, folder, gap=(0.2, 1.0)).ok)


def _metadata_walk(org: Org, p: Planned) -> None:
    thief = _admin(org, p)
    if thief is None:
        return
    mount = p.target
    stack = [""]
    budget = 70
    while stack and budget > 0:
        folder = stack.pop()
        r = org.kv_list(thief, mount, folder, gap=(0.2, 0.8))
        _outcome(org, p, r.ok)
        budget -= 1
        for key in sorted(r.data.get("keys", []) or [])[:12]:
            if key.endswith("/"):
                stack.append(folder + key)
            elif budget > 0:
                org.kv_metadata(thief, mount, folder + key, gap=(0.2, 0.8))
                budget -= 1


def _admin(org: Org, p: Planned) -> Actor | None:
    """A security admin's credentials (``params.user``), at the planned address or the usual one."""
    base = org.humans[p.params.get("user") or p.params["admin"]]
    thief = base.copy(
        name=f"{base.name}@{p.instance}",
        kind="attacker",
        address=p.params.get("address") or org.hspec(base.name).address,
    )
    thief.token = None
    org.labelled[p.instance].extra.setdefault("actor", base.name)
    return thief if _login(org, thief) else None


def _denied_burst(org: Org, p: Planned) -> None:
    thief = _creds(org, p)
    if not _login(org, thief):
        return
    spec, rng = org.spec, org.rng
    paths = [org.data_path(a.mount, org.app_path(a, "runtime", s)) for a in spec.apps for s in a.runtime]
    paths += [
        "sys/policies/acl/" + spec.admin_policy,
        f"auth/{spec.approle_path}/role",
        "sys/audit",
        "identity/entity/name",
    ]
    paths += [
        org.data_path(spec.user_mount, x)
        for x in rng.sample(sorted(p for v in org.user_secrets.values() for p in v), 6)
    ]
    for path in rng.sample(paths, min(len(paths), rng.randint(15, 28))):
        method = "LIST" if path.endswith(("role", "name")) else "GET"
        _outcome(org, p, org.d.req(thief, method, path, gap=(0.3, 3)).ok)


def _accessor_enum(org: Org, p: Planned) -> None:
    thief = _admin(org, p) if p.params["who"] == "admin" else _logged(org, p)
    if thief is None:
        return
    r = org.d.req(thief, "LIST", "auth/token/accessors", gap=(0.5, 2))
    _outcome(org, p, r.ok)
    accessors = list(r.data.get("keys", []) or [])[:25] or [org.secret_value(12) for _ in range(10)]
    for acc in accessors:
        _outcome(
            org, p, org.d.req(thief, "POST", "auth/token/lookup-accessor", {"accessor": acc}, gap=(0.2, 1)).ok
        )


def _logged(org: Org, p: Planned) -> Actor | None:
    thief = _creds(org, p)
    return thief if _login(org, thief) else None


def _capability_probe(org: Org, p: Planned) -> None:
    thief = _logged(org, p)
    if thief is None:
        return
    spec, rng = org.spec, org.rng
    paths = [
        "sys/seal",
        "sys/audit",
        "sys/policies/acl/" + spec.admin_policy,
        "auth/token/create",
        "auth/token/create-orphan",
        "sys/generate-root/attempt",
        "identity/entity-alias",
        f"{spec.transit_mount}/export/encryption-key/x",
    ]
    paths += [org.data_path(a.mount, f"{a.base}/runtime/{s}") for a in spec.apps for s in a.runtime]
    paths += [f"auth/{spec.approle_path}/role/{a.runtime_role}/secret-id" for a in spec.apps]
    for path in rng.sample(paths, min(len(paths), rng.randint(12, 24))):
        _outcome(
            org, p, org.d.req(thief, "POST", "sys/capabilities-self", {"paths": [path]}, gap=(0.2, 1.5)).ok
        )


def _self_granted(org: Org, p: Planned) -> None:
    thief = _creds(org, p)
    if not _login(org, thief):
        return
    spec = org.spec
    broad = "".join(
        f'path "{m.path}/*" {{ capabilities = ["create", "read", "update", "delete", "list"] }}\n'
        for m in spec.mounts
    )
    hcl = org.policy_text.get(p.target, "") + broad
    r = org.d.req(thief, "POST", f"sys/policies/acl/{p.target}", {"policy": hcl})
    _trigger(org, p)
    _outcome(org, p, r.ok)
    if r.ok:
        org.deleted_policies.discard(p.target)
    for mount, path in org.rng.sample(_all_secrets(org), 3):
        org.kv_read(thief, mount, path)


def _token_escalation(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    spec = org.spec
    pols = [spec.admin_policy, spec.rotator_policy] + [a.runtime_policy for a in spec.apps]
    r = org.d.req(
        admin, "POST", "auth/token/create", {"policies": pols, "ttl": "2160h", "display_name": "maint"}
    )
    _trigger(org, p)
    _outcome(org, p, r.ok)
    if r.ok:
        minted = Actor("maint", "attacker", admin.address, token=r.auth.get("client_token"))
        for mount, path in org.rng.sample(_all_secrets(org, service_only=True), 3):
            org.kv_read(minted, mount, path)


def _orphan_abuse(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    spec = org.spec
    app = org.rng.choice(spec.apps)
    pols = [app.runtime_policy, app.ci_policy, *sorted(spec.team_policies.values())[:1]]
    r = org.d.req(
        admin,
        "POST",
        "auth/token/create",
        {"policies": pols, "ttl": "4320h", "no_parent": True, "renewable": True},
    )
    _trigger(org, p)
    _outcome(org, p, r.ok)
    if not r.ok:
        return
    orphan = Actor("orphan", "attacker", p.params["address"], token=r.auth.get("client_token"))

    def use() -> None:
        for sec in app.runtime[:2]:
            org.kv_read(orphan, app.mount, org.app_path(app, "runtime", sec))
        org.d.req(orphan, "GET", "auth/token/lookup-self")

    org.schedule(org.d.now + org.rng.uniform(0.5, 3) * HOUR, p.instance, use)
    org.schedule(org.d.now + org.rng.uniform(6, 20) * HOUR, p.instance, use)


def _alias_takeover(org: Org, p: Planned) -> None:
    """A machine login of the attacker's making attached to a privileged person's entity."""
    if p.params.get("variant") == "group":
        _group_escalation(org, p)
        return
    admin = _admin(org, p)
    if admin is None:
        return
    spec = org.spec
    role = str(p.params["login"])
    base = f"auth/{spec.approle_path}/role/{role}"
    org.d.req(admin, "POST", base, {"token_policies": ["default"], "token_ttl": "1h"})
    role_id = str(org.d.req(admin, "GET", f"{base}/role-id").data.get("role_id", ""))
    eid = org.entity_ids.get(p.params["victim"], "")
    body = {"name": role_id, "canonical_id": eid, "mount_accessor": org.approle_accessor}
    r = org.d.req(admin, "POST", "identity/entity-alias", body)
    _trigger(org, p)
    _outcome(org, p, r.ok)
    secret_id = str(org.d.req(admin, "POST", f"{base}/secret-id").data.get("secret_id", ""))
    creds = {"role_id": role_id, "secret_id": secret_id}
    attacker = Actor(role, "attacker", p.params["address"], f"auth/{spec.approle_path}/login", creds)
    _use_takeover(org, attacker)


def _group_escalation(org: Org, p: Planned) -> None:
    """An ordinary person's entity put in a new group that carries the security admins' policy."""
    admin = _admin(org, p)
    if admin is None:
        return
    spec = org.spec
    member = str(p.params["member"])
    body = {"alias_name": member, "alias_mount_accessor": org.userpass_accessor}
    eid = str(org.d.req(admin, "POST", "identity/lookup/entity", body).data.get("id", ""))
    group = {"name": f"{p.params['login']}-grp", "policies": [spec.admin_policy], "member_entity_ids": [eid]}
    r = org.d.req(admin, "POST", "identity/group", group)
    _trigger(org, p)
    _outcome(org, p, r.ok)
    org.labelled[p.instance].extra["variant"] = "group"
    person = org.humans[member].copy(
        name=f"{member}@group", kind="attacker", address=org.hspec(member).address
    )
    person.token = None
    _use_takeover(org, person)


def _approle_change(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    spec = org.spec
    app = spec.app(p.params["app"])
    base = f"auth/{spec.approle_path}/role/{app.runtime_role}"
    org.d.req(admin, "GET", base)
    r = org.d.req(
        admin,
        "POST",
        base,
        {
            "token_policies": [app.runtime_policy, spec.admin_policy],
            "token_ttl": "720h",
            "secret_id_num_uses": 0,
        },
    )
    _trigger(org, p)
    _outcome(org, p, r.ok)
    thief = org.instances[app.name][0].copy(name="role-thief", kind="attacker", address=p.params["address"])
    thief.token = None
    if org.ensure_login(thief, force=True):
        org.d.req(thief, "GET", "sys/auth")
        org.d.req(thief, "LIST", "sys/policies/acl")


def _secret_id_minting(org: Org, p: Planned) -> None:
    spec = org.spec
    victim = spec.app(p.params["victim"])
    if p.params["who"] == "ci":
        minter = _logged(org, p)
    else:
        minter = _admin(org, p)
    if minter is None:
        return
    r = org.d.req(minter, "POST", f"auth/{spec.approle_path}/role/{victim.runtime_role}/secret-id")
    _trigger(org, p)
    _outcome(org, p, r.ok)
    if not r.ok:
        return
    creds = {"role_id": org.approle[victim.runtime_role]["role_id"], "secret_id": r.data.get("secret_id", "")}
    user = Actor("minted", "attacker", minter.address, f"auth/{spec.approle_path}/login", creds)
    if org.ensure_login(user, force=True):
        for sec in victim.runtime:
            org.kv_read(user, victim.mount, org.app_path(victim, "runtime", sec))


def _sensitive_first(org: Org, p: Planned) -> None:
    app = org.spec.app(p.params["app"])
    who = p.params["who"]
    if who == "human":
        actor = org.humans[p.params["user"]]
        org.labelled[p.instance].extra["actor"] = actor.name
        with org.d.tagged(BENIGN):
            actor.address = org.hspec(actor.name).address
            if not org.ensure_login(actor):
                return
        secrets = [
            org.app_path(app, "runtime", s) for s in org.rng.sample(app.runtime, min(2, len(app.runtime)))
        ]
    elif who == "service":
        actor = org.instances[app.name][0]
        org.labelled[p.instance].extra["actor"] = actor.name
        with org.d.tagged(BENIGN):
            if not org.ensure_login(actor):
                return
        secrets = [org.app_path(app, "build", s) for s in app.build[:2]]
    else:
        actor = org.ci[app.name]
        org.labelled[p.instance].extra["actor"] = actor.name
        with org.d.tagged(BENIGN):
            actor.address = org.rng.choice(org.spec.ci_runners)
            if not org.ensure_login(actor, force=True):
                return
            org.kv_read(actor, app.mount, org.app_path(app, "build", app.build[0]))
        granted = p.params.get("expect") == "allowed"
        names = [app.runtime[-1]] if granted else list(org.rng.sample(app.runtime, min(2, len(app.runtime))))
        secrets = [org.app_path(app, "runtime", s) for s in names]
    for i, path in enumerate(secrets):
        r = org.kv_read(actor, app.mount, path)
        if i == 0:
            _trigger(org, p)
        _outcome(org, p, r.ok)


def _exfil_fast(org: Org, p: Planned) -> None:
    thief = _admin(org, p) if p.params["who"] == "admin" else _logged(org, p)
    if thief is None:
        return
    items = _all_secrets(org, service_only=p.params["who"] != "admin")
    for mount, path in org.rng.sample(items, min(len(items), int(p.params["count"]))):
        _outcome(org, p, org.kv_read(thief, mount, path, gap=(0.2, 1.5)).ok)


def _exfiltration_slow(org: Org, p: Planned, ts: float) -> None:
    app = org.spec.app(p.params["app"])
    tag = p.instance
    state: dict[str, Actor] = {}

    def step(mount: str, path: str) -> None:
        thief = state.get("thief")
        if thief is None:
            thief = org.instances[app.name][0].copy(
                name=f"{app.name}@slow", kind="attacker", address=org.pod_address(app.subnet)
            )
            thief.token = None
            state["thief"] = thief
            org.labelled[tag].extra["actor"] = org.instances[app.name][0].name
        if org.ensure_login(thief):
            _outcome(org, p, org.kv_read(thief, mount, path).ok)

    def start() -> None:
        items = [x for x in _all_secrets(org, service_only=True) if not x[1].startswith(f"{app.base}/")]
        users = [x for x in items if x[1].startswith("users/")]
        others = [x for x in items if not x[1].startswith("users/")]
        n = int(p.params["count"])
        picks = org.rng.sample(others, min(len(others), n - n // 3)) + org.rng.sample(
            users, min(len(users), n // 3)
        )
        org.rng.shuffle(picks)
        t = org.d.now
        for mount, path in picks:
            org.schedule(t, tag, partial(step, mount, path))
            t += org.rng.uniform(2, 5) * HOUR

    org.schedule(ts, tag, start)


def _destruction(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    # Rotated secrets are left alone: a destroyed one would really fall overdue.
    rotated = {
        f"{org.spec.app(r.app).mount}/{org.app_path(org.spec.app(r.app), 'runtime', r.secret)}"
        for r in org.spec.rotations
    }
    items = [x for x in _all_secrets(org) if f"{x[0]}/{x[1]}" not in rotated]
    for mount, path in org.rng.sample(items, min(len(items), int(p.params["count"]))):
        if org.kvm(mount).version == 2:
            v = max(org.versions.get(f"{mount}/{path}", 1), 1)
            r = org.d.req(admin, "POST", f"{mount}/destroy/{path}", {"versions": list(range(1, v + 1))})
            _trigger(org, p)
            org.d.req(admin, "DELETE", f"{mount}/metadata/{path}")
        else:
            r = org.d.req(admin, "DELETE", f"{mount}/{path}")
            _trigger(org, p)
        _outcome(org, p, r.ok)
        org.destroyed.add(f"{mount}/{path}")
        org.labelled[p.instance].extra.setdefault("paths", []).append(f"{mount}/{path}")


def _mass_revocation(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    org.d.req(admin, "LIST", "auth/token/accessors", gap=(1, 5))
    victims = [
        a
        for a in [
            *[i for v in org.instances.values() for i in v],
            *org.humans.values(),
            *org.agents.values(),
            *org.dyn.values(),
        ]
        if a.token and a.accessor and a.name != admin.name.split("@")[0]
    ]
    for actor in org.rng.sample(victims, min(len(victims), int(p.params["count"]))):
        r = org.d.req(
            admin, "POST", "auth/token/revoke-accessor", {"accessor": actor.accessor}, gap=(0.2, 1.0)
        )
        _outcome(org, p, r.ok)
        if r.ok:
            actor.token = None
            actor.expires = 0.0


def _mount_disable(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    r = org.d.req(admin, "DELETE", f"sys/mounts/{p.target}")
    _trigger(org, p)
    _outcome(org, p, r.ok)
    if r.ok:
        org.disabled_mounts.add(p.target)


def _policy_delete(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    org.d.req(admin, "GET", f"sys/policies/acl/{p.target}")
    r = org.d.req(admin, "DELETE", f"sys/policies/acl/{p.target}")
    _trigger(org, p)
    _outcome(org, p, r.ok)
    if r.ok:
        org.deleted_policies.add(p.target)


def _seal(org: Org, p: Planned) -> None:
    thief = _logged(org, p)
    if thief is None:
        return
    r = org.d.req(thief, "PUT", "sys/seal")
    _trigger(org, p)
    _outcome(org, p, r.ok)
    if r.ok:  # the thief's token could seal: the operators unseal, as they would within minutes
        org.d.unseal()
    org.d.req(thief, "PUT", "sys/step-down")


def _audit_change(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    org.d.req(admin, "GET", "sys/audit")
    r = org.d.req(admin, "DELETE", "sys/audit/file")
    _trigger(org, p)
    _outcome(org, p, r.ok)
    r = org.d.req(admin, "POST", "sys/audit/quiet", {"type": "file", "options": {"file_path": "/dev/null"}})
    _outcome(org, p, r.ok)


def _tune_path(org: Org, mount: str) -> str:
    return f"sys/mounts/{mount}/tune"


def _hmac_off(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    keys = list(p.params["keys"])
    r = org.d.req(
        admin,
        "POST",
        _tune_path(org, p.target),
        {"audit_non_hmac_request_keys": keys, "audit_non_hmac_response_keys": keys},
    )
    _trigger(org, p)
    _outcome(org, p, r.ok)


def _plaintext(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    key = str(p.params["key"])
    if p.params.get("raw_attempt"):
        org.d.req(
            admin,
            "POST",
            "sys/audit/raw-copy",
            {"type": "file", "options": {"file_path": "/tmp/raw-audit.log", "log_raw": "true"}},
        )
    r = org.d.req(admin, "POST", _tune_path(org, p.target), {"audit_non_hmac_request_keys": [key]})
    _trigger(org, p)
    _outcome(org, p, r.ok)
    for i in range(org.rng.randint(2, 3)):
        canary = f"canary-{org.secret_value(8)}"
        org.canaries.append(canary)
        org.labelled[p.instance].extra.setdefault("canaries", []).append(canary)
        org.kv_write(admin, p.target, f"imports/batch-{i}", {key: canary})


def _dyn_burst(org: Org, p: Planned) -> None:
    x = next(s for s in org.spec.dyn if s.name == p.params["consumer"])
    base = org.dyn[x.name]
    thief = base.copy(
        name=f"{x.name}@burst", kind="attacker", address=p.params.get("address") or base.address
    )
    thief.token = None
    org.labelled[p.instance].extra["actor"] = x.name
    if not _login(org, thief):
        return
    for _ in range(int(p.params["count"])):
        _outcome(org, p, org.dyn_request(thief, x.engine, x.target, gap=(0.5, 6)).ok)


def _generate_root(org: Org, p: Planned) -> None:
    anon = Actor("anonymous", "attacker", p.params["address"])
    r = org.d.req(anon, "PUT", "sys/generate-root/attempt", {}, anonymous=True)
    _trigger(org, p)
    _outcome(org, p, r.ok)
    org.d.req(anon, "GET", "sys/generate-root/attempt", anonymous=True)
    org.d.req(anon, "DELETE", "sys/generate-root/attempt", anonymous=True)


def _root_use(org: Org, p: Planned) -> None:
    root = Actor("root", "attacker", p.params["address"], token=org.d.root_token)
    r = org.d.req(root, "GET", "sys/auth")
    _trigger(org, p)
    _outcome(org, p, r.ok)
    for mount, path in org.rng.sample(_all_secrets(org, service_only=True), 2):
        org.kv_read(root, mount, path)
    r = org.d.req(root, "POST", "auth/token/create", {"policies": ["root"], "ttl": "72h"})
    if r.ok:
        minted = Actor("root-child", "attacker", p.params["address"], token=r.auth.get("client_token"))
        org.d.req(minted, "GET", "sys/mounts")
        org.d.req(minted, "LIST", "sys/policies/acl")


def _raft_snapshot(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    r = org.d.req(admin, "GET", "sys/storage/raft/snapshot")
    _trigger(org, p)
    _outcome(org, p, r.ok)


def _transit_export(org: Org, p: Planned) -> None:
    admin = _admin(org, p)
    if admin is None:
        return
    key = p.target.rsplit("/", 1)[1]
    m = org.spec.transit_mount
    r = org.d.req(
        admin, "POST", f"{m}/keys/{key}/config", {"exportable": True, "allow_plaintext_backup": True}
    )
    _trigger(org, p)
    _outcome(org, p, r.ok)
    org.d.req(admin, "GET", f"{m}/export/encryption-key/{key}")
    org.d.req(admin, "GET", f"{m}/backup/{key}")


def _rotation_overdue(org: Org, p: Planned, ts: float) -> None:
    app = org.spec.app(p.params["app"])
    full = f"{app.mount}/{org.app_path(app, 'runtime', p.params['secret'])}"
    org.overdue_targets.add(full)

    def stop() -> None:
        org.skip_rotation[full] = org.d.now
        last = org.last_write.get(full, org.d.now)
        due = last + DAY
        org.overdue[full] = (due, p.instance, 3)
        org.labelled[p.instance].extra["due_time"] = due
        org.labelled[p.instance].planned_ts = due

    org.schedule(ts, BENIGN, stop)


_RUNNERS: Final[dict[str, Callable[[Org, Planned], None]]] = {
    "stolen-credential-new-address": _stolen,
    "stolen-credential-odd-hour": _stolen,
    "session-hijack": _session_hijack,
    "brute-force": _brute_force,
    "password-spraying": _spray,
    "credential-stuffing": _stuffing,
    "list-enumeration": _list_enumeration,
    "metadata-walk": _metadata_walk,
    "permission-denied-burst": _denied_burst,
    "accessor-enumeration": _accessor_enum,
    "capability-probing": _capability_probe,
    "self-granted-policy": _self_granted,
    "token-privilege-escalation": _token_escalation,
    "orphan-token-abuse": _orphan_abuse,
    "entity-alias-takeover": _alias_takeover,
    "approle-role-change": _approle_change,
    "secret-id-minting": _secret_id_minting,
    "sensitive-first-access": _sensitive_first,
    "exfiltration-fast": _exfil_fast,
    "exfiltration-slow": lambda org, p: None,
    "secret-destruction": _destruction,
    "mass-revocation": _mass_revocation,
    "mount-disable": _mount_disable,
    "policy-delete": _policy_delete,
    "seal-attempt": _seal,
    "audit-device-change": _audit_change,
    "hmac-off-tune": _hmac_off,
    "plaintext-secret-in-stream": _plaintext,
    "dynamic-credential-burst": _dyn_burst,
    "generate-root": _generate_root,
    "root-token-use": _root_use,
    "raft-snapshot": _raft_snapshot,
    "transit-key-export": _transit_export,
    "rotation-overdue": lambda org, p: None,
}
