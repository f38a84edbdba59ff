"""The scratch store: where batch jobs put their results.

A local directory by default, or any fsspec URL (``s3://bucket/scratch``). Every job owns one prefix,
``<root>/<job id>/``. Writes are atomic per object: on a local disk a temporary name is written and then
renamed over the final one; on object stores a single PUT is already atomic. So a retried or duplicated
task can never leave a torn object behind, only the same bytes twice.

Workers build their own :class:`Scratch` from ``(url, storage_options)``, which is why the class keeps
nothing but those two values and a lazily created filesystem.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec

from labservice.errors import InvalidInput, NotFound
from labservice.storage._common import store_errors, write_atomic

HASH_BLOCK = 4 << 20


@dataclass(frozen=True)
class FileEntry:
    """One result object: its name relative to the job prefix, size in bytes and sha256 hex digest."""

    name: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


def check_name(name: str) -> str:
    """Reject names that would step out of a job's prefix."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"file name {name!r} must be a relative path without '.' or '..' parts")
    return name


class Scratch:
    """Per-job result storage on a local folder or any fsspec URL.

    Parameters
    ----------
    url
        Root of the scratch area: a local path, ``file://...``, ``memory://...`` or ``s3://bucket/prefix``.
    storage_options
        Passed to fsspec (for S3: ``key``, ``secret``, ``client_kwargs={"endpoint_url": ...}``).
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = str(url).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self._fs: fsspec.AbstractFileSystem | None = None
        self._root: str | None = None

    # -- plumbing ----------------------------------------------------------------------------------
    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
            self._fs, self._root = fs, root.rstrip("/")
            if self.local:
                fs.makedirs(self._root, exist_ok=True)
        return self._fs

    @property
    def root(self) -> str:
        self.fs  # noqa: B018 - resolves the root
        assert self._root is not None
        return self._root

    @property
    def local(self) -> bool:
        """Whether results live on a local disk (atomic rename) rather than an object store."""
        return fsspec.utils.get_protocol(self.url) in ("file", "local")

    def spec(self) -> tuple[str, dict[str, Any]]:
        """What a worker needs to rebuild this store."""
        return self.url, self.storage_options

    def path(self, job_id: str, name: str = "") -> str:
        """Filesystem path (without protocol) of ``name`` under the job's prefix."""
        base = posixpath.join(self.root, job_id)
        return posixpath.join(base, check_name(name)) if name else base

    def job_url(self, job_id: str, name: str = "") -> str:
        """Full URL (with protocol) of ``name`` under the job's prefix, for zarr or xarray."""
        base = f"{self.url}/{job_id}"
        return f"{base}/{check_name(name)}" if name else base

    # -- writes ------------------------------------------------------------------------------------
    def put_bytes(self, job_id: str, name: str, data: bytes) -> FileEntry:
        """Write ``data`` atomically to ``name`` and return its size and checksum."""
        final = self.path(job_id, name)
        with _storage_errors(final):
            write_atomic(self.fs, self.local, final, data)
        return FileEntry(name, len(data), hashlib.sha256(data).hexdigest())

    def put_parts(
        self, job_id: str, name: str, parts: Iterable[bytes | memoryview], checksum: bool = True
    ) -> FileEntry:
        """Like :meth:`put_bytes` for data given as consecutive pieces (no joined copy on local disks).

        Each piece is hashed and written as it comes, while it is still in the CPU's cache (a sha256 in a
        helper thread measured slower on our shared 2 cores). ``checksum=False`` skips the sha256 on local
        disks (the entry's sha256 is then empty): for working objects deleted once the job's files exist.
        """
        if not self.local:
            return self.put_bytes(job_id, name, b"".join(parts))
        final = self.path(job_id, name)
        h = hashlib.sha256()
        size = 0
        with _storage_errors(final):
            self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
            tmp = f"{final}.tmp-{uuid.uuid4().hex}"
            try:
                with open(tmp, "wb") as f:
                    for part in parts:
                        if checksum:
                            h.update(part)
                        f.write(part)
                        size += len(part) if isinstance(part, bytes) else part.nbytes
                os.replace(tmp, final)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        return FileEntry(name, size, h.hexdigest() if checksum else "")

    def put_file(self, job_id: str, name: str, local_path: str) -> FileEntry:
        """Upload (or move, when local) a finished local file to ``name`` atomically."""
        size, digest = _hash_local(local_path)
        final = self.path(job_id, name)
        with _storage_errors(final):
            if self.local:
                self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
                tmp = f"{final}.tmp-{uuid.uuid4().hex}"
                os.replace(local_path, tmp) if _same_device(local_path, final) else _copy(local_path, tmp)
                os.replace(tmp, final)
            else:
                self.fs.put_file(local_path, final)
        return FileEntry(name, size, digest)

    # -- reads -------------------------------------------------------------------------------------
    def exists(self, job_id: str, name: str) -> bool:
        with _storage_errors(self.path(job_id, name)):
            return bool(self.fs.exists(self.path(job_id, name)))

    def read_bytes(self, job_id: str, name: str, start: int | None = None, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of a result object (the whole object by default)."""
        p = self.path(job_id, name)
        with _storage_errors(p):
            try:
                return bytes(self.fs.cat_file(p, start=start, end=end))
            except FileNotFoundError:
                raise NotFound(f"job {job_id} has no file {name!r}") from None

    def size(self, job_id: str, name: str) -> int:
        p = self.path(job_id, name)
        with _storage_errors(p):
            try:
                return int(self.fs.size(p))
            except FileNotFoundError:
                raise NotFound(f"job {job_id} has no file {name!r}") from None

    def iter_range(
        self, job_id: str, name: str, start: int, end: int, block: int = 1 << 20
    ) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` in blocks (for HTTP downloads)."""
        pos = start
        while pos < end:
            stop = min(end, pos + block)
            yield self.read_bytes(job_id, name, pos, stop)
            pos = stop

    def checksum(self, job_id: str, name: str) -> FileEntry:
        """Size and sha256 of a stored object, streamed."""
        p = self.path(job_id, name)
        h = hashlib.sha256()
        size = 0
        with _storage_errors(p), self.fs.open(p, "rb", block_size=HASH_BLOCK) as f:
            while block := f.read(HASH_BLOCK):
                h.update(block)
                size += len(block)
        return FileEntry(name, size, h.hexdigest())

    def list(self, job_id: str, prefix: str = "") -> list[str]:
        """Every object under the job's prefix (or under ``prefix`` inside it), relative names, sorted."""
        base = self.path(job_id)
        top = self.path(job_id, prefix) if prefix else base
        with _storage_errors(top):
            try:
                found = self.fs.find(top)
            except FileNotFoundError:
                return []
        strip = self.fs._strip_protocol(base).rstrip("/") + "/"
        names = [self.fs._strip_protocol(f)[len(strip) :] for f in found]
        return sorted(n for n in names if ".tmp-" not in n)

    def usage(self, job_id: str) -> int:
        """Bytes stored under a job's prefix."""
        base = self.path(job_id)
        with _storage_errors(base):
            try:
                return int(self.fs.du(base, total=True))
            except FileNotFoundError:
                return 0

    # -- cancellation markers ----------------------------------------------------------------------
    def _tombstone(self, job_id: str) -> str:
        return posixpath.join(self.root, ".cancelled", job_id)

    def tombstone(self, job_id: str) -> None:
        """Mark a job cancelled, outside its prefix, so straggling tasks stop writing into it."""
        path = self._tombstone(job_id)
        with _storage_errors(path):
            if self.local:
                self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            self.fs.pipe_file(path, b"")

    def cancelled(self, job_id: str) -> bool:
        """Whether :meth:`tombstone` was called for the job."""
        with _storage_errors(self._tombstone(job_id)):
            return bool(self.fs.exists(self._tombstone(job_id)))

    # -- deletion ----------------------------------------------------------------------------------
    def delete(self, job_id: str, name: str = "") -> None:
        """Delete one object, a sub-prefix, or (no name) the job's whole prefix. Missing is fine."""
        p = self.path(job_id, name)
        with _storage_errors(p):
            try:
                if self.fs.exists(p):
                    self.fs.rm(p, recursive=True)
            except FileNotFoundError:
                pass
            if not self.local:
                self.fs.invalidate_cache()


def _hash_local(path: str) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _same_device(src: str, dest: str) -> bool:
    try:
        return os.stat(src).st_dev == os.stat(os.path.dirname(dest)).st_dev
    except OSError:
        return False


def _copy(src: str, dest: str) -> None:
    import shutil

    shutil.copyfile(src, dest)
    os.unlink(src)


def _storage_errors(path: str) -> store_errors:
    return store_errors(path, "scratch store unavailable")
