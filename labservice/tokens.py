"""Access tokens, kept in the platform database (:mod:`labservice.db`) as a hash of each secret only.

A token reads ``lab_<id>_<secret>``. The id finds the row; the secret is checked against its SHA-256 with
a timing-safe comparison. The plain token is shown once, when it is created, and never stored.

Verified tokens are cached for :data:`CACHE_SECONDS` (0.5 s) per process, so a busy caller does not hit the
database on every request, and a token revoked through any process stops working everywhere within that
time (plus one request).

Each token belongs to a user (:mod:`labservice.users`), carries scopes and may expire. A token created
without a user gets a new user of its own, named after it (as the migration does for older tokens).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

import sqlalchemy as sa

from labservice.db import database, migrate
from labservice.db.schema import tokens as T
from labservice.db.schema import users as U
from labservice.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from labservice.limits import Caller, Limits
from labservice.users import ALL_SCOPES, UserLimits, name_from_token, parse_scopes, scopes_text

PREFIX = "lab_"
CACHE_SECONDS = 0.5  # the longest a revoked token keeps working on another process
_CACHE_MAX = 10_000  # entries; the cache is cleared when it grows past this (bad tokens are never cached)


@dataclass(frozen=True)
class TokenRecord:
    """One row of the token table (never the secret)."""

    id: str
    name: str
    created: float
    revoked: bool
    limits: Limits
    user: str | None = None
    scopes: frozenset[str] = ALL_SCOPES
    expires: float | None = None

    def active(self, now: float | None = None) -> bool:
        return not self.revoked and (self.expires is None or self.expires > (now or time.time()))

    def public(self) -> dict[str, object]:
        """What the API shows of a token (never the secret or its hash)."""
        return {
            "id": self.id, "name": self.name, "user": self.user, "created": self.created,
            "revoked": self.revoked, "expires": self.expires, "scopes": scopes_text(self.scopes),
            "limits": self.limits.as_dict(),
        }  # fmt: skip


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _limits_from_json(text: str) -> Limits:
    known = {f.name for f in fields(Limits)}
    return Limits(**{k: v for k, v in json.loads(text).items() if k in known})


class TokenStore:
    """Create, list, revoke and verify tokens.

    Parameters
    ----------
    where
        A database URL (``sqlite:///...``, ``postgresql://...``) or a SQLite file path. An embedded SQLite
        file is created or migrated on the spot; a PostgreSQL database needs ``labservice db upgrade`` first.
    """

    def __init__(self, where: str | Path) -> None:
        self.db = database(where)
        self.path = self.db.path  # the SQLite file, None for PostgreSQL
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()
        if self.db.is_sqlite:
            migrate(self.db)

    def create(
        self,
        name: str,
        limits: Limits,
        user: str | None = None,
        scopes: str | frozenset[str] | None = None,
        expires: float | None = None,
    ) -> tuple[TokenRecord, str]:
        """Issue a token; return its record and the plain token, which is not kept anywhere.

        ``user`` names an existing user (NotFound otherwise); None makes a new user named after the token.
        ``scopes``: all four when None. ``expires``: epoch seconds, None for never.
        """
        if not name.strip() or "\x00" in name:
            raise InvalidInput("a token needs a non-empty --name (without NUL bytes) saying who it is for")
        scope_set = scopes if isinstance(scopes, frozenset) else parse_scopes(scopes)
        now = time.time()
        if expires is not None and expires <= now:
            raise InvalidInput("the token's expiry must be in the future")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.db.connect(write=True) as conn:
            if user is None:
                user_name, user_id = _new_user_for(conn, name, token_id, now)
            else:
                row = conn.execute(sa.select(U.c.id).where(U.c.name == user)).first()
                if row is None:
                    raise NotFound(f"no user named {user!r}; create one with `labservice user create {user}`")
                user_name, user_id = user, row[0]
            conn.execute(T.insert().values(
                id=token_id, name=name, hash=_hash(secret), created=now, revoked=0,
                limits=json.dumps(limits.as_dict()), user_id=user_id, scopes=scopes_text(scope_set),
                expires=expires,
            ))  # fmt: skip
        record = TokenRecord(token_id, name, now, False, limits, user_name, scope_set, expires)
        return record, f"{PREFIX}{token_id}_{secret}"

    def create_own(
        self, caller: Caller, name: str, scopes: str | list[str] | None, expires_in_hours: float | None,
        limits: dict[str, object] | None, max_tokens: int,
    ) -> tuple[TokenRecord, str]:
        """A token a user makes for themself: never more scopes, limits or lifetime than ``caller``'s token,
        and at most ``max_tokens`` alive at once (Conflict)."""
        if caller.user_id is None or caller.token_id is None:
            raise Forbidden("making tokens needs a token of your own")
        scope_set = caller.scopes if scopes is None else parse_scopes(scopes)
        if extra := sorted(scope_set - caller.scopes):
            raise Forbidden(
                f"this token cannot grant scope(s) {', '.join(extra)} it does not have itself; "
                f"ask for at most {scopes_text(caller.scopes)}"
            )
        mine = caller.limits.as_dict()
        wanted = dict(mine)
        for key, value in (limits or {}).items():
            if key not in mine:
                raise InvalidInput(f"unknown limit {key!r}; limits are {', '.join(mine)}")
            if isinstance(mine[key], bool):
                if not isinstance(value, bool) or (value and not mine[key]):
                    raise InvalidInput(f"limit {key} must be true or false and not more than yours ({mine[key]})")
            elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= mine[key]:
                raise InvalidInput(f"limit {key} must be an integer from 0 to yours ({mine[key]}), not {value!r}")
            wanted[key] = value
        now = time.time()
        own_expiry = self._expiry(caller.token_id)
        expires = None
        if expires_in_hours is not None:
            if isinstance(expires_in_hours, bool) or not isinstance(expires_in_hours, int | float) or not (
                0 < expires_in_hours <= 24 * 3650
            ):
                raise InvalidInput("expires_in_hours must be a number of hours > 0 and at most 87600 (ten years)")
            expires = now + float(expires_in_hours) * 3600
        if own_expiry is not None and (expires is None or expires > own_expiry):
            expires = own_expiry  # never outlives the token that made it
        active = sum(1 for r in self.list(user_id=caller.user_id) if r.active(now))
        if active >= max_tokens:
            raise Conflict(
                f"you have {active} active tokens, your limit is {max_tokens}; revoke one first "
                "(DELETE /api/v1/me/tokens/{id})"
            )
        return self.create(name, Limits(**wanted), user=caller.user, scopes=scope_set, expires=expires)

    def _expiry(self, token_id: str) -> float | None:
        with self.db.connect() as conn:
            row = conn.execute(sa.select(T.c.expires).where(T.c.id == token_id)).first()
        return None if row is None else row[0]

    def list(self, user_id: str | None = None) -> list[TokenRecord]:
        """Every token (or one user's), oldest first."""
        q = (
            sa.select(T.c.id, T.c.name, T.c.created, T.c.revoked, T.c.limits, U.c.name, T.c.scopes, T.c.expires)
            .select_from(T.outerjoin(U, U.c.id == T.c.user_id))
            .order_by(T.c.created, T.c.id)
        )
        if user_id is not None:
            q = q.where(T.c.user_id == user_id)
        with self.db.connect() as conn:
            rows = conn.execute(q).all()
        return [
            TokenRecord(r[0], r[1], r[2], bool(r[3]), _limits_from_json(r[4]), r[5], parse_scopes(r[6]), r[7])
            for r in rows
        ]

    def revoke(self, token_id: str, user_id: str | None = None) -> None:
        """Stop a token from working (here at once, on every other process within CACHE_SECONDS).

        With ``user_id``, only that user's token (another user's id is NotFound, like an unknown one).
        """
        if not token_id.isascii() or not token_id.isalnum():
            raise NotFound(f"no token with id {token_id!r}")
        q = T.update().where(T.c.id == token_id)
        if user_id is not None:
            q = q.where(T.c.user_id == user_id)
        with self.db.connect(write=True) as conn:
            n = conn.execute(q.values(revoked=1)).rowcount
        if n == 0:
            hint = "GET /api/v1/me/tokens" if user_id is not None else "`labservice token list`"
            raise NotFound(f"no token with id {token_id!r}; see {hint}")
        with self._lock:
            self._cache.clear()

    def cached(self, token: str) -> Caller | None:
        """The caller of a token verified less than CACHE_SECONDS ago, without touching the database.

        An async caller can use it to skip a thread hop: ``tokens.cached(t) or await run_in_threadpool(
        tokens.verify, t)`` keeps a slow or unreachable database off the event loop.
        """
        with self._lock:
            hit = self._cache.get(token)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS else None

    def verify(self, token: str) -> Caller:
        """Return the caller a token belongs to; raise Unauthorized when it is not valid."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        bad = Unauthorized(
            "the token in the Authorization header is not valid or was revoked; send "
            "'Authorization: Bearer lab_...' with a token from `labservice token create`, or no header for public access"
        )
        if not token.startswith(PREFIX) or token.count("_") < 2:
            raise bad
        token_id, _, secret = token[len(PREFIX) :].partition("_")
        if not token_id.isascii() or not token_id.isalnum():
            raise bad
        q = sa.select(
            T.c.name, T.c.hash, T.c.revoked, T.c.limits, T.c.user_id, T.c.scopes, T.c.expires, U.c.name, U.c.admin
        ).select_from(T.outerjoin(U, U.c.id == T.c.user_id))
        with self.db.connect() as conn:
            row = conn.execute(q.where(T.c.id == token_id)).first()
        # Compare even when the id is unknown, so the timing does not tell ids apart.
        stored = row[1] if row else _hash("")
        if not hmac.compare_digest(stored, _hash(secret)) or row is None or row[2]:
            raise bad
        if row[6] is not None and row[6] <= time.time():
            raise Unauthorized(
                f"token {token_id} expired; make a new one (`labservice token create` or POST /api/v1/me/tokens)"
            )
        user_id, user_name = row[4], row[7]
        if user_id is None:  # a legacy row imported after the migration: give it its user now
            user_name, user_id = self._adopt(token_id, row[0])
        caller = Caller(
            token_id=token_id, name=row[0], limits=_limits_from_json(row[3]), user_id=user_id, user=user_name,
            scopes=parse_scopes(row[5]), admin=bool(row[8]),
        )  # fmt: skip
        if row[6] is not None:  # an expiring token is never cached past its expiry
            now = min(now, time.monotonic() - CACHE_SECONDS + max(0.0, row[6] - time.time()))
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[token] = (now, caller)
        return caller

    def _adopt(self, token_id: str, name: str) -> tuple[str, str]:
        """Give a token without a user (imported from an old file) a new user named after it."""
        with self.db.connect(write=True) as conn:
            row = conn.execute(
                sa.select(U.c.name, U.c.id).select_from(T.join(U, U.c.id == T.c.user_id)).where(T.c.id == token_id)
            ).first()
            if row is not None:  # another process adopted it meanwhile
                return row[0], row[1]
            user_name, user_id = _new_user_for(conn, name, token_id, time.time())
            conn.execute(T.update().where(T.c.id == token_id).values(user_id=user_id))
        return user_name, user_id


def adopt_orphans(conn: sa.Connection) -> int:
    """Give every token without a user (rows imported from an old file) a new user named after it."""
    rows = conn.execute(sa.select(T.c.id, T.c.name).where(T.c.user_id.is_(None)).order_by(T.c.created, T.c.id)).all()
    for token_id, name in rows:
        _, user_id = _new_user_for(conn, name, token_id, time.time())
        conn.execute(T.update().where(T.c.id == token_id).values(user_id=user_id))
    return len(rows)


def _new_user_for(conn: sa.Connection, token_name: str, token_id: str, now: float) -> tuple[str, str]:
    """Insert a user named after a token (the migration's naming rule); return (name, id)."""
    base = name_from_token(token_name, token_id, set())
    taken = {r[0] for r in conn.execute(sa.select(U.c.name).where(U.c.name.in_([base, f"{base[:19]}_{token_id}"[:32]])))}
    user_name = name_from_token(token_name, token_id, taken)
    user_id = secrets.token_hex(6)
    conn.execute(U.insert().values(
        id=user_id, name=user_name, admin=0, created=now, limits=json.dumps(UserLimits().as_dict()),
    ))  # fmt: skip
    return user_name, user_id
