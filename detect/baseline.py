"""Per-identity behavioural baselines: compact, exponentially decayed, bounded in memory.

Every identity keeps, per feature (path template, directory, area, operation+template, mount,
address, subnet), a top-K *space-saving* counter whose counts decay with two horizons at once: a short one
(about 10 days, "uncommon for this identity") and a long one (about 180 days, "first time for
this identity"). Decay uses *forward decay* (Cormode et al.): an event at time ``t`` adds
``exp((t - t0) / tau)`` for a fixed landmark ``t0``, so an update is one addition and every count
stays comparable with every other; the true decayed count at ``now`` is the stored value times
``exp(-(now - t0) / tau)``. Each counter also tracks how often a value was *new*, which gives a
calibrated per-identity novelty rate (a CI bot that touches new paths all day is not surprised by
another one; a service that reads the same three secrets is).

Peer groups (identities sharing a sorted policy set, or an auth role when they have no policies)
and the whole organisation keep the same counters with a larger K.

State is plain data (:mod:`msgspec` structs) and serialises to msgpack.

>>> clock = Clock(t0=0.0, tau_short=10 * 86400, tau_long=180 * 86400)
>>> c = TopK(k=2)
>>> c.observe("a", 1.0, 1.0), c.observe("a", 1.0, 1.0), c.observe("b", 1.0, 1.0)
(True, False, True)
>>> c.observe("c", 1.0, 1.0)  # evicts the smallest ("b") and inherits its count as error
True
>>> sorted(c.items), c.lower("c")
(['a', 'c'], 1.0)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any, Final

import msgspec

__all__ = [
    "Clock",
    "TopK",
    "SMALL_TOPK",
    "HourStats",
    "Window",
    "Baseline",
    "GroupBaseline",
    "FEATURES",
    "GROUP_FEATURES",
    "ORG_FEATURES",
    "METRICS",
    "Mark",
    "Suspect",
    "hour_of_week",
    "pack_rid",
    "unpack_rid",
    "SMALL_READS",
    "SMALL_HOURS",
]

#: Feature names counted per identity (also the ``feature`` argument of ``BaselineView.count``).
FEATURES = ("dir", "area", "op_template", "mount", "address", "subnet")
#: Features also counted for peer groups (addresses are personal) and for the organisation.
GROUP_FEATURES = ("dir", "area", "op_template", "mount", "subnet")
ORG_FEATURES = FEATURES
#: Per-hour metrics whose distribution each identity keeps.
METRICS = ("events", "distinct", "lists", "errors")
_MAX_EXP = 600.0


def hour_of_week(ts: float) -> int:
    """0..167, Monday 00:00 UTC = 0 (1970-01-01 was a Thursday)."""
    return (int(ts // 3600) + 72) % 168


class Clock(msgspec.Struct, kw_only=True, gc=False):
    """The forward-decay landmark and time constants shared by all counters of an engine."""

    t0: float
    tau_short: float
    tau_long: float

    def weights(self, ts: float) -> tuple[float, float]:
        """``(long, short)`` forward-decay weights of one event at ``ts``."""
        d = ts - self.t0
        return math.exp(d / self.tau_long), math.exp(d / self.tau_short)

    def scale(self, now: float) -> tuple[float, float]:
        """Multipliers that turn stored ``(long, short)`` values into decayed counts at ``now``."""
        d = now - self.t0
        return math.exp(-d / self.tau_long), math.exp(-d / self.tau_short)

    def needs_rebase(self, ts: float) -> bool:
        return (ts - self.t0) / self.tau_short > _MAX_EXP


#: A counter keeps up to this many values in its flat :attr:`TopK.cells` list (scanned); past it,
#: in a dict (hashed). Most identity counters hold a handful of values, and a dict with its
#: per-value lists cost about 330 bytes more per counter than the flat list.
SMALL_TOPK: Final = 8


class TopK(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """Space-saving counter with two decayed counts per value and novelty tracking.

    Each value has three stored counts, ``[long, short, error]``, where ``error`` is the count
    inherited on eviction (so ``long - error`` is a lower bound of the true long count).
    ``new_*`` sum the weight of observations whose value was not present; ``tot_*`` sum all
    observations.

    Up to :data:`SMALL_TOPK` values live in ``cells``, flat and in counter order:
    ``[value, long, short, error, value, long, short, error, ...]`` (one list, no per-value
    objects). A larger counter keeps ``table`` (``value -> [long, short, error]``, the layout
    every counter had before, and the one a snapshot from before holds: it is converted on load
    when small). Both keep the same order (first inserted first; an evicted value leaves, the
    new one goes last), so the smallest value evicted on a tie is the same in either.
    :attr:`items` gives the ``table`` view of either, as a copy.
    """

    k: int
    cells: list[Any] = msgspec.field(default_factory=list)
    table: dict[str, list[float]] | None = msgspec.field(default=None, name="items")
    new_l: float = 0.0
    new_s: float = 0.0
    tot_l: float = 0.0
    tot_s: float = 0.0

    def __post_init__(self) -> None:
        cells = self.cells
        if len(cells) % 4 or not all(type(v) is str for v in cells[::4]):
            raise ValueError("TopK cells must be groups of [value, long, short, error]")
        t = self.table
        if t is None:
            return
        if any(len(c) != 3 for c in t.values()):
            raise ValueError("TopK items must be [long, short, error]")
        if cells:
            raise ValueError("TopK has both cells and items")
        if len(t) <= SMALL_TOPK:  # a small counter from an old snapshot
            for v, c in t.items():
                cells += (v, c[0], c[1], c[2])
            self.table = None

    @property
    def items(self) -> dict[str, list[float]]:
        """``value -> [long, short, error]`` in counter order (a copy: changing it changes nothing)."""
        t = self.table
        if t is not None:
            return {v: list(c) for v, c in t.items()}
        cells = self.cells
        return {cells[i]: cells[i + 1 : i + 4] for i in range(0, len(cells), 4)}

    def __len__(self) -> int:
        t = self.table
        return len(self.cells) >> 2 if t is None else len(t)

    def __contains__(self, value: object) -> bool:
        t = self.table
        return value in self.cells[::4] if t is None else value in t

    def __iter__(self) -> Iterator[str]:
        """The values, in counter order."""
        t = self.table
        return iter(self.cells[::4] if t is None else list(t))

    def find(self, value: str) -> int:
        """Where ``value``'s group starts in ``cells`` (small counters only); -1 when absent."""
        try:
            return self.cells[::4].index(value) << 2
        except ValueError:
            return -1

    def observe(self, value: str, wl: float, ws: float) -> bool:
        """Count one observation; True when ``value`` was not in the counter (first seen)."""
        self.tot_l += wl
        self.tot_s += ws
        if self.bump(value, wl, ws):
            return False
        self.insert(value, wl, ws)
        return True

    def bump(self, value: str, wl: float, ws: float) -> bool:
        """Add ``wl``/``ws`` to a present value's counts (totals untouched); False when absent."""
        t = self.table
        if t is None:
            i = self.find(value)
            if i < 0:
                return False
            cells = self.cells
            cells[i + 1] += wl
            cells[i + 2] += ws
            return True
        it = t.get(value)
        if it is None:
            return False
        it[0] += wl
        it[1] += ws
        return True

    def insert(self, value: str, wl: float, ws: float) -> None:
        """Add a value that is not present (totals already counted), evicting the smallest if full."""
        # Values repeat across identities (mounts, paths, addresses): one shared string each.
        if type(value) is str:  # sys.intern refuses str subclasses
            value = sys.intern(value)
        self.new_l += wl
        self.new_s += ws
        t = self.table
        if t is None:
            cells = self.cells
            n = len(cells) >> 2
            if n >= self.k:
                longs = cells[1::4]
                i = longs.index(min(longs)) << 2  # the first smallest, as min() over the table
                fl, fs = cells[i + 1], cells[i + 2]
                del cells[i : i + 4]
                cells += (value, fl + wl, fs + ws, fl)
                return
            if not n:  # a list of exactly four (extending an empty one allocates eight)
                self.cells = [value, wl, ws, 0.0]
                return
            if n < SMALL_TOPK:
                cells += (value, wl, ws, 0.0)
                return
            # Grown past the flat list: the table, in the same order.
            t = self.table = {cells[i]: cells[i + 1 : i + 4] for i in range(0, len(cells), 4)}
            self.cells = []
        if len(t) >= self.k:
            victim = min(t, key=lambda v: t[v][0])
            floor = t.pop(victim)
            t[value] = [floor[0] + wl, floor[1] + ws, floor[0]]
        else:
            t[value] = [wl, ws, 0.0]

    def long(self, value: str) -> float:
        """Stored (undecayed) long count of ``value`` (its upper bound); 0 when absent."""
        t = self.table
        if t is None:
            i = self.find(value)
            return 0.0 if i < 0 else float(self.cells[i + 1])
        it = t.get(value)
        return 0.0 if it is None else it[0]

    def lower(self, value: str) -> float:
        """Stored (undecayed) lower bound of the long count of ``value``; 0 when absent."""
        t = self.table
        if t is None:
            i = self.find(value)
            if i < 0:
                return 0.0
            cells = self.cells
            return float(cells[i + 1] - cells[i + 3])
        it = t.get(value)
        return 0.0 if it is None else it[0] - it[2]

    def short(self, value: str) -> float:
        t = self.table
        if t is None:
            i = self.find(value)
            return 0.0 if i < 0 else float(self.cells[i + 2])
        it = t.get(value)
        return 0.0 if it is None else it[1]

    def novelty_rate(self, unit: float) -> float:
        """Smoothed share of recent observations that were first-seen values (short horizon).

        ``unit`` is the stored weight of one observation now, so the smoothing is half an event.
        """
        return (self.new_s + 0.5 * unit) / (self.tot_s + unit)

    def rescale(self, fl: float, fs: float) -> None:
        t = self.table
        if t is None:
            cells = self.cells
            for i in range(0, len(cells), 4):
                cells[i + 1] *= fl
                cells[i + 2] *= fs
                cells[i + 3] *= fl
        else:
            for it in t.values():
                it[0] *= fl
                it[1] *= fs
                it[2] *= fl
        self.new_l *= fl
        self.tot_l *= fl
        self.new_s *= fs
        self.tot_s *= fs

    def top(self, n: int, scale_long: float) -> list[tuple[str, float]]:
        """The ``n`` largest values with their decayed long counts."""
        t = self.table
        if t is None:
            cells = self.cells
            pairs = list(zip(cells[::4], cells[1::4], strict=True))
        else:
            pairs = [(v, c[0]) for v, c in t.items()]
        best = sorted(pairs, key=lambda kv: (-kv[1], kv[0]))[:n]
        return [(v, round(c * scale_long, 3)) for v, c in best]


