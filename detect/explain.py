"""Explanations: turn signal contributions into 1-5 ranked :class:`~detect.alert.Reason` objects.

A reason says what was observed against what is typical, with its window, e.g.
``first read of secret/data/logos/pxl-core/runtime/* by this identity`` against
``never in 180 d; peers: 0 of 3``. Contributions with the same signal and value merge, so a
burst of identical findings reads as one reason with its count.
"""

from __future__ import annotations

from collections.abc import Iterable

from detect.alert import Reason
from ingest.event import Identity

from .risk import Contribution

#: Families of the behavioural threat signals (:mod:`detect.behaviour`): each is judged whole by
#: its own detector, reaches the alert level on its own, and its text is the alert's title.
THREAT_FAMILIES = frozenset({"credential", "exfiltration", "denial"})

__all__ = ["THREAT_FAMILIES", "rank_reasons", "fmt_count", "title_for", "person"]

_TITLES = {
    "novelty": "unfamiliar activity",
    "rarity": "rarely used access",
    "time": "activity at an unusual hour",
    "volume": "unusual volume",
    "error": "error spike",
    "model": "unusual hourly pattern",
}


def fmt_count(x: float) -> str:
    """Short human form of a decayed count."""
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}".rstrip("0").rstrip(".") or "0"


def rank_reasons(items: Iterable[tuple[float, Contribution]], limit: int = 5) -> tuple[Reason, ...]:
    """The ``limit`` strongest reasons; weights are shares of the total (sum to 1).

    Contributions with the same signal and value merge; a threat signal (whose text grows as
    the act goes on: "reading 2 secrets", then "reading 6") reads as its latest text.
    """
    merged: dict[tuple[str, str], tuple[float, Contribution, int]] = {}
    for pts, c in items:
        k = (c.signal, c.value)
        m = merged.get(k)
        if m is None:
            merged[k] = (pts, c, 1)
        else:
            keep = c if c.family in THREAT_FAMILIES and c.ts >= m[1].ts else m[1]
            merged[k] = (m[0] + pts, keep, m[2] + 1)
    total = sum(m[0] for m in merged.values()) or 1.0
    ranked = sorted(merged.values(), key=lambda m: (-m[0], m[1].signal, m[1].value))
    out: list[Reason] = []
    for pts, c, n in ranked[:limit]:
        observed = c.observed if n == 1 or c.family in THREAT_FAMILIES else f"{c.observed} (x{n})"
        out.append(
            Reason(feature=c.feature, observed=observed, baseline=c.baseline, weight=round(pts / total, 3))
        )
    return tuple(out)


def title_for(families: list[str], display: str, items: Iterable[tuple[float, Contribution]] = ()) -> str:
    """One line a human reads first.

    When a threat signal (a stolen credential, denials outside habit, slow exfiltration) is
    among the contributions, its own words are the title: what happened to whom. Otherwise the
    families name what was unusual.
    """
    items = list(items)
    best: tuple[float, float, Contribution] | None = None
    for pts, c in items:
        if c.family in THREAT_FAMILIES and c.points > 0:
            k = (pts, c.ts)
            if best is None or k > best[:2]:
                best = (pts, c.ts, c)
    if best is not None:
        lead = best[2]
        # The latest words of the same signal (its act has grown since the strongest part).
        latest = lead.observed
        latest_ts = lead.ts
        for _, c in items:
            if c.signal == lead.signal and c.value == lead.value and c.ts >= latest_ts:
                latest, latest_ts = c.observed, c.ts
        return latest[:1].upper() + latest[1:]
    parts = [_TITLES.get(f, f) for f in families[:3]]
    what = ", ".join(parts) if parts else "unusual behaviour"
    return f"Unusual behaviour by {display}: {what}"


def _meta(ident: Identity, key: str) -> str:
    value = (ident.metadata or {}).get(key)
    return value if isinstance(value, str) and value and not value.startswith("hmac-") else ""


def person(ident: Identity) -> str:
    """The identity as a person reads it: AppRole role, user and auth mount, token name, address.

    Built from what the entry says (``display_name``, the auth ``metadata`` ``role_name`` /
    ``username``, ``auth_mount``), never from a raw key when a name is known.

    >>> person(Identity(key="e:1", kind="entity", display_name="approle", metadata={"role_name": "api"}))
    'AppRole role api'
    >>> person(Identity(key="e:2", kind="entity", display_name="userpass-dana", metadata={"username": "x"}))
    'user x'
    >>> person(Identity(key="e:3", kind="entity", display_name="apps", metadata={"role_name": "billing"}))
    'AppRole role billing (login apps)'
    >>> person(Identity(key="e:4", kind="entity", display_name="oidc-ana", metadata={"role": "sre"}))
    'oidc-ana role sre'
    >>> person(Identity(key="anon:10.0.0.9", kind="anonymous"))
    'an unauthenticated client at 10.0.0.9'
    """
    dn = ident.display_name or ""
    if ident.kind == "anonymous":
        return f"an unauthenticated client at {ident.key.removeprefix('anon:')}"
    if ident.kind == "login":
        mount = (ident.auth_mount or "").removeprefix("auth/").rstrip("/") or "auth"
        return f"login {dn or '?'} on {mount}"
    if ident.is_root:
        return "a root token" if dn in ("", "root", "token") else f"a root token ({dn})"
    approle = _meta(ident, "role_name")  # AppRole's own metadata key
    if approle:
        mount = "" if not dn or dn.startswith("approle") else f" (login {dn})"
        return f"AppRole role {approle}{mount}"
    role = _meta(ident, "role")  # JWT/OIDC, Kubernetes and other role-based logins
    if role:
        return f"{dn} role {role}" if dn else f"role {role}"
    user = _meta(ident, "username")
    if user:
        mount = dn[: -len(user) - 1] if dn.endswith("-" + user) else ""
        return f"{mount} user {user}" if mount else f"user {user}"
    if dn:
        if dn == "token" or dn.startswith("token-"):
            return f"token {dn.removeprefix('token-')}" if dn != "token" else f"a token ({_short(ident)})"
        return dn
    return _short(ident)


def _short(ident: Identity) -> str:
    """A short form of the key when nothing names the identity."""
    kind, _, rest = ident.key.partition(":")
    if kind == "entity" and ident.entity_id:
        return f"entity {ident.entity_id[:8]}"
    if ident.accessor:
        return f"accessor {ident.accessor[:12]}"
    return ident.key if len(ident.key) <= 40 else f"{kind}:{rest[:24]}…"
