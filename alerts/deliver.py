"""Delivery: take due items from the outbox, hand them to their channel, record the outcome.

What an answer means is decided by the one status classifier in :mod:`alerts.channels._http`;
how long to wait before the next attempt by :class:`alerts.retry.RetryPolicy` (bounded, with
jitter, a cap, and ``Retry-After`` honoured). When the schedule is exhausted the item ends
``failed`` in the outbox, is counted, and logged; nothing is dropped silently. Errors raised here
are :class:`alerts.errors.ChannelConfigError` (an invalid worker configuration).

:class:`DeliveryWorker` runs one lane (a thread) per endpoint, so a slow or unreachable endpoint
only ever delays its own items. Within a lane items go out in creation order; after a retryable
failure the lane stops and the remaining items wait behind the failed one.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from alerts.channels._http import describe_exception
from alerts.channels.base import Channel, Delivery
from alerts.errors import ChannelConfigError
from alerts.outbox import Outbox, OutboxItem
from alerts.retry import RetryPolicy

__all__ = [
    "ChannelLookup",
    "DeliveryStats",
    "DeliveryWorker",
    "lookup_by_endpoint",
]

logger = logging.getLogger(__name__)


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


ChannelLookup = Callable[[OutboxItem], Channel | None]


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
            raise ChannelConfigError("lease_seconds must exceed attempt_timeout")
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
            result = Delivery(ok=False, retryable=True, reason=f"channel error: {describe_exception(exc)}")
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