class HourStats(msgspec.Struct, kw_only=True, gc=False):
    """Decayed moments of ``log1p(metric)`` over the identity's active hours."""

    s0: float = 0.0
    #: None until the first hour is added (many identities are seen within one hour only, and
    #: two empty lists cost 112 bytes). Snapshots from before hold empty lists.
    s1: list[float] | None = None
    s2: list[float] | None = None
    hours: int = 0

    def __post_init__(self) -> None:
        if not self.s1 or not self.s2:  # empty lists from an old snapshot
            self.s1 = self.s2 = None

    def add(self, values: tuple[int, ...], w: float) -> None:
        s1, s2 = self.s1, self.s2
        if not s1 or not s2:
            s1 = self.s1 = [0.0] * len(METRICS)
            s2 = self.s2 = [0.0] * len(METRICS)
        self.s0 += w
        self.hours += 1
        for i, v in enumerate(values):
            x = math.log1p(v)
            s1[i] += w * x
            s2[i] += w * x * x

    def moments(self, i: int) -> tuple[float, float]:
        s1, s2 = self.s1, self.s2
        if self.s0 <= 0 or not s1 or not s2:
            return 0.0, 0.0
        mean = s1[i] / self.s0
        var = max(s2[i] / self.s0 - mean * mean, 0.0)
        return mean, math.sqrt(var)

    def rescale(self, fs: float) -> None:
        self.s0 *= fs
        if self.s1 is not None:
            self.s1 = [x * fs for x in self.s1]
        if self.s2 is not None:
            self.s2 = [x * fs for x in self.s2]


