"""The platform database: job leases and cancel requests, per-owner quota rows, the legacy-import log.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("engine_id", sa.Text))
    op.add_column("jobs", sa.Column("lease_expires", sa.Double))
    op.add_column("jobs", sa.Column("cancel_requested", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "quotas",
        sa.Column("owner", sa.Text, primary_key=True),
        sa.Column("created", sa.Double, nullable=False),
    )
    op.create_table(
        "legacy_imports",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("imported", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("legacy_imports")
    op.drop_table("quotas")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cancel_requested")
        batch.drop_column("lease_expires")
        batch.drop_column("engine_id")
