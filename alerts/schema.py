"""The alert store's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Times are epoch seconds in double precision: the routing and delivery code works on injected
float clocks, and numeric times sort and compare the same way on both databases. The full
``vaultwatch.alert/v1`` JSON is kept verbatim in ``alerts.alert_json``; the other columns are the
fields the API filters and sorts on. The Alembic migrations in ``alerts/migrations`` create
exactly these tables; a test checks that the two agree.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "metadata",
    "alerts",
    "alert_events",
    "status_history",
    "silences",
    "verdicts",
    "notification_log",
    "outbox",
    "checkpoints",
    "consumer_offsets",
]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Time = sa.Double

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("detector", sa.String(128), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("severity_rank", sa.Integer, nullable=False),
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("identity_key", sa.Text, nullable=False),
    sa.Column("dedup_key", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("search_text", sa.Text, nullable=False),
    sa.Column("first_seen", Time, nullable=False),
    sa.Column("last_seen", Time, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("alert_json", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Index(None, "status", "last_seen"),
    sa.Index(None, "detector"),
    sa.Index(None, "identity_key"),
    sa.Index(None, "last_seen", "id"),
)

alert_events = sa.Table(
    "alert_events",
    metadata,
    sa.Column("alert_id", sa.String(64), sa.ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Index(None, "request_id"),
)

status_history = sa.Table(
    "status_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.String(64), sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("from_status", sa.String(16), nullable=True),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Index(None, "alert_id", "id"),
)

silences = sa.Table(
    "silences",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("matchers", sa.Text, nullable=False),
    sa.Column("starts_at", Time, nullable=False),
    sa.Column("ends_at", Time, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("expired", sa.Boolean, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Index(None, "ends_at"),
)

verdicts = sa.Table(
    "verdicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.String(64), sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Index(None, "at"),
)

notification_log = sa.Table(
    "notification_log",
    metadata,
    sa.Column("group_key", sa.Text, primary_key=True),
    sa.Column("receiver", sa.String(256), primary_key=True),
    sa.Column("integration", sa.String(256), primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("firing_ids", sa.Text, nullable=False),
    sa.Column("sent_at", Time, nullable=False),
    sa.Column("sequence", sa.Integer, nullable=False),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("receiver", sa.String(256), nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("endpoint", sa.String(512), nullable=False),
    sa.Column("message_id", sa.String(128), nullable=False, unique=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("next_attempt_at", Time, nullable=False),
    sa.Column("lease_until", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("last_reason", sa.Text, nullable=True),
    sa.Index(None, "state", "endpoint", "id"),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

consumer_offsets = sa.Table(
    "consumer_offsets",
    metadata,
    sa.Column("group_id", sa.String(256), primary_key=True),
    sa.Column("topic", sa.String(256), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)
