"""Alembic migrations of the gateway's store (:mod:`tether.serve.store`); applied by ``connect``."""
