"""Asynchronous TAP jobs move into the platform database (they sat in a SQLite file beside the job
registry, which a PostgreSQL deployment does not have, and which other hosts cannot see).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tap_jobs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("duration", sa.Double, nullable=False),
        sa.Column("destruction", sa.Double, nullable=False),
        sa.Column("job", sa.Text),
        sa.Column("aborted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("deleted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
    )
    op.create_index("tap_jobs_owner", "tap_jobs", ["owner", "created"])


def downgrade() -> None:
    op.drop_index("tap_jobs_owner", "tap_jobs")
    op.drop_table("tap_jobs")
