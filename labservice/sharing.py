"""Who may see what: groups and their roles, read-only shares of jobs and MyDB tables, and links.

Every check reads the platform database on each call (no cache), so removing a member, unsharing or
revoking a link holds at once on every worker and host. No FastAPI here.

The rules (RELIABILITY.md lists them with their tests):

- groups: the creator is the owner. Owners add, re-role and remove anyone; admins add members and admins,
  re-role members and admins, and remove members and admins, but never touch an owner or make one; members
  only leave. The last owner cannot leave or be demoted (409). Only an owner deletes the group. A group
  you are not in answers 404, like one that does not exist.
- shares: only the owner of a job or table shares or unshares it, and only into a group they belong to.
  Members of the group read and download it; nobody but the owner changes, cancels or deletes it.
- links: the owner of a job makes links to it (at most ``max_links`` alive); a link downloads the job's
  files without a token until it expires or its owner revokes it. Only a SHA-256 of the secret is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from labservice.db import database, migrate
from labservice.db.schema import groups as G
from labservice.db.schema import job_shares as JS
from labservice.db.schema import links as L
from labservice.db.schema import memberships as M
from labservice.db.schema import mydb_tables as MT
from labservice.db.schema import table_shares as TS
from labservice.db.schema import tokens as T
from labservice.db.schema import users as U
from labservice.errors import Conflict, Forbidden, InvalidInput, NotFound
from labservice.users import _USER_RE

ROLES = ("owner", "admin", "member")
_GROUP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_ID_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")  # job, link and token ids (anything else is not one of ours)
MAX_LINK_HOURS = 24 * 365  # a link lives at most a year (the job's files may expire before)


def valid_group_name(name: object) -> str:
    if not isinstance(name, str) or not _GROUP_RE.match(name):
        raise InvalidInput(
            f"group name {name!r} is not valid: use 1-64 lower-case letters, digits, _ and -, starting with a letter"
        )
    return name


def valid_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role  # type: ignore[return-value]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _no_group(name: str) -> NotFound:
    return NotFound(f"no group {name!r} among your groups; GET /api/v1/groups lists them")


class Access:
    """Groups, shares and links in the platform database (the tokens database)."""

    def __init__(self, where: str | Path) -> None:
        self.db = database(where)
        if self.db.is_sqlite:
            migrate(self.db)

    # -- users and their tokens ---------------------------------------------------------------------
    def user_id(self, conn: sa.Connection, name: str) -> str:
        row = (
            conn.execute(sa.select(U.c.id).where(U.c.name == name)).first() if _USER_RE.match(name) else None
        )
        if row is None:
            raise NotFound(f"no user named {name!r}; check the spelling (user names are lower case)")
        return row[0]

    def token_ids(self, user_id: str) -> set[str]:
        """Every token of a user (revoked ones too: their jobs are still the user's)."""
        with self.db.connect() as conn:
            return {r[0] for r in conn.execute(sa.select(T.c.id).where(T.c.user_id == user_id))}

    def owner_names(self, token_ids: set[str]) -> dict[str, str]:
        """token id -> user name, for showing whose a shared job is."""
        if not token_ids:
            return {}
        q = (
            sa.select(T.c.id, U.c.name)
            .select_from(T.join(U, U.c.id == T.c.user_id))
            .where(T.c.id.in_(token_ids))
        )
        with self.db.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(q)}

    # -- groups -----------------------------------------------------------------------------------
    def groups_of(self, user_id: str) -> dict[str, str]:
        """group name -> the user's role in it."""
        with self.db.connect() as conn:
            return dict(conn.execute(sa.select(M.c.group_name, M.c.role).where(M.c.user_id == user_id)).all())

    def _role(self, conn: sa.Connection, group: str, user_id: str) -> str | None:
        if not _GROUP_RE.match(group):
            return None  # not a group name, so no group (and never a driver error over odd bytes)
        row = conn.execute(sa.select(M.c.role).where(M.c.group_name == group, M.c.user_id == user_id)).first()
        return None if row is None else row[0]

    def create_group(self, user_id: str, name: str, description: str = "") -> dict[str, Any]:
        valid_group_name(name)
        if not isinstance(description, str) or len(description) > 1000 or "\x00" in description:
            raise InvalidInput("description must be text of at most 1000 characters, without NUL bytes")
        now = time.time()
        with self.db.connect(write=True) as conn:
            if conn.execute(sa.select(G.c.name).where(G.c.name == name)).first():
                raise Conflict(f"a group named {name!r} exists already; pick another name")
            conn.execute(
                G.insert().values(name=name, description=description, created=now, created_by=user_id)
            )
            conn.execute(M.insert().values(group_name=name, user_id=user_id, role="owner", added=now))
        return self.group(user_id, name)

    def list_groups(self, user_id: str) -> list[dict[str, Any]]:
        q = (
            sa.select(G.c.name, G.c.description, G.c.created, M.c.role)
            .select_from(G.join(M, M.c.group_name == G.c.name))
            .where(M.c.user_id == user_id)
            .order_by(G.c.name)
        )
        with self.db.connect() as conn:
            return [
                {"name": r[0], "description": r[1], "created": r[2], "role": r[3]} for r in conn.execute(q)
            ]

    def group(self, user_id: str, name: str) -> dict[str, Any]:
        """The group with its members and roles; 404 for a group the user is not in."""
        with self.db.connect() as conn:
            role = self._role(conn, name, user_id)
            q = sa.select(G.c.description, G.c.created).where(G.c.name == name)
            row = None if role is None else conn.execute(q).first()
            if row is None or role is None:
                raise _no_group(name)
            members = conn.execute(
                sa.select(U.c.name, M.c.role)
                .select_from(M.join(U, U.c.id == M.c.user_id))
                .where(M.c.group_name == name)
                .order_by(U.c.name)
            ).all()
        return {
            "name": name, "description": row[0], "created": row[1], "role": role,
            "members": [{"user": m[0], "role": m[1]} for m in members],
        }  # fmt: skip

    def set_member(self, actor_id: str, group: str, user: str, role: str) -> dict[str, Any]:
        """Add ``user`` to ``group`` or change their role (PUT .../members/{user})."""
        valid_role(role)
        with self.db.connect(write=True) as conn:
            mine = self._role(conn, group, actor_id)
            if mine is None:
                raise _no_group(group)
            target = self.user_id(conn, user)
            theirs = self._role(conn, group, target)
            if mine == "member":
                raise Forbidden(
                    f"you are a member of {group!r}; only its owners and admins add members or change roles"
                )
            if mine == "admin" and (role == "owner" or theirs == "owner"):
                raise Forbidden(
                    f"admins of {group!r} cannot make owners or change an owner's role; ask an owner"
                )
            if theirs == "owner" and role != "owner" and self._owners(conn, group) == 1:
                raise Conflict(f"{user} is the last owner of {group!r}; make another owner first")
            if theirs is None:
                conn.execute(
                    M.insert().values(group_name=group, user_id=target, role=role, added=time.time())
                )
            elif theirs != role:
                conn.execute(
                    M.update().where(M.c.group_name == group, M.c.user_id == target).values(role=role)
                )
        return self.group(actor_id, group)

    def remove_member(self, actor_id: str, group: str, user: str) -> dict[str, Any]:
        """Remove ``user`` from ``group`` (or leave it, when it is the actor)."""
        with self.db.connect(write=True) as conn:
            mine = self._role(conn, group, actor_id)
            if mine is None:
                raise _no_group(group)
            target = self.user_id(conn, user)
            theirs = self._role(conn, group, target)
            if theirs is None:
                raise NotFound(f"{user} is not a member of {group!r}")
            if target != actor_id:
                if mine == "member":
                    raise Forbidden(f"members of {group!r} can only leave; owners and admins remove others")
                if mine == "admin" and theirs == "owner":
                    raise Forbidden(f"admins of {group!r} cannot remove an owner; ask an owner")
            if theirs == "owner" and self._owners(conn, group) == 1:
                raise Conflict(
                    f"{user} is the last owner of {group!r} and cannot leave; make another owner first, "
                    f"or delete the group (DELETE /api/v1/groups/{group})"
                )
            conn.execute(M.delete().where(M.c.group_name == group, M.c.user_id == target))
        return {"group": group, "removed": user}

    @staticmethod
    def _owners(conn: sa.Connection, group: str) -> int:
        return conn.execute(
            sa.select(sa.func.count()).where(M.c.group_name == group, M.c.role == "owner")
        ).scalar_one()

    def delete_group(self, actor_id: str, group: str) -> None:
        """Delete a group with its memberships and shares (owner only)."""
        with self.db.connect(write=True) as conn:
            mine = self._role(conn, group, actor_id)
            if mine is None:
                raise _no_group(group)
            if mine != "owner":
                raise Forbidden(
                    f"only an owner deletes {group!r}; you are {'an' if mine == 'admin' else 'a'} {mine}"
                )
            for table in (M, JS, TS):
                conn.execute(table.delete().where(table.c.group_name == group))
            conn.execute(G.delete().where(G.c.name == group))

    def _check_target(self, conn: sa.Connection, user_id: str, group: str) -> None:
        """Sharing into ``group`` needs the user to be in it."""
        valid_group_name(group)
        if self._role(conn, group, user_id) is None:
            raise _no_group(group)

    def check_share_target(self, user_id: str, group: str) -> None:
        with self.db.connect() as conn:
            self._check_target(conn, user_id, group)

    # -- job shares -------------------------------------------------------------------------------
    def share_job(self, user_id: str, job_id: str, group: str) -> list[str]:
        """Share a job (the caller's; checked by the router) with a group; the groups it is shared with."""
        with self.db.connect(write=True) as conn:
            self._check_target(conn, user_id, group)
            if not conn.execute(
                sa.select(JS.c.job_id).where(JS.c.job_id == job_id, JS.c.group_name == group)
            ).first():
                conn.execute(
                    JS.insert().values(
                        job_id=job_id, group_name=group, shared_by=user_id, created=time.time()
                    )
                )
        return self.job_groups(job_id)

    def unshare_job(self, job_id: str, group: str) -> list[str]:
        valid_group_name(group)
        with self.db.connect(write=True) as conn:
            n = conn.execute(JS.delete().where(JS.c.job_id == job_id, JS.c.group_name == group)).rowcount
        if n == 0:
            raise NotFound(f"job {job_id} is not shared with {group!r}")
        return self.job_groups(job_id)

    def job_groups(self, job_id: str) -> list[str]:
        with self.db.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(JS.c.group_name).where(JS.c.job_id == job_id)))

    def shared_jobs(self, user_id: str) -> dict[str, list[str]]:
        """job id -> the groups it reaches ``user_id`` through."""
        q = (
            sa.select(JS.c.job_id, JS.c.group_name)
            .select_from(JS.join(M, M.c.group_name == JS.c.group_name))
            .where(M.c.user_id == user_id)
        )
        out: dict[str, list[str]] = {}
        with self.db.connect() as conn:
            for job_id, group in conn.execute(q):
                out.setdefault(job_id, []).append(group)
        return out

    def job_shared_with(self, user_id: str, job_id: str) -> list[str]:
        """The groups through which ``job_id`` is shared with ``user_id`` ([]: not shared with them)."""
        q = (
            sa.select(JS.c.group_name)
            .select_from(JS.join(M, M.c.group_name == JS.c.group_name))
            .where(M.c.user_id == user_id, JS.c.job_id == job_id)
        )
        with self.db.connect() as conn:
            return sorted(r[0] for r in conn.execute(q))

    def owns_job(self, user_id: str, job: Any) -> bool:
        return job is not None and job.owner in self.token_ids(user_id)

    def can_read_job(self, user_id: str, job: Any) -> bool:
        return job is not None and (
            self.owns_job(user_id, job) or bool(self.job_shared_with(user_id, job.id))
        )

    # -- MyDB tables (the rows 21-B's MyDB writes) -----------------------------------------------------
    def readable_tables(self, user_id: str) -> list[dict[str, Any]]:
        """The user's tables and those shared with a group they are in, each once, with ``owner_name``,
        ``shared`` (not the user's own) and ``groups`` (the groups it reaches them through)."""
        cols = [*MT.c, U.c.name.label("owner_name")]
        own = (
            sa.select(*cols).select_from(MT.join(U, U.c.id == MT.c.owner_id)).where(MT.c.owner_id == user_id)
        )
        shared = (
            sa.select(*cols, TS.c.group_name)
            .select_from(MT.join(U, U.c.id == MT.c.owner_id).join(TS, TS.c.table_id == MT.c.id)
                         .join(M, M.c.group_name == TS.c.group_name))
            .where(M.c.user_id == user_id, MT.c.owner_id != user_id)
        )  # fmt: skip
        out: dict[str, dict[str, Any]] = {}
        with self.db.connect() as conn:
            for r in conn.execute(own.order_by(MT.c.name)):
                out[r.id] = {**r._asdict(), "shared": False, "groups": []}
            for r in conn.execute(shared.order_by(U.c.name, MT.c.name)):
                row = r._asdict()
                group = row.pop("group_name")
                out.setdefault(r.id, {**row, "shared": True, "groups": []})["groups"].append(group)
        return list(out.values())

    def can_read_table(self, user_id: str, table_id: str) -> bool:
        return any(t["id"] == table_id for t in self.readable_tables(user_id))

    def share_table(self, user_id: str, table_id: str, group: str) -> list[str]:
        with self.db.connect(write=True) as conn:
            self._check_target(conn, user_id, group)
            owner = conn.execute(sa.select(MT.c.owner_id).where(MT.c.id == table_id)).first()
            if owner is None or owner[0] != user_id:
                raise NotFound("no such table among your tables; GET /api/v1/mydb/tables lists them")
            if not conn.execute(
                sa.select(TS.c.table_id).where(TS.c.table_id == table_id, TS.c.group_name == group)
            ).first():
                conn.execute(
                    TS.insert().values(
                        table_id=table_id, group_name=group, shared_by=user_id, created=time.time()
                    )
                )
        return self.table_groups(table_id)

    def unshare_table(self, user_id: str, table_id: str, group: str) -> list[str]:
        valid_group_name(group)
        with self.db.connect(write=True) as conn:
            owner = conn.execute(sa.select(MT.c.owner_id).where(MT.c.id == table_id)).first()
            if owner is None or owner[0] != user_id:
                raise NotFound("no such table among your tables; GET /api/v1/mydb/tables lists them")
            n = conn.execute(TS.delete().where(TS.c.table_id == table_id, TS.c.group_name == group)).rowcount
        if n == 0:
            raise NotFound(f"the table is not shared with {group!r}")
        return self.table_groups(table_id)

    def table_groups(self, table_id: str) -> list[str]:
        with self.db.connect() as conn:
            return sorted(
                r[0] for r in conn.execute(sa.select(TS.c.group_name).where(TS.c.table_id == table_id))
            )

    def forget_table(self, table_id: str) -> None:
        """Drop a deleted table's shares."""
        with self.db.connect(write=True) as conn:
            conn.execute(TS.delete().where(TS.c.table_id == table_id))

    def mydb_bytes(self, user_id: str) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(MT.c.bytes), 0)).where(MT.c.owner_id == user_id)
            ).scalar_one())  # fmt: skip

    # -- links ------------------------------------------------------------------------------------
    def create_link(
        self, user_id: str, job_id: str, hours: object, max_links: int
    ) -> tuple[dict[str, Any], str]:
        """A link to a job (the caller's; checked by the router); returns its record and the secret."""
        if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= MAX_LINK_HOURS:
            raise InvalidInput(f"expires_in_hours must be a number of hours > 0 and at most {MAX_LINK_HOURS}")
        now = time.time()
        link_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        with self.db.connect(write=True) as conn:
            alive = conn.execute(
                sa.select(sa.func.count()).where(L.c.owner_id == user_id, L.c.revoked == 0, L.c.expires > now)
            ).scalar_one()
            if alive >= max_links:
                raise Conflict(
                    f"you have {alive} links alive, your limit is {max_links}; revoke one first "
                    "(GET /api/v1/links lists them, DELETE /api/v1/links/{id} revokes one)"
                )
            expires = now + float(hours) * 3600
            conn.execute(L.insert().values(
                id=link_id, job_id=job_id, owner_id=user_id, hash=_hash(secret), created=now, expires=expires, revoked=0,
            ))  # fmt: skip
        return {"id": link_id, "job_id": job_id, "created": now, "expires": expires, "revoked": False}, secret

    def list_links(self, user_id: str) -> list[dict[str, Any]]:
        q = sa.select(L.c.id, L.c.job_id, L.c.created, L.c.expires, L.c.revoked).where(
            L.c.owner_id == user_id
        )
        now = time.time()
        with self.db.connect() as conn:
            rows = conn.execute(q.order_by(L.c.created)).all()
        return [
            {"id": r[0], "job_id": r[1], "created": r[2], "expires": r[3], "revoked": bool(r[4]),
             "active": not r[4] and r[3] > now}
            for r in rows
        ]  # fmt: skip

    def revoke_link(self, user_id: str, link_id: str) -> None:
        if not _ID_RE.match(link_id):
            raise NotFound(f"no link {link_id!r} among your links; GET /api/v1/links lists them")
        with self.db.connect(write=True) as conn:
            n = conn.execute(
                L.update().where(L.c.id == link_id, L.c.owner_id == user_id).values(revoked=1)
            ).rowcount
        if n == 0:
            raise NotFound(f"no link {link_id!r} among your links; GET /api/v1/links lists them")

    def resolve_link(self, link_id: str, secret: str) -> str:
        """The job id a link opens; NotFound when the link is unknown, wrong, expired or revoked."""
        row = None
        if _ID_RE.match(link_id):
            with self.db.connect() as conn:
                q = sa.select(L.c.job_id, L.c.hash, L.c.expires, L.c.revoked).where(L.c.id == link_id)
                row = conn.execute(q).first()
        stored = row[1] if row else _hash("")
        ok = hmac.compare_digest(stored, _hash(secret)) and row is not None
        if not ok or row[3] or row[2] <= time.time():
            raise NotFound(
                "this link is not valid: it was revoked, it expired, or it was mistyped; ask for a new one"
            )
        return row[0]

    def usage(self, user_id: str) -> dict[str, int]:
        with self.db.connect() as conn:
            links = conn.execute(
                sa.select(sa.func.count()).where(
                    L.c.owner_id == user_id, L.c.revoked == 0, L.c.expires > time.time()
                )
            ).scalar_one()
        return {"mydb_bytes": self.mydb_bytes(user_id), "links": int(links)}


