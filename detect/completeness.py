"""Audit completeness: do the audit streams still capture all access?

Two detectors judge the *streams* rather than the requests in them. The module is long (over
600 lines) on purpose: both detectors share the per-source bookkeeping and the witness path, and
split apart they would each need a copy. Both key on
:attr:`ingest.event.AuditEvent.source` (the device or file an entry came from) and on nothing an
organisation names: no policy, role, mount or device name is known in advance.

* ``audit-device-gap``: Vault and OpenBao write every entry to every enabled audit device. Once two
  sources have been seen to mirror each other (``gap_min_shared`` entries delivered by both, and
  hardly any delivered by only one), an entry that one delivers and the other has not delivered
  ``gap_wait_seconds`` later (event time) is missing from the other: that device dropped it, or
  its file was edited. ``gap_min_missing`` such entries within ``gap_window_seconds`` raise one
  high alert naming both devices and the missing request ids. A source seen alone, a device
  newly added (not mirroring yet), a filtered device that writes a subset, and a device's own test
  entry (``sys/audit/test``, written once to the new device) stay quiet. A successful change under
  ``sys/audit`` resets what is known to mirror: the set of devices changed on purpose (the change
  itself is ``audit-tampering``'s to judge).
* ``audit-stream-silence``: each source's events per hour are learned; a source that delivers
  nothing for at least ``silence_min_minutes`` while its quietest comparable hours (the same hour
  of the week in earlier weeks, or before two weeks of history the same hour on earlier days of
  the same kind, weekday or weekend) would have delivered ``silence_min_expected`` events or more
  is silent against its own history. Only hours when the stream was busy (at least half its mean
  events per non-empty hour) on most comparable days count, so night and weekend hours with little
  traffic, even a steady trickle, never qualify.
  It is judged when the source resumes, and while it stays silent as the other sources' events
  (or :meth:`AuditStreamSilence.due`) advance the stream's clock. The clock never runs past the
  last event seen, so a replay's end is not a silence.

Every copy of an entry must reach these detectors, including the copy a second device wrote
that the replay loop drops as a duplicate: the loop hands dropped copies to :meth:`witness`
(see :func:`vaultwatch.service.replay.run_engine`); :meth:`observe` sees the others. Both record
the same way, so feeding every copy through ``observe`` is equivalent.

State is plain data, bounded (``_MAX_SOURCES`` sources, ``_MAX_PENDING`` entries awaiting their
copies, :data:`HISTORY_DAYS` of hourly counts per source) and uses event time only.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from detect.alert import Reason
from ingest.event import AuditEvent, Identity

from .config import convert_known
from .types import DetectContext, Detector, Finding

__all__ = [
    "CompletenessConfig",
    "completeness_rules",
    "AuditDeviceGap",
    "AuditStreamSilence",
    "device_identity",
    "HISTORY_DAYS",
]

HISTORY_DAYS: Final = 29
_MAX_SOURCES: Final = 16
_MAX_PENDING: Final = 200_000
_MAX_EVENT_IDS: Final = 50
_MAX_PATHS: Final = 20
_HOUR: Final = 3600
_WEEK_HOURS: Final = 168
_TEST_PATH: Final = "sys/audit/test"
_SEVERITY_SCORE: Final = {"medium": 55.0, "high": 80.0}


class CompletenessConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the completeness detectors (event time)."""

    #: ``audit-device-gap``: how long a copy may lag its twin, how many entries two sources must
    #: have shared (and the share of one's entries the other must have delivered) before they are
    #: judged as mirrors, and how many missing entries within the window raise the alert.
    gap_wait_seconds: float = 60.0
    gap_min_shared: int = 50
    gap_min_coverage: float = 0.98
    gap_min_missing: int = 2
    gap_window_seconds: float = 600.0
    #: ``audit-stream-silence``: the shortest silence judged, and the fewest events the quietest
    #: comparable hours must have delivered over it.
    silence_min_minutes: float = 30.0
    silence_min_expected: float = 50.0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CompletenessConfig:
        return convert_known(cls, data, "completeness settings")


