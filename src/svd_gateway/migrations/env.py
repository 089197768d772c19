"""Alembic's environment: migrations run on the connection `svd_gateway.migrate` hands over, inside its
transaction (and, on PostgreSQL, under its advisory lock)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
