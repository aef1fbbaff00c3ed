"""The organisation's access model and rotation schedule, and the detectors that enforce them.

Long because the model, its parser, the role resolvers (matchers, capabilities, behaviour) and the
two detectors that enforce it share one set of path and role answers and their caches.

A policy (TOML text; the default, :data:`detect.policy_data.DEFAULT_POLICY_TOML`, encodes the
LOGOS PXL Core secrets policy) maps *roles* to identity matchers and to what each role may do, and
classifies secrets by path into rotation classes. Two detectors use it:

* :class:`AccessModelDetector` (``access-model-violation``) flags any access outside an
  identity's role, including one that Vault's ACL allowed: policies drift, the model does not.
* :class:`RotationTracker` (``rotation-overdue``) watches writes to classified secrets and flags
  a secret once per missed rotation period (or after a deploy that did not rotate it).

Paths are judged as *logical* secret paths: for a KV v2 mount the API segment is removed
(``logos/data/pxl-core/runtime/jwt-key`` is ``logos/pxl-core/runtime/jwt-key``), see
:func:`secret_target`. Parsing is strict: bad text raises :class:`PolicyError` naming its source,
the entry and what is wrong. This module reads no file: the shell reads an operator's policy file
(``vaultwatch.settings.load_policy``) and passes the text to :func:`parse_policy`.

>>> policy = default_policy()
>>> [r.name for r in policy.roles]
['runtime', 'ci', 'developer']
>>> policy.roles[1].max_token_ttl
3600.0
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, ClassVar, Final, NamedTuple

from detect.alert import Reason
from ingest.event import AuditEvent, Identity

from .errors import PolicyError
from .policy_data import DEFAULT_POLICY_SOURCE, DEFAULT_POLICY_TOML
from .types import DetectContext, Finding

__all__ = [
    "PolicyError",
    "AccessPolicy",
    "Role",
    "Matcher",
    "Allow",
    "RotationClass",
    "DeployMarker",
    "SecretTarget",
    "OPERATIONS",
    "secret_target",
    "glob_match",
    "peer_group",
    "describe_peers",
    "SYSTEM_ROOTS",
    "parse_duration",
    "parse_policy",
    "default_policy",
    "AccessModelDetector",
    "RoleInference",
    "RotationTracker",
    "learned_period",
    "job_cadence",
    "GrantBook",
    "granting_policies",
    "Grant",
    "CapabilityRole",
    "CapabilityRoles",
    "CapabilityRoleBook",
    "CAPABILITY_KEY",
    "ADMIN_AREAS",
    "policy_key",
    "vault_glob_match",
    "admin_evidence",
    "decide_capability_role",
    "capability_roles",
    "admin_by_capability",
]

#: Operations a policy may allow (Vault request operations; ``write`` and ``*`` are shorthands).
OPERATIONS: Final = ("read", "list", "create", "update", "patch", "delete")
_ALIASES: Final = {"write": ("create", "update", "patch"), "*": OPERATIONS}
_WRITE_OPS: Final = frozenset({"create", "update", "patch"})
# KV v2 API segments after the mount, and what each operation on them means for the secret.
_KV2_OPS: Final[dict[str, dict[str, str]]] = {
    "data": {"read": "read", "create": "create", "update": "update", "patch": "patch", "delete": "delete"},
    "metadata": {"read": "list", "list": "list", "create": "update", "update": "update", "patch": "update",
                 "delete": "delete"},
    "delete": {"update": "delete", "create": "delete"},
    "destroy": {"update": "delete", "create": "delete"},
    "undelete": {"update": "update", "create": "update"},
    "subkeys": {"read": "read"},
}  # fmt: skip
#: First path segments that are never a KV mount (used to recognise KV v2 paths in entries that
#: name no mount).
_NON_KV_ROOTS: Final = frozenset({"sys", "auth", "identity", "cubbyhole"})
#: Vault's own built-in path roots: never a secret area of the organisation.
SYSTEM_ROOTS: Final = tuple(f"{r}/" for r in sorted(_NON_KV_ROOTS))
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SEVERITY_SCORE: Final = {"info": 10.0, "low": 30.0, "medium": 55.0, "high": 80.0, "critical": 95.0}
#: Entries kept by each per-path / per-identity answer cache before it starts afresh. Paths and
#: identities repeat enormously in audit logs, and every answer is a pure function of its key.
_CACHE_LIMIT: Final = 65_536


def _memo() -> Any:
    """A per-instance answer cache on a frozen dataclass (not part of equality, hash or repr)."""
    return field(default_factory=dict, init=False, repr=False, compare=False)


# -- logical secret paths ------------------------------------------------------------------------
class SecretTarget(NamedTuple):
    """The secret an event touches: logical path, what happened to it, and which API was used.

    ``api`` is the KV v2 segment (``data``, ``metadata``, ``delete``, ``destroy``, ``undelete``,
    ``subkeys``) or ``"plain"`` for anything else (KV v1 and other engines).
    """

    path: str
    op: str
    api: str
    #: The mount the path lives under (``"secret/"``), or ``""`` when it is not known.
    mount: str = ""

    @property
    def inner(self) -> str:
        """The logical path inside its mount (``logos/pxl-core/x`` for ``secret/logos/pxl-core/x``)."""
        m = self.mount
        return self.path[len(m) :] if m and self.path.startswith(m) else self.path


def glob_match(glob: str, path: str, mount: str = "") -> bool:
    """True when ``glob`` matches the logical ``path`` or the path inside its ``mount``.

    A policy names secrets the way its authors think of them (``logos/pxl-core/*``): that works
    whether ``logos/`` is the KV mount itself (the path is ``logos/pxl-core/...``) or a prefix
    inside any other mount (``secret/logos/pxl-core/...``). A glob ``MOUNT::GLOB``
    (``secret/::logos/pxl-core/*``) pins the mount: only that mount's paths match.

    >>> glob_match("logos/pxl-core/*", "secret/logos/pxl-core/runtime/jwt", "secret/")
    True
    >>> glob_match("logos/pxl-core/*", "logos/pxl-core/runtime/jwt", "logos/")
    True
    >>> glob_match("kv/::logos/pxl-core/*", "secret/logos/pxl-core/runtime/jwt", "secret/")
    False
    """
    pin, sep, pattern = glob.partition("::")
    inside = path[len(mount) :] if mount and path.startswith(mount) else None
    if sep:
        return inside is not None and mount == pin.rstrip("/") + "/" and fnmatchcase(inside, pattern)
    return fnmatchcase(path, glob) or (inside is not None and fnmatchcase(inside, glob))


_last_target: tuple[Any, Any] = (None, None)


def secret_target(event: AuditEvent) -> SecretTarget:
    """Map an event to its logical secret path and operation (KV v2 API segment removed)."""
    # The access model and the rotation tracker both ask about the same event in turn; the memo
    # holds the event itself, so an identity match is the same (immutable) event.
    # One tuple, rebound at once: safe when engines run in several threads.
    global _last_target
    last = _last_target
    if last[0] is event:
        found: SecretTarget = last[1]
        return found
    target = _secret_target(event)
    _last_target = (event, target)
    return target


def _secret_target(event: AuditEvent) -> SecretTarget:
    path = event.path
    op = event.operation or ""
    mount = event.mount_point or ""
    mount_type = event.mount_type
    if not mount and not mount_type:
        # Entries written before Vault logged mounts (1.12 and older) name none: a path shaped
        # like a KV v2 call (``<mount>/data/...``, ``<mount>/metadata/...``) is taken as one.
        first, sep, rest = path.partition("/")
        if sep and first not in _NON_KV_ROOTS and rest.partition("/")[0] in _KV2_OPS:
            mount, mount_type = first + "/", "kv"
    if mount_type == "kv" and mount and path.startswith(mount):
        segment, _, tail = path[len(mount) :].partition("/")
        ops = _KV2_OPS.get(segment)
        if ops is not None:
            return SecretTarget(mount + tail, ops.get(op, op), segment, mount)
    return SecretTarget(path, op, "plain", mount if path.startswith(mount) else "")


# -- peers ----------------------------------------------------------------------------------------
_peer_cache: dict[tuple[str, tuple[str, ...]], str] = {}


def peer_group(identity: Identity) -> str:
    """The identity's peer group: identities Vault treats alike, whatever they are named.

    ``policies:<sorted set>`` for identities sharing a policy set (``default`` left out), else
    ``role:<auth mount>:<role>`` for tokens of one AppRole (or other auth) role, else
    ``self:<identity key>`` (an identity with no peers).

    >>> peer_group(Identity(key="entity:a", kind="entity", policies=("default", "b", "a")))
    'policies:a,b'
    >>> peer_group(Identity(key="token:approle", kind="token", display_name="approle",
    ...                     metadata={"role_name": "web"}))
    'role:approle:web'
    """
    ck = (identity.key, identity.policies)
    hit = _peer_cache.get(ck)
    if hit is not None:
        return hit
    pol = sorted({p for p in identity.policies if p != "default"})
    if pol:
        out = "policies:" + ",".join(pol)
    else:
        md = identity.metadata or {}
        role = md.get("role_name") or md.get("role")
        if isinstance(role, str) and role:
            mount = (identity.auth_mount or "").removeprefix("auth/").strip("/")
            mount = mount or (identity.display_name or "").split("-", 1)[0] or "?"
            out = f"role:{mount}:{role}"
        else:
            out = "self:" + identity.key
    if len(_peer_cache) >= _CACHE_LIMIT:
        _peer_cache.clear()
    _peer_cache[ck] = out
    return out


def describe_peers(group: str, members: int | None = None) -> str:
    """A peer group as a person reads it: ``12 identities sharing policies eng, oncall``.

    >>> describe_peers("policies:eng,oncall", 12)
    '12 identities sharing policies eng, oncall'
    >>> describe_peers("role:approle:web")
    'identities of auth role web on approle'
    """
    kind, _, rest = group.partition(":")
    count = f"{members} " if members is not None else ""
    plural = "identity" if members == 1 else "identities"
    if kind == "policies":
        return f"{count}{plural} sharing policies {rest.replace(',', ', ')}"
    if kind == "role":
        mount, _, role = rest.partition(":")
        return f"{count}{plural} of auth role {role} on {mount}"
    return f"no peers (identity {rest} holds no policy beyond default)"


def parse_duration(value: Any, where: str = "duration") -> float:
    """Seconds from an integer/float or a string such as ``"90s"``, ``"25h"``, ``"7d"``, ``"2w"``."""
    if isinstance(value, bool):
        raise PolicyError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise PolicyError(f'{where}: expected a duration like 3600, "1h" or "7d", got {value!r}')
    if not math.isfinite(seconds) or seconds <= 0:
        raise PolicyError(f"{where}: duration must be positive, got {value!r}")
    return seconds


def _human(seconds: float) -> str:
    """Short duration: ``90s``, ``36m``, ``25h``, ``2.5d``, ``1w`` (hours below two days)."""
    seconds = float(round(seconds))
    for unit, size in (("w", 604800.0), ("d", 86400.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    for unit, size, floor in (("d", 86400.0, 172800.0), ("h", 3600.0, 3600.0), ("m", 60.0, 60.0)):
        if seconds >= floor:
            return f"{seconds / size:.1f}".removesuffix(".0") + unit
    return f"{seconds:.0f}s"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# -- the model ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Matcher:
    """One alternative way to recognise a role's identities; every key that is set must hold."""

    policy: str | None = None
    auth_mount: str | None = None
    display_name: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    entity_id: str | None = None

    def matches(self, identity: Identity) -> bool:
        """True when ``identity`` satisfies every condition of this matcher."""
        if identity.kind in ("login", "anonymous"):
            return False
        if self.policy is not None and self.policy not in identity.policies:
            return False
        if self.entity_id is not None and identity.entity_id != self.entity_id:
            return False
        dn = identity.display_name or ""
        if self.display_name is not None and not fnmatchcase(dn, self.display_name):
            return False
        if self.auth_mount is not None and not _on_mount(identity, self.auth_mount):
            return False
        if self.metadata:
            md = identity.metadata or {}
            for key, pattern in self.metadata:
                value = md.get(key)
                if not isinstance(value, str) or not fnmatchcase(value, pattern):
                    return False
        return True


def _on_mount(identity: Identity, mount: str) -> bool:
    if identity.auth_mount is not None:
        return identity.auth_mount == mount
    # Vault prefixes a login's display name with its mount path, slashes turned into dashes
    # ("auth/userpass/" + alice -> "userpass-alice"; AppRole has no name -> "approle").
    prefix = mount.removeprefix("auth/").strip("/").replace("/", "-")
    dn = identity.display_name or ""
    return dn == prefix or dn.startswith(prefix + "-")


@dataclass(frozen=True)
class Allow:
    """Operations allowed on logical paths matching ``path`` (a glob; ``*`` spans segments)."""

    path: str
    operations: frozenset[str]

    def permits(self, target: SecretTarget) -> bool:
        """True when this entry allows ``target``."""
        return target.op in self.operations and glob_match(self.path, target.path, target.mount)

    def describe(self) -> str:
        """``path [ops]`` for explanations."""
        return f"{self.path} [{', '.join(sorted(self.operations))}]"


@dataclass(frozen=True)
class Role:
    """A role of the access model: who it is, what it may do, and how long its tokens may live."""

    name: str
    match: tuple[Matcher, ...]
    allow: tuple[Allow, ...] = ()
    confined: bool = False
    max_token_ttl: float | None = None
    description: str = ""
    _permits: dict[tuple[str, str, str], bool] = _memo()

    def matches(self, identity: Identity) -> bool:
        """True when any matcher recognises ``identity``."""
        return any(m.matches(identity) for m in self.match)

    def permits(self, target: SecretTarget) -> bool:
        """True when an allow entry covers ``target``."""
        key = (target.op, target.path, target.mount)
        cache = self._permits
        hit = cache.get(key)
        if hit is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            hit = cache[key] = any(a.permits(target) for a in self.allow)
        return hit

    def describe(self) -> str:
        """The allow list in one line, for explanations."""
        return "; ".join(a.describe() for a in self.allow) or "no secret access"


@dataclass(frozen=True)
class RotationClass:
    """Secrets (by logical path glob) that must be rotated every ``every`` seconds or on deploy."""

    name: str
    paths: tuple[str, ...]
    every: float | None = None
    on_deploy: bool = False
    within: float = 3600.0
    #: Slack after each period before a rotation counts as missed (a 02:00 cron job runs at
    #: 02:00:40 one night, 02:00:05 the next); None means 10% of ``every``.
    grace: float | None = None

    @property
    def slack(self) -> float:
        """The grace period in seconds."""
        if self.grace is not None:
            return self.grace
        return 0.1 * self.every if self.every is not None else 0.0

    def covers(self, path: str, mount: str = "") -> bool:
        """True when ``path`` (under ``mount``, when known) belongs to this class."""
        return any(glob_match(p, path, mount) for p in self.paths)


@dataclass(frozen=True)
class DeployMarker:
    """What marks a deploy: a successful access to one of ``paths`` with one of ``operations``,
    by an identity of one of ``roles`` (any identity when empty)."""

    paths: tuple[str, ...] = ()
    operations: frozenset[str] = frozenset({"read"})
    roles: tuple[str, ...] = ()

    _paths: dict[tuple[str, str], bool] = _memo()

    def matches(self, target: SecretTarget) -> bool:
        """True when ``target`` is a deploy marker's path and operation (roles checked apart)."""
        if target.op not in self.operations:
            return False
        cache = self._paths
        key = (target.path, target.mount)
        hit = cache.get(key)
        if hit is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            hit = cache[key] = any(glob_match(p, target.path, target.mount) for p in self.paths)
        return hit

    def accepts(self, role: Role | None) -> bool:
        """True when an identity of ``role`` may mark a deploy."""
        return not self.roles or (role is not None and role.name in self.roles)


@dataclass(frozen=True)
class AccessPolicy:
    """A loaded policy file: roles, protected paths, rotation classes and the deploy marker."""

    roles: tuple[Role, ...] = ()
    protected: tuple[str, ...] = ()
    housekeeping: tuple[str, ...] = ()
    rotation: tuple[RotationClass, ...] = ()
    deploy: DeployMarker = field(default_factory=DeployMarker)
    source: str = "<policy>"
    _roles: dict[tuple[Any, ...], Role | None] = _memo()
    _reads: dict[str, Any] = _memo()
    _protected: dict[tuple[str, str], bool] = _memo()
    _housekeeping: dict[str, bool] = _memo()
    _rotation: dict[tuple[str, str], RotationClass | None] = _memo()

    def role_for(self, identity: Identity) -> Role | None:
        """The first role whose matchers recognise ``identity``, or None."""
        key = self._identity_key(identity)
        cache = self._roles
        try:
            if key in cache:
                return cache[key]
        except TypeError:  # unhashable metadata values: answer without the cache
            return self._role_for(identity)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        role = cache[key] = self._role_for(identity)
        return role

    def _identity_key(self, identity: Identity) -> tuple[Any, ...]:
        # Only what some matcher reads, so that identities alike for the model (every service
        # of one AppRole role) share one entry instead of one entry per entity.
        reads = self._reads
        if not reads:
            ms = [m for r in self.roles for m in r.match]
            reads["entity"] = any(m.entity_id is not None for m in ms)
            reads["names"] = any(m.display_name is not None or m.auth_mount is not None for m in ms)
            reads["metadata"] = tuple(sorted({k for m in ms for k, _ in m.metadata}))
        md = identity.metadata or {}
        names = reads["names"]
        return (
            identity.kind,
            identity.policies,
            identity.entity_id if reads["entity"] else None,
            identity.display_name if names else None,
            identity.auth_mount if names else None,
            tuple(md.get(k) for k in reads["metadata"]),
        )

    def _role_for(self, identity: Identity) -> Role | None:
        for role in self.roles:
            if role.matches(identity):
                return role
        return None

    def is_protected(self, path: str, mount: str = "") -> bool:
        """True when the model governs ``path`` (under ``mount``, when known) for every role."""
        cache = self._protected
        key = (path, mount)
        hit = cache.get(key)
        if hit is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            hit = cache[key] = any(glob_match(p, path, mount) for p in self.protected)
        return hit

    def is_housekeeping(self, path: str) -> bool:
        """True for token self-maintenance and login paths, allowed to every role."""
        cache = self._housekeeping
        hit = cache.get(path)
        if hit is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            hit = cache[path] = any(fnmatchcase(path, p) for p in self.housekeeping)
        return hit

    def rotation_class(self, path: str, mount: str = "") -> RotationClass | None:
        """The first rotation class covering ``path`` (under ``mount``, when known), or None."""
        cache = self._rotation
        key = (path, mount)
        if key in cache:
            return cache[key]
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        found = cache[key] = next((cls for cls in self.rotation if cls.covers(path, mount)), None)
        return found


# -- loading --------------------------------------------------------------------------------------
_TOP_KEYS: Final = frozenset({"version", "protected", "housekeeping", "roles", "rotation", "rotation_deploy"})
_ROLE_KEYS: Final = frozenset({"name", "description", "confined", "max_token_ttl", "match", "allow"})
_MATCH_KEYS: Final = frozenset({"policy", "auth_mount", "display_name", "metadata", "entity_id"})
_ALLOW_KEYS: Final = frozenset({"path", "operations"})
_ROT_KEYS: Final = frozenset({"name", "paths", "every", "on", "within", "grace"})
_DEPLOY_KEYS: Final = frozenset({"paths", "operations", "roles"})


def _check_keys(table: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PolicyError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )
    return table


def _str(value: Any, where: str, *, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value):
        raise PolicyError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PolicyError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(value))


def _operations(value: Any, where: str) -> frozenset[str]:
    ops: set[str] = set()
    for i, op in enumerate(_str_list(value, where)):
        if op in _ALIASES:
            ops.update(_ALIASES[op])
        elif op in OPERATIONS:
            ops.add(op)
        else:
            allowed = ", ".join((*OPERATIONS, *_ALIASES))
            raise PolicyError(f"{where}[{i}]: unknown operation {op!r} (expected one of {allowed})")
    return frozenset(ops)


def _matcher(raw: Any, where: str) -> Matcher:
    t = _check_keys(raw, _MATCH_KEYS, where)
    if not t:
        raise PolicyError(f"{where}: empty matcher would match every identity")
    md = t.get("metadata", {})
    if not isinstance(md, dict):
        raise PolicyError(f"{where}.metadata: expected a table of key = glob")
    mount = t.get("auth_mount")
    if mount is not None:
        mount = _str(mount, f"{where}.auth_mount")
        if not mount.startswith("auth/"):
            raise PolicyError(f'{where}.auth_mount: expected a path like "auth/approle/", got {mount!r}')
        mount = mount.rstrip("/") + "/"
    return Matcher(
        policy=_str(t["policy"], f"{where}.policy") if "policy" in t else None,
        auth_mount=mount,
        display_name=_str(t["display_name"], f"{where}.display_name") if "display_name" in t else None,
        metadata=tuple((str(k), _str(v, f"{where}.metadata.{k}")) for k, v in md.items()),
        entity_id=_str(t["entity_id"], f"{where}.entity_id") if "entity_id" in t else None,
    )


def _role(raw: Any, where: str) -> Role:
    t = _check_keys(raw, _ROLE_KEYS, where)
    name = _str(t.get("name"), f"{where}.name")
    where = f"{where} ({name})"
    match = t.get("match")
    if not isinstance(match, list) or not match:
        raise PolicyError(f"{where}.match: expected a non-empty list of matchers")
    allow = t.get("allow", [])
    if not isinstance(allow, list):
        raise PolicyError(f"{where}.allow: expected a list of {{path, operations}} tables")
    allows = []
    for i, a in enumerate(allow):
        at = _check_keys(a, _ALLOW_KEYS, f"{where}.allow[{i}]")
        allows.append(
            Allow(
                path=_str(at.get("path"), f"{where}.allow[{i}].path"),
                operations=_operations(at.get("operations"), f"{where}.allow[{i}].operations"),
            )
        )
    confined = t.get("confined", False)
    if not isinstance(confined, bool):
        raise PolicyError(f"{where}.confined: expected true or false, got {confined!r}")
    ttl = t.get("max_token_ttl")
    return Role(
        name=name,
        description=str(t.get("description", "")),
        match=tuple(_matcher(m, f"{where}.match[{i}]") for i, m in enumerate(match)),
        allow=tuple(allows),
        confined=confined,
        max_token_ttl=None if ttl is None else parse_duration(ttl, f"{where}.max_token_ttl"),
    )


def _grace(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if value == 0 or value == "0":
        return 0.0
    return parse_duration(value, where)


def _rotation(raw: Any, where: str) -> RotationClass:
    t = _check_keys(raw, _ROT_KEYS, where)
    name = _str(t.get("name"), f"{where}.name")
    where = f"{where} ({name})"
    paths = _str_list(t.get("paths"), f"{where}.paths")
    if not paths:
        raise PolicyError(f"{where}.paths: at least one path glob is required")
    on = t.get("on")
    if on is not None and on != "deploy":
        raise PolicyError(f'{where}.on: the only trigger is "deploy", got {on!r}')
    if (on is None) == ("every" not in t):
        raise PolicyError(f'{where}: give exactly one of every = <duration> or on = "deploy"')
    return RotationClass(
        name=name,
        paths=paths,
        every=parse_duration(t["every"], f"{where}.every") if "every" in t else None,
        on_deploy=on == "deploy",
        within=parse_duration(t.get("within", 3600), f"{where}.within"),
        grace=_grace(t.get("grace"), f"{where}.grace"),
    )


def parse_policy(text: str, source: str = "<policy>") -> AccessPolicy:
    """Parse and validate policy TOML; raise :class:`PolicyError` naming ``source`` and the entry."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    try:
        t = _check_keys(raw, _TOP_KEYS, "top level")
        version = t.get("version", 1)
        if version != 1:
            raise PolicyError(f"version: unsupported policy version {version!r} (expected 1)")
        roles = t.get("roles", [])
        if not isinstance(roles, list):
            raise PolicyError("roles: expected [[roles]] tables")
        parsed_roles = tuple(_role(r, f"roles[{i}]") for i, r in enumerate(roles))
        names = [r.name for r in parsed_roles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise PolicyError(f"roles: duplicate role name(s) {', '.join(dupes)}")
        rotation = t.get("rotation", [])
        if not isinstance(rotation, list):
            raise PolicyError("rotation: expected [[rotation]] tables")
        deploy_raw = _check_keys(t.get("rotation_deploy", {}), _DEPLOY_KEYS, "rotation_deploy")
        deploy = DeployMarker(
            paths=_str_list(deploy_raw.get("paths", []), "rotation_deploy.paths"),
            operations=_operations(deploy_raw.get("operations", ["read"]), "rotation_deploy.operations"),
            roles=_str_list(deploy_raw.get("roles", []), "rotation_deploy.roles"),
        )
        unknown = sorted(set(deploy.roles) - set(names))
        if unknown:
            raise PolicyError(f"rotation_deploy.roles: unknown role(s) {', '.join(unknown)}")
        return AccessPolicy(
            roles=parsed_roles,
            protected=_str_list(t.get("protected", []), "protected"),
            housekeeping=_str_list(t.get("housekeeping", []), "housekeeping"),
            rotation=tuple(_rotation(r, f"rotation[{i}]") for i, r in enumerate(rotation)),
            deploy=deploy,
            source=source,
        )
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def default_policy() -> AccessPolicy:
    """The packaged default policy (the LOGOS PXL Core secrets-management model), parsed from
    :data:`detect.policy_data.DEFAULT_POLICY_TOML`: data, not a file."""
    return parse_policy(DEFAULT_POLICY_TOML, DEFAULT_POLICY_SOURCE)


# -- detectors ------------------------------------------------------------------------------------
def _finding(
    detector: str,
    family: str,
    event: AuditEvent | None,
    *,
    identity: Identity,
    title: str,
    severity: str,
    dedup_key: str,
    reasons: list[Reason],
    paths: tuple[str, ...],
    first_ts: float,
    last_ts: float,
    event_ids: tuple[str, ...] | None = None,
    labels: dict[str, str] | None = None,
) -> Finding:
    if event_ids is None:
        event_ids = (event.request_id,) if event is not None and event.request_id else ()
    addresses = (event.remote_ip,) if event is not None and event.remote_ip else ()
    return Finding(
        detector=detector,
        title=title,
        severity=severity,
        score=_SEVERITY_SCORE[severity],
        family=family,
        identity=identity,
        dedup_key=dedup_key,
        event_ids=event_ids,
        paths=paths,
        source_addresses=addresses,
        first_ts=first_ts,
        last_ts=last_ts,
        reasons=tuple(reasons[:5]),
        alerting=True,
        labels=labels or {},
    )


def granting_policies(event: AuditEvent) -> tuple[str, ...]:
    """The policies Vault says granted the request (``default`` and ``root`` aside)."""
    auth = event.auth
    results = auth.policy_results if auth is not None else None
    got = results.granting_policies if results is not None else None
    if not got:
        return ()
    return tuple(n for g in got if (n := g.name) and n != "default" and n != "root")


class GrantBook:
    """What each granting policy has been used for: its successful uses, and how many of them
    were reads of an area another peer group reads most (another group's secrets).

    The entry names the policies that granted a request (``auth.policy_results``). A policy whose
    uses so far were (nearly) all such reads, or that has never been used, is an access role of
    its own (on-call, audit, break-glass): a first access it alone granted is what the policy is
    for, not a role's deviation. State is plain data, bounded by ``limit`` policies and areas.
    """

    def __init__(self, share: float = 0.8, limit: int = 8192) -> None:
        self.share = share
        self.limit = limit
        self._uses: dict[str, list[int]] = {}
        # area -> {peer group: successful reads}, and each area's top reader.
        self._reads: dict[str, dict[str, int]] = {}
        self._top: dict[str, str] = {}

    def observe(self, event: AuditEvent, group: str, area: str, op: str) -> None:
        """Count one successful request under each of its granting policies, then its read."""
        if event.outcome != "ok":
            return
        if op != "read":
            self.note(event, False)
            return
        reads = self._reads.get(area)
        if reads is None:
            if len(self._reads) >= self.limit:
                old = next(iter(self._reads))
                del self._reads[old]
                self._top.pop(old, None)
            reads = self._reads[area] = {}
        top = self._top.get(area)
        self.note(event, top is not None and top != group)
        if group in reads or len(reads) < 32:
            n = reads[group] = reads.get(group, 0) + 1
            if top is None or (top != group and n > reads[top]):
                self._top[area] = group

    def note(self, event: AuditEvent, roaming: bool) -> None:
        """Count one successful request under each of its granting policies; ``roaming`` when it
        read another group's area (a caller that tracks areas itself says so)."""
        if event.outcome != "ok":
            return
        uses = self._uses
        for name in granting_policies(event):
            entry = uses.get(name)
            if entry is None:
                if len(uses) >= self.limit:
                    del uses[next(iter(uses))]
                entry = uses[name] = [0, 0]
            entry[0] += 1
            entry[1] += 1 if roaming else 0

    def dedicated(self, event: AuditEvent) -> str | None:
        """Why the request is what its granting policies are for, or None (some granting policy
        is used mostly for its holders' own areas, or Vault named none)."""
        names = granting_policies(event)
        if not names:
            return None
        parts = []
        for name in names:
            uses, roams = self._uses.get(name, (0, 0))
            if uses == 0:
                parts.append(f"`{name}` (its first use)")
            elif roams >= self.share * uses:
                parts.append(f"`{name}` ({roams} of its {uses} uses read other groups' secrets)")
            else:
                return None
        return "granted by policy " + ", ".join(parts)

    def dump(self) -> dict[str, Any]:
        """Plain-data state."""
        return {
            "uses": {k: list(v) for k, v in self._uses.items()},
            "reads": {a: dict(r) for a, r in self._reads.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`dump` output."""
        self._uses = {str(k): [int(v[0]), int(v[1])] for k, v in dict(state.get("uses", {})).items()}
        self._reads = {
            str(a): {str(g): int(n) for g, n in dict(r).items()}
            for a, r in dict(state.get("reads", {})).items()
        }
        self._top = {a: max(r.items(), key=lambda kv: kv[1])[0] for a, r in self._reads.items() if r}


def _person(identity: Identity) -> str:
    """The identity as a person reads it: display name, with its auth role when it has one."""
    md = identity.metadata or {}
    role = md.get("role_name") or md.get("role")
    name = identity.display_name or identity.key
    if isinstance(role, str) and role and role not in name:
        return f"{name} (role {role})"
    return name


class _Recent:
    """A bounded set of recently seen keys, as plain data.

    Bounded by count (oldest first out) and, when ``ttl`` is set, by event time: a key older than
    ``ttl`` seconds is forgotten (a request's response arrives within seconds; an accessor's
    token lives for hours, so that one is bounded by count only).
    """

    def __init__(self, limit: int = 50_000, ttl: float | None = None) -> None:
        self.limit = limit
        self.ttl = ttl
        self._keys: dict[str, float] = {}

    def add(self, key: str, ts: float = 0.0) -> bool:
        """Add ``key`` seen at ``ts``; False when it was already present."""
        if key in self._keys:
            return False
        self._keys[key] = ts
        if len(self._keys) > self.limit:
            del self._keys[next(iter(self._keys))]
        if self.ttl is not None:
            cutoff = ts - self.ttl
            while self._keys:
                oldest = next(iter(self._keys))
                if self._keys[oldest] >= cutoff:
                    break
                del self._keys[oldest]
        return True

    def dump(self) -> dict[str, float]:
        return dict(self._keys)

    def restore(self, keys: dict[str, float] | list[str]) -> None:
        if isinstance(keys, dict):
            self._keys = {str(k): float(v) for k, v in keys.items()}
        else:
            self._keys = dict.fromkeys((str(k) for k in keys), 0.0)


def _day(ts: float) -> int:
    return int(ts // 86400.0)


def _parent(path: str) -> str:
    """The directory of a logical path (``a/b/c`` → ``a/b/``; a listed ``a/b/`` stays)."""
    if path.endswith("/"):
        return path
    idx = path.rfind("/")
    return path[: idx + 1] if idx >= 0 else ""


class RoleInference:
    """Roles of identities that no matcher recognises, inferred from their peer group's behaviour.

    Over each peer group's first ``learning_days`` (event time: a week, so that weekly habits such
    as an on-call shift have shown; at least two distinct days and ``min_events`` events: never
    from one event), it records which protected areas the
    group's members read successfully and whether they did anything else to protected paths.
    Then, once:

    * reads only, on areas one *confined* role of the model allows → that role (runtime-like when
      it reads what the runtime role may read, CI-like for the build area; names never matter);
    * never touched a protected path → the first non-confined role that allows nothing
      (developer-like);
    * anything else → no role (nothing is checked).

    State is plain data, bounded by ``max_groups``.
    """

    def __init__(
        self,
        policy: AccessPolicy,
        *,
        learning_days: float = 7.0,
        min_events: int = 5,
        min_reads: int = 3,
        max_groups: int = 4096,
    ) -> None:
        self.policy = policy
        self.learn = learning_days * 86400.0
        self.min_events = min_events
        self.min_reads = min_reads
        self.max_groups = max_groups
        self._groups: dict[str, dict[str, Any]] = {}
        self._roles = {r.name: r for r in policy.roles}

    def observe(self, event: AuditEvent) -> tuple[Role, str] | None:
        """Learn from one response entry of an unmatched identity; its group's inferred role
        (and how it was inferred) when one has been decided, else None."""
        identity = event.identity
        if identity.is_root:
            return None
        gk = peer_group(identity)
        g = self._groups.get(gk)
        ts = event.ts
        if g is None:
            if len(self._groups) >= self.max_groups:
                del self._groups[next(iter(self._groups))]
            g = self._groups[gk] = {
                "first": ts, "n": 0, "days": [], "members": [], "reads": {}, "other": 0,
                "decided": False, "role": None, "basis": "",
            }  # fmt: skip
        if not g["decided"]:
            self._learn(g, event)
            if ts - g["first"] >= self.learn and len(g["days"]) >= 2 and g["n"] >= self.min_events:
                self._decide(gk, g, ts)
        role = self._roles.get(g["role"]) if g["role"] is not None else None
        return (role, str(g["basis"])) if role is not None else None

    def _learn(self, g: dict[str, Any], event: AuditEvent) -> None:
        g["n"] += 1
        day = _day(event.ts)
        if day not in g["days"] and len(g["days"]) < 3:
            g["days"].append(day)
        key = event.identity.key
        if key not in g["members"] and len(g["members"]) < 64:
            g["members"].append(key)
        if self.policy.is_housekeeping(event.path):
            return
        target = secret_target(event)
        if not self.policy.is_protected(target.path, target.mount):
            return
        if target.op == "read" and event.outcome == "ok":
            reads: dict[str, list[Any]] = g["reads"]
            area = _parent(target.path)
            hit = reads.get(area)
            if hit is not None:
                hit[0] += 1
            elif len(reads) < 16:
                reads[area] = [1, target.path, target.mount]
            else:
                g["other"] += 1  # reads spread over many areas: not one consumer
        else:
            g["other"] += 1

    def _decide(self, gk: str, g: dict[str, Any], ts: float) -> None:
        g["decided"] = True
        reads: dict[str, list[Any]] = g["reads"]
        peers = describe_peers(gk, len(g["members"]))
        days = _human(ts - g["first"])
        if g["other"]:
            g["basis"] = f"no role inferred: {peers} did more than read protected paths"
            return
        if not reads:
            role = next((r for r in self.policy.roles if not r.confined and not r.allow), None)
            if role is not None:
                g["role"] = role.name
                g["basis"] = (
                    f"role inferred from behaviour: never touched a protected path in {days} "
                    f"({g['n']} events) like its peers ({peers})"
                )
            return
        if sum(int(v[0]) for v in reads.values()) < self.min_reads:
            return
        samples = [SecretTarget(str(v[1]), "read", "data", str(v[2])) for v in reads.values()]
        for role in self.policy.roles:
            if role.confined and all(role.permits(t) for t in samples):
                g["role"] = role.name
                areas = ", ".join(f"{a}*" for a in sorted(reads))
                g["basis"] = f"role inferred from behaviour: reads only {areas} like its peers ({peers})"
                return

    def dump(self) -> dict[str, Any]:
        """Plain-data state."""
        return {
            k: {**v, "days": list(v["days"]), "members": list(v["members"]),
                "reads": {a: list(r) for a, r in v["reads"].items()}}
            for k, v in self._groups.items()
        }  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`dump` output."""
        self._groups = {
            str(k): {**v, "days": list(v["days"]), "members": list(v["members"]),
                     "reads": {str(a): list(r) for a, r in dict(v["reads"]).items()}}
            for k, v in dict(state).items()
        }  # fmt: skip


class AccessModelDetector:
    """``access-model-violation``: any access outside the identity's role in the access model.

    Catches over-broad or drifted Vault policies being used (a runtime identity writing, a CI
    identity reading runtime secrets, a developer reading ``logos/pxl-core/*``), confined machine
    identities touching anything beyond their allow list (``sys/``, other mounts), attempts Vault
    denied, and CI tokens living longer than the role's ``max_token_ttl`` (at issue and at use).

    Reads: response entries only; ``identity`` (policies, display_name, metadata, entity_id),
    ``path``/``operation``/``mount_point``/``mount_type`` (logical KV path), ``outcome``,
    ``auth.token_ttl`` and ``auth.accessor`` of the caller, and ``response.auth`` of token
    creations (policies, token_ttl, display_name, metadata).
    """

    name = "access-model-violation"
    family = "policy"
    #: Judges response entries only (the engine skips request entries).
    only_responses: ClassVar[bool] = True

    def __init__(self, policy: AccessPolicy | None = None, *, role_learning_days: float = 7.0) -> None:
        self.policy = policy if policy is not None else default_policy()
        self._ttl_reported = _Recent()
        self._inferred = RoleInference(self.policy, learning_days=role_learning_days)
        self._grants = GrantBook()

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Judge one event against the model."""
        if not event.is_response or event.identity.kind in ("login", "anonymous"):
            return []
        out: list[Finding] = []
        issued = self._issued_token_ttl(event)
        if issued is not None:
            out.append(issued)
        role = self.policy.role_for(event.identity)
        if role is None:
            # No matcher fits (the organisation names its policies otherwise): judge by what
            # the identity's Vault policies grant when the shell read them, else by the role
            # the identity's peer group has shown, once it has shown one.
            by_vault = self._capability_role(event, ctx)
            if by_vault is not None:
                found = self._inferred_violation(event, *by_vault, source="vault")
                if found is not None:
                    out.append(found)
                self._note_grant(event)
                return out
            guess = self._inferred.observe(event)
            if guess is not None:
                found = self._inferred_violation(event, *guess)
                if found is not None:
                    out.append(found)
            self._note_grant(event)
            return out
        caller_ttl = self._caller_ttl(event, role)
        if caller_ttl is not None:
            out.append(caller_ttl)
        violation = self._path_violation(event, role)
        if violation is not None:
            out.append(violation)
        self._note_grant(event)
        return out

    def _note_grant(self, event: AuditEvent) -> None:
        """Teach the grant book what the request's granting policies were used for."""
        if event.outcome == "ok" and not self.policy.is_housekeeping(event.path):
            target = secret_target(event)
            self._grants.observe(event, peer_group(event.identity), _parent(target.path), target.op)

    def _path_violation(self, event: AuditEvent, role: Role) -> Finding | None:
        if self.policy.is_housekeeping(event.path):
            return None
        target = secret_target(event)
        if not role.confined and not self.policy.is_protected(target.path, target.mount):
            return None
        if role.permits(target):
            return None
        allowed_by_vault = event.outcome in ("ok", "pending")
        severity = "high" if allowed_by_vault else "medium"
        verdict = "Vault allowed it" if allowed_by_vault else f"Vault answered {event.outcome}"
        identity = event.identity
        return _finding(
            self.name,
            self.family,
            event,
            identity=identity,
            title=f"{role.name} identity {target.op} {target.path} outside its role ({verdict})",
            severity=severity,
            dedup_key=f"{self.name}:{identity.key}:{role.name}:{target.op}:{target.path}",
            reasons=[
                Reason("role", role.name, f"role from the access model's matcher: {role.describe()}", 1.0),
                Reason("operation", f"{target.op} {target.path}", "not allowed for the role", 0.9),
                Reason("outcome", event.outcome, "the model applies whatever the ACL allowed", 0.4),
            ],
            paths=(event.path,),
            first_ts=event.ts,
            last_ts=event.ts,
            labels={"role": role.name, "operation": target.op, "role_source": "config"},
        )

    def _capability_role(self, event: AuditEvent, ctx: DetectContext) -> tuple[Role, str] | None:
        """The role the identity's Vault policies grant (:class:`CapabilityRoles`), if placed."""
        caps = capability_roles(ctx.config)
        found = caps.resolve(self.policy, event.identity.policies) if caps is not None else None
        if found is None or found.role is None:
            return None
        role = next((r for r in self.policy.roles if r.name == found.role), None)
        return (role, found.evidence) if role is not None else None

    def _inferred_violation(
        self, event: AuditEvent, role: Role, basis: str, *, source: str = "behaviour"
    ) -> Finding | None:
        """A protected access outside a role inferred from behaviour (never anything else: an
        inferred role does not confine the identity beyond the protected paths)."""
        if self.policy.is_housekeeping(event.path):
            return None
        target = secret_target(event)
        if not self.policy.is_protected(target.path, target.mount) or role.permits(target):
            return None
        allowed_by_vault = event.outcome in ("ok", "pending")
        # A role guessed from behaviour is weaker evidence than a configured one: a read granted
        # by a policy that exists for such reads (never used before, or used only to read
        # protected paths beyond its holders' roles: on-call, audit) is what that policy is for.
        dedicated = self._grants.dedicated(event) if allowed_by_vault and source == "behaviour" else None
        severity = ("low" if dedicated else "high") if allowed_by_vault else "medium"
        verdict = "Vault allowed it" if allowed_by_vault else f"Vault answered {event.outcome}"
        identity = event.identity
        who = _person(identity)
        reasons = [
            Reason("role", f"{role.name} ({_ROLE_SOURCES.get(source, source)})", basis, 1.0),
            Reason("operation", f"{target.op} {target.path}", f"{role.name}: {role.describe()}", 0.9),
            Reason("outcome", event.outcome, "the model applies whatever the ACL allowed", 0.4),
        ]
        if dedicated:
            reasons.append(
                Reason("grant", dedicated, "an access role of its own: what the policy is for", 0.5)
            )
        return _finding(
            self.name,
            self.family,
            event,
            identity=identity,
            title=f"{role.name}-like identity {who} {target.op} {target.path} outside its role ({verdict})",
            severity=severity,
            dedup_key=f"{self.name}:{identity.key}:{role.name}~:{target.op}:{target.path}",
            reasons=reasons,
            paths=(event.path,),
            first_ts=event.ts,
            last_ts=event.ts,
            labels={"role": role.name, "operation": target.op, "role_source": source},
        )

    def _caller_ttl(self, event: AuditEvent, role: Role) -> Finding | None:
        ttl = event.auth.token_ttl
        if role.max_token_ttl is None or not ttl or ttl <= role.max_token_ttl:
            return None
        key = event.auth.accessor or event.identity.key
        if not self._ttl_reported.add(key, event.ts):
            return None
        return self._ttl_finding(event, event.identity, role, ttl, "in use")

    def _issued_token_ttl(self, event: AuditEvent) -> Finding | None:
        resp = event.response
        ra = resp.auth if resp is not None else None
        if ra is None or not event.path.startswith("auth/token/create") or not ra.token_ttl:
            return None
        issued = Identity(
            key=f"token:{ra.display_name or '?'}",
            kind="token",
            display_name=ra.display_name,
            policies=ra.policies or (),
            metadata=ra.metadata,
        )
        role = self.policy.role_for(issued)
        if role is None or role.max_token_ttl is None or ra.token_ttl <= role.max_token_ttl:
            return None
        if not self._ttl_reported.add(ra.accessor or f"{event.request_id}:issued", event.ts):
            return None
        return self._ttl_finding(event, event.identity, role, ra.token_ttl, "issued")

    def _ttl_finding(self, event: AuditEvent, identity: Identity, role: Role, ttl: int, how: str) -> Finding:
        max_ttl = role.max_token_ttl or 0.0
        return _finding(
            self.name,
            self.family,
            event,
            identity=identity,
            title=f"{role.name} token {how} with TTL {_human(ttl)} (role maximum {_human(max_ttl)})",
            severity="medium",
            dedup_key=f"{self.name}:{identity.key}:{role.name}:ttl",
            reasons=[
                Reason("token_ttl", _human(ttl), f"at most {_human(max_ttl)}", 1.0),
                Reason("role", role.name, role.description or role.describe(), 0.5),
            ],
            paths=(event.path,),
            first_ts=event.ts,
            last_ts=event.ts,
            labels={"role": role.name, "check": "max_token_ttl"},
        )

    def state(self) -> dict[str, Any]:
        """Plain-data state: token accessors already reported for an over-long TTL, and what
        each unmatched peer group has shown of its role."""
        return {
            "ttl_reported": self._ttl_reported.dump(),
            "inferred": self._inferred.dump(),
            "grants": self._grants.dump(),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._ttl_reported.restore(state.get("ttl_reported", {}))
        self._inferred.restore(state.get("inferred", {}))
        self._grants.restore(state.get("grants", {}))


#: Learned rotation schedules (name-independent): a secret written on this many occasions at
#: intervals within this max/min ratio, of at least this period, is tracked as if configured.
LEARN_MIN_WRITES: Final = 3
LEARN_MAX_RATIO: Final = 1.5
LEARN_MIN_PERIOD: Final = 3600.0
#: Writes closer than this are one occasion (a job writing twice, a retry).
_SAME_OCCASION: Final = 600.0
#: Write times kept per secret, and secrets kept for learning (least recently written go first).
_KEEP_WRITES: Final = 8
_LEARN_LIMIT: Final = 20_000
#: A secret's own lateness widens its grace up to this share of its period (a skip still shows).
_MAX_LATENESS: Final = 0.5
_LEARNED: Final = "learned schedule"
_KV_MOUNT_TYPES: Final = frozenset({"kv", "generic"})
#: What makes a learned schedule a *job's*, not a person's habit (people edit notes daily, at
#: office hours that drift by hours): one writer identity made every tracked write, on at least
#: this many occasions, each regular interval within this share of the period (a scheduler's
#: jitter is seconds to minutes).
LEARN_JOB_MIN_WRITES: Final = 4
#: Marks a writer that logged in as a person: Vault's username-and-password methods (userpass,
#: LDAP, Okta, RADIUS) put ``username`` in the token's metadata; a person's habit is no job.
_PERSON: Final = "person\x1f"


def _is_person(event: AuditEvent) -> bool:
    meta = event.identity.metadata
    return meta is not None and "username" in meta


LEARN_JOB_JITTER: Final = 0.1


def learned_period(writes: list[float]) -> tuple[float, int] | None:
    """(period, regular intervals) of a secret written at ``writes`` (sorted occasions), or None.

    Intervals of more than :data:`LEARN_MAX_RATIO` times the median are lapses (a skipped
    rotation, already reported), so they do not unlearn the schedule while they stay a minority;
    any shorter than the median / ratio (a human edit in between) means no schedule.

    >>> learned_period([0.0, 86400.0, 2 * 86400.0 + 3600.0])
    (88200.0, 2)
    >>> learned_period([0.0, 86400.0, 5 * 86400.0]) is None
    True
    """
    if len(writes) < LEARN_MIN_WRITES:
        return None
    gaps = sorted(b - a for a, b in zip(writes, writes[1:], strict=False))
    mid = gaps[len(gaps) // 2] if len(gaps) % 2 else (gaps[len(gaps) // 2 - 1] + gaps[len(gaps) // 2]) / 2
    regular = [g for g in gaps if g <= mid * LEARN_MAX_RATIO]
    if len(regular) < LEARN_MIN_WRITES - 1 or len(regular) * 2 < len(gaps) or regular[0] <= 0:
        return None
    if regular[-1] / regular[0] > LEARN_MAX_RATIO:
        return None
    period = sum(regular) / len(regular)
    if period < LEARN_MIN_PERIOD:
        return None
    return period, len(regular)


def job_cadence(writes: list[float], every: float) -> bool:
    """True when the occasions ``writes`` keep ``every`` as a scheduler would: at least
    :data:`LEARN_JOB_MIN_WRITES` of them, every interval that is not a lapse (a skipped run)
    within :data:`LEARN_JOB_JITTER` of the period.

    >>> job_cadence([0.0, 86400.0, 172830.0, 259200.0], 86400.0)
    True
    >>> job_cadence([0.0, 80000.0, 172800.0, 259200.0], 86400.0)  # a person, hours apart
    False
    """
    if len(writes) < LEARN_JOB_MIN_WRITES or every <= 0:
        return False
    gaps = [b - a for a, b in zip(writes, writes[1:], strict=False)]
    regular = [g for g in gaps if g <= every * LEARN_MAX_RATIO]
    return bool(regular) and all(abs(g - every) <= LEARN_JOB_JITTER * every for g in regular)


def _lateness(writes: list[float], every: float) -> float:
    """The largest lateness the secret showed on earlier rotations that were not a skip."""
    late = [b - a - every for a, b in zip(writes, writes[1:], strict=False)]
    return max((x for x in late if 0 < x <= _MAX_LATENESS * every), default=0.0)


def _approx(seconds: float) -> str:
    """A learned period as a person says it: ``~1d``, ``~6h``, ``~45m``."""
    unit = 3600.0 if seconds >= 3 * 3600.0 else 60.0
    return "~" + _human(max(unit, round(seconds / unit) * unit))


class RotationTracker:
    """``rotation-overdue``: a secret not rotated within its schedule, configured or learned.

    Catches stale credentials (a JWT signing key not rotated daily, API keys weekly, TLS monthly,
    database credentials not rotated after a deploy), which widen the window in which a leaked
    secret stays useful. Tracking starts at a secret's first write or, for one only read so far,
    at its first sighting. Each missed period is reported once; ``due(now)`` lets the engine report
    deadlines that pass while no event arrives.

    Secrets outside every rotation class get a *learned* schedule, whatever they are named: one
    written successfully on :data:`LEARN_MIN_WRITES` occasions at a steady period (intervals
    within :data:`LEARN_MAX_RATIO` of each other, at least :data:`LEARN_MIN_PERIOD`) is tracked
    as if its class said so; a secret edited now and then by people never gets one. Configured
    classes take precedence. The grace after each period is the class's (10% of the period by
    default) or, when larger, the lateness the secret itself showed on earlier rotations (a job
    that habitually runs a few hours late), at most half a period: a skipped rotation still shows.

    Reads: response entries with outcome ``ok``; ``path``/``operation``/``mount_point``/
    ``mount_type`` (logical KV path and whether it was a write, a read or a delete), ``ts`` and
    ``request_id`` of the last write.
    """

    name = "rotation-overdue"
    family = "rotation"

    def __init__(self, policy: AccessPolicy | None = None, *, learn: bool = True) -> None:
        self.policy = policy if policy is not None else default_policy()
        #: Learn schedules of unclassified secrets written by a job (one writer, a scheduler's
        #: cadence: :func:`job_cadence`); people editing a secret daily never get one.
        self.learn = learn
        # path -> {"cls", "since", "written", "writer", "reported", "deploy", "writes",
        #          "every" (learned period, learned schedules only), "regular"}
        self._secrets: dict[str, dict[str, Any]] = {}
        # Unclassified KV secrets: path -> recent write occasions (least recently written first),
        # and the identity that made each of them.
        self._learning: dict[str, list[float]] = {}
        self._writers: dict[str, list[str]] = {}
        self._next_due = math.inf

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Record writes, sightings and deploys; return anything that became overdue."""
        if event.is_response and event.outcome == "ok":
            self._record(event)
        return self.due(event.ts)

    def _record(self, event: AuditEvent) -> None:
        target = secret_target(event)
        if self.policy.deploy.paths and self._is_deploy(event, target):
            for tracked in self._secrets.values():
                cls = self._class(tracked)
                rearm = tracked["deploy"] is None or tracked["reported"] is not None
                if cls is not None and cls.on_deploy and rearm:
                    tracked["deploy"] = event.ts
                    tracked["reported"] = None
            self._recompute()
        cls_ = self.policy.rotation_class(target.path, target.mount)
        if cls_ is None:
            if self.learn:
                self._learn(event, target)
            return
        if target.api not in ("data", "plain"):
            if target.api == "metadata" and target.op == "delete":
                self._secrets.pop(target.path, None)  # every version gone: nothing left to rotate
                self._recompute()
            return
        info = self._secrets.get(target.path)
        if target.op in _WRITE_OPS:
            writes = _occasions(info.get("writes", []) if info else [], event.ts)
            self._secrets[target.path] = {
                "cls": cls_.name,
                "since": event.ts,
                "written": True,
                "writer": event.request_id,
                "reported": None,
                "deploy": None,
                "writes": writes,
            }
        elif target.op == "delete" and target.api == "plain":
            self._secrets.pop(target.path, None)
        elif info is None and target.op == "read":
            self._secrets[target.path] = {
                "cls": cls_.name,
                "since": event.ts,
                "written": False,
                "writer": None,
                "reported": None,
                "deploy": None,
                "writes": [],
            }
        else:
            return
        self._recompute()

    def _learn(self, event: AuditEvent, target: SecretTarget) -> None:
        """Keep the write occasions of an unclassified KV secret; track it once it has a schedule."""
        path = target.path
        kv = target.api != "plain" or event.mount_type in _KV_MOUNT_TYPES
        if not kv or not target.mount:
            return
        gone = target.op == "delete" and target.api in ("metadata", "plain")
        if gone or target.op not in _WRITE_OPS or target.api not in ("data", "plain"):
            if gone:
                self._learning.pop(path, None)
                if self._secrets.pop(path, None) is not None:
                    self._recompute()
            return
        before = self._learning.pop(path, [])
        writes = _occasions(before, event.ts)
        self._learning[path] = writes  # most recently written last
        # Who made each kept occasion (the first writer of an occasion stands for it).
        writers = self._writers.pop(path, [])
        if not before or writes[-1] != before[-1]:
            writers = [*writers, _PERSON + event.identity.key if _is_person(event) else event.identity.key]
        self._writers[path] = writers[-len(writes) :]
        while len(self._learning) > _LEARN_LIMIT:
            old = next(iter(self._learning))
            del self._learning[old]
            self._writers.pop(old, None)
            self._secrets.pop(old, None)
        found = learned_period(writes) if len(writes) >= LEARN_JOB_MIN_WRITES else None
        # A job's schedule only: one writer, a scheduler's cadence (people who edit a secret
        # daily, or a team sharing one, never keep a period to minutes).
        who = set(self._writers[path])
        if (
            found is None
            or len(who) != 1
            or next(iter(who)).startswith(_PERSON)
            or not job_cadence(writes, found[0])
        ):
            if self._secrets.pop(path, None) is not None:
                self._recompute()
            return
        every, regular = found
        old_info = self._secrets.get(path)
        old_due = self._deadline(old_info) if old_info is not None else None
        self._secrets[path] = {
            "cls": _LEARNED,
            "since": event.ts,
            "written": True,
            "writer": event.request_id,
            "reported": None,
            "deploy": None,
            "writes": list(writes),
            "every": every,
            "regular": regular,
            "by": _person(event.identity),
        }
        due = self._deadline(self._secrets[path])
        if old_due is not None and old_due[0] <= self._next_due:
            self._recompute()  # it held the earliest deadline: find the next one
        elif due is not None and due[0] < self._next_due:
            self._next_due = due[0]

    def _is_deploy(self, event: AuditEvent, target: SecretTarget) -> bool:
        marker = self.policy.deploy
        if not marker.matches(target):
            return False
        return not marker.roles or marker.accepts(self.policy.role_for(event.identity))

    def _class(self, info: dict[str, Any]) -> RotationClass | None:
        if info["cls"] == _LEARNED and "every" in info:
            return RotationClass(_LEARNED, (), every=float(info["every"]))
        for cls in self.policy.rotation:
            if cls.name == info["cls"]:
                return cls
        return None

    @staticmethod
    def _slack(info: dict[str, Any], cls: RotationClass) -> float:
        """The class's grace or, unless set explicitly, the secret's own habitual lateness."""
        if cls.grace is not None or cls.every is None:
            return cls.slack
        return max(cls.slack, _lateness([float(x) for x in info.get("writes", [])], cls.every))

    def _deadline(self, info: dict[str, Any]) -> tuple[float, int] | None:
        """(next deadline still to report, period index) or None when nothing is pending."""
        cls = self._class(info)
        if cls is None:
            return None
        if cls.on_deploy:
            if info["deploy"] is None or info["reported"] is not None:
                return None
            return info["deploy"] + cls.within, 1
        assert cls.every is not None
        k = int(info["reported"] or 0) + 1
        return info["since"] + k * cls.every + self._slack(info, cls), k

    def _recompute(self) -> None:
        deadlines = [d[0] for info in self._secrets.values() if (d := self._deadline(info)) is not None]
        self._next_due = min(deadlines, default=math.inf)

    def due(self, now: float) -> list[Finding]:
        """Findings for every secret whose rotation deadline passed by ``now`` (event time)."""
        if now <= self._next_due:
            return []
        out: list[Finding] = []
        for path, info in self._secrets.items():
            d = self._deadline(info)
            if d is None or now <= d[0]:
                continue
            cls = self._class(info)
            assert cls is not None
            deadline, k = d
            if not cls.on_deploy:
                assert cls.every is not None
                # Skip periods missed while idle rather than reporting each of them.
                k = max(k, int((now - info["since"] - self._slack(info, cls)) // cls.every))
            info["reported"] = k
            out.append(self._overdue(path, info, cls, deadline, now, k))
        self._recompute()
        return out

    def _overdue(
        self, path: str, info: dict[str, Any], cls: RotationClass, deadline: float, now: float, k: int
    ) -> Finding:
        since = _iso(info["since"])
        learned = cls.name == _LEARNED
        if cls.on_deploy:
            expected = f"rewritten within {_human(cls.within)} of a deploy"
            title = f"{cls.name}: {path} not rotated after the deploy at {_iso(info['deploy'])}"
        elif learned:
            assert cls.every is not None
            every = _approx(cls.every)
            by = f" by {info['by']}" if info.get("by") else ""
            expected = (
                f"learned schedule: written every {every}{by} on {int(info.get('regular', 0)) + 1} "
                f"earlier occasions, each within {int(LEARN_JOB_JITTER * 100)}% of the period "
                f"(a job's cadence); last {since}"
            )
            title = (
                f"{path} not rewritten for {_human(now - info['since'])} (learned schedule: every {every})"
            )
        else:
            assert cls.every is not None
            expected = f"rotated every {_human(cls.every)}"
            age = _human(now - info["since"])
            title = f"{cls.name}: {path} not rotated for {age} (every {_human(cls.every)})"
        last = f"written {since}" if info["written"] else f"not written since first seen {since}"
        severity = "high" if k >= 3 else "medium"
        return _finding(
            self.name,
            self.family,
            None,
            identity=Identity(key=f"secret:{path}", kind="secret", display_name=path),
            title=title,
            severity=severity,
            dedup_key=f"{self.name}:{path}",
            reasons=[
                Reason("last_rotation", last, expected, 1.0),
                Reason("overdue_by", _human(now - deadline), "0s", 0.6),
            ],
            paths=(path,),
            first_ts=deadline,
            last_ts=now,
            event_ids=(info["writer"],) if info["writer"] else (),
            labels={"rotation_class": cls.name, "missed_periods": str(k)}
            | ({"learned_period": _human(cls.every or 0.0)} if learned else {}),
        )

    def state(self) -> dict[str, Any]:
        """Plain-data state: the tracked secrets and the write occasions of unclassified ones."""
        return {
            "secrets": {p: dict(v) | {"writes": list(v.get("writes", []))} for p, v in self._secrets.items()},
            "learning": {p: list(w) for p, w in self._learning.items()},
            "writers": {p: list(w) for p, w in self._writers.items()},
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._secrets = {str(p): dict(v) for p, v in dict(state.get("secrets", {})).items()}
        self._learning = {str(p): [float(x) for x in w] for p, w in dict(state.get("learning", {})).items()}
        self._writers = {str(p): [str(k) for k in w] for p, w in dict(state.get("writers", {})).items()}
        self._recompute()


def _occasions(writes: list[float], ts: float) -> list[float]:
    """``writes`` with a write at ``ts`` added (one occasion with a write just before it), the
    last :data:`_KEEP_WRITES` kept."""
    out = [float(x) for x in writes]
    if out and ts - out[-1] < _SAME_OCCASION:
        return out
    return [*out, ts][-_KEEP_WRITES:]


# -- roles by capability (issue 14 item 2) --------------------------------------------------------
# What an identity's Vault policies *grant* decides its role when no matcher of the model fits:
# the shell (``vaultwatch.vault.roles``) reads the policies from the API and hands the parsed
# grants in as :class:`CapabilityRoles`; the decision below is pure (data in, role out).

#: Vault capabilities that change what they are granted on (``deny`` is handled apart).
_CHANGE_CAPS: Final = frozenset({"create", "update", "patch", "delete", "sudo"})
#: Areas whose change rights make an administrator: policies, auth methods, mounts, and minting
#: tokens with chosen policies. Vault built-ins only (never an organisation's names).
ADMIN_AREAS: Final = ("sys/policy/*", "sys/policies/*", "sys/auth/*", "sys/mounts/*", "auth/token/create*")
_ADMIN_CAPS: Final = frozenset({"sudo", "create", "update"})
_KV_KINDS: Final = frozenset({"kv", "kv-v2", "kv2", "generic"})
_ROLE_SOURCES: Final = {"vault": "from Vault policies", "behaviour": "inferred"}
#: The config key under which the shell hands the engine a :class:`CapabilityRoleBook` (or a
#: :class:`CapabilityRoles`).
CAPABILITY_KEY: Final = "capability_roles"


@dataclass(frozen=True)
class Grant:
    """One ``path`` block of a Vault policy: the path glob (Vault syntax: trailing ``*``, ``+``
    for one segment) and its capabilities. ``policies_settable`` is False when the block's
    ``allowed_parameters``/``denied_parameters`` keep a caller from choosing ``policies``."""

    path: str
    capabilities: frozenset[str]
    policies_settable: bool = True


@dataclass(frozen=True)
class CapabilityRole:
    """The role Vault's grants give one policy set, and the evidence, for explanations.

    ``role`` is a role name of the access model or None (not placed); ``admin`` says the set
    grants policy, auth-method, mount or token-minting changes.
    """

    role: str | None
    evidence: str
    admin: bool = False
    admin_evidence: str = ""


def policy_key(policies: tuple[str, ...] | list[str]) -> str:
    """The policy set as one key: sorted, ``default`` left out (``"eng,oncall"``)."""
    return ",".join(sorted({p for p in policies if p != "default"}))


def vault_glob_match(glob: str, path: str) -> bool:
    """Vault's ACL path matching: a trailing ``*`` is a prefix glob, ``+`` one path segment.

    >>> vault_glob_match("secret/data/+/runtime/*", "secret/data/app/runtime/jwt")
    True
    >>> vault_glob_match("secret/data/app", "secret/data/app/x")
    False
    """
    rx = _VAULT_GLOBS.get(glob)
    if rx is None:
        star = glob.endswith("*")
        body = glob[:-1] if star else glob
        parts = ["[^/]*" if seg == "+" else re.escape(seg) for seg in body.split("/")]
        rx = re.compile("/".join(parts) + (".*" if star else ""), re.S)
        if len(_VAULT_GLOBS) >= _CACHE_LIMIT:
            _VAULT_GLOBS.clear()
        _VAULT_GLOBS[glob] = rx
    return rx.fullmatch(path) is not None


_VAULT_GLOBS: dict[str, re.Pattern[str]] = {}


def _concrete(glob: str) -> str:
    """One path a glob matches (``*``, ``+``, ``?`` become a placeholder segment text)."""
    out = glob.replace("+", "_x_").replace("?", "x")
    return out.replace("*", "_x_")


def _logical(path: str, mounts: Mapping[str, str]) -> tuple[str, str, str]:
    """(logical path, mount, KV v2 API segment or "") of a Vault policy path."""
    mount = max((m for m in mounts if path.startswith(m)), key=len, default="")
    kind = mounts.get(mount, "")
    if not mount:
        first, sep, rest = path.partition("/")
        if sep and first not in _NON_KV_ROOTS and rest.partition("/")[0] in ("data", "metadata"):
            mount, kind = first + "/", "kv-v2"
    if mount and kind in ("kv-v2", "kv2"):
        segment, _, tail = path[len(mount) :].partition("/")
        if segment in _KV2_OPS:
            return mount + tail, mount, segment
    return path, mount, ""


def _overlaps(model_glob: str, grant_logical: str, mount: str) -> bool:
    """True when a model glob (fnmatch, logical) and a grant (Vault glob, logical) can match a
    common path: one's sample path falls in the other."""
    if glob_match(model_glob, _concrete(grant_logical), mount):
        return True
    sample = _concrete(model_glob.partition("::")[2] or model_glob)
    if vault_glob_match(grant_logical, sample):
        return True
    return bool(mount) and vault_glob_match(grant_logical, mount + sample)


def _effective(grant: Grant, segment: str) -> frozenset[str]:
    """What a grant lets a caller do to the secrets (KV v2 metadata reads are listings)."""
    caps = grant.capabilities
    if "deny" in caps:
        return frozenset()
    if segment == "metadata":
        return frozenset({"list"} if caps & {"read", "list"} else set()) | (caps & _CHANGE_CAPS)
    return caps & (_CHANGE_CAPS | {"read", "list"})


def admin_evidence(names: tuple[str, ...] | list[str], grants: Mapping[str, tuple[Grant, ...]]) -> str:
    """Why the policies ``names`` make an administrator, or "" (pure).

    An administrator holds ``root``, or a grant of ``sudo``/``create``/``update`` on
    :data:`ADMIN_AREAS` (for token creation: only when ``policies`` stays settable, or with sudo).

    >>> admin_evidence(["sec"], {"sec": (Grant("sys/policies/acl/*", frozenset({"update"})),)})
    'policy `sec` grants update on sys/policies/acl/*'
    >>> admin_evidence(["app"], {"app": (Grant("auth/token/create", frozenset({"update"}), False),)})
    ''
    """
    if "root" in names:
        return "root policy"
    for name in ("default", *sorted(set(names) - {"default"})):
        for g in grants.get(name, ()):
            caps = g.capabilities
            if "deny" in caps or not caps & _ADMIN_CAPS:
                continue
            for area in ADMIN_AREAS:
                if not _overlaps(area, g.path, ""):
                    continue
                if area.startswith("auth/token/create") and not (g.policies_settable or "sudo" in caps):
                    continue
                return f"policy `{name}` grants {', '.join(sorted(caps & _ADMIN_CAPS))} on {g.path}"
    return ""


def decide_capability_role(
    policy: AccessPolicy,
    names: tuple[str, ...] | list[str],
    grants: Mapping[str, tuple[Grant, ...]],
    mounts: Mapping[str, str] | None = None,
    token_ttl: float | None = None,
) -> CapabilityRole:
    """The access-model role that the Vault policies ``names`` grant (pure: data in, role out).

    * grants nothing on a protected path → the first non-confined role that allows nothing
      (developer-like);
    * reads only, all within what one confined role allows (and, when that role caps token
      TTLs, tokens no longer than that when ``token_ttl`` is known) → that role (runtime-like,
      CI-like); policy names break a tie only (a hint);
    * anything else (writes, reads wider than any role) → not placed (``role=None``).

    ``admin`` is set when a grant allows ``sudo``/``create``/``update`` on :data:`ADMIN_AREAS`
    (token creation only when the block leaves ``policies`` settable), or the set holds ``root``.

    >>> p = default_policy()
    >>> g = {"eng": (Grant("secret/data/team/*", frozenset({"read"})),)}
    >>> decide_capability_role(p, ["eng"], g, {"secret/": "kv-v2"}).role
    'developer'
    """
    mounts = mounts or {}
    named = sorted({n for n in names if n != "default"})
    label = ", ".join(f"`{n}`" for n in named) or "`default`"
    src = f"role from {'policy' if len(named) <= 1 else 'policies'} {label}"
    rules = [(n, g) for n in ("default", *named) for g in grants.get(n, ())]
    admin_why = admin_evidence(named, grants)
    protected: list[tuple[str, Grant, str, str, frozenset[str]]] = []
    denies = [g for _, g in rules if "deny" in g.capabilities]
    for name, g in rules:
        logical, mount, segment = _logical(g.path, mounts)
        eff = _effective(g, segment)
        if not eff or any(vault_glob_match(d.path, _concrete(g.path)) for d in denies):
            continue
        if g.path.startswith(SYSTEM_ROOTS) or mounts.get(mount, "kv") not in _KV_KINDS:
            continue  # Vault's own areas and non-KV engines hold no secret of the model's areas
        if any(_overlaps(p, logical, mount) for p in policy.protected):
            protected.append((name, g, logical, mount, eff))
    admin = bool(admin_why)
    areas = ", ".join(policy.protected) or "protected paths"
    if not protected:
        role = next((r for r in policy.roles if not r.confined and not r.allow), None)
        if role is None:
            why = f"{src}: no grant on {areas}, and no role of the model allows nothing"
            return CapabilityRole(None, why, admin, admin_why)
        return CapabilityRole(role.name, f"{src}: no grant on {areas}", admin, admin_why)
    writes = [(n, g) for n, g, _, _, eff in protected if eff - {"read", "list"}]
    if writes:
        n, g = writes[0]
        caps = ", ".join(sorted(g.capabilities & _CHANGE_CAPS))
        return CapabilityRole(None, f"not placed: policy `{n}` grants {caps} on {g.path} (a protected path)",
                              admin, admin_why)  # fmt: skip
    samples = [SecretTarget(_concrete(lg), "read", "data", m) for _, _, lg, m, _ in protected]
    fits = [r for r in policy.roles if r.confined and all(r.permits(t) for t in samples)]
    granted = ", ".join(sorted({g.path for _, g, _, _, _ in protected}))
    if not fits:
        return CapabilityRole(None, f"not placed: reads {granted}, wider than any confined role allows",
                              admin, admin_why)  # fmt: skip
    hinted = [r for r in fits if any(r.name.lower() in n.lower() for n in named)]
    role = (hinted or fits)[0]
    hint = " (policy name as tie-break)" if len(fits) > 1 and hinted else ""
    if role.max_token_ttl is not None and token_ttl is not None and token_ttl > role.max_token_ttl:
        return CapabilityRole(
            None,
            f"not placed: reads only {granted} like {role.name}, but its tokens live {_human(token_ttl)} "
            f"({role.name}: at most {_human(role.max_token_ttl)})",
            admin,
            admin_why,
        )
    ttl = ""
    if role.max_token_ttl is not None:
        ttl = f", token TTL {_human(token_ttl)}" if token_ttl is not None else ", token TTL unknown"
    return CapabilityRole(role.name, f"{src}: read-only on {granted}{ttl}{hint}", admin, admin_why)


@dataclass(frozen=True)
class CapabilityRoles:
    """What the shell read from Vault: each policy's grants, the mounts (path → ``kv-v2``,
    ``kv``, ``database``, ...) and the longest token TTL each policy set's auth roles issue.

    :meth:`resolve` answers per identity from its policy set, memoised; it answers None when the
    set holds a policy it does not know (another namespace, created since the last refresh).
    """

    grants: dict[str, tuple[Grant, ...]] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)
    token_ttls: dict[str, float] = field(default_factory=dict)
    source: str = "vault"
    _memo: dict[tuple[int, str], CapabilityRole | None] = _memo()

    def resolve(self, policy: AccessPolicy, policies: tuple[str, ...]) -> CapabilityRole | None:
        """The role the policy set grants under ``policy`` (None when it cannot be judged)."""
        if not self.grants:
            return None
        key = policy_key(policies)
        mk = (id(policy), key)
        cache = self._memo
        if mk in cache:
            return cache[mk]
        names = tuple(key.split(",")) if key else ()
        known = all(n in self.grants or n == "root" for n in names)
        found = (
            decide_capability_role(policy, names, self.grants, self.mounts, self.token_ttls.get(key))
            if known
            else None
        )
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[mk] = found
        return found

    def knows(self, policies: tuple[str, ...]) -> bool:
        """True when every policy of the set was read from Vault (so grants can be judged)."""
        return bool(self.grants) and all(p in self.grants or p in ("default", "root") for p in policies)

    def admin(self, policies: tuple[str, ...]) -> str:
        """Why the policy set administers Vault ("" when it does not, or a policy is unknown)."""
        key = policy_key(policies)
        mk = (0, "admin:" + key)
        cache = self._memo
        if mk not in cache:
            names = tuple(key.split(",")) if key else ()
            known = bool(self.grants) and all(n in self.grants or n == "root" for n in names)
            why = admin_evidence(names, self.grants) if known else ""
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[mk] = CapabilityRole(None, why, bool(why), why)
        hit = cache[mk]
        return hit.admin_evidence if hit is not None else ""


class CapabilityRoleBook:
    """The current :class:`CapabilityRoles`, swapped whole by the shell's background refresh
    (one attribute rebinding: detection never waits for Vault and never sees a half update)."""

    def __init__(self, roles: CapabilityRoles | None = None) -> None:
        self.current = roles if roles is not None else CapabilityRoles()

    def replace(self, roles: CapabilityRoles) -> None:
        """Hand detection a new mapping."""
        self.current = roles


def capability_roles(config: dict[str, Any] | None) -> CapabilityRoles | None:
    """The capability mapping the shell handed in ``config[CAPABILITY_KEY]``, if any."""
    given = (config or {}).get(CAPABILITY_KEY)
    if isinstance(given, CapabilityRoleBook):
        return given.current
    return given if isinstance(given, CapabilityRoles) else None


def admin_by_capability(config: dict[str, Any] | None, identity: Identity) -> str | None:
    """Why ``identity`` administers Vault by what its policies grant: a root token, or the
    evidence of the mapping in ``config[CAPABILITY_KEY]``; "" when the mapping says it does not;
    None when it cannot be told (no mapping, or a policy the mapping does not know)."""
    if identity.is_root or "root" in identity.policies:
        return "root policy"
    caps = capability_roles(config)
    if caps is None or not caps.knows(identity.policies):
        return None
    return caps.admin(identity.policies)
