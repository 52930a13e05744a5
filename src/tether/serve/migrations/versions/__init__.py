"""Alembic revisions of the gateway store, oldest first (each names the one it revises)."""
