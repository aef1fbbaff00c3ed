"""Path templates: the shape of a request path with its variable parts replaced.

Per-identity baselines count *templates*, not raw paths, so that ``.../leases/8f1c...`` and
``.../leases/77ab...`` are one thing, and ``secret/data/users/alice/x`` read by ``alice`` is the
same habit as ``secret/data/users/bob/x`` read by ``bob``. Normalised segments:

* UUIDs → ``{uuid}``; decimal numbers → ``{n}``; hex runs of 12+ → ``{hex}``;
* ``hmac-sha256:...`` values → ``{hmac}``; long random ids (lease ids, accessors) → ``{id}``;
* a segment equal to one of the identity's own names → ``{user}``.

Results are cached (paths repeat enormously in audit logs).

>>> template_path("secret/data/users/alice/x", ("alice",))
'secret/data/users/{user}/x'
>>> template_path("sys/leases/lookup/db/creds/ro/1b4e28ba-2fa1-11d2-883f-0016d3cca427")
'sys/leases/lookup/db/creds/ro/{uuid}'
>>> directory_of("secret/data/logos/pxl-core/runtime/db")
'secret/data/logos/pxl-core/runtime/*'
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

__all__ = ["template_path", "directory_of", "area_of", "own_names", "other_names", "subnet_of", "net_of"]

_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX: Final = re.compile(r"[0-9a-fA-F]{12,}")
_NUM: Final = re.compile(r"[0-9]+")
_RANDOM_ID: Final = re.compile(r"[A-Za-z0-9._+=-]{20,}")
_DIGIT: Final = re.compile(r"[0-9]")
_LETTER: Final = re.compile(r"[A-Za-z]")


def _segment(seg: str, names: tuple[str, ...]) -> str:
    if not seg:
        return seg
    if seg in names:
        return "{user}"
    if seg.startswith("hmac-sha256:"):
        return "{hmac}"
    if len(seg) == 36 and _UUID.fullmatch(seg):
        return "{uuid}"
    if _NUM.fullmatch(seg):
        return "{n}"
    if _HEX.fullmatch(seg) and _DIGIT.search(seg):
        return "{hex}"
    if _RANDOM_ID.fullmatch(seg) and _DIGIT.search(seg) and _LETTER.search(seg) and "-" not in seg[:3]:
        # Lease ids, accessors, token-ish ids: long, mixed digits and letters.
        digits = sum(c.isdigit() for c in seg)
        if digits >= 3:
            return "{id}"
    return seg


@lru_cache(maxsize=131_072)
def template_path(path: str, names: tuple[str, ...] = ()) -> str:
    """The template of ``path`` for an identity whose own names are ``names``."""
    if not path:
        return "/"
    parts = path.split("/")
    return "/".join([_segment(p, names) for p in parts])


@lru_cache(maxsize=65_536)
def directory_of(template: str) -> str:
    """The parent of a template with a ``*`` leaf (the "area" of the secret tree)."""
    t = template.rstrip("/")
    idx = t.rfind("/")
    if idx <= 0:
        return t + "/*"
    return t[:idx] + "/*"


@lru_cache(maxsize=65_536)
def area_of(template: str) -> str:
    """The first three segments with a ``*`` leaf: the project or team area of a secret.

    >>> area_of("secret/data/runtime/svc1/db")
    'secret/data/runtime/*'
    """
    parts = template.strip("/").split("/")
    if len(parts) <= 3:
        return directory_of(template)
    return "/".join(parts[:3]) + "/*"


@lru_cache(maxsize=16_384)
def own_names(
    display_name: str | None, metadata_name: str | None = None, auth_mount: str | None = None
) -> tuple[str, ...]:
    """Names an identity may see in its own paths: ``userpass-alice`` gives ``("alice",)``.

    Vault names a login's token ``<auth mount>-<user>``; with the auth mount known, a mount
    whose own name has dashes is stripped whole:

    >>> own_names("lumen-users-jonas", None, "auth/lumen-users/")
    ('jonas',)
    >>> own_names("okta-femi.ueda@example.org")
    ('femi.ueda@example.org', 'femi.ueda')
    """
    out: list[str] = []
    if display_name:
        mount = (auth_mount or "").removeprefix("auth/").strip("/").replace("/", "-")
        if mount and display_name.startswith(mount + "-") and len(display_name) - len(mount) > 3:
            tail = display_name[len(mount) + 1 :]
        else:
            _, _, tail = display_name.partition("-")
        if tail and len(tail) >= 3:
            out.append(tail)
        local = (tail or display_name).split("@", 1)[0]
        if "@" in display_name and len(local) >= 3:
            out.append(local)
    if metadata_name and len(metadata_name) >= 3:
        out.append(metadata_name)
    return tuple(dict.fromkeys(out))


def other_names(path: str, names: dict[str, str], own: tuple[str, ...]) -> list[str]:
    """Segments of ``path`` that are another identity's name (a per-user path not its own).

    >>> other_names("kv/data/users/bob/notes", {"bob": "entity:b", "alice": "entity:a"}, ("alice",))
    ['bob']
    """
    if not names:
        return []
    return [seg for seg in path.split("/") if seg in names and seg not in own]


@lru_cache(maxsize=65_536)
def subnet_of(ip: str) -> str:
    """The /24 of an IPv4 address or the /64 of an IPv6 address (as a short text key)."""
    if ":" in ip:
        groups = ip.split("::", 1)[0].split(":")
        head = [g or "0" for g in groups[:4]]
        head += ["0"] * (4 - len(head))
        return ":".join(head) + "::/64"
    a, _, rest = ip.rpartition(".")
    return f"{a}.0/24" if a else ip


@lru_cache(maxsize=65_536)
def net_of(subnet: str) -> str:
    """The neighbourhood of a /24 (its /16) or a /64 (its /32): where a pool grows next.

    >>> net_of("10.52.78.0/24"), net_of("2001:db8:1:2::/64")
    ('10.52', '2001:db8')
    """
    if ":" in subnet:
        return ":".join(subnet.split(":")[:2])
    return ".".join(subnet.split(".")[:2])
