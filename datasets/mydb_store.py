"""The user store: where MyDB tables live, one Parquet file per table version, on a local folder or any
fsspec URL (``s3://bucket/mydb``).

A table's file is ``<owner id>/<table name>-<16 hex>.parquet``: a new version is a new file, written
whole (local: a temporary name renamed over; object stores: one PUT), and the platform database's row
(``mydb_tables.key``) is switched to it in one transaction. So a reader sees the old version or the new one,
never a torn file, and a cached Parquet reader of a key never goes stale. Keys are built here from
validated parts only and checked again before any path is formed: nothing a caller sends reaches a path.
"""

from __future__ import annotations

import io
import posixpath
import re
import uuid
from typing import Any

import fsspec

from labservice.errors import InvalidInput, NotFound
from labservice.storage._common import store_errors, write_atomic

_OWNER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TABLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}/[a-z][a-z0-9_]{0,62}-[0-9a-f]{16}\.parquet$")


def check_table_name(name: object) -> str:
    """``name`` when it is a valid table name (it is both an SQL identifier and part of a file name)."""
    if not isinstance(name, str) or not TABLE_RE.match(name):
        raise InvalidInput(
            f"table name {str(name)[:80]!r} is not valid: use 1-63 lower-case letters, digits and _, starting "
            "with a letter (for example halos_z0)"
        )
    return name


class TableStore:
    """Parquet files of MyDB tables under one root (local path, ``file://``, ``memory://`` or ``s3://``).

    Workers rebuild it from :meth:`spec`; it keeps nothing else but a lazily made filesystem.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = str(url).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self._fs: fsspec.AbstractFileSystem | None = None
        self._root = ""

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
            self._root = root.rstrip("/")
            if self.local:
                fs.makedirs(self._root, exist_ok=True)
            self._fs = fs
        return self._fs

    @property
    def local(self) -> bool:
        return fsspec.utils.get_protocol(self.url) in ("file", "local")

    def spec(self) -> tuple[str, dict[str, Any]]:
        return self.url, self.storage_options

    @staticmethod
    def new_key(owner_id: str, name: str) -> str:
        """A fresh key for a new version of ``owner_id``'s table ``name``."""
        if not _OWNER_RE.match(owner_id or ""):
            raise InvalidInput(f"owner id {owner_id!r} cannot name a folder in the user store")
        return f"{owner_id}/{check_table_name(name)}-{uuid.uuid4().hex[:16]}.parquet"

    def path(self, key: str) -> str:
        """The filesystem path of a key; refuses anything that is not a key this store made."""
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise InvalidInput(f"{str(key)[:80]!r} is not a key of the user store")
        self.fs  # noqa: B018 - resolves the root
        full = posixpath.join(self._root, key)
        if posixpath.normpath(full) != full or not full.startswith(self._root + "/"):
            raise InvalidInput(f"{key!r} would leave the user store")
        return full

    def put(self, key: str, data: bytes) -> None:
        """Write one table version atomically."""
        final = self.path(key)
        with _storage_errors(final):
            write_atomic(self.fs, self.local, final, data)

    def get(self, key: str) -> bytes:
        p = self.path(key)
        with _storage_errors(p):
            try:
                return bytes(self.fs.cat_file(p))
            except FileNotFoundError:
                raise NotFound(
                    "the table's file is gone (it was replaced or dropped meanwhile); try again"
                ) from None

    def open(self, key: str) -> io.BufferedIOBase:
        """A seekable reader (Parquet reads only the footer and the columns it needs)."""
        p = self.path(key)
        with _storage_errors(p):
            try:
                return self.fs.open(p, "rb")
            except FileNotFoundError:
                raise NotFound(
                    "the table's file is gone (it was replaced or dropped meanwhile); try again"
                ) from None

    def delete(self, key: str) -> None:
        """Remove a version (missing is fine: deletes may repeat)."""
        p = self.path(key)
        with _storage_errors(p):
            try:
                self.fs.rm_file(p)
            except FileNotFoundError:
                pass

    def keys(self, owner_id: str) -> list[str]:
        """Every file under an owner's folder (tests check that nothing is left behind); object stores may
        list the folder itself, which is not a file."""
        if not _OWNER_RE.match(owner_id or ""):
            raise InvalidInput(f"owner id {owner_id!r} cannot name a folder in the user store")
        self.fs  # noqa: B018
        folder = posixpath.join(self._root, owner_id)
        with _storage_errors(folder):
            try:
                found = self.fs.ls(folder, detail=True, refresh=True)
            except FileNotFoundError:
                return []
            return sorted(
                f"{owner_id}/{posixpath.basename(e['name'].rstrip('/'))}"
                for e in found
                if e["type"] == "file" and e["name"].endswith(".parquet")
            )


def _storage_errors(path: str) -> store_errors:
    return store_errors(path, "the user store is unavailable")
