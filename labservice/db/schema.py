"""The platform database's tables (SQLAlchemy Core), the shape the newest Alembic revision gives.

``tokens`` and ``jobs`` keep the exact columns of the SQLite files that came before (revision 0001 is that
schema), so an old file upgrades in place and an old row reads the same. Times are float epoch seconds.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),  # SHA-256 hex of the secret; the secret is never stored
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("revoked", sa.Integer, nullable=False, server_default="0"),
    sa.Column("limits", sa.Text, nullable=False),  # JSON of labservice.limits.Limits
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("params", sa.Text, nullable=False),  # JSON
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("total", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("started", sa.Double),
    sa.Column("finished", sa.Double),
    sa.Column("expires", sa.Double),
    sa.Column("error", sa.Text),
    sa.Column("files", sa.Text, nullable=False, server_default="[]"),  # JSON
    sa.Column("nbytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # Revision 0002: the lease an engine holds on an active job, and a cancel any API process can ask for.
    sa.Column("engine_id", sa.Text),
    sa.Column("lease_expires", sa.Double),
    sa.Column("cancel_requested", sa.Integer, nullable=False, server_default="0"),
    sa.Index("jobs_owner", "owner", "created"),
    sa.Index("jobs_status", "status"),
)

# One row per owner: the row a quota check locks (SELECT ... FOR UPDATE) so two submissions of one owner
# are checked one after the other in PostgreSQL. SQLite serialises writers with BEGIN IMMEDIATE instead.
quotas = sa.Table(
    "quotas",
    metadata,
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("created", sa.Double, nullable=False),
)

# Legacy SQLite files already copied in, so `labservice db upgrade` imports each one once.
legacy_imports = sa.Table(
    "legacy_imports",
    metadata,
    sa.Column("source", sa.Text, primary_key=True),  # "<kind>:<absolute path>"
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("imported", sa.Double, nullable=False),
)
