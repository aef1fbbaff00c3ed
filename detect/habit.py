"""Habits: admin work an identity does again and again is not news.

A rule that judges configuration facts (a token issued with a policy its creator does not hold, an
orphan token, a policy edit, a mount tune) is right to alert the first time, and wrong to page
every week when a security administrator does the same work. A detector declares the *act* of a
finding (a normalised description: the issued policy set, the policy name, the mount) in the
finding's ``habit_act`` label; the engine keeps, per habit signature (identity key, detector,
act), the distinct days the act was done successfully, and lowers the finding to ``low`` when the
act was done on at least :data:`MIN_EARLIER_DAYS` earlier days (or on one earlier day inside the
engine's warm-up, when the identity's routine is being learned: see ``rules_warmup_hours``), unless
something else about it is unusual (an address whose subnet the identity never used, an identity
still learning, an attempt that was denied or failed): then the normal severity stays. A finding
of routine configuration work (``habit_scope``) is also lowered when its identity is an
administrator by behaviour: it did admin work (any habit-declared act) on as many earlier days.
Nothing here knows any policy, role or mount name: the habit is whatever the identity has done.

State is plain data (:meth:`HabitBook.dump` / :meth:`HabitBook.load`), bounded (least recently
done signatures go first), and time is event time.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import msgspec

__all__ = [
    "ADMIN_ACT",
    "ADMIN_SCOPE",
    "HABIT_LABEL",
    "HABIT_SCOPE_LABEL",
    "MIN_EARLIER_DAYS",
    "HabitRecord",
    "HabitBook",
    "habit_key",
    "network_key",
    "normal_act",
    "ORG_NETWORK_IDENTITIES",
]

#: The label a detector sets on a finding to declare the act a habit is kept for.
HABIT_LABEL: Final = "habit_act"
#: The label a detector sets (to :data:`ADMIN_SCOPE`) on a finding whose act is routine
#: configuration work when an established administrator does it: a policy written (not deleted,
#: not one the writer holds), a mount enabled or tuned (not disabled, moved or set to log in
#: clear). Such a finding is also lowered when its identity is an administrator by behaviour:
#: it did habit-declared admin work (any act) on enough earlier days, from the same network.
HABIT_SCOPE_LABEL: Final = "habit_scope"
ADMIN_SCOPE: Final = "admin"
#: The act under which every habit-declared act of an identity is also recorded (its admin work).
ADMIN_ACT: Final = "\x1eadmin work"
#: Done successfully on this many earlier distinct days (UTC) makes an act habitual.
MIN_EARLIER_DAYS: Final = 2
#: A subnet this many other identities used successfully on earlier days is the organisation's
#: own network (an office, the VPN): working from it is not "an address never used".
ORG_NETWORK_IDENTITIES: Final = 3
_DAY: Final = 86400.0
_MAX_SUBNETS: Final = 8
_NETWORK: Final = "\x1enetwork "
# A duration in an act's text (``8d``, ``25h``, ``7.9d``, ``768h``): bucketed, see normal_act.
_DURATION: Final = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)([smhdw])(?![\w.])")
_UNIT_SECONDS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# A comma-separated list in an act's text (an issued policy set).
_LIST: Final = re.compile(r"[^\s,]+(?:,[^\s,]+)+")


def network_key(subnet: str) -> str:
    """The record under which a :class:`HabitBook` keeps who worked from ``subnet`` (its
    ``subnets`` hold identity keys, and the day each first did)."""
    return _NETWORK + subnet


def _bucket(match: re.Match[str]) -> str:
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        return match.group(0)
    # Powers of two of minutes (edges at 64m, 17h, 34h, 5.7d, 11.4d, 22.8d: away from the TTLs
    # people type): 8d, 8.1d and 7.9d (or 192h) are one act, 8d and 32d are not.
    step = max(0, math.floor(math.log2(seconds / 60.0)))
    return f"~2^{step}m"


def normal_act(act: str) -> str:
    """An act as habits compare it: every duration bucketed (a token minted for ``8d`` one week
    and ``7.9d`` or ``192h`` the next is the same act), every comma-separated list sorted and
    without repeats (a policy set is a set, in whatever order it was given).

    >>> normal_act("ttl 8d b,a") == normal_act("ttl 192h a,b,a") == normal_act("ttl 7.9d a,b")
    True
    >>> normal_act("ttl 8d a") == normal_act("ttl 32d a")
    False
    """
    act = _LIST.sub(lambda m: ",".join(sorted(set(m.group(0).split(",")))), act)
    return _DURATION.sub(_bucket, act)


class HabitRecord(msgspec.Struct, kw_only=True, gc=False):
    """One signature's history: distinct successful days, the last one, the subnets used.

    Plain data without cycles (``gc=False``); ``subnets`` and ``subnet_days`` are tuples (each
    change makes new ones), 16 bytes smaller than lists.
    """

    days: int = 0
    last_day: int = -1
    last_ts: float = 0.0
    #: The last time on a day before ``last_day`` (what "last done" means on a repeat day).
    prev_ts: float = 0.0
    subnets: tuple[str, ...] = ()
    #: The day (UTC) each of ``subnets`` was first used: a subnet is known from the next day on.
    subnet_days: tuple[int, ...] = ()
    #: Done successfully during the engine's warm-up (its baseline), on at least one day.
    warmup: bool = False


def habit_key(identity_key: str, detector: str, act: str) -> str:
    """The habit signature of one act by one identity for one detector."""
    return f"{identity_key}\x1f{detector}\x1f{act}"


class HabitBook:
    """Per-signature habit records (insertion order = least recently done first).

    >>> book = HabitBook()
    >>> for day in range(3):
    ...     book.record("k", day * 86400.0 + 10.0, "10.0.0.0/24")
    >>> book.earlier_days("k", 3 * 86400.0)
    3
    """

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self.records: dict[str, HabitRecord] = {}

    def get(self, key: str) -> HabitRecord | None:
        return self.records.get(key)

    def earlier_days(self, key: str, ts: float) -> int:
        """Distinct days before the day of ``ts`` on which the act was done successfully."""
        rec = self.records.get(key)
        if rec is None:
            return 0
        return rec.days - (1 if rec.last_day >= int(ts // _DAY) else 0)

    def last_earlier(self, key: str, ts: float) -> float | None:
        """When the act was last done on a day before the day of ``ts`` (None: never)."""
        rec = self.records.get(key)
        if rec is None:
            return None
        last = rec.prev_ts if rec.last_day >= int(ts // _DAY) else rec.last_ts
        return last or None

    def knows_subnet(self, key: str, subnet: str, ts: float | None = None) -> bool:
        """True when the act was done from ``subnet`` before (before the day of ``ts`` if given:
        a subnet first used today, by this act or another, is not known yet)."""
        rec = self.records.get(key)
        if rec is None or subnet not in rec.subnets:
            return False
        if ts is None:
            return True
        i = rec.subnets.index(subnet)
        first = rec.subnet_days[i] if i < len(rec.subnet_days) else -1
        return first < int(ts // _DAY)

    def earlier_members(self, key: str, ts: float, exclude: str = "") -> int:
        """How many of the record's ``subnets`` entries (for a :func:`network_key` record: the
        identities) other than ``exclude`` were first recorded on a day before the day of ``ts``."""
        rec = self.records.get(key)
        if rec is None:
            return 0
        today = int(ts // _DAY)
        days = rec.subnet_days + (-1,) * (len(rec.subnets) - len(rec.subnet_days))
        return sum(1 for m, d in zip(rec.subnets, days, strict=True) if m != exclude and d < today)

    def habitual(self, key: str, ts: float) -> int:
        """The earlier days that make the act a habit at ``ts``, or 0 when it is not one.

        Habit: done on :data:`MIN_EARLIER_DAYS` earlier days, or on one earlier day when that was
        during the warm-up (the identity's routine then is its baseline, seen once a week).

        >>> book = HabitBook()
        >>> book.record("k", 10.0, None, warmup=True)
        >>> book.habitual("k", 7 * 86400.0), book.habitual("new", 7 * 86400.0)
        (1, 0)
        """
        earlier = self.earlier_days(key, ts)
        rec = self.records.get(key)
        if earlier >= MIN_EARLIER_DAYS or (earlier >= 1 and rec is not None and rec.warmup):
            return earlier
        return 0

    def record(self, key: str, ts: float, subnet: str | None, *, warmup: bool = False) -> None:
        """Remember one successful act at ``ts`` (from ``subnet`` when known; ``warmup``: done
        during the engine's warm-up)."""
        rec = self.records.pop(key, None) or HabitRecord()
        self.records[key] = rec  # most recently done last
        rec.warmup = rec.warmup or warmup
        day = int(ts // _DAY)
        if day > rec.last_day:
            rec.prev_ts = rec.last_ts
            rec.days += 1
            rec.last_day = day
        rec.last_ts = max(rec.last_ts, ts)
        if subnet and subnet not in rec.subnets:
            days = rec.subnet_days + (-1,) * (len(rec.subnets) - len(rec.subnet_days))
            rec.subnets = (*rec.subnets, subnet)[-_MAX_SUBNETS:]
            rec.subnet_days = (*days, day)[-_MAX_SUBNETS:]
        while len(self.records) > self.limit:
            del self.records[next(iter(self.records))]

    def dump(self) -> dict[str, Any]:
        """Plain data: ``{signature: [days, last_day, last_ts, prev_ts, [subnets], warmup,
        [subnet first days]]}``."""
        return {
            k: [r.days, r.last_day, r.last_ts, r.prev_ts, list(r.subnets), r.warmup, list(r.subnet_days)]
            for k, r in self.records.items()
        }

    def load(self, data: dict[str, Any]) -> None:
        """Restore :meth:`dump` output."""
        self.records = {
            str(k): HabitRecord(
                days=int(v[0]),
                last_day=int(v[1]),
                last_ts=float(v[2]),
                prev_ts=float(v[3]),
                subnets=tuple(str(x) for x in v[4]),
                warmup=bool(v[5]) if len(v) > 5 else False,
                subnet_days=tuple(int(x) for x in v[6]) if len(v) > 6 else (),
            )
            for k, v in dict(data).items()
        }
