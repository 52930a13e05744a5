"""The review queue (items a guard escalated to people) and the labelling studio (people, sessions,
projects, members, items, labels).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ITEM_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER keys only


def upgrade() -> None:
    """Create the queue's and the studio's tables."""
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("deadline", sa.Float, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("guard", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("conversation", sa.JSON, nullable=False),
        sa.Column("reply", sa.Text, nullable=True),
        sa.Column("default_action", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_by", sa.String(32), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("decided_by", sa.String(32), nullable=True),
        sa.Column("decided_at", sa.Float, nullable=True),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
    )
    op.create_index("ix_review_items_created_at", "review_items", ["created_at"])
    op.create_index("ix_review_items_state", "review_items", ["state"])
    op.create_table(
        "studio_users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("disabled_at", sa.Float, nullable=True),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", sa.Float, nullable=True),
    )
    op.create_table(
        "studio_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_studio_sessions_user_id", "studio_sessions", ["user_id"])
    op.create_table(
        "studio_projects",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "studio_members",
        sa.Column("project_id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(32), primary_key=True),
    )
    op.create_table(
        "studio_items",
        sa.Column("id", _ITEM_ID, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("gold", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_studio_items_project_id", "studio_items", ["project_id"])
    op.create_table(
        "studio_labels",
        sa.Column("item_id", _ITEM_ID, primary_key=True),
        sa.Column("user_id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("lease_until", sa.Float, nullable=False),
        sa.Column("value", sa.JSON, nullable=True),
        sa.Column("labelled_at", sa.Float, nullable=True),
        sa.Column("seconds", sa.Float, nullable=True),
    )
    op.create_index("ix_studio_labels_project_id", "studio_labels", ["project_id"])


def downgrade() -> None:
    """Drop them."""
    for table in ("studio_labels", "studio_items", "studio_members", "studio_projects", "studio_sessions",
                  "studio_users", "review_items"):
        op.drop_table(table)
