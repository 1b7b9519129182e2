"""Consistency and observation: what each backend last reported, and each deployment's verdict.

Revision ID: 0002_consistency
Revises: 0001_catalog
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_consistency"
down_revision: str | None = "0001_catalog"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backend", schema=None) as batch_op:
        batch_op.add_column(sa.Column("observed_models", sa.JSON(), nullable=True))
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        # Server defaults, so that rows written before this revision get a valid verdict.
        batch_op.add_column(
            sa.Column("consistency", sa.String(length=16), server_default="unchecked", nullable=False)
        )
        batch_op.add_column(sa.Column("consistency_reason", sa.Text(), server_default="", nullable=False))
        batch_op.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.drop_column("checked_at")
        batch_op.drop_column("consistency_reason")
        batch_op.drop_column("consistency")
    with op.batch_alter_table("backend", schema=None) as batch_op:
        batch_op.drop_column("observed_models")
