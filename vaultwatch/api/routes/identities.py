"""Identities and their baselines, read from the detection engine's checkpoints in the store.

The streaming workers checkpoint one engine per partition under ``engine/<group>/<topic>/<n>``
(msgpack ``{offset, hour, engine}``). The API restores each into a
:class:`detect.engine.Engine` and keeps them until a checkpoint's ``updated_at`` changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import Field

from alerts import schema as t
from alerts.store import AlertQuery
from detect.engine import Engine

from ...naming import IdentityLabel, identity_label
from ..deps import AppContext, Ctx, Viewer
from ..schemas import AUTH_RESPONSES, IdentityBrief, IdentityDetail, IdentityList, alert_public, iso

__all__ = [
    "router",
    "load_engines",
    "CheckpointBaselines",
    "identity_name",
    "label_of",
    "shared_peers",
    "NamedIdentityBrief",
]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/identities", tags=["identities"], responses=AUTH_RESPONSES)

_CACHE = "identities.engines"
_SUMMARIES = "identities.summaries"


_NAME_DOC = "the entity's name from the identity API (``alice (userpass)``), when a Vault client is set"
_LABEL_DOC = (
    "how a person reads the identity: entity name, login name, AppRole role name or alias "
    "(the key is secondary)"
)
_ROLE_DOC = (
    "its auth mount, ``AppRole`` for AppRole clients, its policies without ``default`` and, for "
    "AppRole, the addresses it works from"
)


class NamedIdentityBrief(IdentityBrief):
    name: str | None = Field(default=None, description=_NAME_DOC)
    label: str = Field(default="", description=_LABEL_DOC)
    role: str = Field(default="", description=_ROLE_DOC)


class NamedIdentityList(IdentityList):
    items: list[NamedIdentityBrief]  # type: ignore[assignment]


class NamedIdentityDetail(IdentityDetail):
    name: str | None = Field(default=None, description=_NAME_DOC)
    label: str = Field(default="", description=_LABEL_DOC)
    role: str = Field(default="", description=_ROLE_DOC)


def label_of(
    ctx: AppContext, key: str, summary: Mapping[str, Any] | None = None, **facts: Any
) -> IdentityLabel:
    """:func:`vaultwatch.naming.identity_label` for ``key`` from its baseline summary, ``facts``
    (``display_name``, ``policies``, ``auth_mount``, ``role_name``) and the enricher."""
    ident = dict((summary or {}).get("identity") or {})
    ident.update({k: v for k, v in facts.items() if v})
    entity_name = None
    aliases: list[str] = []
    enricher = ctx.extra.get("enricher")
    if enricher is not None and key.startswith("entity:"):
        info = enricher.get(key.removeprefix("entity:"))
        if info is not None and info.found:
            entity_name = info.name
            aliases = [str(a.get("name", "")) for a in info.aliases]
    addresses = [str(a[0]) for a in (summary or {}).get("addresses") or [] if a]
    return identity_label(
        key,
        display_name=ident.get("display_name"),
        policies=tuple(ident.get("policies") or ()),
        auth_mount=ident.get("auth_mount"),
        role_name=ident.get("role_name"),
        entity_name=entity_name,
        alias_names=aliases,
        addresses=addresses,
    )


def _policies_of(summary: Mapping[str, Any]) -> frozenset[str]:
    ident = summary.get("identity") or {}
    pols = ident.get("policies")
    if pols is None:
        group = str(summary.get("group") or "")
        pols = group.removeprefix("policies:").split(",") if group.startswith("policies:") else ()
    return frozenset(p for p in pols if p and p != "default")


def shared_peers(summaries: Mapping[str, Mapping[str, Any]], key: str, limit: int = 20) -> list[str]:
    """Identities sharing ``key``'s non-personal policies, closest first.

    A policy held by one identity only is personal (``alice-home``): it says nothing about a
    role. The peer group is the identities holding the same set of shared policies; when none
    holds exactly that set, those holding any of them, most policies in common first.
    """
    if key not in summaries:
        return []
    held = {k: _policies_of(s) for k, s in summaries.items()}
    holders: dict[str, int] = {}
    for pols in held.values():
        for p in pols:
            holders[p] = holders.get(p, 0) + 1
    shared = {k: frozenset(p for p in pols if holders[p] > 1) for k, pols in held.items()}
    mine = shared[key]
    if not mine:
        return []
    same = sorted(k for k, s in shared.items() if k != key and s == mine)
    if same:
        return same[:limit]
    overlap = [(len(mine & s), k) for k, s in shared.items() if k != key and mine & s]
    return [k for _, k in sorted(overlap, key=lambda x: (-x[0], x[1]))][:limit]


def identity_name(ctx: AppContext, key: str) -> str | None:
    """The label of an ``entity:<id>`` identity from the app's enricher, or None.

    None without a Vault client, for other identity kinds, and while the look-up (queued in the
    background, never waited for) has not answered yet or found no named entity.
    """
    enricher = ctx.extra.get("enricher")
    if enricher is None or not key.startswith("entity:"):
        return None
    info = enricher.get(key.removeprefix("entity:"))
    if info is None or not info.found or not info.name:
        return None
    return str(info.label)


class _Checkpoint(msgspec.Struct):
    # The worker's checkpoint layout (vaultwatch.service.worker): next offset, hour, engine snapshot.
    offset: int
    hour: int | None
    engine: bytes


#: Built at import: the API serves requests on several threads (see detect.engine._STATE_DECODER).
_CHECKPOINT_DEC = msgspec.msgpack.Decoder(_Checkpoint)


def _detect_config(settings: Any) -> dict[str, Any]:
    detect = getattr(settings, "detect", None)
    if detect is None:
        return {}
    cfg: dict[str, Any] = detect.options()
    if detect.policy_file is not None:
        cfg["policy_file"] = str(detect.policy_file)
    return cfg


def load_engines(ctx: AppContext) -> list[Any]:
    """The engines of every partition checkpoint, restored (cached until a checkpoint changes)."""
    with ctx.store.engine.connect() as conn:
        sig = tuple(
            (r.key, r.updated_at)
            for r in conn.execute(
                sa.select(t.checkpoints.c.key, t.checkpoints.c.updated_at)
                .where(t.checkpoints.c.key.like("engine/%"))
                .order_by(t.checkpoints.c.key)
            )
        )
    with ctx.lock:
        cached = ctx.extra.get(_CACHE)
        if cached is not None and cached[0] == sig:
            engines: list[Any] = cached[1]
            return engines
    engines = []
    for key, _ in sig:
        with ctx.store.transaction(read_only=True) as tx:
            blob = tx.load_checkpoint(key)
        if blob is None:
            continue
        try:
            cp = _CHECKPOINT_DEC.decode(blob)
            # The workers' detection settings (learning period, risk half-life) shape the
            # summaries; the pluggable detectors are not needed to read baselines.
            eng = Engine(_detect_config(ctx.settings), detectors=[])
            eng.restore(cp.engine)
        except Exception as exc:  # noqa: BLE001 - one unreadable checkpoint must not hide the rest
            log.warning("checkpoint %s not readable: %s", key, type(exc).__name__)
            continue
        engines.append(eng)
    with ctx.lock:
        ctx.extra[_CACHE] = (sig, engines)
    return engines


class CheckpointBaselines:
    """``identities()`` and ``identity_summary(key)`` over every partition's checkpointed engine.

    This is what ``create_app`` puts in ``ctx.extra["baselines"]`` for the web UI.
    """

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx

    def identities(self) -> list[str]:
        """Every identity key with a baseline, sorted."""
        return sorted(_summaries(self._ctx))

    def identity_summary(self, key: str) -> dict[str, Any]:
        """The baseline summary of one identity ({} when unknown)."""
        return _summaries(self._ctx).get(key, {})


def _summaries(ctx: AppContext) -> dict[str, dict[str, Any]]:
    engines = load_engines(ctx)
    with ctx.lock:
        cached = ctx.extra.get(_SUMMARIES)
        if cached is not None and cached[0] is engines:
            result: dict[str, dict[str, Any]] = cached[1]
            return result
    out: dict[str, dict[str, Any]] = {}
    for eng in engines:
        last = _last_identities(eng)
        for key in eng.identities():
            summary = eng.identity_summary(key)
            if summary and (key not in out or summary.get("last_active", 0) > out[key].get("last_active", 0)):
                ident = last.get(key)
                if ident is not None:
                    summary["identity"] = {
                        "kind": ident.kind,
                        "display_name": ident.display_name,
                        "policies": list(ident.policies),
                        "auth_mount": ident.auth_mount,
                        "role_name": ident.role_name,
                    }
                out[key] = summary
    with ctx.lock:
        ctx.extra[_SUMMARIES] = (engines, out)
    return out


def _last_identities(engine: Any) -> dict[str, Any]:
    """The last resolved identity (display name, policies, auth mount) per key in an engine."""
    state = getattr(engine.baselines, "state", None)
    last = getattr(state, "last_identity", None)
    return dict(last) if isinstance(last, dict) else {}


def _peers(summaries: dict[str, dict[str, Any]], key: str, limit: int = 20) -> list[str]:
    return shared_peers(summaries, key, limit)


def _brief(ctx: AppContext, summaries: dict[str, dict[str, Any]], key: str) -> NamedIdentityBrief:
    s = summaries[key]
    last = s.get("last_active")
    label = label_of(ctx, key, s)
    return NamedIdentityBrief(
        key=key,
        name=identity_name(ctx, key),
        label=label.name,
        role=label.role,
        group=s.get("group"),
        risk=float(s.get("risk", 0.0)),
        last_seen=iso(float(last)) if last else None,
        events=int(s.get("events", 0)),
        learning=bool(s.get("learning", False)),
        peers=_peers(summaries, key, 5),
    )


@router.get("", summary="Identities with a baseline", response_model=NamedIdentityList)
def list_identities(
    ctx: Ctx,
    who: Viewer,
    sort: Annotated[str, Query(pattern="^(risk|last_seen|events|key)$")] = "risk",
    learning: bool | None = None,
    q: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> NamedIdentityList:
    """Identities by risk (default), last activity, event count or key."""
    summaries = _summaries(ctx)
    keys = [
        k
        for k, s in summaries.items()
        if (learning is None or bool(s.get("learning")) == learning) and (not q or q.lower() in k.lower())
    ]
    order = {
        "risk": lambda k: (-float(summaries[k].get("risk", 0.0)), k),
        "last_seen": lambda k: (-float(summaries[k].get("last_active", 0.0)), k),
        "events": lambda k: (-int(summaries[k].get("events", 0)), k),
        "key": lambda k: (0.0, k),
    }[sort]
    keys.sort(key=order)
    return NamedIdentityList(
        items=[_brief(ctx, summaries, k) for k in keys[offset : offset + limit]], total=len(keys)
    )


@router.get(
    "/{key:path}", summary="One identity's baseline", response_model=NamedIdentityDetail, responses={404: {}}
)
def get_identity(
    ctx: Ctx, who: Viewer, key: Annotated[str, Path(min_length=1, max_length=512)]
) -> NamedIdentityDetail:
    """Top templates, mounts, operations, addresses, hour-of-week heatmap, rate and recent alerts."""
    summaries = _summaries(ctx)
    if key not in summaries:
        raise HTTPException(404, "no baseline for this identity")
    page = ctx.store.list_alerts(AlertQuery(identity=key, limit=50))
    assignees = ctx.audit.assignees([a.id for a in page.items])
    label = label_of(ctx, key, summaries[key])
    return NamedIdentityDetail(
        key=key,
        name=identity_name(ctx, key),
        label=label.name,
        role=label.role,
        summary=summaries[key],
        peers=_peers(summaries, key),
        alerts=[alert_public(a, assignees.get(a.id)) for a in page.items],
    )
