"""What every rule-style detector shares: the routing declarations, plain-data state, and how a
finding is made from the entry that triggered it.

:mod:`detect.rules` and :mod:`detect.correlate` build on :class:`RuleBase`; each adds only its
own configuration (and correlate its warm-up and habit helpers).
"""

from __future__ import annotations

from typing import Any, ClassVar

from detect.alert import Reason
from ingest.event import AuditEvent, Identity

from .policy import _finding
from .types import Finding

__all__ = ["RuleBase", "full_path", "rel_path"]


def rel_path(event: AuditEvent) -> str:
    """The request path relative to its namespace (``sys/...`` stays ``sys/...`` in a namespace)."""
    return event.request.path or event.path


def full_path(event: AuditEvent) -> str:
    """The full path, for titles and dedup keys (namespace included)."""
    return event.path or rel_path(event)


class RuleBase:
    """Common plumbing of a rule: routing declarations, plain-data state, finding construction."""

    name: str = ""
    family: str = "rule"
    #: Which entries the rule can judge at all (see :class:`~detect.types.Detector`): the engine
    #: does not call ``observe`` for others, which every rule would answer with no finding.
    only_responses: ClassVar[bool] = False
    only_operations: ClassVar[frozenset[str] | None] = None
    only_outcomes: ClassVar[frozenset[str] | None] = None

    def state(self) -> dict[str, Any]:
        """Plain-data state (stateless rules return an empty mapping)."""
        return {}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""

    def _make(
        self,
        event: AuditEvent,
        *,
        title: str,
        severity: str,
        key: str,
        reasons: list[Reason],
        identity: Identity | None = None,
        event_ids: tuple[str, ...] | None = None,
        labels: dict[str, str] | None = None,
        first_ts: float | None = None,
    ) -> Finding:
        """A finding about ``event`` (or about ``identity``), deduplicated per identity by ``key``."""
        who = identity or event.identity
        return _finding(
            self.name,
            self.family,
            event,
            identity=who,
            title=title,
            severity=severity,
            dedup_key=f"{self.name}:{who.key}:{key}",
            reasons=reasons,
            paths=(full_path(event),),
            first_ts=event.ts if first_ts is None else first_ts,
            last_ts=event.ts,
            event_ids=event_ids,
            labels=labels,
        )
