"""Every figure of an audit review report, computed from DataFrames by pure functions.

Inputs are what :mod:`vaultwatch.report.loaders` loads: archived requests (one row per request, the
archive's columns), the alert store's alerts, status history and verdicts, and optionally the
results of ``vaultwatch check --json``. Nothing here reads a file, a database or the clock, so a
test can compute the same figure with a direct query and compare. :func:`build_report_data`
returns one JSON-ready dict; the renderers only format it.

The module runs to about 800 lines on purpose: one section function per report section, in the
report's order, sharing the period and option helpers and the definitions below; split apart,
each would import the same helpers and the definitions would have no single home.

Definitions used throughout:

* a *request* is one audit request id (its response entry, which carries the outcome);
* *working hours* are Monday to Friday, ``work_start`` to ``work_end`` o'clock UTC;
* an alert *belongs to the period* when it was created (first seen) inside it; its *status at
  the end* of the period is the last status change at or before the end;
* *time to acknowledge* runs from creation to the first change out of ``open``; *time to
  resolve* from creation to the first change to ``resolved`` or ``false_positive``;
* the *false-positive rate* of a detector is the share of its period alerts that were marked
  ``false_positive`` (a status change or a verdict), at any time up to the end of the period.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from types import SimpleNamespace
from typing import Any, Final, cast

import numpy as np
import pandas as pd

from detect.policy import AccessPolicy, secret_target
from ingest.event import AuditEvent

from ..naming import identity_label

__all__ = [
    "CONFIG_PREFIXES",
    "PERIODS",
    "Period",
    "ReportOptions",
    "WRITE_OPS",
    "alert_section",
    "access_section",
    "build_report_data",
    "config_changes",
    "content_hash",
    "denials_section",
    "findings_section",
    "logical_paths",
    "period_for",
    "previous_period",
    "report_label",
    "rotation_section",
    "status_at",
    "summary_section",
]

PERIODS: Final = ("daily", "weekly", "monthly")
WRITE_OPS: Final = frozenset({"create", "update", "delete", "patch"})
#: Archive path prefixes whose writes are configuration changes, and what each one configures.
CONFIG_PREFIXES: Final = (
    ("sys/policy", "policy"),
    ("sys/policies/", "policy"),
    ("sys/auth/", "auth method"),
    ("sys/mounts/", "mount"),
    ("sys/audit", "audit device"),
)
HOUR: Final = 3600.0
DAY: Final = 86400.0
SEVERITY_ORDER: Final = ("critical", "high", "medium", "low", "info")
CLOSED: Final = frozenset({"resolved", "false_positive"})


@dataclass(frozen=True)
class Period:
    """A half-open time range ``[start, end)`` with a stable id used in file paths."""

    kind: str
    start: datetime
    end: datetime

    @property
    def id(self) -> str:
        """``daily-2026-09-14``, ``weekly-2026-W38``, ``monthly-2026-09`` or ``custom-<from>-<to>``."""
        s = self.start
        if self.kind == "daily":
            return f"daily-{s:%Y-%m-%d}"
        if self.kind == "weekly":
            year, week, _ = s.isocalendar()
            return f"weekly-{year}-W{week:02d}"
        if self.kind == "monthly":
            return f"monthly-{s:%Y-%m}"
        return f"custom-{s:%Y%m%dT%H%MZ}-{self.end:%Y%m%dT%H%MZ}"

    @property
    def label(self) -> str:
        """Human-readable range, end inclusive to the second."""
        last = self.end - timedelta(seconds=1)
        return f"{self.start:%Y-%m-%d %H:%M} – {last:%Y-%m-%d %H:%M:%S} UTC"

    def to_dict(self) -> dict[str, str | None]:
        """Plain JSON types."""
        return {
            "id": self.id,
            "kind": self.kind,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "label": self.label,
        }


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _iso(t: Any) -> str | None:
    if t is None or t is pd.NaT or (isinstance(t, float) and math.isnan(t)):
        return None
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        ts = ts.tz_localize(UTC)
    return str(ts.tz_convert(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def period_for(kind: str, now: datetime) -> Period:
    """The last *complete* period of ``kind`` before ``now``: yesterday, last ISO week, last month."""
    now = _utc(now)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "daily":
        return Period(kind, day - timedelta(days=1), day)
    if kind == "weekly":
        monday = day - timedelta(days=day.weekday())
        return Period(kind, monday - timedelta(days=7), monday)
    if kind == "monthly":
        first = day.replace(day=1)
        prev = (first - timedelta(days=1)).replace(day=1)
        return Period(kind, prev, first)
    raise ValueError(f"unknown period {kind!r}; use one of {', '.join(PERIODS)}")


def previous_period(period: Period) -> Period:
    """The period of the same kind just before ``period`` (same length for custom ranges)."""
    if period.kind == "monthly":
        start = (period.start - timedelta(days=1)).replace(day=1)
        return Period("monthly", start, period.start)
    return Period(period.kind, period.start - (period.end - period.start), period.start)


@dataclass(frozen=True)
class ReportOptions:
    """Knobs of the report's definitions (see the module docstring)."""

    top: int = 10
    work_start: int = 8
    work_end: int = 18
    open_older_than_days: float = 7.0
    dormant_days: float = 30.0
    #: An identity whose usual (look-back) share of off-hours requests is below this is flagged.
    unusual_off_hours_share: float = 0.2
    #: Volume and trend buckets: ``1h``, ``1D`` or ``auto`` (hourly for periods up to two days).
    bucket: str = "auto"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def report_label(row: Any) -> str:
    """One identity in one line: its name as :func:`vaultwatch.naming.identity_label` gives it,
    then its key, shortened (``alice (entity:1f0e…)``, ``deployer (entity:9c2a…)``).

    ``row`` has ``identity_key`` and, when the archive has them, ``display_name``, ``policies``
    and ``role_name`` (the AppRole role name), as a mapping or an object with those attributes.
    """

    def get(name: str) -> Any:
        return row.get(name) if isinstance(row, dict) else getattr(row, name, None)

    key = str(get("identity_key"))
    policies = get("policies")
    label = identity_label(
        key,
        display_name=_text(get("display_name")),
        policies=[str(p) for p in policies] if isinstance(policies, list | tuple | np.ndarray) else (),
        role_name=_text(get("role_name")),
    )
    short = key if len(key) <= 18 else key[:16] + "…"
    return f"{label.name} ({short})" if label.name != key else short


