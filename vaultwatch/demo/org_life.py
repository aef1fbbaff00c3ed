"""An organisation's working life on a real OpenBao server: setup, benign habits, hard cases.

Long because an organisation's whole benign life (every kind of identity and hard case) is one
simulation over one clock.

:class:`Org` turns an :class:`~vaultwatch.demo.org_spec.OrgSpec` into real requests through a
:class:`~vaultwatch.demo.org_driver.Driver`: the bootstrap (mounts, policies, auth methods, roles,
users, entities, PKI and transit, as root the day before), then every identity's habits on a
simulated clock (service instances, CI pipelines, the rotation job, humans in their time zones,
security admins, monitoring agents, dynamic-credential consumers) and the benign hard cases the
spec planned. Actions are kept in a heap by simulated time; an action may schedule follow-ups
(a deploy after a pipeline, a database rotation after a deploy). The threat catalogue
(:mod:`vaultwatch.demo.threats`) schedules its actions on the same heap.
"""

from __future__ import annotations

import base64
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .org_driver import BENIGN, SETUP, Actor, Driver, DriverError, Reply
from .org_spec import SEED_APP, AppSpec, HumanSpec, KvMount, OrgSpec, Planned

__all__ = ["HARD_CASE_KINDS", "Org"]

DAY: Final = 86400.0
HOUR: Final = 3600.0

#: Benign hard cases the generator labels (in ``benign_hard_cases``).
HARD_CASE_KINDS: Final = (
    "onboarding",
    "returning-holiday",
    "scale-out",
    "deploy-day-burst",
    "rotation-on-time",
    "legitimate-policy-change",
    "planned-mount-change",
    "habitual-token-creation",
    "habitual-policy-apply",
)


@dataclass(order=True)
class _Item:
    ts: float
    seq: int
    tag: str = field(compare=False)
    run: Callable[[], None] = field(compare=False)


@dataclass
class Labelled:
    """A labelled instance (threat or hard case) as the generator knows it before the rewrite."""

    instance: str
    kind: str
    target: str
    planned_ts: float
    threat: bool
    extra: dict[str, Any] = field(default_factory=dict)


