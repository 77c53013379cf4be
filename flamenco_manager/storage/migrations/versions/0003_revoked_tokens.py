"""Revoked user tokens: a denylist of token IDs (``jti``, or a digest of older tokens).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flamenco_manager.storage.schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the denylist."""
    op.create_table(
        "revoked_tokens",
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "revoked", flamenco_manager.storage.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires", flamenco_manager.storage.schema.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("token_id", name=op.f("pk_revoked_tokens")),
    )


def downgrade() -> None:
    """Drop the denylist."""
    op.drop_table("revoked_tokens")
