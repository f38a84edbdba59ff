"""The schema of the SQLite files before the platform database: tokens and jobs, exactly as they were.

Tables that exist already (an old tokens.sqlite or jobs.sqlite upgraded in place) are left as they are.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "tokens" not in have:
        op.create_table(
            "tokens",
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("hash", sa.Text, nullable=False),
            sa.Column("created", sa.Double, nullable=False),
            sa.Column("revoked", sa.Integer, nullable=False, server_default="0"),
            sa.Column("limits", sa.Text, nullable=False),
        )
    if "jobs" not in have:
        op.create_table(
            "jobs",
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("owner", sa.Text, nullable=False),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("params", sa.Text, nullable=False),
            sa.Column("status", sa.Text, nullable=False),
            sa.Column("done", sa.Integer, nullable=False, server_default="0"),
            sa.Column("total", sa.Integer, nullable=False, server_default="0"),
            sa.Column("created", sa.Double, nullable=False),
            sa.Column("started", sa.Double),
            sa.Column("finished", sa.Double),
            sa.Column("expires", sa.Double),
            sa.Column("error", sa.Text),
            sa.Column("files", sa.Text, nullable=False, server_default="[]"),
            sa.Column("nbytes", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        )
        op.create_index("jobs_owner", "jobs", ["owner", "created"])
        op.create_index("jobs_status", "jobs", ["status"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("tokens")
