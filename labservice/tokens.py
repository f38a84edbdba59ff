"""Access tokens, kept in the platform database (:mod:`labservice.db`) as a hash of each secret only.

A token reads ``lab_<id>_<secret>``. The id finds the row; the secret is checked against its SHA-256 with
a timing-safe comparison. The plain token is shown once, when it is created, and never stored.

Verified tokens are cached for :data:`CACHE_SECONDS` (0.5 s) per process, so a busy caller does not hit the
database on every request, and a token revoked through any process stops working everywhere within that
time (plus one request).
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
from labservice.errors import InvalidInput, NotFound, Unauthorized
from labservice.limits import Caller, Limits

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

    def create(self, name: str, limits: Limits) -> tuple[TokenRecord, str]:
        """Issue a token; return its record and the plain token, which is not kept anywhere."""
        if not name.strip():
            raise InvalidInput("a token needs a non-empty --name saying who it is for")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        record = TokenRecord(id=token_id, name=name, created=time.time(), revoked=False, limits=limits)
        with self.db.connect(write=True) as conn:
            conn.execute(T.insert().values(
                id=token_id, name=name, hash=_hash(secret), created=record.created, revoked=0,
                limits=json.dumps(limits.as_dict()),
            ))  # fmt: skip
        return record, f"{PREFIX}{token_id}_{secret}"

    def list(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(T.c.id, T.c.name, T.c.created, T.c.revoked, T.c.limits).order_by(T.c.created)
            ).all()
        return [TokenRecord(r[0], r[1], r[2], bool(r[3]), _limits_from_json(r[4])) for r in rows]

    def revoke(self, token_id: str) -> None:
        """Stop a token from working (here at once, on every other process within CACHE_SECONDS)."""
        with self.db.connect(write=True) as conn:
            n = conn.execute(T.update().where(T.c.id == token_id).values(revoked=1)).rowcount
        if n == 0:
            raise NotFound(f"no token with id {token_id!r}; see `labservice token list`")
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
        with self.db.connect() as conn:
            row = conn.execute(
                sa.select(T.c.name, T.c.hash, T.c.revoked, T.c.limits).where(T.c.id == token_id)
            ).first()
        # Compare even when the id is unknown, so the timing does not tell ids apart.
        stored = row[1] if row else _hash("")
        if not hmac.compare_digest(stored, _hash(secret)) or row is None or row[2]:
            raise bad
        caller = Caller(token_id=token_id, name=row[0], limits=_limits_from_json(row[3]))
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[token] = (now, caller)
        return caller