class Org:
    """The organisation of ``spec`` driven through ``driver`` (see the module docstring)."""

    def __init__(self, spec: OrgSpec, driver: Driver) -> None:
        self.spec = spec
        self.d = driver
        self.rng = driver.rng
        self.t0 = spec.t0
        self._heap: list[_Item] = []
        self._seq = 0
        self.labelled: dict[str, Labelled] = {}
        # Credentials and runtime state.
        self.passwords: dict[str, str] = {}
        self.approle: dict[str, dict[str, str]] = {}
        self.entity_ids: dict[str, str] = {}
        self.userpass_accessor = ""
        self.sso_accessor = ""
        self._idp_key: ec.EllipticCurvePrivateKey | None = None
        self.approle_accessor = ""
        self.humans: dict[str, Actor] = {}
        self.instances: dict[str, list[Actor]] = {}
        self.ci: dict[str, Actor] = {}
        self.dyn: dict[str, Actor] = {}
        self.agents: dict[str, Actor] = {}
        self.rotator = Actor("rotator", "rotator", spec.rotator_address, ttl=1800.0)
        self.team_secrets: dict[str, list[str]] = {}
        self.archive: tuple[str, list[str]] = ("", [])
        self.user_secrets: dict[str, list[str]] = {}
        self.versions: dict[str, int] = {}
        self.last_write: dict[str, float] = {}
        self.pod_counter: dict[str, int] = {}
        self._returned: set[str] = set()
        self.policy_text: dict[str, str] = {}
        # State changed by threats; benign traffic steps around what an attack broke.
        self.disabled_mounts: set[str] = set()
        self.deleted_policies: set[str] = set()
        self.destroyed: set[str] = set()
        self.overdue: dict[str, tuple[float, str, int]] = {}  # path -> (due ts, instance, reads left)
        self.skip_rotation: dict[str, float] = {}  # path -> from ts
        self.overdue_targets: set[str] = set()
        self.canaries: list[str] = []

    # -- scheduling ------------------------------------------------------------------------------
    def schedule(self, ts: float, tag: str, run: Callable[[], None]) -> None:
        """Run ``run`` at simulated ``ts`` with its requests labelled ``tag``."""
        self._seq += 1
        heapq.heappush(self._heap, _Item(ts, self._seq, tag, run))

    def label(self, p: Planned, *, threat: bool, ts: float, **extra: Any) -> str:
        """Register a labelled instance; its requests are made under the returned tag."""
        self.labelled[p.instance] = Labelled(p.instance, p.kind, p.target, ts, threat, dict(extra))
        return p.instance

    def run(self) -> None:
        """Execute every planned action in simulated-time order, up to the end of the simulated
        period: an attack's follow-up planned later would run alone, after all normal traffic
        stopped, and look like an outage of the organisation."""
        end = self.t0 + self.spec.days * DAY
        while self._heap:
            item = heapq.heappop(self._heap)
            if item.ts >= end:
                continue
            self.d.at(item.ts)
            with self.d.tagged(item.tag):
                item.run()
        self.d.tag = BENIGN

    def when(self, day: int, hour: float) -> float:
        """Simulated epoch seconds of ``day`` + ``hour`` (UTC)."""
        return self.t0 + day * DAY + hour * HOUR

    def day_of(self, ts: float) -> int:
        return int((ts - self.t0) // DAY)

    # -- request helpers -------------------------------------------------------------------------
    def secret_value(self, nbytes: int = 12) -> str:
        return f"{self.rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    def kvm(self, mount: str) -> KvMount:
        return self.spec.mount(mount)

    def data_path(self, mount: str, path: str) -> str:
        return f"{mount}/data/{path}" if self.kvm(mount).version == 2 else f"{mount}/{path}"

    def meta_path(self, mount: str, path: str) -> str:
        return f"{mount}/metadata/{path}" if self.kvm(mount).version == 2 else f"{mount}/{path}"

    def _blocked(self, actor: Actor | None, mount: str, path: str) -> bool:
        """Benign traffic does not touch what an attack disabled, deleted or destroyed."""
        if self.d.tag != BENIGN and not self.d.tag.startswith(tuple(HARD_CASE_KINDS)):
            return False
        if mount in self.disabled_mounts or f"{mount}/{path}" in self.destroyed:
            return True
        return actor is not None and bool(set(actor.policies) & self.deleted_policies)

    def kv_read(self, actor: Actor | None, mount: str, path: str, **kw: Any) -> Reply:
        """Read ``path`` of KV ``mount`` as ``actor``."""
        if self._blocked(actor, mount, path):
            return Reply(0, {})
        full = f"{mount}/{path}"
        due = self.overdue.get(full)
        if due is not None and self.d.now >= due[0] and due[2] > 0 and self.d.tag == BENIGN:
            # A stale secret still in use past its rotation deadline: the overdue threat's evidence.
            self.overdue[full] = (due[0], due[1], due[2] - 1)
            with self.d.tagged(due[1]):
                return self.d.req(actor, "GET", self.data_path(mount, path), **kw)
        return self.d.req(actor, "GET", self.data_path(mount, path), **kw)

    def kv_write(
        self, actor: Actor | None, mount: str, path: str, data: dict[str, str] | None = None, **kw: Any
    ) -> Reply:
        """Write a new version of ``path`` (a random value under ``value`` unless ``data``)."""
        if self._blocked(actor, mount, path):
            return Reply(0, {})
        full = f"{mount}/{path}"
        self.versions[full] = self.versions.get(full, 0) + 1
        body = (
            data if data is not None else {"value": self.secret_value(), "version": str(self.versions[full])}
        )
        if self.kvm(mount).version == 2:
            r = self.d.req(actor, "POST", f"{mount}/data/{path}", {"data": body}, **kw)
        else:
            r = self.d.req(actor, "POST", f"{mount}/{path}", body, **kw)
        if r.ok:
            self.last_write[full] = self.d.now
        return r

    def kv_list(self, actor: Actor | None, mount: str, folder: str, **kw: Any) -> Reply:
        """LIST ``folder`` (ending in ``/`` or empty) of KV ``mount``."""
        if self._blocked(actor, mount, folder):
            return Reply(0, {})
        return self.d.req(actor, "LIST", self.meta_path(mount, folder), **kw)

    def kv_metadata(self, actor: Actor | None, mount: str, path: str, **kw: Any) -> Reply:
        """Read the KV v2 metadata of ``path`` (a plain read on KV v1)."""
        if self._blocked(actor, mount, path):
            return Reply(0, {})
        return self.d.req(actor, "GET", self.meta_path(mount, path), **kw)

    def app_path(self, app: AppSpec, part: str, secret: str) -> str:
        return f"{app.base}/{part}/{secret}"

    def ensure_login(self, actor: Actor, *, force: bool = False) -> bool:
        """Log ``actor`` in when its token is missing or (simulated) expired; True on success."""
        if not force and actor.token and self.d.now < actor.expires:
            return True
        if not actor.login_path:
            return bool(actor.token)
        r = self.d.req(actor, "POST", actor.login_path, actor.login_body, anonymous=True)
        if not r.ok or not r.auth.get("client_token"):
            return False
        actor.token = r.auth["client_token"]
        actor.accessor = str(r.auth.get("accessor", ""))
        actor.expires = self.d.now + actor.ttl
        return True

    # -- setup -----------------------------------------------------------------------------------
    def setup(self) -> None:
        """Bootstrap the organisation as root, the afternoon before the simulated start."""
        spec, d = self.spec, self.d
        d.at(self.t0 - DAY + 15 * HOUR)
        d.tag = SETUP
        d.enable_sequence_header()
        root = None
        gap = (0.5, 3.0)
        if any(m.path == "secret" for m in spec.mounts):
            d.req(root, "DELETE", "sys/mounts/secret", gap=gap)  # the dev server's own kv-v2 mount
        for m in spec.mounts:
            d.req(
                root,
                "POST",
                f"sys/mounts/{m.path}",
                {"type": "kv", "options": {"version": str(m.version)}},
                gap=gap,
            )
        d.req(root, "POST", f"sys/auth/{spec.approle_path}", {"type": "approle"}, gap=gap)
        d.req(root, "POST", f"sys/auth/{spec.userpass_path}", {"type": "userpass"}, gap=gap)
        if spec.sso_roles:
            self._sso_setup()
        # Lockout counts wall-clock minutes; a whole simulated month runs in seconds.
        d.req(
            root,
            "POST",
            f"sys/auth/{spec.userpass_path}/tune",
            {"user_lockout_config": {"lockout_disable": True}},
            gap=gap,
        )
        auths = d.req(root, "GET", "sys/auth", gap=gap)
        self.userpass_accessor = str(auths.data.get(f"{spec.userpass_path}/", {}).get("accessor", ""))
        self.approle_accessor = str(auths.data.get(f"{spec.approle_path}/", {}).get("accessor", ""))
        self.sso_accessor = str(auths.data.get(f"{spec.sso_path}/", {}).get("accessor", "")) or "none"
        self.policy_text = {
            n: h.replace("SSO_ACCESSOR", self.sso_accessor).replace("ACCESSOR", self.userpass_accessor)
            for n, h in spec.policies.items()
        }
        for name, hcl in self.policy_text.items():
            d.req(root, "POST", f"sys/policies/acl/{name}", {"policy": hcl}, gap=gap)
        for role, pols in spec.sso_roles.items():
            body = {
                "role_type": "jwt",
                "user_claim": "preferred_username",
                "bound_audiences": ["vault"],
                "token_policies": list(pols),
                "token_ttl": "168h",
            }
            d.req(root, "POST", f"auth/{spec.sso_path}/role/{role}", body, gap=gap)
        for app in spec.apps:
            for sec in app.runtime:
                self.kv_write(root, app.mount, self.app_path(app, "runtime", sec), gap=gap)
            for sec in app.build:
                self.kv_write(root, app.mount, self.app_path(app, "build", sec), gap=gap)
        for m in spec.mounts:
            if m.purpose != "team":
                continue
            folders = [
                self.rng.choice(("shared", "dev", "staging", "tools", "oauth", "infra")) for _ in range(2)
            ]
            names = (
                "sandbox-db",
                "feature-flags",
                "test-oauth",
                "grafana-api",
                "slack-webhook",
                "jira-token",
                "s3-dev",
            )
            paths = sorted({f"{f}/{n}" for f in folders for n in self.rng.sample(names, 3)})
            self.team_secrets[m.team] = paths
            for p in paths:
                self.kv_write(root, m.path, p, gap=gap)
        for m in spec.mounts:
            if m.purpose == "archive":
                self.archive = (
                    m.path,
                    [f"old/{n}" for n in self.rng.sample(("ldap-bind", "ftp", "vpn-psk", "smtp"), 3)],
                )
                for p in self.archive[1]:
                    self.kv_write(root, m.path, p, gap=gap)
        self._roles()
        for h in spec.humans:
            if h.start_day == 0:
                self._create_human(None, h)
        self._engines()
        self._build_actors()
        for agent in self.agents.values():
            self._mint_agent_token(None, agent)

    def _roles(self) -> None:
        spec, d = self.spec, self.d
        roles: list[tuple[str, list[str], str]] = []
        for app in spec.apps:
            roles.append((app.runtime_role, [app.runtime_policy], "24h"))
            roles.append((app.ci_role, [app.ci_policy], "10m"))
        roles.append((spec.rotator_role, [spec.rotator_policy], "30m"))
        for dyn in spec.dyn:
            roles.append((dyn.role, [dyn.policy], "12h"))
        for role, pols, ttl in roles:
            base = f"auth/{spec.approle_path}/role/{role}"
            d.req(None, "POST", base, {"token_policies": pols, "token_ttl": ttl}, gap=(0.5, 2.0))
            rid = d.req(None, "GET", f"{base}/role-id", gap=(0.5, 2.0)).data.get("role_id", "")
            sid = d.req(None, "POST", f"{base}/secret-id", gap=(0.5, 2.0)).data.get("secret_id", "")
            self.approle[role] = {"role_id": str(rid), "secret_id": str(sid)}

    def _sso_setup(self) -> None:
        """Single sign-on: a JWT auth method trusting the organisation's identity provider key."""
        spec, d = self.spec, self.d
        self._idp_key = ec.generate_private_key(ec.SECP256R1())
        pem = (
            self._idp_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        d.req(None, "POST", f"sys/auth/{spec.sso_path}", {"type": "jwt"}, gap=(0.5, 2.0))
        body = {"jwt_validation_pubkeys": [pem], "bound_issuer": self._issuer}
        d.req(None, "POST", f"auth/{spec.sso_path}/config", body, gap=(0.5, 2.0))

    @property
    def _issuer(self) -> str:
        return f"https://login.{self.spec.sso_path}.example"

    def id_token(self, username: str) -> str:
        """A signed ID token for ``username`` from the organisation's identity provider (real clock)."""
        if self._idp_key is None:
            raise DriverError("single sign-on is not set up")
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "aud": "vault",
            "sub": username,
            "preferred_username": username,
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 30 * 86400,
        }
        return jwt.encode(claims, self._idp_key, algorithm="ES256")

    def _create_human(self, actor: Actor | None, h: HumanSpec) -> None:
        spec, d = self.spec, self.d
        if h.auth == "userpass":
            pw = self.secret_value(10)
            self.passwords[h.username] = pw
            d.req(
                actor,
                "POST",
                f"auth/{spec.userpass_path}/users/{h.username}",
                {"password": pw, "token_policies": list(h.policies)},
                gap=(0.5, 2.0),
            )
        if h.entity:
            r = d.req(
                actor,
                "POST",
                "identity/entity",
                {"name": h.entity, "policies": [spec.admin_policy]},
                gap=(0.5, 2.0),
            )
            eid = str(r.data.get("id", ""))
            self.entity_ids[h.username] = eid
            d.req(
                actor,
                "POST",
                "identity/entity-alias",
                {"name": h.username, "canonical_id": eid, "mount_accessor": self.userpass_accessor},
                gap=(0.5, 2.0),
            )
        notes = [f"users/{h.username}/{n}" for n in ("notes", "ssh-config")]
        self.user_secrets[h.username] = notes
        for p in notes:
            self.kv_write(actor, spec.user_mount, p, gap=(0.5, 2.0))

    def _engines(self) -> None:
        spec, d = self.spec, self.d
        g = (0.5, 2.0)
        pki = [x for x in spec.dyn if x.engine == "pki"]
        transit = [x for x in spec.dyn if x.engine == "transit"]
        if pki:
            d.req(
                None,
                "POST",
                f"sys/mounts/{spec.pki_mount}",
                {"type": "pki", "config": {"max_lease_ttl": "87600h"}},
                gap=g,
            )
            d.req(
                None,
                "POST",
                f"{spec.pki_mount}/root/generate/internal",
                {
                    "common_name": f"{spec.pki_mount}.internal",
                    "key_type": "ec",
                    "key_bits": 256,
                    "ttl": "8760h",
                },
                gap=g,
            )
            for x in pki:
                d.req(
                    None,
                    "POST",
                    f"{spec.pki_mount}/roles/{x.target}",
                    {"allow_any_name": True, "key_type": "ec", "key_bits": 256, "max_ttl": "72h"},
                    gap=g,
                )
        d.req(None, "POST", f"sys/mounts/{spec.transit_mount}", {"type": "transit"}, gap=g)
        for x in transit:
            d.req(None, "POST", f"{spec.transit_mount}/keys/{x.target}", {}, gap=g)
        d.req(None, "POST", f"{spec.transit_mount}/keys/{spec.transit_mount}-backup", {}, gap=g)

    def _approle_actor(
        self, name: str, kind: str, role: str, address: str, ttl: float, policies: tuple[str, ...]
    ) -> Actor:
        creds = self.approle[role]
        return Actor(
            name,
            kind,
            address,
            f"auth/{self.spec.approle_path}/login",
            dict(creds),
            ttl=ttl,
            policies=policies,
        )

    def _human_actor(self, h: HumanSpec) -> Actor:
        if h.auth == "sso":
            return Actor(
                h.username,
                "human",
                h.address,
                f"auth/{self.spec.sso_path}/login",
                {"role": h.sso_role, "jwt": self.id_token(h.username)},
                ttl=7 * 24 * HOUR,
                policies=h.policies,
            )
        return Actor(
            h.username,
            "admin" if h.admin else "human",
            h.address,
            f"auth/{self.spec.userpass_path}/login/{h.username}",
            {"password": self.passwords.get(h.username, "")},
            ttl=7 * 24 * HOUR,
            policies=h.policies,
        )

    def pod_address(self, subnet: str) -> str:
        n = self.pod_counter.get(subnet, self.rng.randint(10, 120)) + 1
        self.pod_counter[subnet] = n
        return f"{subnet}.{n % 240 + 10}"

    def _build_actors(self) -> None:
        spec = self.spec
        for app in spec.apps:
            self.instances[app.name] = [
                self._approle_actor(
                    f"{app.name}-{i}",
                    "service",
                    app.runtime_role,
                    self.pod_address(app.subnet),
                    24 * HOUR,
                    (app.runtime_policy,),
                )
                for i in range(app.instances)
            ]
            self.ci[app.name] = self._approle_actor(
                f"ci-{app.name}", "ci", app.ci_role, spec.ci_runners[0], 600.0, (app.ci_policy,)
            )
        self.rotator = self._approle_actor(
            "rotator", "rotator", spec.rotator_role, spec.rotator_address, 1800.0, (spec.rotator_policy,)
        )
        for h in spec.humans:
            if h.start_day == 0:
                self.humans[h.username] = self._human_actor(h)
        for x in spec.dyn:
            self.dyn[x.name] = self._approle_actor(
                x.name, "dynamic", x.role, x.address, 12 * HOUR, (x.policy,)
            )
        for a in spec.agents:
            self.agents[a.name] = Actor(a.name, "agent", a.address, policies=(a.policy,))

    def _mint_agent_token(self, admin: Actor | None, agent: Actor) -> None:
        r = self.d.req(
            admin,
            "POST",
            "auth/token/create-orphan",
            {
                "policies": list(agent.policies),
                "ttl": "192h",
                "display_name": agent.name,
                "meta": {"agent": agent.name},
            },
            gap=(2, 10),
        )
        if r.ok:
            agent.token = r.auth.get("client_token")
            agent.accessor = str(r.auth.get("accessor", ""))
            agent.expires = self.d.now + 192 * HOUR

    # -- benign life -----------------------------------------------------------------------------
    def plan_benign(self) -> None:
        """Schedule every identity's habits over the simulated days, and the spec's hard cases."""
        spec, rng = self.spec, self.rng
        end = self.t0 + spec.days * DAY
        for app in spec.apps:
            for inst in self.instances[app.name]:
                t = self.t0 + rng.uniform(0, app.refresh_hours * HOUR)
                while t < end:
                    self.schedule(t, BENIGN, partial(self._service_refresh, app, inst))
                    t += app.refresh_hours * HOUR + rng.uniform(-900, 900)
        for agent_spec in spec.agents:
            agent = self.agents[agent_spec.name]
            t = self.t0 + rng.uniform(0, agent_spec.every_hours * HOUR)
            while t < end:
                self.schedule(t, BENIGN, partial(self._agent_poll, agent))
                t += agent_spec.every_hours * HOUR + rng.uniform(-120, 120)
        admins = [h for h in spec.humans if h.admin]
        minting_admin = admins[0]
        for day in range(spec.days):
            weekday = datetime.fromtimestamp(self.when(day, 12), UTC).weekday()
            self._plan_rotations(day)
            for x in spec.dyn:
                for _ in range(rng.randint(*x.per_day)):
                    self.schedule(self.when(day, rng.uniform(0, 24)), BENIGN, partial(self._dyn_use, x.name))
            if weekday < 5:
                for app in spec.apps:
                    for _ in range(rng.randint(*app.pipelines)):
                        self.schedule(
                            self.when(day, rng.uniform(9, 18)),
                            BENIGN,
                            partial(self._pipeline, app, deploy=app.name == SEED_APP),
                        )
                    if weekday in app.deploy_weekdays and app.name != SEED_APP:
                        self.schedule(
                            self.when(day, rng.uniform(10, 16)),
                            BENIGN,
                            partial(self._pipeline, app, deploy=True),
                        )
            for h in spec.humans:
                self._plan_human_day(h, day)
            if weekday == 0:  # weekly: fresh orphan tokens for the monitoring agents
                ts = self.when(day, minting_admin.office[0] - minting_admin.tz + rng.uniform(1, 3))
                tag = BENIGN
                if day >= spec.learning_days:
                    p = Planned(
                        f"habitual-token-creation/d{day}",
                        "habitual-token-creation",
                        minting_admin.username,
                        day,
                        0.0,
                    )
                    tag = self.label(p, threat=False, ts=ts)
                self.schedule(ts, tag, partial(self._mint_agents, minting_admin.username))
            if weekday == 2:  # weekly: the policy-as-code pipeline re-applies the team policies
                ts = self.when(day, admins[-1].office[0] - admins[-1].tz + rng.uniform(2, 5))
                tag = BENIGN
                if day >= spec.learning_days:
                    p = Planned(
                        f"habitual-policy-apply/d{day}",
                        "habitual-policy-apply",
                        admins[-1].username,
                        day,
                        0.0,
                    )
                    tag = self.label(p, threat=False, ts=ts)
                self.schedule(ts, tag, partial(self._apply_policies, admins[-1].username))
        for p in spec.hard_cases:
            self._plan_hard_case(p)

    def _service_refresh(self, app: AppSpec, inst: Actor) -> None:
        fresh = not inst.token or self.d.now >= inst.expires
        if not self.ensure_login(inst):
            return
        secrets = app.runtime if fresh else (self.rng.choice(app.runtime),)
        for sec in secrets:
            self.kv_read(inst, app.mount, self.app_path(app, "runtime", sec))
        if not fresh and self.rng.random() < 0.1:
            self.d.req(inst, "GET", "auth/token/lookup-self")

    def _agent_poll(self, agent: Actor) -> None:
        if not agent.token or set(agent.policies) & self.deleted_policies:
            return
        self.d.req(agent, "GET", self.rng.choice(("sys/mounts", "sys/auth")), gap=(0.2, 1.0))

    def _mint_agents(self, admin_name: str) -> None:
        admin = self.humans.get(admin_name)
        if admin is None or not self.ensure_login(admin):
            return
        for agent in self.agents.values():
            self._mint_agent_token(admin, agent)

    def _dyn_use(self, name: str) -> None:
        x = next(s for s in self.spec.dyn if s.name == name)
        actor = self.dyn[name]
        if set(actor.policies) & self.deleted_policies or not self.ensure_login(actor):
            return
        self.dyn_request(actor, x.engine, x.target)

    def dyn_request(
        self, actor: Actor, engine: str, target: str, gap: tuple[float, float] = (0.4, 4.0)
    ) -> Reply:
        """One PKI issue or transit encryption as ``actor``."""
        spec = self.spec
        if engine == "pki":
            cn = f"{actor.name}-{self.rng.randint(1, 9999)}.svc.internal"
            return self.d.req(
                actor, "POST", f"{spec.pki_mount}/issue/{target}", {"common_name": cn, "ttl": "24h"}, gap=gap
            )
        plain = base64.b64encode(self.secret_value(8).encode()).decode()
        return self.d.req(
            actor, "POST", f"{spec.transit_mount}/encrypt/{target}", {"plaintext": plain}, gap=gap
        )

    def _pipeline(self, app: AppSpec, *, deploy: bool) -> None:
        ci = self.ci[app.name]
        if set(ci.policies) & self.deleted_policies:
            return
        ci.address = self.rng.choice(self.spec.ci_runners)
        if not self.ensure_login(ci, force=True):
            return
        builds = app.build if self.rng.random() < 0.4 else app.build[:1]
        for sec in builds:
            self.kv_read(ci, app.mount, self.app_path(app, "build", sec))
        if not deploy:
            return
        if app.ci_mints_secret_id:
            r = self.d.req(ci, "POST", f"auth/{self.spec.approle_path}/role/{app.runtime_role}/secret-id")
            if r.ok and r.data.get("secret_id"):
                for inst in self.instances[app.name]:
                    inst.login_body = {**inst.login_body, "secret_id": r.data["secret_id"]}
        soon = self.d.now + self.rng.uniform(3, 20) * 60
        dbs = [r for r in self.spec.rotations if r.app == app.name and r.every == "deploy"]
        if dbs:
            self.schedule(soon, BENIGN, partial(self._rotate_paths, [(app.name, r.secret) for r in dbs]))
        day = self.day_of(self.d.now)
        tag = BENIGN
        if day >= self.spec.learning_days:
            p = Planned(
                f"deploy-day-burst/{app.name}/{self.d.now:.0f}", "deploy-day-burst", app.name, day, 0.0
            )
            tag = self.label(p, threat=False, ts=soon + 900)
        if app.name != SEED_APP or self.rng.random() < 0.35:  # not every pxl-core pipeline rolls pods
            self.schedule(soon + self.rng.uniform(10, 25) * 60, tag, partial(self._roll, app))

    def _roll(self, app: AppSpec) -> None:
        """A rolling deploy: every pod is replaced (new address), logs in and reads its secrets."""
        for inst in self.instances[app.name]:
            inst.address = self.pod_address(app.subnet)
            if self.ensure_login(inst, force=True):
                for sec in app.runtime:
                    self.kv_read(inst, app.mount, self.app_path(app, "runtime", sec), gap=(0.2, 2.0))
            self.d.now += self.rng.uniform(5, 40)

    def _plan_rotations(self, day: int) -> None:
        by_hour: dict[float, list[tuple[str, str]]] = {}
        weekday = datetime.fromtimestamp(self.when(day, 12), UTC).weekday()
        for r in self.spec.rotations:
            due = (
                r.every == "daily"
                or (r.every == "weekly" and weekday == r.weekday)
                or (r.every == "monthly" and day == r.day)
            )
            if due:
                by_hour.setdefault(round(r.hour, 2), []).append((r.app, r.secret))
        for hour, items in sorted(by_hour.items()):
            self.schedule(self.when(day, hour), BENIGN, partial(self._rotate_paths, items))

    def _rotate_paths(self, items: list[tuple[str, str]]) -> None:
        rot = self.rotator
        todo = []
        for app_name, sec in items:
            app = self.spec.app(app_name)
            path = self.app_path(app, "runtime", sec)
            skip_from = self.skip_rotation.get(f"{app.mount}/{path}")
            if skip_from is not None and self.d.now >= skip_from:
                continue
            todo.append((app, path))
        if not todo or set(rot.policies) & self.deleted_policies or not self.ensure_login(rot, force=True):
            return
        for app, path in todo:
            tag = f"rotation-on-time/{app.mount}/{path}"
            if f"{app.mount}/{path}" in self.overdue_targets:
                tag = BENIGN
            elif tag not in self.labelled:
                self.labelled[tag] = Labelled(
                    tag, "rotation-on-time", f"{app.mount}/{path}", self.d.now, False
                )
            with self.d.tagged(tag if self.d.tag == BENIGN else self.d.tag):
                if self.kvm(app.mount).version == 2:
                    self.kv_metadata(rot, app.mount, path, gap=(0.2, 1.0))
                self.kv_write(rot, app.mount, path, gap=(0.2, 1.0))

    # humans ------------------------------------------------------------------------------------
    def works_on(self, h: HumanSpec, day: int) -> bool:
        """Whether ``h`` is at work on simulated ``day`` (local weekday, not away, onboarded)."""
        local = datetime.fromtimestamp(self.when(day, 12 - h.tz), UTC).weekday()
        if local >= 5 or day < h.start_day or day in self.spec.holidays.get(str(h.tz), ()):
            return False
        return not (h.holiday and h.holiday[0] <= day < h.holiday[1])

    def _plan_human_day(self, h: HumanSpec, day: int) -> None:
        rng = self.rng
        if h.start_day and day == h.start_day:
            return  # the onboarding hard case plans the first day
        if not self.works_on(h, day):
            if h.admin and rng.random() < 0.15 and not (h.holiday and h.holiday[0] <= day < h.holiday[1]):
                self.schedule(
                    self.when(day, rng.uniform(10, 20) - h.tz), BENIGN, partial(self._admin_check, h.username)
                )
            return
        tag = BENIGN
        if h.holiday and day >= h.holiday[1] and h.username not in self._returned:
            # The first working day back from a holiday (always at work that day).
            self._returned.add(h.username)
            p = next(x for x in self.spec.hard_cases if x.kind == "returning-holiday")
            tag = self.label(p, threat=False, ts=self.when(day, h.office[0] - h.tz))
        elif rng.random() > (0.75 if h.admin else 0.88):
            return
        self.plan_workday(h, day, tag)

    def plan_workday(self, h: HumanSpec, day: int, tag: str = BENIGN, *, start: float | None = None) -> None:
        """Plan one office day of ``h`` (local hours converted to UTC)."""
        rng = self.rng
        begin = self.when(day, (start if start is not None else rng.gauss(h.office[0], 0.3)) - h.tz)
        end = self.when(day, rng.uniform(h.office[1] - 0.5, h.office[1] + 0.7) - h.tz)
        vpn = rng.random() < 0.2
        self.schedule(begin, tag, partial(self._human_login, h.username, vpn))
        tasks = rng.randint(1, 4) if h.admin else rng.randint(2, 5)
        for _ in range(tasks):
            ts = rng.uniform(begin + 300, max(end, begin + 600))
            self.schedule(ts, tag, partial(self._admin_task if h.admin else self._human_task, h.username))

    def hspec(self, name: str) -> HumanSpec:
        return next(h for h in self.spec.humans if h.username == name)

    def _human_login(self, name: str, vpn: bool) -> None:
        actor = self.humans.get(name)
        if actor is None:
            return
        h = self.hspec(name)
        actor.address = h.vpn if vpn else h.address
        # People keep their token (~/.vault-token) for days; they log in again now and then.
        if actor.token and self.d.now < actor.expires and self.rng.random() > 0.1:
            self.d.req(actor, "GET", "auth/token/lookup-self")
            return
        if name in self.passwords and self.rng.random() < 0.03:  # a mistyped password, then the right one
            self.d.req(
                actor,
                "POST",
                actor.login_path,
                {"password": "x" + self.passwords[name][1:]},
                anonymous=True,
                gap=(3, 8),
            )
        self.ensure_login(actor, force=True)

    def _human_task(self, name: str) -> None:
        actor = self.humans.get(name)
        if actor is None or not self.ensure_login(actor):
            return
        h = self.hspec(name)
        spec, rng = self.spec, self.rng
        team_mount = next(m.path for m in spec.mounts if m.purpose == "team" and m.team == h.team)
        secrets = self.team_secrets.get(h.team, [])
        r = rng.random()
        if h.oncall_app and r < 0.08:
            app = spec.app(h.oncall_app)
            self.kv_read(actor, app.mount, self.app_path(app, "runtime", rng.choice(app.runtime)))
        elif r < 0.4 and secrets:
            self.kv_read(actor, team_mount, rng.choice(secrets))
        elif r < 0.55 and secrets:
            self.kv_write(actor, team_mount, rng.choice(secrets))
        elif r < 0.68 and secrets:
            self.kv_list(actor, team_mount, rng.choice(secrets).split("/")[0] + "/")
        elif r < 0.8:
            self.kv_read(actor, spec.user_mount, rng.choice(self.user_secrets[name]))
        elif r < 0.9:
            self.kv_write(
                actor, spec.user_mount, f"users/{name}/{rng.choice(('notes', 'scratch', 'ssh-config'))}"
            )
        elif r < 0.96:
            self.kv_list(actor, spec.user_mount, f"users/{name}/")
        elif secrets:  # a typo: one denied or missing read, then the intended one
            good = rng.choice(secrets)
            self.kv_read(actor, team_mount, good[:-1] + good[-1] * 2)
            self.kv_read(actor, team_mount, good)

    def _admin_task(self, name: str) -> None:
        actor = self.humans.get(name)
        if actor is None or not self.ensure_login(actor):
            return
        spec, rng = self.spec, self.rng
        ops: list[tuple[str, str]] = [
            ("LIST", "sys/policies/acl"),
            ("GET", f"sys/policies/acl/{rng.choice(sorted(spec.policies))}"),
            ("GET", "sys/auth"),
            ("GET", "sys/mounts"),
            ("LIST", f"auth/{spec.userpass_path}/users"),
            ("LIST", f"auth/{spec.approle_path}/role"),
            ("GET", "auth/token/lookup-self"),
            ("GET", f"auth/{spec.approle_path}/role/{rng.choice(spec.apps).runtime_role}"),
        ]
        if self.archive[1] and rng.random() < 0.1:  # now and then, something from the old store
            self.kv_read(actor, self.archive[0], rng.choice(self.archive[1]))
            return
        method, path = rng.choice(ops)
        self.d.req(actor, method, path)

    def _admin_check(self, name: str) -> None:
        actor = self.humans.get(name)
        if actor is None:
            return
        actor.address = self.hspec(name).vpn
        if self.ensure_login(actor, force=True):
            self.d.req(actor, "GET", "sys/mounts")

    # hard cases --------------------------------------------------------------------------------
    def _plan_hard_case(self, p: Planned) -> None:
        ts = self.when(p.day, p.hour)
        if p.kind == "returning-holiday":
            return  # labelled when the day is planned (see _plan_human_day)
        tag = self.label(p, threat=False, ts=ts)
        if p.kind == "onboarding":
            self.schedule(ts, tag, partial(self._onboard, p))
            h = self.hspec(p.target)
            self.plan_workday(h, p.day, tag, start=(p.hour + h.tz + 0.8))
        elif p.kind == "scale-out":
            self.schedule(ts, tag, partial(self._scale_out, p))
        elif p.kind == "legitimate-policy-change":
            self.schedule(ts, tag, partial(self._policy_change, p))
        elif p.kind == "planned-mount-change":
            self.schedule(ts, tag, partial(self._mount_change, p))

    def _admin_session(self, name: str) -> Actor | None:
        actor = self.humans.get(name)
        if actor is None:
            return None
        actor.address = self.hspec(name).address
        return actor if self.ensure_login(actor) else None

    def _onboard(self, p: Planned) -> None:
        admin = self._admin_session(str(p.params["admin"]))
        if admin is None:
            return
        h = self.hspec(p.target)
        self._create_human(admin, h)
        self.humans[h.username] = self._human_actor(h)

    def _scale_out(self, p: Planned) -> None:
        app = self.spec.app(p.target)
        octets = app.subnet.split(".")
        new_subnet = f"{octets[0]}.{octets[1]}.{(int(octets[2]) + 1) % 250}"
        insts = self.instances[app.name]
        for i in range(int(p.params["extra"])):
            inst = self._approle_actor(
                f"{app.name}-{len(insts)}",
                "service",
                app.runtime_role,
                self.pod_address(new_subnet),
                24 * HOUR,
                (app.runtime_policy,),
            )
            inst.login_body = dict(insts[0].login_body)
            insts.append(inst)
            self._service_refresh(app, inst)
            end = self.t0 + self.spec.days * DAY
            t = self.d.now + app.refresh_hours * HOUR
            while t < end:
                self.schedule(t, BENIGN, partial(self._service_refresh, app, inst))
                t += app.refresh_hours * HOUR + self.rng.uniform(-900, 900)
            del i

    def _apply_policies(self, admin_name: str) -> None:
        admin = self._admin_session(admin_name)
        if admin is None:
            return
        names = sorted(n for n in self.spec.team_policies.values() if n not in self.deleted_policies)
        for name in self.rng.sample(names, min(len(names), 3)):
            self.d.req(
                admin, "POST", f"sys/policies/acl/{name}", {"policy": self.policy_text[name]}, gap=(0.5, 2)
            )

    def _policy_change(self, p: Planned) -> None:
        admin = self._admin_session(str(p.params["admin"]))
        if admin is None:
            return
        hcl = self.policy_text[p.target]
        extra = 'path "sys/capabilities-self" { capabilities = ["update"] }\n'
        self.policy_text[p.target] = hcl + extra
        self.d.req(admin, "GET", f"sys/policies/acl/{p.target}", gap=(20, 120))
        self.d.req(admin, "POST", f"sys/policies/acl/{p.target}", {"policy": hcl + extra}, gap=(5, 30))
        self.d.req(admin, "GET", f"sys/policies/acl/{p.target}")

    def _mount_change(self, p: Planned) -> None:
        admin = self._admin_session(str(p.params["admin"]))
        if admin is None:
            return
        d = self.d
        d.req(
            admin,
            "POST",
            f"sys/mounts/{p.target}",
            {"type": "kv", "options": {"version": "2"}, "description": "team store (change ticket)"},
            gap=(10, 60),
        )
        d.req(
            admin,
            "POST",
            f"sys/mounts/{p.target}/tune",
            {"default_lease_ttl": "768h", "max_lease_ttl": "768h"},
            gap=(10, 60),
        )
        d.req(admin, "GET", "sys/mounts", gap=(5, 20))
        d.req(admin, "GET", f"sys/mounts/{p.target}/tune")
