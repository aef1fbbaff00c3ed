"""The seams of ``detect``: what a detector sees and what it returns.

Detection is pure: no network, no database, no wall clock. Time is the event's own time
(``event.ts``); randomness comes from an injected seed.

* A :class:`Finding` is one detector's verdict on one or more events. ``family`` groups signals
  for risk accumulation ("three or more distinct families fire"); ``alerting=True`` marks
  high-precision facts (rules, access-model violations) that become alerts on their own, while
  behavioural signals (``alerting=False``) feed the per-identity risk score.
* A :class:`Detector` turns an event plus its :class:`DetectContext` into findings. Its own
  state (windows, counters) is plain data: ``state()`` returns it and ``load()`` restores it, so
  the engine can checkpoint it with Kafka offsets.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from detect.alert import Reason
from ingest.event import AuditEvent, Identity

__all__ = ["Finding", "Detector", "DetectContext", "BaselineView", "FAMILIES"]

#: Signal families. Rules use ``rule``; the access model ``policy``; behaviour the others.
FAMILIES = ("rule", "policy", "novelty", "rarity", "time", "volume", "error", "model", "rotation")


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    detector: str  # kebab-case, e.g. "root-token-use"
    title: str
    severity: str  # info | low | medium | high | critical
    score: float  # 0-100 before any cold-start cap
    family: str
    identity: Identity
    dedup_key: str  # what makes two findings "the same alert" (detector + identity + specifics)
    event_ids: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    source_addresses: tuple[str, ...] = ()
    first_ts: float = 0.0
    last_ts: float = 0.0
    reasons: tuple[Reason, ...] = ()
    alerting: bool = True
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class BaselineView(Protocol):
    """Read-only questions a rule may ask of an identity's behavioural baseline."""

    def in_learning(self, identity_key: str, now: float) -> bool:
        """True while the identity is new or back from dormancy (novelty alone must not alert)."""
        ...

    def count(self, identity_key: str, feature: str, value: str, horizon: str = "long") -> float:
        """Decayed count of ``value`` for ``feature`` (e.g. ``"op_template"``) for the identity;
        ``horizon`` is ``"short"`` (about 10 days) or ``"long"`` (about 180 days)."""
        ...

    def total(self, identity_key: str, horizon: str = "long") -> float:
        """Decayed number of events seen for the identity."""
        ...


class DetectContext(Protocol):
    """What the engine hands a detector with each event."""

    @property
    def baselines(self) -> BaselineView: ...

    @property
    def config(self) -> dict[str, Any]: ...


class Detector(Protocol):
    """One detector: ``observe`` is called once per event in event-time order.

    A detector may also declare, as class attributes, which entries it can judge at all; the
    engine then skips ``observe`` for the others (a promise that ``observe`` would return no
    finding and change no state for them): ``only_responses`` (bool), ``only_operations`` and
    ``only_outcomes`` (frozensets; None means any; an entry without operation counts as ``""``).
    """

    name: str

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]: ...

    def state(self) -> dict[str, Any]:
        """Plain-data state (JSON/msgpack-serialisable) for checkpointing."""
        ...

    def load(self, state: dict[str, Any]) -> None: ...
