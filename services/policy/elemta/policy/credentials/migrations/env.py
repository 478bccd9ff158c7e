"""Alembic's entry: migrations run on the connection the store hands over."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="elemta_schema_version")
with context.begin_transaction():
    context.run_migrations()