def completeness_rules(config: dict[str, Any] | None = None) -> list[Detector]:
    """Both completeness detectors, configured from the flat detection settings ``config``."""
    cfg = CompletenessConfig.from_dict(config)
    return [AuditDeviceGap(cfg), AuditStreamSilence(cfg)]


def device_identity(source: str) -> Identity:
    """The identity an alert about an audit stream is filed under."""
    return Identity(key=f"audit-device:{source}", kind="audit-device", display_name=source)


def _is_test_entry(event: AuditEvent) -> bool:
    """The probe a device writes to itself when it is enabled (no token, no caller)."""
    return event.request.path == _TEST_PATH and not event.auth.client_token and not event.remote_ip


def _is_device_change(event: AuditEvent) -> bool:
    path = event.request.path or ""
    return (
        event.is_response
        and event.outcome == "ok"
        and (path == "sys/audit" or path.startswith("sys/audit/"))
        and path != _TEST_PATH
        and (event.operation or "") in ("update", "create", "delete")
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _minutes(seconds: float) -> str:
    if seconds >= 2 * _HOUR:
        return f"{seconds / _HOUR:.1f}h"
    return f"{seconds / 60:.0f} min"


def _finding(
    name: str,
    *,
    source: str,
    title: str,
    severity: str,
    dedup_key: str,
    reasons: list[Reason],
    first_ts: float,
    last_ts: float,
    event_ids: tuple[str, ...] = (),
    paths: tuple[str, ...] = (),
    labels: dict[str, str] | None = None,
) -> Finding:
    return Finding(
        detector=name,
        title=title,
        severity=severity,
        score=_SEVERITY_SCORE[severity],
        family="rule",
        identity=device_identity(source),
        dedup_key=dedup_key,
        event_ids=event_ids[:_MAX_EVENT_IDS],
        paths=paths[:_MAX_PATHS],
        first_ts=first_ts,
        last_ts=last_ts,
        reasons=tuple(reasons[:5]),
        alerting=True,
        labels=labels or {},
    )


class _Sources:
    """Known sources in order of first sight (their index is their bit in a copy mask)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.first: list[float] = []
        self.last: list[float] = []

    def index(self, name: str, ts: float) -> int | None:
        try:
            i = self.names.index(name)
        except ValueError:
            if len(self.names) >= _MAX_SOURCES:
                return None
            self.names.append(name)
            self.first.append(ts)
            self.last.append(ts)
            return len(self.names) - 1
        if ts > self.last[i]:
            self.last[i] = ts
        return i

    def dump(self) -> list[list[Any]]:
        return [[n, f, la] for n, f, la in zip(self.names, self.first, self.last, strict=True)]

    def load(self, rows: list[list[Any]]) -> None:
        self.names = [str(r[0]) for r in rows][:_MAX_SOURCES]
        self.first = [float(r[1]) for r in rows][:_MAX_SOURCES]
        self.last = [float(r[2]) for r in rows][:_MAX_SOURCES]


class AuditDeviceGap:
    """An entry delivered by one audit device and missing from its mirror (see the module)."""

    name: str = "audit-device-gap"
    family: str = "rule"

    def __init__(self, cfg: CompletenessConfig | None = None) -> None:
        self.cfg = cfg or CompletenessConfig()
        self._sources = _Sources()
        #: ``request id \x1f type`` -> [first seen, copy mask, path], in order of first sight.
        self._pending: OrderedDict[str, list[Any]] = OrderedDict()
        #: ``A \x1f B`` -> [entries of A that B delivered, entries of A that B did not] (closed
        #: episodes only, so an open gap does not talk the pair out of being a mirror).
        self._pairs: dict[str, list[float]] = {}
        #: ``A \x1f B`` -> open gap episode: miss times (recent), first ids and paths, misses ``n``
        #: and findings made ``fired``.
        self._gaps: dict[str, dict[str, Any]] = {}
        self._clock = -math.inf
        self._since = -math.inf  # entries first seen before a device change are not judged
        #: The clock from which an open gap episode may have gone quiet (see _close_episodes).
        self._quiet_at = -math.inf

    # -- Detector -------------------------------------------------------------------------------
    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        self._record(event)
        return self._judge()

    def witness(self, event: AuditEvent) -> None:
        """Record a copy the caller dropped as a duplicate of one already observed."""
        self._record(event)

    def state(self) -> dict[str, Any]:
        return {
            "sources": self._sources.dump(),
            "pending": [[k, *v] for k, v in self._pending.items()],
            "pairs": {k: list(v) for k, v in self._pairs.items()},
            "gaps": {
                k: {f: list(x) if isinstance(x, list) else x for f, x in g.items()}
                for k, g in self._gaps.items()
            },
            "clock": self._clock if math.isfinite(self._clock) else None,
            "since": self._since if math.isfinite(self._since) else None,
        }

    def load(self, state: dict[str, Any]) -> None:
        self._sources = _Sources()
        self._sources.load(list(state.get("sources") or []))
        self._pending = OrderedDict(
            (str(r[0]), [float(r[1]), int(r[2]), str(r[3])]) for r in state.get("pending") or []
        )
        self._pairs = {str(k): [float(v[0]), float(v[1])] for k, v in dict(state.get("pairs") or {}).items()}
        self._gaps = {
            str(k): {
                "times": [float(t) for t in g["times"]],
                "ids": [str(i) for i in g["ids"]],
                "paths": [str(p) for p in g["paths"]],
                "fired": int(g["fired"]),
                "n": int(g["n"]),
            }
            for k, g in dict(state.get("gaps") or {}).items()
        }
        clock, since = state.get("clock"), state.get("since")
        self._clock = float(clock) if clock is not None else -math.inf
        self._since = float(since) if since is not None else -math.inf
        self._quiet_at = -math.inf

    # -- recording ------------------------------------------------------------------------------
    def _record(self, event: AuditEvent) -> None:
        ts = event.ts
        if ts > self._clock:
            self._clock = ts
        src = event.source
        rid = event.request_id
        if src is None or not rid or _is_test_entry(event):
            return
        i = self._sources.index(src, ts)
        if i is None:
            return
        if _is_device_change(event) and ts > self._since:
            # The set of devices changed on purpose: what mirrored what is learned again.
            self._since = ts
            self._pairs.clear()
            self._gaps.clear()
        key = f"{rid}\x1f{event.type}"
        entry = self._pending.get(key)
        if entry is None:
            if len(self._pending) >= _MAX_PENDING:
                self._pending.popitem(last=False)
            self._pending[key] = [ts, 1 << i, event.path or event.request.path or ""]
        else:
            entry[1] |= 1 << i

    # -- judging --------------------------------------------------------------------------------
    def _judge(self) -> list[Finding]:
        pend = self._pending
        limit = self._clock - self.cfg.gap_wait_seconds
        if (not pend or next(iter(pend.values()))[0] > limit) and (
            not self._gaps or self._clock < self._quiet_at
        ):
            # Nothing is due (the common case, once per event): the oldest entry still awaits its
            # copies and no open episode can have gone quiet since the clock last moved past one.
            return []
        out: list[Finding] = []
        while pend:
            key, entry = next(iter(pend.items()))
            if entry[0] > limit:
                break
            del pend[key]
            if entry[0] >= self._since:
                out.extend(self._settle(key.split("\x1f", 1)[0], entry))
        self._close_episodes()
        return out

    def _settle(self, rid: str, entry: list[Any]) -> list[Finding]:
        t0, mask, path = float(entry[0]), int(entry[1]), str(entry[2])
        srcs = self._sources
        n = len(srcs.names)
        if n < 2:
            return []
        have = [i for i in range(n) if mask >> i & 1]
        lack = [j for j in range(n) if not mask >> j & 1 and srcs.first[j] <= t0]
        out: list[Finding] = []
        for a in have:
            name_a = srcs.names[a]
            for b in have:
                if b != a:
                    self._pair(name_a, srcs.names[b])[0] += 1.0
            for b in lack:
                f = self._missing(name_a, srcs.names[b], rid, t0, path)
                if f is not None:
                    out.append(f)
        return out

    def _pair(self, a: str, b: str) -> list[float]:
        pair = self._pairs.get(f"{a}\x1f{b}")
        if pair is None:
            pair = self._pairs[f"{a}\x1f{b}"] = [0.0, 0.0]
        elif pair[0] + pair[1] > 100_000:  # bounded, and recent behaviour weighs more
            pair[0] /= 2
            pair[1] /= 2
        return pair

    def _mirrors(self, pair: list[float]) -> bool:
        hits, misses = pair
        return hits >= self.cfg.gap_min_shared and hits >= self.cfg.gap_min_coverage * (hits + misses)

    def _missing(self, a: str, b: str, rid: str, t0: float, path: str) -> Finding | None:
        """Entry ``rid`` (first seen at ``t0``) came from ``a`` and never from ``b``."""
        key = f"{a}\x1f{b}"
        gap = self._gaps.get(key)
        if gap is None:
            gap = self._gaps[key] = {"times": [], "ids": [], "paths": [], "fired": 0, "n": 0}
        gap["n"] += 1
        gap["times"].append(t0)
        if rid not in gap["ids"] and len(gap["ids"]) < _MAX_EVENT_IDS:
            gap["ids"].append(rid)
        if path and path not in gap["paths"] and len(gap["paths"]) < _MAX_PATHS:
            gap["paths"].append(path)
        if len(gap["times"]) > 4 * _MAX_EVENT_IDS:
            del gap["times"][: 2 * _MAX_EVENT_IDS]  # the count lives on in "fired" / the alert
        if not self._mirrors(self._pair(a, b)):
            return None
        cfg = self.cfg
        recent = sum(1 for t in gap["times"] if t >= t0 - cfg.gap_window_seconds)
        if not gap["fired"] and recent < cfg.gap_min_missing:
            return None
        gap["fired"] += 1
        hits, misses = self._pairs[key]
        ids = tuple(gap["ids"]) if gap["fired"] == 1 else (rid,)
        first = gap["times"][0]
        return _finding(
            self.name,
            source=b,
            title=f"audit device {b} is missing entries that {a} recorded (from {_iso(first)})",
            severity="high",
            dedup_key=f"{self.name}:{a}\x1f{b}",
            reasons=[
                Reason(
                    "missing_entries",
                    f"{gap['n']} entries of {a} not written by {b} within "
                    f"{cfg.gap_wait_seconds:.0f}s (first request id {gap['ids'][0]})",
                    f"{b} wrote {hits:.0f} of {hits + misses:.0f} earlier entries of {a}",
                    1.0,
                ),
                Reason(
                    "device_dropped_or_edited",
                    f"{b} dropped these entries or its log was edited",
                    "every audit device writes every entry",
                    0.8,
                ),
            ],
            first_ts=first,
            last_ts=t0,
            event_ids=ids,
            paths=tuple(gap["paths"]) if gap["fired"] == 1 else ((path,) if path else ()),
            labels={"present_on": a, "missing_from": b},
        )

    def _close_episodes(self) -> None:
        """Fold gap episodes quiet for a window into their pair's counts."""
        span = self.cfg.gap_window_seconds + self.cfg.gap_wait_seconds
        horizon = self._clock - span
        for key in [k for k, g in self._gaps.items() if not g["times"] or g["times"][-1] < horizon]:
            gap = self._gaps.pop(key)
            a, b = key.split("\x1f", 1)
            self._pair(a, b)[1] += gap["n"]
        # The clock at which the next open episode goes quiet (its last miss left the window):
        # before then, with nothing to settle, judging would change nothing.
        # Conservative by a millisecond, against rounding: judging early is only judging.
        self._quiet_at = min((g["times"][-1] + span for g in self._gaps.values()), default=math.inf) - 1e-3


def _weekend(hour: int) -> bool:
    """Saturday or Sunday (UTC) for an absolute hour index (1970-01-01 was a Thursday)."""
    return (hour // 24 + 3) % 7 >= 5


class AuditStreamSilence:
    """A source silent where its own history says it delivers plenty (see the module)."""

    name: str = "audit-stream-silence"
    family: str = "rule"

    def __init__(self, cfg: CompletenessConfig | None = None) -> None:
        self.cfg = cfg or CompletenessConfig()
        #: source -> {"first": ts, "last": ts, "last_id": request id, "reported": ts of the
        #: silence already reported (its start), "hours": {absolute hour: events}}.
        self._streams: dict[str, dict[str, Any]] = {}
        self._clock = -math.inf
        self._next_check = -math.inf
        #: Findings made on a witnessed copy, handed out with the next observed event (plain data).
        self._held: list[dict[str, Any]] = []

    # -- Detector -------------------------------------------------------------------------------
    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        out = self._record(event)
        if self._held:
            out = self._drain() + out
        if self._clock >= self._next_check:
            out.extend(self._scan(self._clock))
        return out

    def witness(self, event: AuditEvent) -> None:
        """Record a copy the caller dropped as a duplicate (it counts for its own source)."""
        for f in self._record(event):
            if len(self._held) < _MAX_SOURCES:
                self._held.append(msgspec.to_builtins(f))

    def due(self, now: float) -> list[Finding]:
        """Silences ongoing at ``now``, up to the last event seen (a stream's future is unseen)."""
        return self._drain() + self._scan(min(now, self._clock))

    def _drain(self) -> list[Finding]:
        if not self._held:
            return []
        held, self._held = self._held, []
        return [msgspec.convert(f, Finding) for f in held]

    def state(self) -> dict[str, Any]:
        return {
            "streams": {
                s: {
                    **{k: v for k, v in st.items() if k != "hours"},
                    "hours": {str(h): n for h, n in st["hours"].items()},
                }
                for s, st in self._streams.items()
            },
            "clock": self._clock if math.isfinite(self._clock) else None,
            "next_check": self._next_check if math.isfinite(self._next_check) else None,
            "held": list(self._held),
        }

    def load(self, state: dict[str, Any]) -> None:
        self._streams = {}
        for s, st in dict(state.get("streams") or {}).items():
            self._streams[str(s)] = {
                "first": float(st["first"]),
                "last": float(st["last"]),
                "last_id": str(st.get("last_id") or ""),
                "reported": float(st["reported"]) if st.get("reported") is not None else None,
                "hours": {int(h): int(n) for h, n in dict(st.get("hours") or {}).items()},
            }
        clock, nxt = state.get("clock"), state.get("next_check")
        self._clock = float(clock) if clock is not None else -math.inf
        self._next_check = float(nxt) if nxt is not None else -math.inf
        self._held = [dict(f) for f in state.get("held") or []]

    # -- recording ------------------------------------------------------------------------------
    def _record(self, event: AuditEvent) -> list[Finding]:
        ts = event.ts
        if ts > self._clock:
            self._clock = ts
        src = event.source
        if src is None:
            return []
        st = self._streams.get(src)
        out: list[Finding] = []
        if st is None:
            if len(self._streams) >= _MAX_SOURCES:
                return []
            st = self._streams[src] = {"first": ts, "last": ts, "last_id": "", "reported": None, "hours": {}}
        elif ts > st["last"]:
            if ts - st["last"] >= self.cfg.silence_min_minutes * 60:
                f = self._judge(src, st, ts, resumed=True)
                if f is not None:
                    out.append(f)
            st["last"] = ts
            st["last_id"] = event.request_id or st["last_id"]
            st["reported"] = None
        hour = int(ts // _HOUR)
        hours: dict[int, int] = st["hours"]
        hours[hour] = hours.get(hour, 0) + 1
        if len(hours) > HISTORY_DAYS * 24 + 1:
            keep = hour - HISTORY_DAYS * 24
            for h in [h for h in hours if h < keep]:
                del hours[h]
        return out

    # -- judging --------------------------------------------------------------------------------
    def _scan(self, end: float) -> list[Finding]:
        self._next_check = self._clock + 60.0
        out: list[Finding] = []
        for src, st in self._streams.items():
            if st["reported"] is None and end - st["last"] >= self.cfg.silence_min_minutes * 60:
                f = self._judge(src, st, end, resumed=False)
                if f is not None:
                    st["reported"] = st["last"]
                    out.append(f)
        return out

    def _floor(self, st: dict[str, Any], hour: int, busy: float) -> float | None:
        """Events in the quietest comparable earlier hour, or None without enough history.

        Comparable hours are the same hour of the week in earlier weeks, or (before two weeks) the
        same hour on earlier days of the same kind; never a day-level average. The hour counts
        only when the stream was *busy* then (at least ``busy`` events) on most comparable days:
        a night that always carries a trickle is a quiet hour, and its silence is ordinary.
        """
        hours: dict[int, int] = st["hours"]
        oldest = max(int(st["first"] // _HOUR) + 1, int(self._clock // _HOUR) - HISTORY_DAYS * 24)
        weekly = [hours.get(h, 0) for h in (hour - _WEEK_HOURS * k for k in (1, 2, 3)) if h >= oldest]
        if len(weekly) >= 2:
            same = weekly
        else:
            kind = _weekend(hour)
            same = [
                hours.get(h, 0)
                for h in (hour - 24 * k for k in range(1, 8))
                if h >= oldest and _weekend(h) == kind
            ]
            if len(same) < 3:
                return None
        if 2 * sum(1 for n in same if n >= busy) <= len(same):
            return 0.0
        return float(min(same))

    @staticmethod
    def _busy_level(st: dict[str, Any]) -> float:
        """Half the stream's mean events per hour that delivered any: an hour below it is quiet.

        The mean, not the median, so that many trickling night hours (an agent polling) do not
        make a trickle the stream's ordinary rate; half of it, so that a flat round-the-clock
        stream's every hour is busy.
        """
        counts = [n for n in st["hours"].values() if n > 0]
        return sum(counts) / len(counts) / 2.0 if counts else math.inf

    def _expected(self, st: dict[str, Any], start: float, end: float) -> float:
        total = 0.0
        first = int(start // _HOUR)
        last = int(end // _HOUR)
        busy = self._busy_level(st)
        for hour in range(max(first, last - 7 * 24), last + 1):
            lo, hi = max(start, hour * _HOUR), min(end, (hour + 1) * _HOUR)
            if hi <= lo:
                continue
            floor = self._floor(st, hour, busy)
            if floor:
                total += floor * (hi - lo) / _HOUR
        return total

    def _judge(self, src: str, st: dict[str, Any], end: float, *, resumed: bool) -> Finding | None:
        start = float(st["last"])
        expected = self._expected(st, start, end)
        if st["reported"] is None and expected < self.cfg.silence_min_expected:
            return None
        span = _minutes(end - start)
        if resumed:
            title = f"audit stream {src} delivered nothing for {span} (resumed {_iso(end)})"
        else:
            title = f"audit stream {src} has delivered nothing since {_iso(start)} ({span})"
        return _finding(
            self.name,
            source=src,
            title=title,
            severity="high",
            dedup_key=f"{self.name}:{src}",
            reasons=[
                Reason(
                    "silence",
                    f"0 events for {span}",
                    f"at least {expected:.0f} events: its quietest comparable busy hours (same hour in "
                    "earlier weeks, or earlier days of the same kind)",
                    1.0,
                ),
            ],
            first_ts=start,
            last_ts=end,
            event_ids=(st["last_id"],) if st["last_id"] else (),
            labels={
                "stream": src,
                "silent_seconds": f"{end - start:.0f}",
                "expected_events": f"{expected:.0f}",
            },
        )