def _labels(df: pd.DataFrame) -> dict[str, str]:
    if df.empty:
        return {}
    last = df.sort_values("time").drop_duplicates("identity_key", keep="last")
    return {str(r["identity_key"]): report_label(r) for r in last.to_dict("records")}


def _in(df: pd.DataFrame, start: datetime, end: datetime, col: str = "time") -> pd.DataFrame:
    if df.empty:
        return df
    return df[(df[col] >= pd.Timestamp(start)) & (df[col] < pd.Timestamp(end))]


def _off_hours(times: pd.Series, opts: ReportOptions) -> pd.Series:
    hours = times.dt.hour
    return cast(pd.Series, (times.dt.day_of_week >= 5) | (hours < opts.work_start) | (hours >= opts.work_end))


# -- summary ------------------------------------------------------------------------------------
def _counts(requests: pd.DataFrame) -> dict[str, int]:
    out = requests["outcome"].value_counts().to_dict() if not requests.empty else {}
    return {
        "events": len(requests),
        "identities": int(requests["identity_key"].nunique()) if not requests.empty else 0,
        "success": int(out.get("ok", 0)),
        "denied": int(out.get("denied", 0)),
        "login_failed": int(out.get("login_failed", 0)),
        "errors": int(out.get("error", 0)),
    }


