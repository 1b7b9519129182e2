"""Repair list and object fields that a PATCH with an explicit null stored as JSON ``null``.

The API refuses such a PATCH now; rows written before made every read of them (and the consistency
check of the whole catalog) fail until repaired. Each gets its empty value back. Nothing to undo.

Revision ID: 0004_repair_json_nulls
Revises: 0003_usage_dataset_key
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_repair_json_nulls"
down_revision: str | None = "0003_usage_dataset_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> column -> its empty value
EMPTY: dict[str, dict[str, object]] = {
    "dataset": {"storage_uris": [], "metadata": {}},
    "model_version": {"inputs": [], "outputs": [], "allowed_groups": [], "tags": []},
}


def upgrade() -> None:
    connection = op.get_bind()
    for table, columns in EMPTY.items():
        for column, empty in columns.items():
            t = sa.table(table, sa.column(column, sa.JSON()))
            c = t.c[column]
            # JSON null is stored as the text 'null' (SQLite's TEXT, PostgreSQL's json).
            connection.execute(
                t.update().where(sa.or_(c.is_(None), sa.cast(c, sa.Text()) == "null")).values({column: empty})
            )


def downgrade() -> None:
    pass
