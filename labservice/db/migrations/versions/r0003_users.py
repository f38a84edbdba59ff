"""Users, groups, sharing, MyDB tables and links (issue 21); tokens gain a user, scopes and an expiry.

Each token that exists when this runs becomes the only token of a new user named after it (the token's
name made an identifier: lower case, other characters as ``_``; a name already taken gets the token id
appended). Its scopes are all four, so an old token keeps doing what it did.

Revision ID: 0003
Revises: 0002
"""

import json
import re
import secrets
import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of labservice.users' rules as they were when this revision was written.
_RESERVED = {"mydb", "public", "main", "temp", "system", "information_schema", "pg_catalog", "admin"}


def _user_name(token_name: str, token_id: str, taken: set[str]) -> str:
    base = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", token_name.strip().lower())).strip("_")
    if not base or not base[0].isalpha():
        base = f"u_{base}".rstrip("_")
    base = base[:32]
    if base in taken or base in _RESERVED:
        base = f"{base[:19]}_{token_id}"[:32]
    return base


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("user_id", sa.Text))
        batch.add_column(sa.Column("scopes", sa.Text, nullable=False, server_default="read,jobs,mydb,share"))
        batch.add_column(sa.Column("expires", sa.Double))
    op.create_index("tokens_user", "tokens", ["user_id"])
    users = op.create_table(
        "users",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("admin", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("limits", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_table(
        "groups",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
    )
    op.create_table(
        "memberships",
        sa.Column("group_name", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("added", sa.Double, nullable=False),
    )
    op.create_index("memberships_user", "memberships", ["user_id"])
    op.create_table(
        "job_shares",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("group_name", sa.Text, primary_key=True),
        sa.Column("shared_by", sa.Text, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
    )
    op.create_index("job_shares_group", "job_shares", ["group_name"])
    op.create_table(
        "mydb_tables",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("columns", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created", sa.Double, nullable=False),
        sa.UniqueConstraint("owner_id", "name", name="mydb_tables_owner_name"),
    )
    op.create_table(
        "table_shares",
        sa.Column("table_id", sa.Text, primary_key=True),
        sa.Column("group_name", sa.Text, primary_key=True),
        sa.Column("shared_by", sa.Text, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
    )
    op.create_index("table_shares_group", "table_shares", ["group_name"])
    op.create_table(
        "links",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("expires", sa.Double, nullable=False),
        sa.Column("revoked", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("links_owner", "links", ["owner_id"])
    op.create_index("links_job", "links", ["job_id"])

    # Every existing token becomes the only token of a user named after it.
    bind = op.get_bind()
    tokens = sa.table(
        "tokens", sa.column("id"), sa.column("name"), sa.column("created"), sa.column("user_id")
    )
    taken: set[str] = set()
    for token_id, name, created in bind.execute(
        sa.select(tokens.c.id, tokens.c.name, tokens.c.created).order_by(tokens.c.created, tokens.c.id)
    ).all():
        user = _user_name(name, token_id, taken)
        taken.add(user)
        user_id = secrets.token_hex(6)
        bind.execute(users.insert().values(
            id=user_id, name=user, admin=0, created=created or time.time(), limits=json.dumps({}),
        ))  # fmt: skip
        bind.execute(tokens.update().where(tokens.c.id == token_id).values(user_id=user_id))


def downgrade() -> None:
    for table in ("links", "table_shares", "mydb_tables", "job_shares", "memberships", "groups", "users"):
        op.drop_table(table)
    op.drop_index("tokens_user", "tokens")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("expires")
        batch.drop_column("scopes")
        batch.drop_column("user_id")
