"""A subject is unique only within its issuer: the issuer joins the usage row's identity.

Before this revision the same subject name from two issuers (two people) was one row, holding the
first issuer. Existing rows stay unique under the wider key. Downgrading folds rows that differ only
in the issuer into one (counts summed, the latest issuer kept), as the old key would have recorded them.

Revision ID: 0005_usage_issuer_key
Revises: 0004_repair_json_nulls
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_usage_issuer_key"
down_revision: str | None = "0004_repair_json_nulls"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KEY = ["job_id", "dataset", "model", "version", "backend", "subject"]
NEW_KEY = [*OLD_KEY, "issuer"]
NAME = "uq_usage_job_id"  # the naming convention names it after its first column


def upgrade() -> None:
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_constraint(NAME, type_="unique")
        batch_op.create_unique_constraint(NAME, NEW_KEY)


def _fold_issuers() -> None:
    """Merge rows that the old key cannot tell apart into the one with the latest ``last_seen``."""
    columns = [*NEW_KEY, "id", "n_requests", "n_inferences", "first_seen", "last_seen"]
    usage = sa.table("usage", *(sa.column(c) for c in columns))
    connection = op.get_bind()
    key = [usage.c[c] for c in OLD_KEY]
    groups = connection.execute(sa.select(*key).group_by(*key).having(sa.func.count() > 1)).all()
    for group in groups:
        match = [usage.c[c] == value for c, value in zip(OLD_KEY, group, strict=True)]
        rows = connection.execute(
            sa.select(usage).where(*match).order_by(usage.c.last_seen.desc(), usage.c.id.desc())
        ).all()
        keep, rest = rows[0], rows[1:]
        connection.execute(
            usage.update()
            .where(usage.c.id == keep.id)
            .values(
                n_requests=sum(r.n_requests for r in rows),
                n_inferences=sum(r.n_inferences for r in rows),
                first_seen=min(r.first_seen for r in rows),
            )
        )
        connection.execute(usage.delete().where(usage.c.id.in_([r.id for r in rest])))


def downgrade() -> None:
    _fold_issuers()
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_constraint(NAME, type_="unique")
        batch_op.create_unique_constraint(NAME, OLD_KEY)
