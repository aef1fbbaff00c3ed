"""Identities named as people read them: one function for the report, the API and UI, and the demo.

An identity key (``entity:<uuid>``, ``token:<display name>``, ``login:<mount>:<name>``,
``anon:<address>``, see :class:`ingest.event.Identity`) is stable but says little to a person.
:func:`identity_label` turns what the audit entries (and, with a Vault client, the identity API)
say about an identity into three lines: its **name** (the entity's name, the login name out of
the token's display name, the AppRole role name, an alias), its **role** (auth mount, AppRole,
policies, the addresses an AppRole client works from) and the **key**, kept as the secondary line.
:func:`label_identity` does the same from anything shaped like an identity: an
:class:`ingest.event.Identity`, a :class:`detect.alert.AlertIdentity` or a mapping with those fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

__all__ = ["IdentityLabel", "identity_label", "label_identity"]

# An identity-API alias named by a UUID (AppRole's aliases are named by the role_id) names nobody.
_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MAX_ALIAS: Final = 40
# Display names every unnamed token shares (``auth/token/create`` without a name, hvac's default).
_GENERIC: Final = frozenset({"token", "token-token"})


class IdentityLabel(NamedTuple):
    """An identity as a person reads it: ``name`` first, ``role`` under it, the ``key`` last."""

    name: str
    role: str
    key: str


# Vault's display name is ``<auth mount prefix>-<login name>`` for most auth methods
# (``userpass-alice``, ``ldap-bob``, ``token-ci-deploy``); AppRole tokens carry just the mount
# (``approle``), since AppRole sets no display name of its own.
def _split_display_name(display_name: str) -> tuple[str | None, str]:
    prefix, sep, rest = display_name.partition("-")
    if sep and prefix and rest:
        return prefix, rest
    return None, display_name


def _auto_entity_name(name: str) -> bool:
    # Vault names an entity it created on first login ``entity_<8 hex>``: not a person's name.
    return name.startswith("entity_")


def _alias(alias_names: Sequence[str]) -> str | None:
    return next((a for a in alias_names if a and len(a) < _MAX_ALIAS and not _UUID.match(a)), None)


def identity_label(
    key: str,
    *,
    display_name: str | None = None,
    policies: Sequence[str] = (),
    auth_mount: str | None = None,
    role_name: str | None = None,
    entity_name: str | None = None,
    alias_names: Sequence[str] = (),
    addresses: Sequence[str] = (),
) -> IdentityLabel:
    """Name an identity from what its entries (and, with Vault, its entity) say about it.

    The name is, first found: the entity's name (not one Vault made up, ``entity_1a2b…``); the
    login name out of the token's display name (``userpass-alice`` is ``alice``); the AppRole role
    name (``auth.metadata.role_name``); an alias name; for an AppRole client without a role name,
    ``AppRole <first policy>``; else the display name or a shortened key. The role line lists the
    auth mount, ``AppRole`` for AppRole clients, the policies (without ``default``) and, for
    AppRole clients, the addresses they work from. Unauthenticated, login, root and
    accessor-keyed identities say what they are.

    >>> identity_label("entity:5f0c", display_name="approle", role_name="deployer", policies=("kv-reader",))
    IdentityLabel(name='deployer', role='auth approle · AppRole · policies kv-reader', key='entity:5f0c')
    >>> identity_label("token:token-ci-deploy", display_name="token-ci-deploy").name
    'ci-deploy'
    """
    kind, _, rest = key.partition(":")
    pols = [p for p in policies if p != "default"]
    role_bits: list[str] = []
    if pols:
        role_bits.append("policies " + ", ".join(pols[:4]) + (" …" if len(pols) > 4 else ""))
    if kind == "anon":
        where = rest if rest and rest != "?" else None
        # ``anon:?`` is an unauthenticated request whose entry carries no remote address.
        name = f"unauthenticated from {where}" if where else "unauthenticated (no address in the entry)"
        return IdentityLabel(name, "no token or an invalid one", key)
    if kind == "login":
        on, _, who = rest.partition(":")
        if who.startswith(("role_id=", "role=")) or who in ("", "?"):
            name = f"AppRole/machine login on {on}" + (f" ({who})" if who not in ("", "?") else "")
        else:
            name = f"{who} (login attempts on {on})"
        return IdentityLabel(name, "not authenticated: login requests", key)
    if kind == "root":
        dn = display_name or rest
        name = "root token" + (f" ({dn})" if dn and dn not in ("root", "token", "?") else "")
        return IdentityLabel(name, "root policy: unrestricted", key)
    if kind == "accessor":
        return IdentityLabel(f"token with accessor {rest[:12]}…", ", ".join(role_bits), key)
    # ``token:token#<accessor hash>``, ``token:~<token hash>``: a token whose display name is
    # generic or missing is keyed by its accessor (or token) hash, never by the shared name.
    cut = len(rest)
    if kind == "token":
        cut = min(i for i in (rest.find("#"), rest.find("~"), cut) if i >= 0)
    handle = rest[cut:]
    mount, login = _split_display_name(display_name or (rest[:cut] if kind == "token" else ""))
    if auth_mount:
        mount = auth_mount.removeprefix("auth/").rstrip("/") or mount
    # An AppRole token's display name is its mount alone (``approle``, or ``apps`` when AppRole
    # is mounted there); the role name in its metadata says it is one, wherever it is mounted.
    approle = bool(role_name) or display_name == "approle" or mount == "approle"
    if approle and not mount and display_name and "-" not in display_name:
        mount = display_name
    name = ""
    if entity_name and not _auto_entity_name(entity_name):
        name = entity_name
    elif not approle and login and login not in _GENERIC and (display_name or kind == "token"):
        name = login
    elif role_name:
        name = role_name
    else:
        name = _alias(alias_names) or ""
    if approle:
        mount = mount or "approle"
        name = name or ("AppRole " + (pols[0] if pols else "client"))
        role_bits.insert(0, "AppRole")
        if addresses:
            role_bits.append("from " + ", ".join(addresses[:2]))
    if not name and handle:
        name = f"unnamed token {handle[:13]}…"
    if not name:
        name = display_name or (rest[:8] + "…" if kind == "entity" else rest) or key
    if mount:
        role_bits.insert(0, f"auth {mount}")
    return IdentityLabel(name, " · ".join(role_bits), key)


def _field(ident: Any, name: str) -> Any:
    if isinstance(ident, Mapping):
        return ident.get(name)
    return getattr(ident, name, None)


def label_identity(ident: Any, **facts: Any) -> IdentityLabel:
    """:func:`identity_label` of an identity-shaped object, plus ``facts`` that override it.

    ``ident`` is an :class:`ingest.event.Identity`, a :class:`detect.alert.AlertIdentity` or a
    mapping with their fields; a role name missing as a field is read from
    ``metadata["role_name"]`` (without either, an AppRole client is named by its first policy).
    ``facts`` are the keyword arguments of :func:`identity_label` (``entity_name=``,
    ``addresses=``...); a None or empty one is ignored.
    """
    role = _field(ident, "role_name")
    if not role:
        meta = _field(ident, "metadata")
        value = meta.get("role_name") if isinstance(meta, Mapping) else None
        role = value if isinstance(value, str) and not value.startswith("hmac-") else None
    args: dict[str, Any] = {
        "display_name": _field(ident, "display_name"),
        "policies": tuple(_field(ident, "policies") or ()),
        "auth_mount": _field(ident, "auth_mount"),
        "role_name": role or None,
    }
    args.update({k: v for k, v in facts.items() if v})
    return identity_label(str(_field(ident, "key") or ""), **args)
