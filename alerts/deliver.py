"""Delivery: take due items from the outbox, hand them to their channel, record the outcome.

::

    alerts.errors.AlertsError
    └── alerts.errors.DeliveryError  root of every error raised by delivery and the channels
        ├── ConfigError              a channel configuration is invalid (never quotes a secret value)
        ├── SecretError              a secret could not be loaded (names the source, never the value)
        └── BlockedDestination       the SSRF guard refused a destination

One status classifier (:func:`classify_status`) decides what an HTTP answer means for every
HTTP channel: 2xx done, 429 and 5xx retried, 410 disables the endpoint, every other 4xx and every
3xx fails permanently (redirects are never followed: a webhook that redirects is misconfigured or
hijacked, and following it would defeat the SSRF guard).

Retries follow a bounded schedule (:class:`RetryPolicy`, by default the Standard Webhooks one:
immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) with jitter, a cap, and ``Retry-After``
honoured. When the schedule is exhausted the item ends ``failed`` in the outbox, is counted, and
logged; nothing is dropped silently.

:class:`DeliveryWorker` runs one lane (a thread) per endpoint, so a slow or unreachable endpoint
only ever delays its own items. Within a lane items go out in creation order; after a retryable
failure the lane stops and the remaining items wait behind the failed one.
"""

from __future__ import annotations

import email.utils
import errno
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from alerts.errors import DeliveryError

if TYPE_CHECKING:
    from alerts.channels.base import Channel, Delivery
    from alerts.outbox import Outbox, OutboxItem

__all__ = [
    "DEFAULT_SCHEDULE",
    "BlockedDestination",
    "ConfigError",
    "DeliveryError",
    "DeliveryStats",
    "DeliveryWorker",
    "RetryPolicy",
    "SecretError",
    "Verdict",
    "classify_status",
    "describe_exception",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)


class ConfigError(DeliveryError):
    """A channel or delivery configuration is invalid."""


class SecretError(DeliveryError):
    """A secret could not be loaded. The message names where it was looked for, never a value."""


class BlockedDestination(DeliveryError):
    """The SSRF guard refused a URL or host (scheme, or an address in a blocked range)."""


# --- the status classifier ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an HTTP status means for delivery."""

    ok: bool
    retryable: bool
    disable: bool = False


def classify_status(status: int) -> Verdict:
    """Classify an HTTP status code: 2xx ok; 429/5xx retry; 410 disable; other 3xx/4xx (and 1xx,
    which a finished exchange should never end with) fail permanently."""
    if 200 <= status <= 299:
        return Verdict(ok=True, retryable=False)
    if status == 429 or 500 <= status <= 599:
        return Verdict(ok=False, retryable=True)
    if status == 410:
        return Verdict(ok=False, retryable=False, disable=True)
    return Verdict(ok=False, retryable=False)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent
    or unparseable. A date in the past yields 0."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - now)


def describe_exception(exc: BaseException) -> str:
    """A short, secret-free description of a transport exception: its class and, for OS errors,
    the errno name. Exception messages are not used because some libraries quote the URL."""
    name = type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return f"{name} ({errno.errorcode.get(cause.errno, str(cause.errno))})"
        cause = cause.__cause__ or cause.__context__
    return name


