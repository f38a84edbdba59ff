"""Alembic environment: always run on the connection labservice.db.migrate hands over (never from alembic.ini)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=None, render_as_batch=True, transaction_per_migration=False
)
context.run_migrations()
