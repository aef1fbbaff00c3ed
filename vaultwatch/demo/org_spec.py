"""Deployment specs for evaluation organisations, drawn at random from a seed (pure: no server).

Long because the spec is the one place where everything a detector could learn by name is drawn, and
it must stay in one piece to stay deterministic.

A spec fixes everything about an organisation that a detector could learn by name: the KV mounts
and their versions, where the seed's service (``pxl-core``) keeps its secrets (``logos/`` as a
mount, or ``logos/`` as a prefix under a shared mount), the other applications, policy, AppRole
role, auth-mount and entity names, the identities of every kind with their addresses, time zones,
office hours and holidays, the rotation schedule, and the planned benign hard cases. Names are
drawn from word lists and never equal the names the packaged access model or the scenario suite
use (:data:`RESERVED_NAMES`).

>>> a, b = draw_layout(1, "small"), draw_layout(2, "small")
>>> a == draw_layout(1, "small"), a.policies == b.policies
(True, False)
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = [
    "GENERATOR_VERSION",
    "RESERVED_NAMES",
    "SIZES",
    "AppSpec",
    "DynSpec",
    "HumanSpec",
    "AgentSpec",
    "KvMount",
    "OrgSpec",
    "Planned",
    "RotationSpec",
    "SizeProfile",
    "draw_layout",
    "spec_hash",
    "spec_json",
]

#: Bumped whenever the same seed would produce a different organisation (invalidates caches).
GENERATOR_VERSION: Final = 2
SEED_APP: Final = "pxl-core"
SEED_PREFIX: Final = "logos"

#: Names the packaged default access model, the scenario suite and the demo use: never drawn.
RESERVED_NAMES: Final = frozenset(
    {
        "pxl-core-runtime",
        "pxl-core-ci",
        "developer",
        "admin",
        "rotator",
        "oncall",
        "token-maker",
        "extra",
        "mine",
        "broken",
        "alice",
        "bob",
        "carol",
        "dana",
        "erik",
        "fatima",
        "noor",
        "ops-kim",
        "ops-lee",
        "ops-ravi",
        "billing",
        "search",
        "notify",
        "approle",
        "userpass",
        "runtime",
        "ci",
        "build",
        "default",
        "root",
        "secret",
        "kv",
        "logos",
        "pxl-core",
        "legacy",
        "backdoor",
        "backup",
        "svc-sync",
        "svc-backup",
    }
)

_WORDS: Final = (
    "amber", "aspen", "atlas", "aurora", "basalt", "beacon", "birch", "bolt", "canyon", "cedar",
    "cinder", "cobalt", "comet", "coral", "crane", "delta", "drift", "dune", "echo", "ember",
    "falcon", "fern", "fjord", "flint", "galena", "garnet", "geyser", "glacier", "granite", "harbor",
    "hazel", "heron", "indigo", "iris", "jade", "juniper", "kelp", "kestrel", "lagoon", "larch",
    "lumen", "lynx", "magma", "maple", "meadow", "mesa", "nebula", "nimbus", "oak", "onyx",
    "orbit", "osprey", "pebble", "pine", "plover", "prism", "pulsar", "quartz", "quill", "raven",
    "reef", "ridge", "river", "sable", "saffron", "sequoia", "shale", "sierra", "sparrow", "spruce",
    "summit", "tamarack", "tern", "thistle", "tide", "topaz", "tundra", "umber", "vale", "vega",
    "willow", "wren", "yarrow", "zephyr", "zinc", "orca", "puffin", "marten", "ibis", "bison",
)  # fmt: skip
_PEOPLE: Final = (
    "aiko", "amara", "anders", "arjun", "beatriz", "bjorn", "chen", "chidi", "dmitri", "elif",
    "emeka", "esme", "farah", "felipe", "giulia", "hana", "hamid", "ines", "ivan", "jonas",
    "kalani", "kenji", "lars", "leila", "lucia", "magnus", "malik", "mei", "mateo", "nadia",
    "nikos", "olu", "oskar", "priya", "quentin", "rafael", "rania", "rohan", "saanvi", "sami",
    "sofia", "tariq", "thea", "tomas", "uma", "valentin", "wei", "xavier", "yara", "yusuf",
    "zara", "zoltan", "agnes", "bruno", "clara", "diego", "elena", "femi", "greta", "hugo",
    "ingrid", "jamal", "kofi", "lena", "marco", "nora", "omar", "paula", "rosa", "stefan",
)  # fmt: skip
_SURNAMES: Final = (
    "adeyemi", "berg", "costa", "dubois", "eriksen", "fischer", "garcia", "haddad", "ito", "jensen",
    "kowalski", "lindqvist", "mensah", "novak", "okafor", "petrov", "quispe", "rossi", "sato", "tanaka",
    "ueda", "varga", "weber", "xu", "yilmaz", "zhang", "moreau", "nakamura", "oliveira", "singh",
)  # fmt: skip

#: Time zones (UTC offset in hours) humans can work in.
_ZONES: Final = (-8.0, -5.0, -3.0, 0.0, 1.0, 2.0, 5.5, 8.0, 9.0)
_STARTS: Final = tuple(datetime(2026, 1, 5, tzinfo=UTC) + timedelta(weeks=w) for w in range(0, 44, 3))


@dataclass(frozen=True)
class SizeProfile:
    """How big an organisation of a size is (identity counts are drawn within these ranges)."""

    days: int
    learning_days: int
    apps: tuple[int, int]
    instances: tuple[int, int]
    humans: tuple[int, int]
    admins: tuple[int, int]
    agents: tuple[int, int]
    dyn: tuple[int, int]
    teams: tuple[int, int]


SIZES: Final = {
    "small": SizeProfile(10, 7, (2, 2), (1, 2), (3, 8), (1, 2), (1, 1), (1, 2), (1, 2)),
    "medium": SizeProfile(14, 7, (3, 4), (2, 3), (12, 24), (2, 3), (1, 2), (2, 3), (2, 3)),
    "large": SizeProfile(28, 14, (10, 12), (5, 10), (180, 200), (5, 6), (3, 4), (6, 8), (4, 6)),
}


@dataclass(frozen=True)
class KvMount:
    """A KV secrets engine: its path (no trailing slash), version 1 or 2, and what it holds."""

    path: str
    version: int
    purpose: str  # "service", "team" or "users"
    team: str = ""


@dataclass(frozen=True)
class AppSpec:
    """An application: where its secrets live, its instances and pipelines, its policy and role names."""

    name: str
    mount: str
    base: str  # folder inside the mount: "<base>/runtime/<secret>", "<base>/build/<secret>"
    runtime: tuple[str, ...]
    build: tuple[str, ...]
    instances: int
    subnet: str  # "10.a.b": instances take "10.a.b.N"
    deploy_weekdays: tuple[int, ...]
    pipelines: tuple[int, int]
    refresh_hours: float
    runtime_policy: str
    ci_policy: str
    runtime_role: str
    ci_role: str
    ci_mints_secret_id: bool


@dataclass(frozen=True)
class HumanSpec:
    """A person on the userpass mount: team, time zone, office hours, holidays and addresses."""

    username: str
    team: str
    tz: float
    office: tuple[float, float]  # local hours
    policies: tuple[str, ...]
    address: str
    vpn: str
    admin: bool = False
    oncall_app: str = ""  # reads this app's runtime secrets now and then (on-call habit)
    entity: str = ""  # explicit identity entity (admins), "" = Vault auto-creates one at login
    auth: str = "userpass"  # or "sso": an OIDC-style JWT login through ``OrgSpec.sso_path``
    sso_role: str = ""
    holiday: tuple[int, int] | None = None  # [start, end) simulated days away
    start_day: int = 0  # > 0: onboarded that day (a benign hard case)


@dataclass(frozen=True)
class AgentSpec:
    """A monitoring agent on an orphan token the security admins mint weekly."""

    name: str
    policy: str
    address: str
    every_hours: float


@dataclass(frozen=True)
class DynSpec:
    """A consumer of dynamic credentials or encryption: ``pki`` (issue certificates) or ``transit``."""

    name: str
    engine: str
    role: str  # AppRole role name
    policy: str
    target: str  # PKI role or transit key
    address: str
    per_day: tuple[int, int]


@dataclass(frozen=True)
class RotationSpec:
    """One rotated secret: ``every`` is ``daily``, ``weekly``, ``monthly`` or ``deploy``."""

    app: str
    secret: str
    every: str
    hour: float = 2.0  # UTC hour of the nightly job
    weekday: int = 6
    day: int = 0  # monthly: the simulated day it falls on


@dataclass(frozen=True)
class Planned:
    """A planned labelled event (threat or benign hard case) at simulated ``day`` + ``hour`` (UTC)."""

    instance: str
    kind: str
    target: str
    day: int
    hour: float
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OrgSpec:
    """Everything about one organisation, drawn from ``seed`` (JSON via :func:`spec_json`)."""

    seed: int
    size: str
    days: int
    learning_days: int
    start: str
    version: int
    layout: str  # "root" (logos/ is a mount) or "shared" (logos/ is a prefix)
    mounts: tuple[KvMount, ...]
    user_mount: str
    approle_path: str
    userpass_path: str
    sso_path: str
    sso_roles: dict[str, tuple[str, ...]]
    teams: tuple[str, ...]
    apps: tuple[AppSpec, ...]
    humans: tuple[HumanSpec, ...]
    agents: tuple[AgentSpec, ...]
    dyn: tuple[DynSpec, ...]
    rotations: tuple[RotationSpec, ...]
    policies: dict[str, str]
    rotator_role: str
    rotator_policy: str
    rotator_address: str
    admin_policy: str
    agent_policy: str
    team_policies: dict[str, str]
    pki_mount: str
    transit_mount: str
    ci_runners: tuple[str, ...]
    office_nets: dict[str, str]
    drift: dict[str, str]
    holidays: dict[str, tuple[int, ...]] = field(default_factory=dict)
    hard_cases: tuple[Planned, ...] = ()
    threats: tuple[Planned, ...] = ()

    @property
    def t0(self) -> float:
        """Simulated start (epoch seconds): a Monday 00:00 UTC."""
        return datetime.fromisoformat(self.start).timestamp()

    def mount(self, path: str) -> KvMount:
        """The KV mount at ``path``."""
        for m in self.mounts:
            if m.path == path:
                return m
        raise KeyError(path)

    def app(self, name: str) -> AppSpec:
        """The application called ``name``."""
        for a in self.apps:
            if a.name == name:
                return a
        raise KeyError(name)

    def identity_count(self) -> int:
        """Identities of every kind: instances, pipelines, the rotator, humans, agents, consumers."""
        apps = sum(a.instances + 1 for a in self.apps)
        return apps + 1 + len(self.humans) + len(self.agents) + len(self.dyn)


def spec_json(spec: OrgSpec) -> str:
    """The canonical JSON of ``spec`` (sorted keys, no spaces)."""
    return json.dumps(asdict(spec), sort_keys=True, separators=(",", ":"))


def spec_hash(spec: OrgSpec) -> str:
    """16 hex chars identifying ``spec`` and the generator version (the cache key)."""
    return hashlib.sha256(f"{GENERATOR_VERSION}:{spec_json(spec)}".encode()).hexdigest()[:16]


# -- drawing -----------------------------------------------------------------------------------
class _Names:
    """Unique random names, never a reserved one."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set(RESERVED_NAMES)

    def take(self, make: Any) -> str:
        for attempt in range(500):
            name = str(make())
            if attempt >= 3:
                name = f"{name}-{self.rng.randint(2, 99)}"
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("name space exhausted")

    def word(self) -> str:
        return self.take(lambda: self.rng.choice(_WORDS))

    def styled(self, base: str, styles: tuple[str, ...]) -> str:
        rng = self.rng
        return self.take(
            lambda: rng.choice(styles).format(b=base, w=rng.choice(_WORDS), n=rng.randint(1, 99))
        )

    def person(self) -> str:
        rng = self.rng
        style = rng.choice(("{f}", "{f}.{s}", "{f}{i}", "{i}{s}"))

        def make() -> str:
            f, s = rng.choice(_PEOPLE), rng.choice(_SURNAMES)
            return style.format(f=f, s=s, i=f[0])

        return self.take(make)