# --- retry schedule -------------------------------------------------------------------------------

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
            raise ConfigError("retry schedule must have at least one attempt")
        if any(d < 0 or not math.isfinite(d) for d in self.schedule):
            raise ConfigError("retry delays must be finite and >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError("retry jitter must be within [0, 1]")
        if self.cap <= 0:
            raise ConfigError("retry cap must be > 0")

    @classmethod
    def exponential(
        cls, *, attempts: int, base: float, factor: float = 2.0, cap: float = 36000.0, jitter: float = 0.1
    ) -> RetryPolicy:
        """``attempts`` attempts, the first immediate, then ``base * factor**k`` capped."""
        if attempts < 1:
            raise ConfigError("attempts must be >= 1")
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


# --- the worker -----------------------------------------------------------------------------------


@dataclass(slots=True)
class DeliveryStats:
    """Counters by outcome; read with :meth:`snapshot`."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0
    disabled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, outcome: str) -> None:
        with self.lock:
            setattr(self, outcome, getattr(self, outcome) + 1)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                "delivered": self.delivered,
                "retried": self.retried,
                "failed": self.failed,
                "disabled": self.disabled,
            }


ChannelLookup = Callable[["OutboxItem"], "Channel | None"]


def lookup_by_endpoint(channels: Mapping[str, Channel]) -> ChannelLookup:
    """Find an item's channel by its ``endpoint`` key, falling back to the receiver's only
    channel of the item's kind (keys are ``receiver/kind/index``)."""

    def find(item: OutboxItem) -> Channel | None:
        ch = channels.get(item.endpoint)
        if ch is not None:
            return ch
        prefix = f"{item.receiver}/{item.channel}/"
        matches = [c for key, c in channels.items() if key.startswith(prefix)]
        return matches[0] if len(matches) == 1 else None

    return find


class _Lane:
    """One endpoint's queue and thread: items run one at a time, in order."""

    def __init__(self, worker: DeliveryWorker, endpoint: str) -> None:
        self.worker = worker
        self.endpoint = endpoint
        self.queue: queue.Queue[tuple[OutboxItem, float] | None] = queue.Queue()
        self.known: set[int] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"deliver:{endpoint}", daemon=True)
        self.thread.start()

    def offer(self, item: OutboxItem, lease_until: float) -> None:
        with self.lock:
            if item.id in self.known:
                return
            self.known.add(item.id)
        self.queue.put((item, lease_until))

    def idle(self) -> bool:
        with self.lock:
            return not self.known

    def _run(self) -> None:
        blocked = False
        while True:
            entry = self.queue.get()
            if entry is None:
                return
            item, lease_until = entry
            try:
                # Items behind a failed one (and any whose lease is too short for another
                # attempt) are left alone: their lease expires and the outbox hands them out again,
                # still in order.
                headroom = lease_until - self.worker.clock()
                if not blocked and headroom >= self.worker.attempt_budget:
                    outcome = self.worker.attempt(item)
                    blocked = outcome == "retried"
                    # the endpoint's next item is claimable now; do not wait for the next poll
                    self.worker._wake.set()
            except Exception:  # a bug must not kill the lane; the lease returns the item
                logger.exception("delivery lane %s crashed on item %d", self.endpoint, item.id)
            finally:
                with self.lock:
                    self.known.discard(item.id)
                if self.queue.empty():
                    blocked = False

    def stop(self, timeout: float) -> None:
        self.queue.put(None)
        self.thread.join(timeout)


