"""Access-model drift: protected or rotation globs that match nothing a busy stream touches.

An access model written for one layout (``logos/pxl-core/*``) silently guards nothing when the
secrets live elsewhere (``kv/apps/pxl/...``): no violation, no rotation alert, and nothing says
so. :class:`DriftWatch` watches the stream (it is a :class:`~detect.types.Detector` that never
raises a finding, so the shell can run it inside an engine and checkpoint it with the rest) and
:meth:`DriftWatch.report` says, for the last day of event time, which globs matched nothing while
the stream was busy, with the paths that look like the intended ones:

* paths whose path inside the mount ends like the glob's tail (``runtime/jwt*`` seen under
  ``apps/pxl/runtime/jwt-key`` suggests ``apps/pxl/runtime/jwt*``);
* otherwise the most-read secret prefixes (mount and first segment).

Pure: event time only, bounded plain-data state.

>>> from detect.policy import default_policy
>>> watch = DriftWatch(default_policy(), busy_events=1)
>>> watch.report(0.0).drifting
()
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Any, ClassVar, Final

import msgspec

from ingest.event import AuditEvent

from .policy import AccessPolicy, glob_match, secret_target
from .types import DetectContext, Finding

__all__ = ["DriftWatch", "DriftReport", "GlobDrift", "merge_reports"]

_SYSTEM: Final = ("sys/", "auth/", "identity/", "cubbyhole/")
_HOUR: Final = 3600.0
_KV_TYPES: Final = frozenset({"kv", "generic"})


class GlobDrift(msgspec.Struct, frozen=True, kw_only=True):
    """One glob of the access model that matched nothing in the window."""

    kind: str  # "protected" | "rotation <class>" | "deploy marker"
    glob: str
    last_match: float | None = None  # event time of its last match ever, when any
    suggestions: tuple[str, ...] = ()
    basis: str = ""  # how the suggestions were found


class DriftReport(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`DriftWatch.report` found, as plain data."""

    now: float
    window_seconds: float
    events: int  # events in the window
    busy: bool
    drifting: tuple[GlobDrift, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (``replay --json``, ``inspect --json``)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    def lines(self) -> list[str]:
        """One warning line per drifting glob, for logs and summaries."""
        out = []
        for d in self.drifting:
            hint = f"; paths that look intended: {', '.join(d.suggestions)}" if d.suggestions else ""
            out.append(
                f"access model {d.kind} glob {d.glob!r} matched none of the {self.events} events "
                f"of the last {self.window_seconds / _HOUR:.0f}h{hint}"
            )
        return out


class DriftWatch:
    """Watches which of the access model's globs the stream touches (see the module docstring).

    ``busy_events``: a window with fewer events is not judged (a quiet stream proves nothing).
    ``max_paths``: distinct secret paths remembered for suggestions (older ones go first).
    """

    name = "access-model-drift"
    family = "policy"
    only_responses: ClassVar[bool] = True

    def __init__(
        self,
        policy: AccessPolicy,
        *,
        busy_events: int = 1000,
        window_hours: float = 24.0,
        max_paths: int = 20_000,
    ) -> None:
        self.policy = policy
        self.busy_events = busy_events
        self.window = window_hours * _HOUR
        self.max_paths = max_paths
        globs: list[tuple[str, str]] = [("protected", g) for g in policy.protected]
        for cls in policy.rotation:
            globs += [(f"rotation {cls.name}", g) for g in cls.paths]
        globs += [("deploy marker", g) for g in policy.deploy.paths]
        self.globs: tuple[tuple[str, str], ...] = tuple(globs)
        self._hours: dict[int, int] = {}
        self._last: list[float | None] = [None] * len(self.globs)
        self._paths: dict[str, list[Any]] = {}  # "mount\tinner" -> [reads, last ts]
        self._memo: dict[tuple[str, str], tuple[int, ...]] = {}
        self._now = -math.inf

    # -- Detector --------------------------------------------------------------------------------
    def observe(self, event: AuditEvent, ctx: DetectContext | None = None) -> list[Finding]:
        """Note one response entry; never a finding."""
        if event.is_response:
            self.note(event)
        return []

    def note(self, event: AuditEvent) -> None:
        """Count ``event`` and remember which globs its secret path matches."""
        ts = event.ts
        if ts > self._now:
            self._now = ts
        hour = int(ts // _HOUR)
        hours = self._hours
        if hour in hours:
            hours[hour] += 1
        else:
            hours[hour] = 1
            self._prune(ts)
        path = event.path
        if not path or path.startswith(_SYSTEM):
            return
        target = secret_target(event)
        key = (target.path, target.mount)
        hits = self._memo.get(key)
        if hits is None:
            if len(self._memo) >= 65_536:
                self._memo.clear()
            hits = self._memo[key] = tuple(
                i for i, (_, g) in enumerate(self.globs) if glob_match(g, target.path, target.mount)
            )
        for i in hits:
            self._last[i] = ts
        kind = event.mount_type
        if (kind and kind not in _KV_TYPES) or (not kind and target.api == "plain"):
            return  # suggestions name secret (KV) paths only
        pk = f"{target.mount}\t{target.inner}"
        seen = self._paths.get(pk)
        read = 1 if target.op == "read" else 0
        if seen is not None:
            seen[0] += read
            seen[1] = ts
        elif len(self._paths) < self.max_paths:
            self._paths[pk] = [read, ts]

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        first = int(cutoff // _HOUR)
        for h in [h for h in self._hours if h < first]:
            del self._hours[h]
        if len(self._paths) >= self.max_paths:
            self._paths = {k: v for k, v in self._paths.items() if v[1] >= cutoff}

    # -- the report ------------------------------------------------------------------------------
    def window_events(self, now: float) -> int:
        """Events in the window ending at ``now``."""
        first = int((now - self.window) // _HOUR)
        return sum(n for h, n in self._hours.items() if h > first)

    def report(self, now: float | None = None) -> DriftReport:
        """Globs that matched nothing within the window ending at ``now`` (default: the last
        event's time), judged only when the window holds at least ``busy_events`` events."""
        at = self._now if now is None else now
        if not math.isfinite(at):
            return DriftReport(now=0.0, window_seconds=self.window, events=0, busy=False)
        events = self.window_events(at)
        busy = events >= self.busy_events
        drifting: list[GlobDrift] = []
        if busy:
            cutoff = at - self.window
            recent = {k: v for k, v in self._paths.items() if v[1] >= cutoff}
            for i, (kind, glob) in enumerate(self.globs):
                last = self._last[i]
                if last is not None and last >= cutoff:
                    continue
                found, basis = suggest(glob, recent)
                drifting.append(
                    GlobDrift(kind=kind, glob=glob, last_match=last, suggestions=found, basis=basis)
                )
        return DriftReport(
            now=at, window_seconds=self.window, events=events, busy=busy, drifting=tuple(drifting)
        )

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Plain-data state."""
        return {
            "hours": {str(h): n for h, n in self._hours.items()},
            "last": {g: ts for (_, g), ts in zip(self.globs, self._last, strict=True) if ts is not None},
            "paths": {k: list(v) for k, v in self._paths.items()},
            "now": self._now if math.isfinite(self._now) else None,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output (globs no longer in the model are dropped)."""
        self._hours = {int(h): int(n) for h, n in dict(state.get("hours") or {}).items()}
        last = dict(state.get("last") or {})
        self._last = [float(last[g]) if g in last else None for _, g in self.globs]
        self._paths = {str(k): [int(v[0]), float(v[1])] for k, v in dict(state.get("paths") or {}).items()}
        now = state.get("now")
        self._now = float(now) if now is not None else -math.inf


def merge_reports(reports: list[DriftReport], busy_events: int = 1000) -> DriftReport:
    """One report over several partial watches (one per partition engine): a glob drifts only
    when it drifts in every busy partition's report and the partitions together are busy."""
    if not reports:
        return DriftReport(now=0.0, window_seconds=86400.0, events=0, busy=False)
    events = sum(r.events for r in reports)
    busy = events >= busy_events
    now = max(r.now for r in reports)
    window = reports[0].window_seconds
    if not busy:
        return DriftReport(now=now, window_seconds=window, events=events, busy=False)
    judged = [r for r in reports if r.busy]
    if not judged:
        return DriftReport(now=now, window_seconds=window, events=events, busy=True)
    common = set.intersection(*({d.glob for d in r.drifting} for r in judged))
    merged: dict[str, GlobDrift] = {}
    for r in judged:
        for d in r.drifting:
            if d.glob in common and d.glob not in merged:
                merged[d.glob] = d
    return DriftReport(
        now=now, window_seconds=window, events=events, busy=True, drifting=tuple(merged.values())
    )


def _segments_match(pattern: str, inner: str) -> int | None:
    """Index of the segment of ``inner`` where the segment pattern ``pattern`` matches the rest."""
    segs = inner.split("/")
    plen = pattern.count("/") + 1
    for j in range(len(segs) - 1, -1, -1):
        rest = "/".join(segs[j:])
        if j <= len(segs) - plen and fnmatchcase(rest, pattern):
            return j
    return None


def suggest(glob: str, paths: dict[str, list[Any]], limit: int = 3) -> tuple[tuple[str, ...], str]:
    """Globs that look like what ``glob`` meant, from recently seen ``mount\\tinner`` paths.

    >>> seen = {"kv/\\tapps/pxl/runtime/jwt-key": [9, 0.0], "kv/\\tapps/pxl/build/x": [2, 0.0]}
    >>> suggest("logos/pxl-core/runtime/jwt*", seen)
    (('apps/pxl/runtime/jwt*',), 'paths ending like runtime/jwt*')
    >>> suggest("nowhere/at-all/*", seen)
    (('kv/::apps/*',), 'most-read secret prefixes')
    """
    pattern = glob.partition("::")[2] or glob
    segs = pattern.split("/")
    for k in range(len(segs) - 1, 0, -1):
        tail = "/".join(segs[-k:])
        if all(set(s) <= set("*?+") for s in segs[-k:]):
            continue  # a tail of wildcards only matches everything
        scores: dict[str, int] = {}
        for key, (n_reads, _) in paths.items():
            _, _, inner = key.partition("\t")
            j = _segments_match(tail, inner)
            if j is None:
                continue
            head = "/".join(inner.split("/")[:j])
            cand = f"{head}/{tail}" if head else tail
            if cand != pattern:
                scores[cand] = scores.get(cand, 0) + int(n_reads) + 1
        if scores:
            best = sorted(scores, key=lambda c: (-scores[c], c))[:limit]
            return tuple(best), f"paths ending like {tail}"
    reads: dict[str, int] = {}
    for key, (n, _) in paths.items():
        mount, _, inner = key.partition("\t")
        first = inner.partition("/")[0]
        if not first or "/" not in inner:
            continue
        cand = f"{mount}::{first}/*" if mount else f"{first}/*"
        reads[cand] = reads.get(cand, 0) + int(n)
    best = [c for c in sorted(reads, key=lambda c: (-reads[c], c)) if reads[c] > 0][:limit]
    return tuple(best), ("most-read secret prefixes" if best else "")
