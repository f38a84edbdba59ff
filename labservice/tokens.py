"""Access tokens, kept in a SQLite file that stores only a hash of each secret.

A token reads ``lab_<id>_<secret>``. The id finds the row; the secret is checked against its SHA-256 with
a timing-safe comparison. The plain token is shown once, when it is created, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from labservice.errors import InvalidInput, NotFound, Unauthorized
from labservice.limits import Caller, Limits

PREFIX = "lab_"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    hash    TEXT NOT NULL,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    limits  TEXT NOT NULL
)
"""
# Verified tokens are remembered briefly so that a busy caller does not hit SQLite on every request.
_CACHE_SECONDS = 10.0


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
    """Create, list, revoke and verify tokens in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10.0)

    def create(self, name: str, limits: Limits) -> tuple[TokenRecord, str]:
        """Issue a token; return its record and the plain token, which is not kept anywhere."""
        if not name.strip():
            raise InvalidInput("a token needs a non-empty --name saying who it is for")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        record = TokenRecord(id=token_id, name=name, created=time.time(), revoked=False, limits=limits)
        with self._connect() as db:
            db.execute(
                "INSERT INTO tokens (id, name, hash, created, revoked, limits) VALUES (?, ?, ?, ?, 0, ?)",
                (token_id, name, _hash(secret), record.created, json.dumps(limits.as_dict())),
            )
        return record, f"{PREFIX}{token_id}_{secret}"

    def list(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, name, created, revoked, limits FROM tokens ORDER BY created"
            ).fetchall()
        return [TokenRecord(r[0], r[1], r[2], bool(r[3]), _limits_from_json(r[4])) for r in rows]

    def revoke(self, token_id: str) -> None:
        """Stop a token from working."""
        with self._connect() as db:
            cur = db.execute("UPDATE tokens SET revoked = 1 WHERE id = ?", (token_id,))
        if cur.rowcount == 0:
            raise NotFound(f"no token with id {token_id!r}; see `labservice token list`")
        with self._lock:
            self._cache.clear()

    def verify(self, token: str) -> Caller:
        """Return the caller a token belongs to; raise Unauthorized when it is not valid."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and now - hit[0] < _CACHE_SECONDS:
            return hit[1]
        bad = Unauthorized(
            "the token in the Authorization header is not valid or was revoked; send "
            "'Authorization: Bearer lab_...' with a token from `labservice token create`, or no header for public access"
        )
        if not token.startswith(PREFIX) or token.count("_") < 2:
            raise bad
        token_id, _, secret = token[len(PREFIX) :].partition("_")
        with self._connect() as db:
            row = db.execute(
                "SELECT name, hash, revoked, limits FROM tokens WHERE id = ?", (token_id,)
            ).fetchone()
        # Compare even when the id is unknown, so the timing does not tell ids apart.
        stored = row[1] if row else _hash("")
        if not hmac.compare_digest(stored, _hash(secret)) or row is None or row[2]:
            raise bad
        caller = Caller(token_id=token_id, name=row[0], limits=_limits_from_json(row[3]))
        with self._lock:
            self._cache[token] = (now, caller)
        return caller
