"""The API's own audit trail: who did what to which alert or silence, when, and how it went.

Two small tables in the alert store's database, created by :meth:`ApiAudit.create_tables` (not
by the store's migrations, which belong to the alerts package): ``api_audit`` (one row per
analyst action, bulk actions included) and ``api_assignments`` (the current assignee of an
alert). Entries carry no secrets: actors are user names or API key ids, details are the
request's validated fields.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

__all__ = ["Actor", "ApiAudit", "AuditEntry", "metadata", "api_audit", "api_assignments"]

log = logging.getLogger(__name__)

metadata = sa.MetaData()

api_audit = sa.Table(
    "api_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Index("ix_api_audit_at", "at"),
)

api_assignments = sa.Table(
    "api_assignments",
    metadata,
    sa.Column("alert_id", sa.String(64), primary_key=True),
    sa.Column("assignee", sa.String(256), nullable=False),
    sa.Column("assigned_by", sa.String(256), nullable=False),
    sa.Column("at", sa.Double, nullable=False),
)


class Actor(Protocol):
    """Who acted: an authenticated caller (:class:`vaultwatch.api.auth.Principal`)."""

    @property
    def subject(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def method(self) -> str: ...


@dataclass(frozen=True)
class AuditEntry:
    """One recorded action."""

    id: int
    at: float
    actor: str
    role: str
    method: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]
    request_id: str


class ApiAudit:
    """Writes and reads the API audit trail and alert assignments."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._clock = clock

    def create_tables(self) -> None:
        """Create the tables if they do not exist (idempotent; safe with several API processes)."""
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            # Another process created them between our check and our CREATE.
            log.info("API audit tables created concurrently")

    def record(
        self,
        *,
        actor: str,
        role: str,
        method: str,
        action: str,
        target: str,
        outcome: str,
        request_id: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one entry."""
        with self.engine.begin() as conn:
            conn.execute(
                api_audit.insert().values(
                    at=self._clock(),
                    actor=actor,
                    role=role,
                    method=method,
                    action=action,
                    target=target[:2000],
                    outcome=outcome,
                    detail=json.dumps(dict(detail or {}), sort_keys=True, default=str)[:8000],
                    request_id=request_id,
                )
            )
        log.info("api audit: %s %s %s -> %s", actor, action, target[:200], outcome)

    def record_action(
        self,
        who: Actor,
        action: str,
        target: str,
        *,
        request_id: str,
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one entry for an action by ``who`` (its subject, role and auth method)."""
        self.record(
            actor=who.subject,
            role=who.role,
            method=who.method,
            action=action,
            target=target,
            outcome=outcome,
            request_id=request_id,
            detail=detail,
        )

    def entries(
        self, *, limit: int = 100, before_id: int | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        """The newest entries first; ``before_id`` pages backwards."""
        q = sa.select(api_audit).order_by(api_audit.c.id.desc()).limit(limit)
        if before_id is not None:
            q = q.where(api_audit.c.id < before_id)
        if actor is not None:
            q = q.where(api_audit.c.actor == actor)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [
            AuditEntry(
                id=r.id,
                at=r.at,
                actor=r.actor,
                role=r.role,
                method=r.method,
                action=r.action,
                target=r.target,
                outcome=r.outcome,
                detail=json.loads(r.detail),
                request_id=r.request_id,
            )
            for r in rows
        ]

    def assign(self, alert_id: str, assignee: str, by: str) -> None:
        """Set (or with an empty ``assignee``, clear) an alert's assignee."""
        with self.engine.begin() as conn:
            conn.execute(api_assignments.delete().where(api_assignments.c.alert_id == alert_id))
            if assignee:
                conn.execute(
                    api_assignments.insert().values(
                        alert_id=alert_id, assignee=assignee, assigned_by=by, at=self._clock()
                    )
                )

    def assignees(self, alert_ids: list[str]) -> dict[str, str]:
        """alert id -> assignee for those that have one."""
        if not alert_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(api_assignments.c.alert_id, api_assignments.c.assignee).where(
                    api_assignments.c.alert_id.in_(alert_ids)
                )
            ).all()
        return {r.alert_id: r.assignee for r in rows}