class DeliveryWorker:
    """Claims due outbox items and delivers them, one lane (thread) per endpoint.

    ``channels`` maps endpoint keys to channels (see :func:`lookup_by_endpoint`), or is a callable
    finding an item's channel. ``attempt_timeout`` is the per-attempt budget the channels were built
    with; a lane only starts an attempt if the claim's lease has at least that much time left.
    Use :meth:`run_once` from a loop you own (tests, the pipeline) or :meth:`start`/:meth:`stop`.
    """

    def __init__(
        self,
        outbox: Outbox,
        channels: Mapping[str, Channel] | ChannelLookup,
        *,
        policy: RetryPolicy | None = None,
        attempt_timeout: float = 10.0,
        lease_seconds: float = 60.0,
        claim_limit: int = 100,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if lease_seconds <= attempt_timeout:
            raise ConfigError("lease_seconds must exceed attempt_timeout")
        self.outbox = outbox
        self.lookup: ChannelLookup = (
            lookup_by_endpoint(channels) if isinstance(channels, Mapping) else channels
        )
        self.policy = policy or RetryPolicy()
        self.attempt_budget = attempt_timeout
        self.lease_seconds = lease_seconds
        self.claim_limit = claim_limit
        self.poll_interval = poll_interval
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = DeliveryStats()
        self._lanes: dict[str, _Lane] = {}
        self._lanes_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._poller: threading.Thread | None = None

    # -- one attempt (synchronous; also what the lanes run) --

    def attempt(self, item: OutboxItem) -> str:
        """Try ``item`` once and record the outcome in the outbox. Returns ``delivered``,
        ``retried``, ``failed`` or ``disabled``."""
        now = self.clock()
        channel = self.lookup(item)
        if channel is None:
            reason = f"no channel configured for endpoint {item.endpoint}"
            self.outbox.mark_failed(item.id, now, reason)
            logger.warning("outbox item %d failed: %s", item.id, reason)
            self.stats.add("failed")
            return "failed"
        try:
            result: Delivery = channel.send(item.payload, message_id=item.message_id)
        except Exception as exc:  # a channel bug is retried like a transport error, never lost
            logger.exception("channel %s raised on item %d", item.channel, item.id)
            from alerts.channels.base import Delivery as _Delivery

            result = _Delivery(ok=False, retryable=True, reason=f"channel error: {describe_exception(exc)}")
        now = self.clock()
        attempts_made = item.attempts + 1
        if result.ok:
            self.outbox.mark_delivered(item.id, now, result.reason or "ok")
            if item.attempts:
                logger.info("outbox item %d delivered after %d attempts", item.id, attempts_made)
            self.stats.add("delivered")
            return "delivered"
        if result.disable:
            self.outbox.disable_endpoint(item.endpoint, now, result.reason)
            logger.warning("endpoint %s disabled: %s", item.endpoint, result.reason)
            self.stats.add("disabled")
            return "disabled"
        delay = (
            self.policy.delay_after(attempts_made, result.retry_after, self.rng) if result.retryable else None
        )
        if delay is None:
            why = (
                result.reason
                if not result.retryable
                else f"gave up after {attempts_made} attempts: {result.reason}"
            )
            self.outbox.mark_failed(item.id, now, why)
            logger.warning("outbox item %d to %s failed: %s", item.id, item.endpoint, why)
            self.stats.add("failed")
            return "failed"
        self.outbox.mark_retry(item.id, now, now + delay, result.reason)
        logger.debug("outbox item %d retry in %.1fs: %s", item.id, delay, result.reason)
        self.stats.add("retried")
        return "retried"

    def drain(self, now: float | None = None) -> dict[str, int]:
        """Deliver everything due at ``now`` in this thread, endpoint by endpoint, until nothing
        more is claimable (for tests and one-shot runs). Returns counts by outcome."""
        counts: dict[str, int] = {}
        while True:
            items = self.outbox.claim_due(
                self.clock() if now is None else now, limit=self.claim_limit, lease_seconds=self.lease_seconds
            )
            if not items:
                return counts
            blocked: set[str] = set()
            for item in items:
                if item.endpoint in blocked:
                    continue  # stays leased: the outbox hands it out again after the failed one
                outcome = self.attempt(item)
                counts[outcome] = counts.get(outcome, 0) + 1
                if outcome == "retried":
                    blocked.add(item.endpoint)

    # -- concurrent mode --

    def run_once(self) -> int:
        """Claim due items and hand each to its endpoint's lane; never blocks on a send.
        Returns how many items were handed out."""
        now = self.clock()
        items = self.outbox.claim_due(now, limit=self.claim_limit, lease_seconds=self.lease_seconds)
        for item in items:
            with self._lanes_lock:
                lane = self._lanes.get(item.endpoint)
                if lane is None:
                    lane = self._lanes[item.endpoint] = _Lane(self, item.endpoint)
            lane.offer(item, now + self.lease_seconds)
        return len(items)

    def idle(self) -> bool:
        """True when no lane holds an item."""
        with self._lanes_lock:
            lanes = list(self._lanes.values())
        return all(lane.idle() for lane in lanes)

    def start(self) -> DeliveryWorker:
        """Poll the outbox every ``poll_interval`` seconds in a background thread."""
        if self._poller is not None:
            return self

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    self.run_once()
                except Exception:  # the store may be briefly unavailable; keep polling
                    logger.exception("outbox poll failed")
                self._wake.wait(self.poll_interval)

        self._poller = threading.Thread(target=loop, name="deliver:poll", daemon=True)
        self._poller.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and let each lane finish its current attempt."""
        self._stop.set()
        self._wake.set()
        if self._poller is not None:
            self._poller.join(timeout)
            self._poller = None
        with self._lanes_lock:
            lanes = list(self._lanes.values())
            self._lanes.clear()
        for lane in lanes:
            lane.stop(timeout)

    def __enter__(self) -> DeliveryWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
