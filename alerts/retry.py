"""The bounded retry schedule of delivery (:class:`RetryPolicy`).

By default the Standard Webhooks one: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with
jitter, a cap, and ``Retry-After`` honoured. The channel configuration builds a policy
(:meth:`alerts.channels.ChannelsConfig.retry_policy`) and the delivery worker follows it; this
module sits below both so neither imports the other for it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from alerts.errors import ChannelConfigError

__all__ = ["DEFAULT_SCHEDULE", "RetryPolicy"]

#: Standard Webhooks' example schedule: the delay before each attempt, the first is immediate.
DEFAULT_SCHEDULE: Final = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A bounded retry schedule.

    ``schedule[i]`` is the delay before attempt ``i`` (the first entry is the initial attempt, so
    ``len(schedule)`` is the number of attempts). Each retry delay is spread by ``jitter`` (a
    fraction, so many items failing together do not retry in lockstep), raised to ``Retry-After``
    when the receiver asked for longer, and capped at ``cap`` seconds.

    >>> RetryPolicy(schedule=(0, 1, 2), jitter=0.0).delay_after(1)
    1.0
    >>> RetryPolicy(schedule=(0, 1, 2), jitter=0.0).delay_after(3) is None
    True
    """

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.1
    cap: float = 36000.0

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ChannelConfigError("retry schedule must have at least one attempt")
        if any(d < 0 or not math.isfinite(d) for d in self.schedule):
            raise ChannelConfigError("retry delays must be finite and >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ChannelConfigError("retry jitter must be within [0, 1]")
        if self.cap <= 0:
            raise ChannelConfigError("retry cap must be > 0")

    @classmethod
    def exponential(
        cls, *, attempts: int, base: float, factor: float = 2.0, cap: float = 36000.0, jitter: float = 0.1
    ) -> RetryPolicy:
        """``attempts`` attempts, the first immediate, then ``base * factor**k`` capped."""
        if attempts < 1:
            raise ChannelConfigError("attempts must be >= 1")
        delays = (0.0, *(min(cap, base * factor**k) for k in range(attempts - 1)))
        return cls(schedule=delays, jitter=jitter, cap=cap)

    def scaled(self, factor: float) -> RetryPolicy:
        """The same schedule compressed (or stretched) by ``factor``; for tests and drills."""
        return RetryPolicy(
            schedule=tuple(d * factor for d in self.schedule), jitter=self.jitter, cap=self.cap * factor
        )

    @property
    def max_attempts(self) -> int:
        return len(self.schedule)

    def delay_after(
        self, attempts_made: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Delay before the next attempt once ``attempts_made`` attempts failed; None once the
        schedule is exhausted (the item must then end ``failed``)."""
        if attempts_made >= len(self.schedule):
            return None
        delay = self.schedule[attempts_made]
        if self.jitter and delay > 0:
            r = (rng or random).random()
            delay *= 1.0 + self.jitter * (2.0 * r - 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.cap)
