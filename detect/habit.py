"""Habits: admin work an identity does again and again is not news.

A rule that judges configuration facts (a token issued with a policy its creator does not hold, an
orphan token, a policy edit, a mount tune) is right to alert the first time, and wrong to page
every week when a security administrator does the same work. A detector declares the *act* of a
finding (a normalised description: the issued policy set, the policy name, the mount) in the
finding's ``habit_act`` label; the engine keeps, per habit signature (identity key, detector,
act), the distinct days the act was done successfully, and lowers the finding to ``low`` when the
act was done on at least :data:`MIN_EARLIER_DAYS` earlier days, unless something else about it is
unusual (an address whose subnet the identity never used, an identity still learning, an attempt
that was denied or failed): then the normal severity stays. Nothing here knows any policy, role
or mount name: the habit is whatever the identity itself has done.

State is plain data (:meth:`HabitBook.dump` / :meth:`HabitBook.load`), bounded (least recently
done signatures go first), and time is event time.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["HABIT_LABEL", "MIN_EARLIER_DAYS", "HabitRecord", "HabitBook", "habit_key"]

#: The label a detector sets on a finding to declare the act a habit is kept for.
HABIT_LABEL: Final = "habit_act"
#: Done successfully on this many earlier distinct days (UTC) makes an act habitual.
MIN_EARLIER_DAYS: Final = 2
_DAY: Final = 86400.0
_MAX_SUBNETS: Final = 8


class HabitRecord(msgspec.Struct, kw_only=True):
    """One signature's history: distinct successful days, the last one, the subnets used."""

    days: int = 0
    last_day: int = -1
    last_ts: float = 0.0
    #: The last time on a day before ``last_day`` (what "last done" means on a repeat day).
    prev_ts: float = 0.0
    subnets: list[str] = msgspec.field(default_factory=list)


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

    def knows_subnet(self, key: str, subnet: str) -> bool:
        rec = self.records.get(key)
        return rec is not None and subnet in rec.subnets

    def record(self, key: str, ts: float, subnet: str | None) -> None:
        """Remember one successful act at ``ts`` (from ``subnet`` when known)."""
        rec = self.records.pop(key, None) or HabitRecord()
        self.records[key] = rec  # most recently done last
        day = int(ts // _DAY)
        if day > rec.last_day:
            rec.prev_ts = rec.last_ts
            rec.days += 1
            rec.last_day = day
        rec.last_ts = max(rec.last_ts, ts)
        if subnet and subnet not in rec.subnets:
            rec.subnets = [*rec.subnets, subnet][-_MAX_SUBNETS:]
        while len(self.records) > self.limit:
            del self.records[next(iter(self.records))]

    def dump(self) -> dict[str, Any]:
        """Plain data: ``{signature: [days, last_day, last_ts, prev_ts, [subnets]]}``."""
        return {
            k: [r.days, r.last_day, r.last_ts, r.prev_ts, list(r.subnets)] for k, r in self.records.items()
        }

    def load(self, data: dict[str, Any]) -> None:
        """Restore :meth:`dump` output."""
        self.records = {
            str(k): HabitRecord(
                days=int(v[0]),
                last_day=int(v[1]),
                last_ts=float(v[2]),
                prev_ts=float(v[3]),
                subnets=[str(x) for x in v[4]],
            )
            for k, v in dict(data).items()
        }