#: A baseline keeps up to this many active hours-of-week in a flat list; past it, in a dict.
SMALL_HOURS: Final = 8
#: A window keeps up to this many distinct read paths in a list (scanned); past it, a set.
SMALL_READS: Final = 16


def pack_rid(rid: str) -> str | bytes:
    """``rid`` as 16 bytes when it is a canonical (lower-case, hyphenated) UUID, else as it is.

    :func:`unpack_rid` gives back the same string, so nothing that reads the ids sees a change.
    """
    if len(rid) != 36 or rid[8] != "-" or rid[13] != "-" or rid[18] != "-" or rid[23] != "-":
        return rid
    h = rid.replace("-", "")
    if len(h) != 32 or h != h.lower():
        return rid
    try:
        raw = bytes.fromhex(h)
    except ValueError:
        return rid
    # 16 bytes from 32 characters: all hex digits (fromhex skips whitespace), lower case.
    return raw if len(raw) == 16 else rid


def unpack_rid(rid: str | bytes) -> str:
    """The request id string of a :func:`pack_rid` result."""
    if isinstance(rid, str):
        return rid
    h = rid.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Window(msgspec.Struct, kw_only=True, gc=False):
    """The identity's current event-time hour: what volume and the model look at."""

    hour: int = -1
    events: int = 0
    lists: int = 0
    errors: int = 0
    new_values: int = 0
    #: The distinct paths read (only their number is used): None until the first, a list of up
    #: to :data:`SMALL_READS` (a set of a few strings cost 216 bytes), then ``many_reads``.
    #: Snapshots from before hold a set here (encoded as an array).
    reads: list[str] | None = None
    many_reads: set[str] | None = None
    addresses: list[str] = msgspec.field(default_factory=list)
    #: Request ids; a canonical UUID as its 16 bytes (49 bytes, not 85), see :func:`pack_rid`.
    #: ``str | bytes`` in fact (msgspec takes no union of two string-like types; msgpack keeps
    #: them apart as str and bin). Snapshots from before hold strings only.
    event_ids: list[Any] = msgspec.field(default_factory=list)
    #: Signals fired in this window (None until the first: most windows fire none).
    fired: dict[str, int] | None = None
    first_ts: float = 0.0
    last_ts: float = 0.0

    def __post_init__(self) -> None:
        if not self.fired:  # an empty dict from an old snapshot
            self.fired = None
        r = self.reads
        if r is not None:
            if len(set(r)) > SMALL_READS:  # a large set from an old snapshot
                self.many_reads = set(r)
                self.reads = None
            elif not r:
                self.reads = None
        self.event_ids = [pack_rid(x) if type(x) is str else x for x in self.event_ids]

    def add_read(self, path: str) -> None:
        """Count ``path`` as read in this window (once)."""
        m = self.many_reads
        if m is not None:
            m.add(path)
            return
        r = self.reads
        if r is None:
            self.reads = [path]
        elif path not in r:
            if len(r) < SMALL_READS:
                r.append(path)
            else:
                self.many_reads = {*r, path}
                self.reads = None

    def distinct_reads(self) -> int:
        """How many distinct paths were read in this window."""
        m = self.many_reads
        if m is not None:
            return len(m)
        r = self.reads
        return 0 if r is None else len(r)

    def request_ids(self) -> tuple[str, ...]:
        """The request ids as they came (strings)."""
        return tuple(unpack_rid(x) for x in self.event_ids)

    def vector(self) -> tuple[int, ...]:
        """The per-hour metrics in :data:`METRICS` order."""
        return (self.events, self.distinct_reads(), self.lists, self.errors)