def _change(now: float, before: float) -> float | None:
    return None if before == 0 else round(100.0 * (now - before) / before, 1)


def summary_section(
    requests: pd.DataFrame,
    previous: pd.DataFrame,
    alerts: pd.DataFrame,
    prev_alerts: pd.DataFrame,
    statuses: dict[str, str],
) -> dict[str, Any]:
    """Headline counts for the period and their change (in %) from the previous period.

    ``alerts``/``prev_alerts`` are the alerts created in each period; ``statuses`` maps alert id
    to its status at the end of the period (see :func:`status_at`).
    """
    cur = _counts(requests)
    prev = _counts(previous)
    cur["alerts"] = len(alerts)
    prev["alerts"] = len(prev_alerts)
    by_sev = {s: int((alerts["severity"] == s).sum()) if not alerts.empty else 0 for s in SEVERITY_ORDER}
    by_status: dict[str, int] = {}
    for aid in alerts["id"] if not alerts.empty else []:
        st = statuses.get(aid, "open")
        by_status[st] = by_status.get(st, 0) + 1
    return {
        **cur,
        "alerts_by_severity": by_sev,
        "alerts_by_status": dict(sorted(by_status.items())),
        "previous": prev,
        "change_pct": {k: _change(cur[k], prev[k]) for k in cur},
    }


# -- access -------------------------------------------------------------------------------------
def _bucket(period: Period, opts: ReportOptions) -> str:
    if opts.bucket in ("1h", "1D"):
        return opts.bucket
    return "1h" if period.end - period.start <= timedelta(days=2) else "1D"


