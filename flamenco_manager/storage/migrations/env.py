"""Alembic environment: migrations run on the connection the manager hands over."""

from __future__ import annotations

from alembic import context

from flamenco_manager.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through flamenco_manager.storage.database.Database")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
