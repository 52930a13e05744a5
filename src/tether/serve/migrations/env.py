"""Alembic's environment for the gateway's store: run on the connection :func:`tether.serve.store.migrate`
hands over (``config.attributes["connection"]``), inside its transaction. This folder is Alembic's, not a
Python package: its files are run by Alembic, never imported (so tether's module discovery skips them)."""

from alembic import context

from tether.serve.store import METADATA

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