_RUNTIME_CHOICES: Final = (
    ("jwt-key", "jwt-signing", "jwt"),
    ("api-key", "api-keys", "api-key-partner"),
    ("tls-cert", "tls", "tls-bundle"),
    ("db-creds", "database-url", "db"),
)
_OTHER_RUNTIME: Final = ("config", "smtp-password", "oauth-client", "queue-creds", "cache-url", "hmac-salt")
_BUILD_EXTRA: Final = ("cosign-key", "npm-token", "sonar-token", "signing-cert", "pypi-token")


def draw_layout(seed: int, size: str | None = None, days: int | None = None) -> OrgSpec:
    """Draw an organisation's layout, identities and benign hard cases from ``seed`` (no threats)."""
    size = size or "medium"
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: one of {sorted(SIZES)}")
    prof = SIZES[size]
    rng = random.Random(f"vaultwatch-org:{seed}:{size}")
    names = _Names(rng)
    n_days = days if days is not None else prof.days
    learning = min(prof.learning_days, max(n_days - 2, 1))
    start = rng.choice(_STARTS)

    # -- mounts and applications -----------------------------------------------------------------
    layout = rng.choice(("root", "shared"))
    mounts: list[KvMount] = []
    if layout == "root":
        service_mount = SEED_PREFIX
        seed_base = SEED_APP
        other_prefix = rng.choice(("", "", "apps/", "svc/"))
    else:
        service_mount = rng.choice(("secret", "kv", names.word(), f"{names.word()}-kv"))
        seed_base = f"{SEED_PREFIX}/{SEED_APP}"
        other_prefix = rng.choice((f"{SEED_PREFIX}/", "apps/", "", f"{names.word()}/"))
    mounts.append(KvMount(service_mount, rng.choice((1, 2, 2, 2)), "service"))
    n_teams = rng.randint(*prof.teams)
    teams = tuple(names.word() for _ in range(n_teams))
    for team in teams:
        style = rng.choice(("{t}", "team-{t}", "{t}-secrets", "kv-{t}"))
        mounts.append(
            KvMount(names.take(lambda t=team, s=style: s.format(t=t)), rng.choice((1, 2)), "team", team)
        )
    if rng.random() < 0.5:
        user_mount = names.take(
            lambda: rng.choice(("users", "personal", "home", f"{rng.choice(_WORDS)}-users"))
        )
        mounts.append(KvMount(user_mount, 2, "users"))
    else:
        user_mount = mounts[1].path
    archive = names.take(
        lambda: rng.choice(("archive", "legacy-kv", "old-secrets", f"{rng.choice(_WORDS)}-archive"))
    )
    mounts.append(KvMount(archive, 1, "archive"))

    pol_styles_rt = ("{b}-svc", "{b}_read", "svc-{b}", "{w}-{n}", "{b}-app-ro", "p-{b}")
    pol_styles_ci = ("{b}-pipeline", "{b}_deploy", "build-{b}", "{w}-{n}", "{b}-release", "cicd-{b}")
    role_styles_rt = ("{b}", "{b}-pods", "{b}-svc-role", "app-{b}", "{w}-{b}")
    role_styles_ci = ("{b}-jenkins", "gha-{b}", "{b}-builder", "{w}-runner-{n}", "deploy-{b}")

    apps: list[AppSpec] = []
    n_apps = rng.randint(*prof.apps)
    subnets: set[str] = set()
    for i in range(n_apps):
        name = SEED_APP if i == 0 else names.word()
        if i == 0:
            runtime = tuple(rng.choice(group) for group in _RUNTIME_CHOICES)
            runtime += tuple(rng.sample(_OTHER_RUNTIME, rng.randint(0, 2)))
            build = ("registry-token", *rng.sample(_BUILD_EXTRA, rng.randint(0, 2)))
            base = seed_base
        else:
            runtime = tuple(
                rng.sample([g[0] for g in _RUNTIME_CHOICES] + list(_OTHER_RUNTIME), rng.randint(2, 4))
            )
            build = tuple(rng.sample(("registry-token", *_BUILD_EXTRA), rng.randint(1, 2)))
            base = f"{other_prefix}{name}"
        subnet = names.take(lambda: f"10.{rng.randint(16, 99)}.{rng.randint(0, 250)}")
        subnets.add(subnet)
        apps.append(
            AppSpec(
                name=name,
                mount=service_mount,
                base=base,
                runtime=runtime,
                build=build,
                instances=rng.randint(*prof.instances) + (1 if i == 0 else 0),
                subnet=subnet,
                deploy_weekdays=tuple(sorted(rng.sample(range(5), rng.randint(1, 2)))),
                pipelines=(rng.randint(0, 1), rng.randint(1, 3)),
                refresh_hours=rng.choice((6.0, 8.0, 12.0)),
                runtime_policy=names.styled(name, pol_styles_rt),
                ci_policy=names.styled(name, pol_styles_ci),
                runtime_role=names.styled(name, role_styles_rt),
                ci_role=names.styled(name, role_styles_ci),
                ci_mints_secret_id=rng.random() < 0.4,
            )
        )

    approle_path = names.take(
        lambda: rng.choice(("machines", "apps", "svc-auth", "workloads", f"{rng.choice(_WORDS)}-approle"))
    )
    userpass_path = names.take(
        lambda: rng.choice(("people", "staff", "corp-login", "humans", f"{rng.choice(_WORDS)}-users"))
    )
    sso_path = names.take(lambda: rng.choice(("oidc", "sso", "okta", "entra", f"{rng.choice(_WORDS)}-sso")))
    # How many people sign in through single sign-on rather than a Vault password.
    sso_share = rng.choice((0.0, 0.6, 0.8, 0.9, 0.9))

    # -- policies ---------------------------------------------------------------------------------
    def kv_data(mount: str, path: str) -> str:
        return f"{mount}/data/{path}" if _version(mounts, mount) == 2 else f"{mount}/{path}"

    def kv_meta(mount: str, path: str) -> str:
        return f"{mount}/metadata/{path}" if _version(mounts, mount) == 2 else f"{mount}/{path}"

    drift: dict[str, str] = {}
    policies: dict[str, str] = {}
    broad_app = rng.choice(apps[1:]) if len(apps) > 1 else apps[0]
    drift["broad_reader_app"] = broad_app.name
    if rng.random() < 0.5:
        drift["ci_runtime_grant"] = rng.choice(apps).name
    if rng.random() < 0.5:
        drift["runtime_build_grant"] = rng.choice(apps).name
    if rng.random() < 0.5:
        drift["ci_secret_id_wildcard"] = rng.choice(apps).name
    for app in apps:
        rt = f'path "{kv_data(app.mount, app.base)}/runtime/*" {{ capabilities = ["read"] }}\n'
        if drift.get("runtime_build_grant") == app.name:
            rt += f'path "{kv_data(app.mount, app.base)}/build/*" {{ capabilities = ["read"] }}\n'
        if app is broad_app:  # a legacy over-broad grant nobody cleaned up
            rt += f'path "{kv_data(service_mount, "")}*" {{ capabilities = ["read"] }}\n'
            rt += f'path "{kv_data(user_mount, "")}*" {{ capabilities = ["read"] }}\n'
        policies[app.runtime_policy] = rt
        ci = f'path "{kv_data(app.mount, app.base)}/build/*" {{ capabilities = ["read"] }}\n'
        if drift.get("ci_runtime_grant") == app.name:
            one = f"{kv_data(app.mount, app.base)}/runtime/{app.runtime[-1]}"
            ci += f'path "{one}" {{ capabilities = ["read"] }}\n'
        if drift.get("ci_secret_id_wildcard") == app.name:
            ci += f'path "auth/{approle_path}/role/+/secret-id" {{ capabilities = ["update"] }}\n'
        elif app.ci_mints_secret_id:
            mint = f"auth/{approle_path}/role/{app.runtime_role}/secret-id"
            ci += f'path "{mint}" {{ capabilities = ["update"] }}\n'
        policies[app.ci_policy] = ci
    rotator_policy = names.styled("rotation", ("{b}-job", "{w}-rotation", "cron-{w}", "{w}-keeper"))
    rotator_role = names.styled("rotation", ("{w}-rotator-role", "cron-{w}-{n}", "{w}-keys"))
    rot = "".join(
        f'path "{kv_data(a.mount, a.base)}/+/*" {{ capabilities = ["create", "update", "read"] }}\n'
        f'path "{kv_meta(a.mount, a.base)}/+/*" {{ capabilities = ["read"] }}\n'
        for a in apps
    )
    if rng.random() < 0.6:  # the job was once allowed to manage its own policy
        rot += f'path "sys/policies/acl/{rotator_policy}" {{ capabilities = ["create", "update", "read"] }}\n'
        drift["self_policy"] = rotator_policy
    policies[rotator_policy] = rot
    admin_policy = names.styled("sec", ("{w}-secops", "security-{w}", "{w}-platform-admins", "vault-{w}"))
    policies[admin_policy] = (
        'path "sys/*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }\n'
        'path "auth/*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }\n'
        'path "identity/*" { capabilities = ["create", "read", "update", "delete", "list"] }\n'
        + "".join(
            f'path "{m.path}/*" {{ capabilities = ["create", "read", "update", "delete", "list"] }}\n'
            for m in mounts
        )
    )
    agent_policy = names.styled("mon", ("{w}-monitor", "telemetry-{w}", "{w}-probe", "obs-{w}"))
    policies[agent_policy] = (
        'path "sys/mounts" { capabilities = ["read"] }\n'
        'path "sys/auth" { capabilities = ["read"] }\n'
        'path "sys/policies/acl" { capabilities = ["list"] }\n'
        'path "sys/leases/lookup" { capabilities = ["update"] }\n'
    )
    team_policies: dict[str, str] = {}
    for m in mounts[1:]:
        if m.purpose != "team":
            continue
        pname = names.styled(m.team, ("{b}-team", "team-{b}", "{b}-rw", "grp-{b}", "{w}-{b}"))
        team_policies[m.team] = pname
        policies[pname] = (
            f'path "{kv_data(m.path, "")}*" {{ capabilities = ["create", "read", "update", "list"] }}\n'
            f'path "{kv_meta(m.path, "")}*" {{ capabilities = ["list", "read"] }}\n'
        )
    if rng.random() < 0.5:  # a team that was once given read on the whole service mount
        drift["dev_broad_team"] = rng.choice(teams)
        policies[team_policies[drift["dev_broad_team"]]] += (
            f'path "{kv_data(service_mount, "")}*" {{ capabilities = ["read"] }}\n'
        )
    # Per-user paths: one templated policy gives every human their own folder.
    self_policy = names.styled("self", ("{w}-personal", "own-{w}", "{w}-home"))
    policies[self_policy] = (
        f'path "{kv_data(user_mount, "users/{{identity.entity.aliases.ACCESSOR.name}}/*")}" '
        '{ capabilities = ["create", "read", "update", "delete"] }\n'
        f'path "{kv_meta(user_mount, "users/{{identity.entity.aliases.ACCESSOR.name}}/*")}" '
        '{ capabilities = ["list", "read"] }\n'
    )
    policies[self_policy] += policies[self_policy].replace("ACCESSOR", "SSO_ACCESSOR")
    drift["self_policy_name"] = self_policy
    oncall_policy = names.styled("oncall", ("{w}-pager", "on-duty-{w}", "{w}-sre"))
    drift["oncall_policy"] = oncall_policy

    # -- people -------------------------------------------------------------------------------------
    n_zones = rng.randint(1, 3 if size != "small" else 2)
    zones = rng.sample(_ZONES, n_zones)
    office_nets = {
        str(z): names.take(lambda: f"172.{rng.randint(16, 31)}.{rng.randint(0, 250)}") for z in zones
    }
    vpn_net = names.take(lambda: f"100.{rng.randint(64, 127)}.{rng.randint(0, 250)}")
    humans: list[HumanSpec] = []
    n_humans = rng.randint(*prof.humans)
    n_admins = rng.randint(*prof.admins)
    host = 10
    oncall_apps: list[str] = []
    for i in range(n_admins + n_humans):
        admin = i < n_admins
        tz = rng.choice(zones)
        team = rng.choice(teams)
        pols = [team_policies[team], self_policy]
        oncall = ""
        if admin:
            pols = [admin_policy, self_policy]
        elif rng.random() < 0.15:
            oncall = rng.choice(apps).name
            oncall_apps.append(oncall)
            pols.append(oncall_policy)
        host += 1
        begin = rng.choice((7.5, 8.0, 8.5, 9.0, 9.5, 10.0))
        # The first three people keep Vault passwords (what password attacks go after).
        sso = i >= n_admins + 3 and rng.random() < sso_share
        humans.append(
            HumanSpec(
                username=names.person(),
                team=team,
                tz=tz,
                office=(begin, begin + rng.choice((8.0, 8.5, 9.0, 9.5))),
                policies=tuple(pols),
                address=f"{office_nets[str(tz)]}.{host}",
                vpn=f"{vpn_net}.{host}",
                admin=admin,
                oncall_app=oncall,
                entity=names.take(lambda: f"{rng.choice(_WORDS)}-{rng.choice(_PEOPLE)}") if admin else "",
                auth="sso" if sso else "userpass",
            )
        )
    sso_roles: dict[str, tuple[str, ...]] = {}
    for k, h in enumerate(humans):
        if h.auth != "sso":
            continue
        granted = h.policies
        role = next((r for r, p in sso_roles.items() if p == granted), "")
        if not role:
            role = names.styled(h.team, ("{b}-sso", "sso-{b}", "{w}-{b}-oidc", "{b}-people-{n}"))
            sso_roles[role] = granted
        humans[k] = replace(h, sso_role=role)
    if oncall_apps:
        policies[oncall_policy] = "".join(
            f'path "{kv_data(a.mount, a.base)}/runtime/*" {{ capabilities = ["read"] }}\n'
            for a in apps
            if a.name in set(oncall_apps)
        )
    # A returning holiday (a benign hard case) and onboarding.
    regular = [k for k, h in enumerate(humans) if not h.admin]
    holiday_idx = rng.choice(regular)
    away = (max(1, learning - rng.randint(4, 6)), learning + rng.randint(0, 1))
    h = humans[holiday_idx]
    humans[holiday_idx] = replace(h, holiday=away)
    onboard_day = rng.randint(learning, max(learning, n_days - 2))
    newbie_team = rng.choice(teams)
    host += 1
    tz = rng.choice(zones)
    humans.append(
        HumanSpec(
            username=names.person(),
            team=newbie_team,
            tz=tz,
            office=(9.0, 17.5),
            policies=(team_policies[newbie_team], self_policy),
            address=f"{office_nets[str(tz)]}.{host}",
            vpn=f"{vpn_net}.{host}",
            start_day=onboard_day,
        )
    )

    # -- machines ------------------------------------------------------------------------------------
    ci_net = names.take(lambda: f"10.{rng.randint(100, 199)}.{rng.randint(0, 250)}")
    ci_runners = tuple(f"{ci_net}.{rng.randint(2, 250)}" for _ in range(rng.randint(2, 5)))
    rotator_address = (
        f"{names.take(lambda: f'10.{rng.randint(200, 250)}.{rng.randint(0, 250)}')}.{rng.randint(2, 250)}"
    )
    mon_net = names.take(lambda: f"10.{rng.randint(200, 250)}.{rng.randint(0, 250)}")
    agents = tuple(
        AgentSpec(
            names.styled("agent", ("{w}-exporter", "{w}-agent-{n}", "probe-{w}")),
            agent_policy,
            f"{mon_net}.{10 + k}",
            rng.choice((2.0, 3.0, 4.0)),
        )
        for k in range(rng.randint(*prof.agents))
    )
    pki_mount = names.take(lambda: rng.choice(("pki", "pki-int", f"{rng.choice(_WORDS)}-ca")))
    transit_mount = names.take(lambda: rng.choice(("transit", "encrypt", f"{rng.choice(_WORDS)}-transit")))
    for engine_mount in (pki_mount, transit_mount):
        policies[admin_policy] += (
            f'path "{engine_mount}/*" {{ capabilities = ["create", "read", "update", "delete", "list"] }}\n'
        )
    dyn: list[DynSpec] = []
    for k in range(rng.randint(*prof.dyn)):
        engine = "pki" if k % 2 == 0 else "transit"
        target = names.styled(
            engine,
            ("{w}-certs", "{w}-{n}", "svc-{w}") if engine == "pki" else ("{w}-key", "{w}-pii", "{w}-tokens"),
        )
        role = names.styled(engine, ("{w}-issuer", "{w}-consumer", "dyn-{w}"))
        pol = names.styled(engine, ("{w}-dyn", "{w}-crypto", "{w}-issue-{n}"))
        if engine == "pki":
            policies[pol] = f'path "{pki_mount}/issue/{target}" {{ capabilities = ["update"] }}\n'
        else:
            policies[pol] = (
                f'path "{transit_mount}/encrypt/{target}" {{ capabilities = ["update"] }}\n'
                f'path "{transit_mount}/decrypt/{target}" {{ capabilities = ["update"] }}\n'
            )
        subnet = rng.choice(apps).subnet
        dyn.append(
            DynSpec(
                names.styled(engine, ("{w}-worker", "{w}-svc-{n}")),
                engine,
                role,
                pol,
                target,
                f"{subnet}.{200 + k}",
                (2, 6) if engine == "pki" else (4, 12),
            )
        )

    # -- rotation schedule (the seed's for pxl-core; similar ones for the others) ----------------------
    rotations: list[RotationSpec] = []
    for app in apps:
        for sec in app.runtime:
            every = (
                "daily" if sec.startswith("jwt") else "weekly" if sec.startswith("api") else
                "monthly" if sec.startswith("tls") else "deploy" if sec.startswith(("db", "database")) else ""
            )  # fmt: skip
            if not every or (app.name != SEED_APP and rng.random() < 0.3):
                continue
            rotations.append(
                RotationSpec(
                    app.name,
                    sec,
                    every,
                    hour=rng.choice((1.0, 2.0, 3.0, 4.5)) + rng.uniform(0, 0.2),
                    weekday=rng.randint(0, 6),
                    day=rng.randint(1, max(1, n_days - 1)),
                )
            )

    spec = OrgSpec(
        seed=seed,
        size=size,
        days=n_days,
        learning_days=learning,
        start=start.isoformat(),
        version=GENERATOR_VERSION,
        layout=layout,
        mounts=tuple(mounts),
        user_mount=user_mount,
        approle_path=approle_path,
        userpass_path=userpass_path,
        sso_path=sso_path,
        sso_roles=sso_roles,
        teams=teams,
        apps=tuple(apps),
        humans=tuple(humans),
        agents=agents,
        dyn=tuple(dyn),
        rotations=tuple(rotations),
        policies=policies,
        rotator_role=rotator_role,
        rotator_policy=rotator_policy,
        rotator_address=rotator_address,
        admin_policy=admin_policy,
        agent_policy=agent_policy,
        team_policies=team_policies,
        pki_mount=pki_mount,
        transit_mount=transit_mount,
        ci_runners=ci_runners,
        office_nets=office_nets,
        drift=drift,
        holidays={str(z): tuple(sorted(rng.sample(range(n_days), 1))) for z in zones},
    )
    return _with_hard_cases(spec, rng, names, holiday_idx)


