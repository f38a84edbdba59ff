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
    # Revision 0003: the user a token belongs to, what it may do ("read,jobs,mydb,share") and when it ends.
    sa.Column("user_id", sa.Text),  # users.id; NULL only for a legacy row imported after the migration
    sa.Column("scopes", sa.Text, nullable=False, server_default="read,jobs,mydb,share"),
    sa.Column("expires", sa.Double),  # epoch seconds; NULL: never
    sa.Index("tokens_user", "user_id"),
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

# -- Revision 0003: users, groups, sharing, MyDB tables and links (issue 21) ------------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),  # an identifier: [a-z][a-z0-9_]*
    sa.Column("admin", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("limits", sa.Text, nullable=False, server_default="{}"),  # JSON of labservice.users.UserLimits
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),  # users.id
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("group_name", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),  # owner | admin | member
    sa.Column("added", sa.Double, nullable=False),
    sa.Index("memberships_user", "user_id"),
)

job_shares = sa.Table(
    "job_shares",
    metadata,
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("group_name", sa.Text, primary_key=True),
    sa.Column("shared_by", sa.Text, nullable=False),  # users.id
    sa.Column("created", sa.Double, nullable=False),
    sa.Index("job_shares_group", "group_name"),
)

mydb_tables = sa.Table(
    "mydb_tables",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner_id", sa.Text, nullable=False),  # users.id
    sa.Column("name", sa.Text, nullable=False),  # an identifier, unique per owner
    sa.Column("key", sa.Text, nullable=False),  # where the Parquet file is in the user store
    sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("columns", sa.Text, nullable=False, server_default="[]"),  # JSON [{name, type}]
    sa.Column("created", sa.Double, nullable=False),
    sa.UniqueConstraint("owner_id", "name", name="mydb_tables_owner_name"),
)

table_shares = sa.Table(
    "table_shares",
    metadata,
    sa.Column("table_id", sa.Text, primary_key=True),
    sa.Column("group_name", sa.Text, primary_key=True),
    sa.Column("shared_by", sa.Text, nullable=False),  # users.id
    sa.Column("created", sa.Double, nullable=False),
    sa.Index("table_shares_group", "group_name"),
)

links = sa.Table(
    "links",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("job_id", sa.Text, nullable=False),
    sa.Column("owner_id", sa.Text, nullable=False),  # users.id of who made it
    sa.Column("hash", sa.Text, nullable=False),  # SHA-256 hex of the secret; the secret is never stored
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("expires", sa.Double, nullable=False),
    sa.Column("revoked", sa.Integer, nullable=False, server_default="0"),
    sa.Index("links_owner", "owner_id"),
    sa.Index("links_job", "job_id"),
)

# -- Revision 0004: asynchronous TAP jobs before PHASE=RUN hands them to the engine -------------------------

tap_jobs = sa.Table(
    "tap_jobs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),  # tokens.id
    sa.Column("params", sa.Text, nullable=False),  # JSON of the UWS parameters
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("duration", sa.Double, nullable=False),  # EXECUTIONDURATION, seconds
    sa.Column("destruction", sa.Double, nullable=False),  # epoch seconds
    sa.Column("job", sa.Text),  # NULL: PENDING; "starting": a PHASE=RUN claimed it; else the engine job id
    sa.Column("aborted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("deleted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.Text),
    sa.Index("tap_jobs_owner", "owner", "created"),
)