# -- jobs as the routers see them (the registry is passed in: this module does not import the engine) ----
def _no_job(job_id: str) -> NotFound:
    return NotFound(
        f"no job {job_id!r} among your jobs or those shared with you; GET /api/v1/jobs lists them"
    )


def readable_job(access: Access | None, registry: Any, caller: Any, job_id: str) -> tuple[Any, list[str]]:
    """The job record and, when it is someone else's job shared with the caller, the groups it comes
    through ([] for the caller's own). NotFound for unknown ids and for jobs the caller may not read alike."""
    rec = registry.get(job_id) if _ID_RE.match(job_id) else None
    if rec is None or caller.token_id is None:
        raise _no_job(job_id)
    if access is None or caller.user_id is None:  # no users on this server: a job is its token's
        if rec.owner != caller.token_id:
            raise _no_job(job_id)
        return rec, []
    if rec.owner in access.token_ids(caller.user_id):
        return rec, []
    groups = access.job_shared_with(caller.user_id, job_id)
    if not groups:
        raise _no_job(job_id)
    return rec, groups


def owned_job(access: Access | None, registry: Any, caller: Any, job_id: str) -> Any:
    """The caller's own job; Forbidden for a job shared with them (read-only), NotFound otherwise."""
    rec, groups = readable_job(access, registry, caller, job_id)
    if groups:
        raise Forbidden(
            f"job {job_id} is shared with you read-only (through {', '.join(groups)}); only its owner can "
            "cancel, delete, share or link it"
        )
    return rec