class Mark(msgspec.Struct, kw_only=True, gc=False):
    """One remembered act (event time, what, its weight): a first read, a denial outside habit."""

    ts: float
    what: str
    weight: float = 1.0
    #: The request id of the act (evidence an alert about the acts names).
    rid: str = ""


class Suspect(msgspec.Struct, kw_only=True, gc=False):
    """The identity's credential in use from an address it never used, while the use lasts.

    Opened when an identity past learning speaks from a new address in a situation that is
    unusual for it (a network it, its peers and perhaps the organisation never used, an hour
    it is never active); the acts done from that address then add what they touch.
    """

    address: str
    subnet: str
    first_ts: float
    last_ts: float
    #: Points for the network and for the hour, and the words that explain them.
    net: float
    hour: float
    net_note: str
    hour_note: str
    at: str
    reads: list[str] = msgspec.field(default_factory=list)
    writes: int = 0
    lists: int = 0
    denied: int = 0
    logins: int = 0
    admin: int = 0
    #: Points already reported for this use (an alert, then its updates), and how many acts
    #: the last report told of.
    emitted: float = 0.0
    told: int = 0


class Baseline(msgspec.Struct, kw_only=True, gc=False):
    """One identity's behavioural state."""

    key: str
    group: str = ""
    names: tuple[str, ...] = ()
    first_ts: float = 0.0
    last_ts: float = 0.0
    learn_start: float = 0.0
    learn_n: int = 0
    n: int = 0
    feats: dict[str, TopK] = msgspec.field(default_factory=dict)
    #: Decayed activity per hour-of-week (0..167). Sparse: most hours are never active, and a
    #: dense list cost about 1.4 KB per identity. Snapshots from before hold a dense list, or a
    #: dict (every snapshot before ``how_pairs``). Up to :data:`SMALL_HOURS` active hours live in
    #: ``how_pairs`` (``[hour, value, hour, value, ...]`` in first-active order, 72 bytes for one
    #: hour where a dict cost 184) and ``how`` is None; past it, ``how`` is the dict again, in the
    #: same order. Read it with :meth:`hour_items`, :meth:`hour`, :meth:`hours_dense`.
    how: dict[int, float] | list[float] | None = None
    how_pairs: list[int | float] | None = None
    how_total: float = 0.0
    hstats: HourStats = msgspec.field(default_factory=HourStats)
    window: Window = msgspec.field(default_factory=Window)
    taint_until: float = 0.0
    day: int = -1
    day_new: int = 0
    day_s0: float = 0.0
    day_s1: float = 0.0
    day_s2: float = 0.0
    #: Times of first-seen templates within the day (None until the first; as are ``denials``
    #: and ``firsts``: three empty lists cost 168 bytes). Snapshots from before hold [].
    new_times: list[float] | None = None
    new_fired: int = 0
    #: Who this is as a person reads it (user, AppRole role...), for titles.
    who: str = ""
    #: Distinct event-time days (UTC) with activity: how established the identity's habits are.
    days_seen: int = 0
    #: The current use of the credential from a new address, if unusual (see :class:`Suspect`).
    suspect: Suspect | None = None
    #: Denials on paths outside the identity's and its peers' habit, within the last hour.
    denials: list[Mark] | None = None
    denials_emitted: float = 0.0
    #: First-time secret reads within the slow-exfiltration window, and the identity's norm:
    #: weighted first reads since it left learning (``first_from``, 0 = not yet).
    firsts: list[Mark] | None = None
    first_total: float = 0.0
    first_from: float = 0.0
    first_fired: float = 0.0

    def rescale(self, fl: float, fs: float) -> None:
        for c in self.feats.values():
            c.rescale(fl, fs)
        p = self.how_pairs
        if p is not None:
            for i in range(1, len(p), 2):
                p[i] = p[i] * fl
        elif self.how is not None:
            self.how = {i: x * fl for i, x in self.hours().items()}
        self.how_total *= fl
        self.hstats.rescale(fs)
        self.day_s0 *= fs
        self.day_s1 *= fs
        self.day_s2 *= fs

    def __post_init__(self) -> None:
        p = self.how_pairs
        if p is not None:
            if len(p) % 2 or not all(type(h) is int and 0 <= h < 168 for h in p[::2]):
                raise ValueError("Baseline how_pairs must be [hour, value, ...]")
            if self.how is not None:
                raise ValueError("Baseline has both how and how_pairs")
            for i in range(1, len(p), 2):
                p[i] = float(p[i])
        elif self.how is not None:
            h = self.hours()  # a dense list from an old snapshot becomes the dict first
            if len(h) <= SMALL_HOURS:
                self.how_pairs = [v for kv in h.items() for v in kv] or None
                self.how = None
        # Empty lists from an old snapshot: None, as a new baseline has.
        if not self.new_times:
            self.new_times = None
        if not self.denials:
            self.denials = None
        if not self.firsts:
            self.firsts = None

    def hours(self) -> dict[int, float]:
        """The hour-of-week histogram, sparse, in first-active order (a copy when small)."""
        p = self.how_pairs
        if p is not None:
            return {int(p[i]): float(p[i + 1]) for i in range(0, len(p), 2)}
        h = self.how
        if h is None:
            return {}
        if isinstance(h, list):
            h = self.how = {i: x for i, x in enumerate(h) if x}
        return h

    def hour_items(self) -> list[tuple[int, float]]:
        """``(hour of week, value)`` of the active hours, in first-active order."""
        p = self.how_pairs
        if p is not None:
            return [(int(p[i]), float(p[i + 1])) for i in range(0, len(p), 2)]
        return list(self.hours().items())

    def hour(self, how: int) -> float:
        """The stored value of hour-of-week ``how`` (0 when never active)."""
        p = self.how_pairs
        if p is not None:
            for i in range(0, len(p), 2):
                if p[i] == how:
                    return float(p[i + 1])
            return 0.0
        return self.hours().get(how, 0.0)

    def add_hour(self, how: int, w: float) -> None:
        """Add ``w`` to hour-of-week ``how``."""
        p = self.how_pairs
        if p is None and self.how is None:
            self.how_pairs = [how, 0.0 + w]
            return
        if p is not None:
            for i in range(0, len(p), 2):
                if p[i] == how:
                    p[i + 1] = p[i + 1] + w
                    return
            if len(p) < 2 * SMALL_HOURS:
                p += (how, 0.0 + w)
                return
            self.how = {int(p[i]): float(p[i + 1]) for i in range(0, len(p), 2)}
            self.how_pairs = None
        h = self.hours()
        h[how] = h.get(how, 0.0) + w

    def hours_dense(self) -> list[float]:
        """The hour-of-week histogram as 168 values."""
        out = [0.0] * 168
        for i, x in self.hour_items():
            out[i] = x
        return out

    def learning(
        self, now: float, learning_days: float, min_events: int, events: int, min_days: float
    ) -> bool:
        """True while the identity is new or back from dormancy."""
        age = (now - self.learn_start) / 86400.0
        if age >= learning_days and self.learn_n >= min_events:
            return False
        return not (self.learn_n >= events and age >= min_days)


class GroupBaseline(msgspec.Struct, kw_only=True, gc=False):
    """A peer group's (or the organisation's) counters and its members."""

    key: str
    feats: dict[str, TopK] = msgspec.field(default_factory=dict)
    members: list[str] = msgspec.field(default_factory=list)
    n: int = 0
    #: Decayed event totals. Value counts here grow only when a value is *new for an identity*,
    #: so they count first uses (how many identities took a value up), and updating a group
    #: costs nothing on the common path where the identity already knows every value.
    tot_l: float = 0.0
    tot_s: float = 0.0

    def rescale(self, fl: float, fs: float) -> None:
        for c in self.feats.values():
            c.rescale(fl, fs)
        self.tot_l *= fl
        self.tot_s *= fs

    def novelty_rate(self, feature: str, unit: float) -> float:
        """Smoothed share of recent events that brought a value new to the whole group."""
        c = self.feats.get(feature)
        new = c.new_s if c is not None else 0.0
        return (new + 0.5 * unit) / (self.tot_s + unit)


def encoded_size(obj: Any) -> int:
    """Bytes of ``obj`` as msgpack (the measure of per-identity state size)."""
    return len(msgspec.msgpack.encode(obj))
