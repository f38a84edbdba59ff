"""Users: who owns tokens, jobs, MyDB tables and links; their quotas; what each token may do (scopes).

A user has a name (an identifier, so SQL can say ``alice.halos``), an admin flag and per-user quotas
(:class:`UserLimits`). Tokens belong to a user and carry scopes: ``read`` (GETs, points, cutouts),
``jobs`` (submit and cancel), ``mydb`` (the personal database) and ``share`` (groups, shares, links).
:func:`scope_for` says which scope a request needs; the limits middleware checks it once per request.
No FastAPI here.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import sqlalchemy as sa

from labservice.db import database, migrate
from labservice.db.schema import users as U
from labservice.errors import Conflict, Forbidden, InvalidInput, NotFound

SCOPES = ("read", "jobs", "mydb", "share")
ALL_SCOPES = frozenset(SCOPES)
# Names SQL over MyDB gives a meaning of its own (mydb.NAME is the caller's table), or that read as roles.
RESERVED_NAMES = frozenset(
    {"mydb", "public", "main", "temp", "system", "information_schema", "pg_catalog", "admin"}
)
_USER_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MIB = 1 << 20


@dataclass(frozen=True)
class UserLimits:
    """Per-user quotas: MyDB storage (MiB), links alive at once, tokens alive at once."""

    mydb_mb: int = 1024
    max_links: int = 100
    max_tokens: int = 20

    @property
    def mydb_bytes(self) -> int:
        return int(self.mydb_mb) * MIB

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, text: str | None) -> UserLimits:
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in json.loads(text or "{}").items() if k in known})


@dataclass(frozen=True)
class User:
    """One row of the users table."""

    id: str
    name: str
    admin: bool
    created: float
    limits: UserLimits

    def public(self) -> dict[str, object]:
        return {"name": self.name, "admin": self.admin, "limits": self.limits.as_dict()}


def valid_user_name(name: str) -> str:
    """``name`` when it is a valid user name; InvalidInput saying what a name may be otherwise."""
    if not isinstance(name, str) or not _USER_RE.match(name):
        raise InvalidInput(
            f"user name {name!r} is not valid: use 1-32 lower-case letters, digits and _, starting with a letter"
        )
    if name in RESERVED_NAMES:
        raise InvalidInput(
            f"user name {name!r} is reserved; choose another ({', '.join(sorted(RESERVED_NAMES))} are)"
        )
    return name


def name_from_token(token_name: str, token_id: str, taken: set[str]) -> str:
    """A user name made from a token name (the migration's rule, for tokens created without ``--user``)."""
    base = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", token_name.strip().lower())).strip("_")
    if not base or not base[0].isalpha():
        base = f"u_{base}".rstrip("_")
    base = base[:32]
    if base in taken or base in RESERVED_NAMES:
        base = f"{base[:19]}_{token_id}"[:32]
    return base


def parse_scopes(text: str | list[str] | None) -> frozenset[str]:
    """Scopes from ``"read,jobs"`` or a list; None means all. InvalidInput names an unknown one."""
    if text is None:
        return ALL_SCOPES
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = frozenset(s.strip() for s in items if isinstance(s, str) and s.strip())
    bad = sorted(s for s in scopes if s not in ALL_SCOPES) + [
        repr(s) for s in items if not isinstance(s, str)
    ]
    if bad:
        raise InvalidInput(f"unknown scope(s) {', '.join(bad)}; scopes are {', '.join(SCOPES)}")
    if not scopes:
        raise InvalidInput(f"give at least one scope of {', '.join(SCOPES)}")
    return scopes


def scopes_text(scopes: frozenset[str]) -> str:
    return ",".join(s for s in SCOPES if s in scopes)


def scope_for(method: str, path: str) -> str | None:
    """The scope a request under /api/ needs (None: none, e.g. a link download or managing one's tokens)."""
    p = path.rstrip("/")
    m = method.upper()
    parts = p.split("/")  # ["", "api", "v1", resource, ...]
    resource = parts[3] if len(parts) > 3 else ""
    if resource == "mydb":
        return "mydb"
    if resource == "links":
        return (
            None if m in ("GET", "HEAD") and len(parts) > 5 else "share"
        )  # /links/{id}/{secret}...: no token
    if resource == "groups":
        return "read" if m in ("GET", "HEAD") else "share"
    if resource == "jobs":
        if len(parts) > 5 and parts[5] in ("shares", "links"):
            return "share"
        return "read" if m in ("GET", "HEAD") else "jobs"
    if resource == "me" and len(parts) > 4 and parts[4] == "tokens" and m not in ("GET", "HEAD"):
        return None  # a new token never gets more than the one asking (checked by the store)
    return "read"


def require_scope(caller: object, scope: str | None) -> None:
    """Forbidden naming the missing scope when a token lacks ``scope`` (public callers are not checked)."""
    if scope is None or getattr(caller, "token_id", None) is None:
        return
    have = getattr(caller, "scopes", ALL_SCOPES)
    if scope not in have:
        raise Forbidden(
            f"this token lacks the {scope!r} scope (it has: {', '.join(s for s in SCOPES if s in have) or 'none'}); "
            f"create one with it: `labservice token create --user NAME --scopes {scope},...` or POST /api/v1/me/tokens"
        )


class UserStore:
    """Create, find and list users in the platform database."""

    def __init__(self, where: str | Path) -> None:
        self.db = database(where)
        if self.db.is_sqlite:
            migrate(self.db)

    @staticmethod
    def _user(row: sa.Row) -> User:
        return User(row.id, row.name, bool(row.admin), row.created, UserLimits.from_json(row.limits))

    def create(self, name: str, admin: bool = False, limits: UserLimits | None = None) -> User:
        """A new user; Conflict when the name is taken."""
        valid_user_name(name)
        lim = limits or UserLimits()
        for field_name, v in lim.as_dict().items():
            if v < 0:
                raise InvalidInput(f"{field_name} must be >= 0, not {v}")
        user = User(secrets.token_hex(6), name, bool(admin), time.time(), lim)
        with self.db.connect(write=True) as conn:
            if conn.execute(sa.select(U.c.id).where(U.c.name == name)).first():
                raise Conflict(f"a user named {name!r} exists already; pick another name")
            conn.execute(U.insert().values(
                id=user.id, name=name, admin=int(admin), created=user.created, limits=json.dumps(lim.as_dict()),
            ))  # fmt: skip
        return user

    def get(self, name: str) -> User:
        """The user of this name; NotFound otherwise."""
        with self.db.connect() as conn:
            row = conn.execute(sa.select(U).where(U.c.name == name)).first()
        if row is None:
            raise NotFound(f"no user named {name!r}; create one with `labservice user create {name}`")
        return self._user(row)

    def by_id(self, user_id: str) -> User:
        with self.db.connect() as conn:
            row = conn.execute(sa.select(U).where(U.c.id == user_id)).first()
        if row is None:
            raise NotFound(f"no user with id {user_id!r}")
        return self._user(row)

    def list(self) -> list[User]:
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(U).order_by(U.c.name)).all()
        return [self._user(r) for r in rows]

    def set_limits(self, name: str, **changes: int) -> User:
        """Change some of a user's quotas (``mydb_mb``, ``max_links``, ``max_tokens``)."""
        user = self.get(name)
        new = UserLimits(**{**user.limits.as_dict(), **{k: v for k, v in changes.items() if v is not None}})
        with self.db.connect(write=True) as conn:
            conn.execute(U.update().where(U.c.id == user.id).values(limits=json.dumps(new.as_dict())))
        return self.get(name)
