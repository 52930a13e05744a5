"""The monitor's windows (signal means per window, per scope) and alarms (with the actions taken).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER keys only


def upgrade() -> None:
    """Create the monitor's tables."""
    op.create_table(
        "monitor_windows",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("window", sa.BigInteger, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("means", sa.JSON, nullable=False),
    )
    op.create_index("ix_monitor_windows_at", "monitor_windows", ["at"])
    op.create_index("ix_monitor_windows_scope", "monitor_windows", ["scope"])
    op.create_table(
        "monitor_alarms",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("signal", sa.String(200), nullable=False),
        sa.Column("window", sa.BigInteger, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("z", sa.Float, nullable=False),
        sa.Column("mean", sa.Float, nullable=False),
        sa.Column("reference", sa.Float, nullable=False),
        sa.Column("actions", sa.JSON, nullable=False),
        sa.Column("examples", sa.JSON, nullable=False),
    )
    op.create_index("ix_monitor_alarms_at", "monitor_alarms", ["at"])
    op.create_index("ix_monitor_alarms_scope", "monitor_alarms", ["scope"])


def downgrade() -> None:
    """Drop them."""
    op.drop_table("monitor_alarms")
    op.drop_table("monitor_windows")
