"""Exposure scope after a compromise: step 2 ("Determine exposure scope") of the seed's procedure.

Two questions, both answered from the event archive:

* **A secret (path or prefix) leaked**: who read it, when, from which addresses, with which
  tokens (accessor HMACs), since a given time or since each secret's last rotation (its last
  successful write). Grouped by identity with first and last access.
* **A token (or accessor) leaked**: the audit log only holds its HMAC, and each audit device
  has its own salt. vaultwatch asks every enabled device for the HMAC (``sys/audit-hash``) and
  finds every entry made with the token: paths, operations, addresses and the time span.

The report lists the secrets to rotate and the identities whose owners to notify (step 3). The
token itself is never stored or printed; only its HMACs are used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from ..service.archive import EventArchive
    from .client import VaultClient

__all__ = [
    "ExposureReport",
    "IdentityExposure",
    "SecretExposure",
    "exposure_for_identity",
    "exposure_for_path",
    "exposure_for_token",
    "render_html",
]

READ_OPS = frozenset({"read", "list", "scan"})
WRITE_OPS = frozenset({"create", "update", "patch"})


@dataclass
class IdentityExposure:
    identity: str
    kind: str
    display_name: str | None
    first_access: str
    last_access: str
    requests: int
    reads: int
    writes: int
    denied: int
    paths: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    accessors: list[str] = field(default_factory=list)  # accessor HMACs (truncated)


@dataclass
class SecretExposure:
    path: str
    readers: int
    reads: int
    first_read: str | None
    last_read: str | None
    last_write: str | None  # last successful write seen (rotation)


@dataclass
class ExposureReport:
    kind: str  # "path" | "token" | "identity"
    target: str  # the path prefix, or a description of the token (never the token)
    start: str | None
    end: str | None
    events: int
    first_seen: str | None
    last_seen: str | None
    identities: list[IdentityExposure]
    secrets: list[SecretExposure]
    actions: list[str]
    devices_searched: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(t: Any) -> str | None:
    if t is None or (isinstance(t, float) and pd.isna(t)) or t is pd.NaT:
        return None
    return pd.Timestamp(t).isoformat()


def _secret(path: Any, reads: pd.DataFrame, *, last_write: Any = None) -> SecretExposure:
    """One secret's exposure from its (non-empty) reads."""
    return SecretExposure(
        path=str(path),
        readers=int(reads["identity_key"].nunique()),
        reads=len(reads),
        first_read=_iso(reads["time"].min()),
        last_read=_iso(reads["time"].max()),
        last_write=_iso(last_write),
    )


def _report(
    kind: str,
    target: str,
    start: datetime | None,
    end: datetime | None,
    *,
    events: int,
    seen: pd.DataFrame,
    identities: list[IdentityExposure],
    secrets: list[SecretExposure],
    actions: list[str],
    devices: list[str] | None = None,
) -> ExposureReport:
    """The report, with the first and last time of the entries in ``seen``."""
    return ExposureReport(
        kind=kind,
        target=target,
        start=_iso(start),
        end=_iso(end),
        events=events,
        first_seen=_iso(seen["time"].min()) if not seen.empty else None,
        last_seen=_iso(seen["time"].max()) if not seen.empty else None,
        identities=identities,
        secrets=secrets,
        actions=actions,
        devices_searched=devices or [],
    )


