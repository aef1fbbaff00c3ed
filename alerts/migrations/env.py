"""Alembic environment: always runs online, on the connection ``Store.migrate()`` hands over."""

from __future__ import annotations

from alembic import context

from alerts.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable from the alembic command line
    raise RuntimeError("run migrations through alerts.store.Store.migrate()")

# Batch mode lets later revisions ALTER tables on SQLite (which rebuilds them) and PostgreSQL alike.
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    version_table=context.config.attributes.get("version_table", "alembic_version"),
)
with context.begin_transaction():
    context.run_migrations()