def _version(mounts: list[KvMount], path: str) -> int:
    for m in mounts:
        if m.path == path:
            return m.version
    raise KeyError(path)


def _with_hard_cases(spec: OrgSpec, rng: random.Random, names: _Names, holiday_idx: int) -> OrgSpec:
    """Plan the benign hard cases, all after the learning period, in office hours."""
    lo, hi = spec.learning_days, max(spec.learning_days, spec.days - 1)

    def workday() -> int:
        for _ in range(50):
            d = rng.randint(lo, hi)
            if d % 7 < 5:
                return d
        return lo

    admin = rng.choice([h for h in spec.humans if h.admin])
    office = (admin.office[0] - admin.tz + 1.0, admin.office[1] - admin.tz - 1.0)
    newbie = spec.humans[-1]
    holiday = spec.humans[holiday_idx]
    team_mounts = [m for m in spec.mounts if m.purpose == "team"]
    cases = [
        Planned(
            "onboarding",
            "onboarding",
            newbie.username,
            newbie.start_day,
            newbie.office[0] - newbie.tz - 0.7,
            {"admin": admin.username},
        ),
        Planned(
            "returning-holiday", "returning-holiday", holiday.username, (holiday.holiday or (lo, lo))[1], 0.0
        ),
        Planned(
            "scale-out",
            "scale-out",
            rng.choice(spec.apps).name,
            workday(),
            rng.uniform(*office),
            {"extra": rng.randint(2, 4)},
        ),
        Planned(
            "legitimate-policy-change",
            "legitimate-policy-change",
            rng.choice(sorted(spec.team_policies.values())),
            workday(),
            rng.uniform(*office),
            {"admin": admin.username},
        ),
        Planned(
            "planned-mount-change",
            "planned-mount-change",
            names.take(lambda: f"{rng.choice(_WORDS)}-{rng.choice(('kv', 'store', 'vault'))}"),
            workday(),
            rng.uniform(*office),
            {"admin": admin.username, "team": rng.choice(team_mounts).team},
        ),
    ]
    return replace(spec, hard_cases=tuple(cases))