def _one_per_request(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the response entry of each request (it has the outcome), else the request entry."""
    if df.empty:
        return df
    df = df.assign(_resp=(df["type"].str.endswith("response")).astype(int))
    df = df.sort_values(["_resp"], ascending=False, kind="stable")
    with_id = df[df["request_id"].notna()].drop_duplicates("request_id")
    return pd.concat([with_id, df[df["request_id"].isna()]]).drop(columns="_resp").sort_values("time")


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    nonempty = [f for f in frames if not f.empty]
    if not nonempty:
        return frames[0] if frames else pd.DataFrame()
    return _one_per_request(pd.concat(nonempty, ignore_index=True))


def _by_identity(df: pd.DataFrame) -> list[IdentityExposure]:
    out: list[IdentityExposure] = []
    for key, g in df.groupby("identity_key", sort=False):
        ok = g[g["outcome"] == "ok"]
        out.append(
            IdentityExposure(
                identity=str(key),
                kind=str(g["identity_kind"].iloc[0]),
                display_name=next((str(x) for x in g["display_name"] if isinstance(x, str)), None),
                first_access=_iso(g["time"].min()) or "",
                last_access=_iso(g["time"].max()) or "",
                requests=len(g),
                reads=int(ok["operation"].isin(READ_OPS).sum()),
                writes=int(ok["operation"].isin(WRITE_OPS | {"delete"}).sum()),
                denied=int((g["outcome"] == "denied").sum()),
                paths=sorted(set(g["path"]))[:50],
                addresses=sorted({a for a in g["remote_ip"] if isinstance(a, str)}),
                accessors=sorted({a[:28] + "…" for a in g["accessor_hmac"] if isinstance(a, str)})[:10],
            )
        )
    out.sort(key=lambda e: (-e.reads, e.first_access))
    return out


def _kv_variants(prefix: str) -> list[str]:
    """The prefix as given, plus its KV v2 data/ form when it has none (``logos/x`` -> ``logos/data/x``)."""
    variants = [prefix]
    head, sep, rest = prefix.partition("/")
    if sep and not rest.startswith(("data/", "metadata/")):
        variants.append(f"{head}/data/{rest}")
    return variants


def exposure_for_path(
    archive: EventArchive,
    prefix: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    since_last_rotation: bool = False,
) -> ExposureReport:
    """Who touched secrets under ``prefix``; with ``since_last_rotation`` only reads after each
    secret's last successful write count as exposure."""
    frames = [archive.query(path_prefix=p, start=start, end=end) for p in _kv_variants(prefix)]
    df = _concat(frames)
    secrets: list[SecretExposure] = []
    if not df.empty:
        last_write = (
            df[(df["outcome"] == "ok") & df["operation"].isin(WRITE_OPS)]
            .groupby("path")["time"]
            .max()
            .to_dict()
        )
        if since_last_rotation:
            lw = df["path"].map(last_write)
            df = df[lw.isna() | (df["time"] > lw)]
        reads = df[(df["outcome"] == "ok") & df["operation"].isin(READ_OPS)]
        for path, g in reads.groupby("path"):
            secrets.append(_secret(path, g, last_write=last_write.get(path)))
    identities = _by_identity(df) if not df.empty else []
    actions = [f"rotate {s.path} (read {s.reads} times by {s.readers} identities)" for s in secrets]
    actions += [
        f"notify the owner of {i.identity}" + (f" ({i.display_name})" if i.display_name else "")
        for i in identities
        if i.reads
    ]
    return _report(
        "path",
        prefix,
        start,
        end,
        events=len(df),
        seen=df,
        identities=identities,
        secrets=sorted(secrets, key=lambda s: -s.reads),
        actions=actions,
    )


def exposure_for_identity(
    archive: EventArchive,
    identity: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> ExposureReport:
    """Every secret ``identity`` read since that secret's last rotation: the rotation list for an
    offboarding (the seed's "personnel changes" trigger).

    ``identity`` is an identity key (``entity:<id>``, ``token:<name>``...) or a display name as the
    audit log shows it (``userpass-dana``). A read counts when it came after the last successful
    write of the same secret that the archive saw (by anyone): earlier reads saw a value that has
    since been rotated away.
    """
    mine = archive.query(identity=identity, start=start, end=end)
    if mine.empty and "display_name" in mine.columns:
        everyone = archive.query(start=start, end=end)
        mine = everyone[everyone["display_name"] == identity]
    reads = mine[(mine["outcome"] == "ok") & mine["operation"].isin(READ_OPS)] if not mine.empty else mine
    secrets: list[SecretExposure] = []
    kept: list[pd.DataFrame] = []
    for path, g in reads.groupby("path") if not reads.empty else ():
        writes = archive.query(path_prefix=str(path), operation=sorted(WRITE_OPS), outcome="ok", end=end)
        writes = writes[writes["path"] == path] if not writes.empty else writes
        last_write = writes["time"].max() if not writes.empty else None
        live = g[g["time"] > last_write] if last_write is not None else g
        if live.empty:
            continue
        kept.append(live)
        secrets.append(_secret(path, live, last_write=last_write))
    df = _concat(kept) if kept else mine.iloc[0:0]
    identities = _by_identity(mine) if not mine.empty else []
    actions = [
        f"rotate {s.path} (read {s.reads} times since its last rotation, last {s.last_read})"
        for s in sorted(secrets, key=lambda s: s.path)
    ]
    if identities:
        actions.append(f"disable {identity} and revoke its tokens")
    return _report(
        "identity",
        identity,
        start,
        end,
        events=len(mine),
        seen=df,
        identities=identities,
        secrets=sorted(secrets, key=lambda s: -s.reads),
        actions=actions,
    )


def exposure_for_token(
    archive: EventArchive,
    vault: VaultClient,
    *,
    token: str | None = None,
    accessor: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> ExposureReport:
    """Every archived entry made with a token (or a token accessor), across audit devices."""
    if not token and not accessor:
        raise ValueError("give a token or an accessor")
    devices = sorted(vault.audit_devices())
    frames: list[pd.DataFrame] = []
    for dev in devices:
        if token:
            frames.append(archive.query(client_token_hmac=vault.audit_hash(dev, token), start=start, end=end))
        if accessor:
            frames.append(archive.query(accessor=vault.audit_hash(dev, accessor), start=start, end=end))
    if accessor:
        frames.append(archive.query(accessor=accessor, start=start, end=end))  # hmac_accessor=false devices
    df = _concat(frames)
    identities = _by_identity(df) if not df.empty else []
    secrets: list[SecretExposure] = []
    if not df.empty:
        reads = df[(df["outcome"] == "ok") & df["operation"].isin(READ_OPS)]
        for path, g in reads.groupby("path"):
            secrets.append(_secret(path, g))
    what = "token" if token else "accessor"
    actions = ["revoke the token (or its accessor) now"] + [
        f"rotate {s.path} (read {s.reads} times with this {what})"
        for s in sorted(secrets, key=lambda s: -s.reads)
    ]
    return _report(
        "token",
        f"a {what} (matched by its HMAC on {len(devices)} audit device(s))",
        start,
        end,
        events=len(df),
        seen=df,
        identities=identities,
        secrets=secrets,
        actions=actions,
        devices=devices,
    )


def render_html(report: ExposureReport) -> str:
    """A self-contained HTML page of the report (autoescaped)."""
    from importlib import resources

    from jinja2 import Environment

    template = resources.files("vaultwatch.vault").joinpath("templates/exposure.html").read_text()
    return Environment(autoescape=True).from_string(template).render(r=report)