def logical_paths(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``secret`` (logical secret path, KV v2 segment removed) and ``secret_op`` columns."""
    if df.empty:
        return df.assign(secret=pd.Series(dtype=str), secret_op=pd.Series(dtype=str))
    secrets: list[str] = []
    ops: list[str] = []
    for path, op, mount, mtype in zip(
        df["path"], df["operation"], df["mount_point"], df["mount_type"], strict=True
    ):
        ev = SimpleNamespace(
            path=path,
            operation=op if isinstance(op, str) else None,
            mount_point=mount if isinstance(mount, str) else None,
            mount_type=mtype if isinstance(mtype, str) else None,
        )
        target = secret_target(cast(AuditEvent, ev))
        secrets.append(target.path)
        ops.append(target.op)
    return df.assign(secret=secrets, secret_op=ops)


def access_section(
    requests: pd.DataFrame,
    history: pd.DataFrame,
    period: Period,
    opts: ReportOptions,
) -> dict[str, Any]:
    """Volume over time, top identities and secrets read, new and returning identities, off-hours use.

    ``history`` holds requests before the period (identity_key and time at least) for the
    new/dormant identity checks and each identity's usual off-hours share.
    """
    labels = {**_labels(history), **_labels(requests)}
    bucket = _bucket(period, opts)
    if requests.empty:
        volume: list[dict[str, Any]] = []
    else:
        freq = "1h" if bucket == "1h" else "1D"
        idx = pd.date_range(pd.Timestamp(period.start), pd.Timestamp(period.end), freq=freq, inclusive="left")
        series = requests.set_index("time")["outcome"]
        grouper = pd.Grouper(freq=freq)
        vol = pd.DataFrame(
            {"total": series.groupby(grouper).size(), "ok": series.eq("ok").groupby(grouper).sum()}
        ).reindex(idx, fill_value=0)
        vol["failed"] = vol["total"] - vol["ok"]
        volume = [
            {"t": _iso(t), "total": int(r.total), "ok": int(r.ok), "failed": int(r.failed)}
            for t, r in vol.iterrows()
        ]
    top_ids = (
        requests.groupby("identity_key")
        .agg(requests=("request_id", "size"), denied=("outcome", lambda s: int((s != "ok").sum())))
        .sort_values(["requests"], ascending=False, kind="stable")
        .head(opts.top)
        if not requests.empty
        else pd.DataFrame(columns=["requests", "denied"])
    )
    top_identities = [
        {
            "identity": k,
            "label": labels.get(str(k), str(k)),
            "requests": int(r.requests),
            "not_ok": int(r.denied),
        }
        for k, r in top_ids.iterrows()
    ]
    lp = logical_paths(requests)
    reads = (
        lp[(lp["outcome"] == "ok") & (lp["secret_op"] == "read") & (lp["mount_type"] == "kv")]
        if not lp.empty
        else lp
    )
    if reads.empty:
        top_secrets: list[dict[str, Any]] = []
    else:
        agg = (
            reads.groupby("secret")
            .agg(reads=("request_id", "size"), readers=("identity_key", "nunique"))
            .sort_values(["reads", "readers"], ascending=False, kind="stable")
            .head(opts.top)
        )
        top_secrets = [
            {"secret": str(s), "reads": int(r.reads), "readers": int(r.readers)} for s, r in agg.iterrows()
        ]
    # New identities: first request in the period and none before it.
    seen_before = set(history["identity_key"]) if not history.empty else set()
    new: list[dict[str, Any]] = []
    returned: list[dict[str, Any]] = []
    if not requests.empty:
        first = requests.groupby("identity_key")["time"].min()
        last_before = (
            history.groupby("identity_key")["time"].max() if not history.empty else pd.Series(dtype=object)
        )
        for key, t in first.sort_values(kind="stable").items():
            k = str(key)
            if k not in seen_before:
                new.append({"identity": k, "label": labels.get(k, k), "first_seen": _iso(t)})
            else:
                gap = (t - last_before[k]).total_seconds() / DAY
                if gap >= opts.dormant_days:
                    returned.append(
                        {
                            "identity": k,
                            "label": labels.get(k, k),
                            "last_seen_before": _iso(last_before[k]),
                            "returned": _iso(t),
                            "dormant_days": round(gap, 1),
                        }
                    )
    off: list[dict[str, Any]] = []
    off_total = 0
    if not requests.empty:
        flags = _off_hours(requests["time"], opts)
        off_total = int(flags.sum())
        hist_share = (
            _off_hours(history["time"], opts).groupby(history["identity_key"]).mean()
            if not history.empty
            else pd.Series(dtype=float)
        )
        per = (
            requests.assign(off=flags).groupby("identity_key").agg(total=("off", "size"), off=("off", "sum"))
        )
        per = per[per["off"] > 0].sort_values("off", ascending=False, kind="stable")
        for key, r in per.iterrows():
            k = str(key)
            usual = float(hist_share[k]) if k in hist_share.index else None
            off.append(
                {
                    "identity": k,
                    "label": labels.get(k, k),
                    "off_hours": int(r.off),
                    "share": round(float(r.off) / float(r.total), 4),
                    "usual_share": None if usual is None else round(usual, 4),
                    "unusual": usual is None or usual < opts.unusual_off_hours_share,
                }
            )
    unusual = [o for o in off if o["unusual"]]
    return {
        "bucket": bucket,
        "volume": volume,
        "top_identities": top_identities,
        "top_secrets": top_secrets,
        "new_identities": new,
        "returned_identities": returned,
        "off_hours_total": off_total,
        "off_hours_unusual": unusual[: opts.top],
        "off_hours_usual_count": len(off) - len(unusual),
        "working_hours": f"Mon–Fri {opts.work_start:02d}:00–{opts.work_end:02d}:00 UTC",
    }


# -- denials and failures -----------------------------------------------------------------------
def denials_section(requests: pd.DataFrame, period: Period, opts: ReportOptions) -> dict[str, Any]:
    """Permission-denied and login-failure trends, by identity and by source address."""
    labels = _labels(requests)
    bad = requests[requests["outcome"].isin(["denied", "login_failed"])] if not requests.empty else requests
    bucket = _bucket(period, opts)
    trend: list[dict[str, Any]] = []
    if not bad.empty:
        freq = "1h" if bucket == "1h" else "1D"
        idx = pd.date_range(pd.Timestamp(period.start), pd.Timestamp(period.end), freq=freq, inclusive="left")
        table = (
            bad.assign(n=1)
            .pivot_table(
                index=pd.Grouper(key="time", freq=freq), columns="outcome", values="n", aggfunc="sum"
            )
            .reindex(idx, fill_value=0)
            .fillna(0)
        )
        for t, r in table.iterrows():
            trend.append(
                {
                    "t": _iso(t),
                    "denied": int(r.get("denied", 0)),
                    "login_failed": int(r.get("login_failed", 0)),
                }
            )

    def top(col: str, kind: str) -> list[dict[str, Any]]:
        sub = bad[bad["outcome"] == kind] if not bad.empty else bad
        if sub.empty:
            return []
        counts = sub[col].fillna("-").value_counts().head(opts.top)
        rows = []
        for key, n in counts.items():
            label = labels.get(str(key), str(key)) if col == "identity_key" else str(key)
            rows.append({"key": str(key), "label": label, "count": int(n)})
        return rows

    return {
        "denied": int((bad["outcome"] == "denied").sum()) if not bad.empty else 0,
        "login_failed": int((bad["outcome"] == "login_failed").sum()) if not bad.empty else 0,
        "trend": trend,
        "denied_by_identity": top("identity_key", "denied"),
        "denied_by_source": top("remote_ip", "denied"),
        "login_failed_by_identity": top("identity_key", "login_failed"),
        "login_failed_by_source": top("remote_ip", "login_failed"),
    }


# -- alerts -------------------------------------------------------------------------------------
def status_at(history: pd.DataFrame, when: datetime) -> dict[str, str]:
    """Alert id -> its status at ``when``: the last status change at or before it."""
    if history.empty:
        return {}
    h = history[history["at"] <= pd.Timestamp(when)]
    last = h.sort_values(["at", "id"], kind="stable").drop_duplicates("alert_id", keep="last")
    return dict(zip(last["alert_id"], last["to_status"], strict=True))


def _quantiles(hours: list[float]) -> dict[str, float | int | None]:
    if not hours:
        return {"count": 0, "median_hours": None, "p90_hours": None}
    arr = np.asarray(hours, dtype=float)
    return {
        "count": len(hours),
        "median_hours": round(float(np.quantile(arr, 0.5)), 2),
        "p90_hours": round(float(np.quantile(arr, 0.9)), 2),
    }


def alert_section(
    alerts: pd.DataFrame,
    history: pd.DataFrame,
    verdicts: pd.DataFrame,
    period: Period,
    opts: ReportOptions,
) -> dict[str, Any]:
    """Period alerts by detector and severity, time to acknowledge/resolve, old open alerts, FP rate.

    ``alerts`` is every stored alert (the old open ones count even if created before the
    period); ``history``/``verdicts`` are the store's tables.
    """
    end = pd.Timestamp(period.end)
    hist = history[history["at"] < end] if not history.empty else history
    in_period = _in(alerts, period.start, period.end, "first_seen")
    statuses = status_at(hist, period.end - timedelta(microseconds=1)) if not hist.empty else {}
    by_det: dict[str, dict[str, int]] = {}
    for det, sev in zip(in_period["detector"], in_period["severity"], strict=True):
        row = by_det.setdefault(str(det), dict.fromkeys(SEVERITY_ORDER, 0) | {"total": 0})
        row[str(sev)] = row.get(str(sev), 0) + 1
        row["total"] += 1
    ack: list[float] = []
    res: list[float] = []
    fp_ids: set[str] = set()
    if not hist.empty:
        fp_ids |= set(hist.loc[hist["to_status"] == "false_positive", "alert_id"])
    if not verdicts.empty:
        v = verdicts[verdicts["at"] < end]
        fp_ids |= set(v.loc[v["verdict"] == "false_positive", "alert_id"])
    created = dict(zip(alerts["id"], alerts["first_seen"], strict=True)) if not alerts.empty else {}
    period_ids = set(in_period["id"]) if not in_period.empty else set()
    if not hist.empty and period_ids:
        moves = hist[hist["alert_id"].isin(period_ids) & hist["from_status"].notna()]
        moves = moves.sort_values(["at", "id"], kind="stable")
        first_ack = moves[moves["from_status"] == "open"].drop_duplicates("alert_id")
        first_res = moves[moves["to_status"].isin(CLOSED)].drop_duplicates("alert_id")
        ack = [
            (t - created[a]).total_seconds() / HOUR
            for a, t in zip(first_ack["alert_id"], first_ack["at"], strict=True)
        ]
        res = [
            (t - created[a]).total_seconds() / HOUR
            for a, t in zip(first_res["alert_id"], first_res["at"], strict=True)
        ]
    fp_rate = []
    for det, row in sorted(by_det.items()):
        ids = set(in_period.loc[in_period["detector"] == det, "id"])
        fps = len(ids & fp_ids)
        fp_rate.append(
            {
                "detector": det,
                "alerts": row["total"],
                "false_positive": fps,
                "rate": round(fps / row["total"], 4),
            }
        )
    cutoff = end - pd.Timedelta(days=opts.open_older_than_days)
    old_open: list[dict[str, Any]] = []
    if not alerts.empty:
        for r in alerts[alerts["first_seen"] < cutoff].itertuples():
            if statuses.get(str(r.id), "open") == "open":
                old_open.append(
                    {
                        "id": str(r.id),
                        "detector": str(r.detector),
                        "severity": str(r.severity),
                        "title": str(r.title),
                        "identity": str(r.identity_key),
                        "first_seen": _iso(r.first_seen),
                        "age_days": round(
                            (end - pd.Timestamp(cast(Any, r.first_seen))).total_seconds() / DAY, 1
                        ),
                    }
                )
    old_open.sort(key=lambda a: -float(a["age_days"]))
    listed = [
        {
            "id": str(r.id),
            "detector": str(r.detector),
            "severity": str(r.severity),
            "title": str(r.title),
            "identity": str(r.identity_key),
            "first_seen": _iso(r.first_seen),
            "status": statuses.get(str(r.id), "open"),
        }
        for r in in_period.sort_values(
            ["severity_rank", "first_seen"], ascending=[False, True], kind="stable"
        ).itertuples()
    ]
    return {
        "total": len(in_period),
        "by_detector": [
            {"detector": d, **row} for d, row in sorted(by_det.items(), key=lambda x: (-x[1]["total"], x[0]))
        ],
        "time_to_acknowledge": _quantiles(ack),
        "time_to_resolve": _quantiles(res),
        "open_older_than_days": opts.open_older_than_days,
        "old_open": old_open,
        "false_positive_rate": fp_rate,
        "alerts": listed[: max(opts.top * 3, 30)],
    }


# -- configuration changes ----------------------------------------------------------------------
def _config_kind(path: str) -> str | None:
    for prefix, kind in CONFIG_PREFIXES:
        if path.startswith(prefix):
            return kind
    return None


def config_changes(requests: pd.DataFrame) -> list[dict[str, Any]]:
    """Every write to a policy, auth method, mount or audit device path, oldest first, with who and when."""
    if requests.empty:
        return []
    kinds = requests["path"].map(_config_kind)
    sub = requests[kinds.notna() & requests["operation"].isin(WRITE_OPS)].assign(kind=kinds)
    sub = sub.sort_values(["time", "request_id"], kind="stable")
    return [
        {
            "time": _iso(r.time),
            "kind": str(r.kind),
            "path": str(r.path),
            "operation": str(r.operation),
            "identity": str(r.identity_key),
            "label": report_label(r),
            "remote_ip": r.remote_ip if isinstance(r.remote_ip, str) else None,
            "outcome": str(r.outcome),
            "request_id": r.request_id if isinstance(r.request_id, str) else None,
        }
        for r in sub.itertuples()
    ]


# -- rotation -----------------------------------------------------------------------------------
def rotation_section(
    writes: pd.DataFrame,
    period: Period,
    policy: AccessPolicy,
    metadata_ages: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Rotation compliance per classified secret in the period, from the archive's successful writes.

    ``writes`` holds requests up to the period's end (earlier ones give each secret's last
    rotation before the period). A periodic secret is compliant when no gap between rotations
    (counting from its last rotation before the period, to the period's end) exceeded its
    interval plus grace. On-deploy secrets list deploys (successful accesses matching the
    policy's deploy marker) and whether a rotation followed each within ``within``; the
    marker's role condition is not checked here (the archive does not keep auth metadata).
    ``metadata_ages`` are :class:`vaultwatch.vault.rotation.SecretAge` values read from KV metadata.
    """
    lp = logical_paths(writes)
    start, end = pd.Timestamp(period.start), pd.Timestamp(period.end)
    rows: list[dict[str, Any]] = []
    if not lp.empty:
        lp = lp[(lp["outcome"] == "ok") & (lp["time"] < end)]
    ok_writes = lp[lp["secret_op"].isin(["create", "update", "patch"])] if not lp.empty else lp
    deploys: list[pd.Timestamp] = []
    if not lp.empty and policy.deploy.paths:
        marker = lp[
            lp["secret_op"].isin(policy.deploy.operations)
            & lp["secret"].map(lambda p: any(fnmatchcase(p, g) for g in policy.deploy.paths))
        ]
        deploys = [t for t in marker["time"] if start <= t < end]
    secrets = sorted(set(ok_writes["secret"])) if not ok_writes.empty else []
    for secret in secrets:
        cls = policy.rotation_class(secret)
        if cls is None:
            continue
        times = sorted(ok_writes.loc[ok_writes["secret"] == secret, "time"])
        before = [t for t in times if t < start]
        inside = [t for t in times if start <= t < end]
        last = times[-1] if times else None
        row: dict[str, Any] = {
            "secret": secret,
            "class": cls.name,
            "rule": f"every {_human(cls.every)}"
            if cls.every
            else f"within {_human(cls.within)} of each deploy",
            "rotations": len(inside),
            "last_rotated": _iso(last),
            "age_at_end_hours": None if last is None else round((end - last).total_seconds() / HOUR, 2),
        }
        if cls.every is not None:
            limit = cls.every + cls.slack
            marks = ([before[-1]] if before else []) + inside
            gaps = [(b - a).total_seconds() for a, b in zip(marks, marks[1:], strict=False)]
            if marks:
                gaps.append((end - marks[-1]).total_seconds())
            worst = max(gaps) if gaps else None
            missed = sum(int(g // limit) for g in gaps if g > limit)
            row.update(
                {
                    "max_gap_hours": None if worst is None else round(worst / HOUR, 2),
                    "missed": missed,
                    "compliant": worst is not None and worst <= limit,
                }
            )
        else:
            late = 0
            for d in deploys:
                if not any(d <= t <= d + pd.Timedelta(seconds=cls.within) for t in times):
                    late += 1
            row.update(
                {"deploys": len(deploys), "missed": late, "compliant": late == 0, "max_gap_hours": None}
            )
        rows.append(row)
    meta = [
        {
            "secret": a.path,
            "class": a.rotation_class,
            "age_hours": round(a.age_seconds / HOUR, 2),
            "limit_hours": None if a.limit_seconds is None else round(a.limit_seconds / HOUR, 2),
            "overdue": bool(a.overdue),
            "version": int(a.current_version),
            "last_rotated": _iso(pd.Timestamp(a.last_rotated, unit="s", tz=UTC)),
            "why": a.reason,
        }
        for a in (metadata_ages or [])
    ]
    return {
        "secrets": rows,
        "compliant": sum(1 for r in rows if r["compliant"]),
        "non_compliant": sum(1 for r in rows if not r["compliant"]),
        "deploys": len(deploys),
        "metadata": meta,
        "metadata_checked": metadata_ages is not None,
    }


def _human(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", DAY), ("h", HOUR), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# -- least privilege ----------------------------------------------------------------------------
def findings_section(check: dict[str, Any] | None) -> dict[str, Any]:
    """Least-privilege and audit findings from ``vaultwatch check --json`` output (None: not run)."""
    if check is None:
        return {"available": False, "results": [], "counts": {}}
    results = [r for r in check.get("results", []) if isinstance(r, dict)]
    counts: dict[str, int] = {}
    for r in results:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    findings = [
        {k: str(r.get(k, "")) for k in ("check", "target", "status", "detail")}
        for r in results
        if r.get("status") != "pass"
    ]
    findings.sort(
        key=lambda r: (r["status"] != "fail", not r["check"].startswith("policy."), r["check"], r["target"])
    )
    return {
        "available": True,
        "ok": bool(check.get("ok", not findings)),
        "results": findings,
        "counts": counts,
    }


# -- everything ---------------------------------------------------------------------------------
def content_hash(data: dict[str, Any]) -> str:
    """SHA-256 of the report's data (canonical JSON, without the sign-off block) as hex."""
    body = {k: v for k, v in data.items() if k != "signoff"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_report_data(
    *,
    period: Period,
    requests: pd.DataFrame,
    previous: pd.DataFrame,
    history: pd.DataFrame,
    alerts: pd.DataFrame,
    status_history: pd.DataFrame,
    verdicts: pd.DataFrame,
    policy: AccessPolicy,
    check: dict[str, Any] | None = None,
    metadata_ages: Sequence[Any] | None = None,
    options: ReportOptions | None = None,
    generated_at: datetime,
    version: str,
) -> dict[str, Any]:
    """The whole report as JSON-ready data.

    ``requests``: one row per request inside the period; ``previous``: the same for
    :func:`previous_period`; ``history``: requests before the period (look-back for new,
    dormant and rotation figures; it may include ``previous``). ``alerts``/``status_history``/
    ``verdicts``: the store's tables as :mod:`vaultwatch.report.loaders` loads them.
    """
    opts = options or ReportOptions()
    prev = previous_period(period)
    end_status = status_at(status_history, period.end - timedelta(microseconds=1))
    cur_alerts = _in(alerts, period.start, period.end, "first_seen")
    prev_alerts = _in(alerts, prev.start, prev.end, "first_seen")
    before_end = (
        pd.concat([f for f in (history, requests) if not f.empty])
        if not (history.empty and requests.empty)
        else requests
    )
    data: dict[str, Any] = {
        "schema": "vaultwatch.report/v1",
        "period": period.to_dict(),
        "previous_period": prev.to_dict(),
        "summary": summary_section(requests, previous, cur_alerts, prev_alerts, end_status),
        "access": access_section(requests, history, period, opts),
        "denials": denials_section(requests, period, opts),
        "alerts": alert_section(alerts, status_history, verdicts, period, opts),
        "config_changes": config_changes(requests),
        "rotation": rotation_section(before_end, period, policy, metadata_ages),
        "findings": findings_section(check),
        "options": {
            "top": opts.top,
            "working_hours": [opts.work_start, opts.work_end],
            "open_older_than_days": opts.open_older_than_days,
            "dormant_days": opts.dormant_days,
        },
    }
    data["signoff"] = {
        "period": period.label,
        "generated_at": _iso(generated_at),
        "version": version,
        "sha256": content_hash(data),
    }
    return data
