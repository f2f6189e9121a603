"""Storage as one URI, read and written through ``pyarrow.fs``.

A local folder, ``s3://bucket/prefix`` or ``gs://bucket/prefix``: the registry, reference data
and reports all go through :class:`Storage`, so the same code runs on a laptop folder and on a
bucket shared by a cluster.

Example:
    >>> store = Storage.from_uri("/tmp/raymlops-doc")
    >>> store.write_bytes("a/b.txt", b"hi")
    >>> store.read_bytes("a/b.txt")
    b'hi'
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from raymlops.errors import StorageError
from raymlops.lineage import redact_uri
from raymlops.loopback import is_loopback_address

__all__ = ["Storage", "local_storage_warning"]

_LOCK_POLL_S = 0.05
#: modes of what raymlops creates in a local storage folder: only the user who runs it reads
#: the registry, the prediction log (raw request rows) and reference samples (training rows)
_PRIVATE_FILE = 0o600
_PRIVATE_DIR = 0o700


@dataclass(frozen=True)
class Storage:
    """A root path on a pyarrow filesystem. Paths given to methods are relative to the root."""

    fs: pafs.FileSystem
    root: str
    uri: str

    @classmethod
    def from_uri(cls, uri: str, *, create: bool = True) -> Storage:
        """Open a storage URI; a local folder is created when ``create`` is true.

        Raises:
            StorageError: the URI is malformed, or the place cannot be reached or written.
        """
        try:
            if "://" in uri:
                fs, root = pafs.FileSystem.from_uri(uri)
            else:
                fs, root = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            shown = redact_uri(uri)
            raise StorageError(f"storage {shown!r} cannot be opened: {exc}") from None
        store = cls(fs=fs, root=root.rstrip("/") or "/", uri=uri)
        store._check_reachable(create=create)
        return store

    @property
    def is_local(self) -> bool:
        """True on a local filesystem, where renames are atomic and ``flock`` works."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def is_s3(self) -> bool:
        """True on S3 (or an S3 API such as MinIO), where the lock uses conditional writes."""
        return type(self.fs).__name__ == "S3FileSystem"

    def _check_reachable(self, *, create: bool) -> None:
        try:
            info = self.fs.get_file_info(self.root)
            if info.type == pafs.FileType.File:
                raise StorageError(
                    f"storage {redact_uri(self.uri)!r} is a file, not a folder: point `storage:` at a folder"
                )
            if info.type == pafs.FileType.NotFound and create:
                if self.is_local:
                    _makedirs_private(self.root)
                else:
                    self.fs.create_dir(self.root, recursive=True)
        except StorageError:
            raise
        except OSError as exc:
            raise StorageError(
                f"storage {redact_uri(self.uri)!r} is not reachable or not writable: {exc}. "
                "Check the path or bucket, and credentials for s3:// or gs://"
            ) from None

    def path(self, *parts: str) -> str:
        """The absolute path of ``parts`` under the root."""
        return (
            posixpath.join(self.root, *parts)
            if not self.is_local
            else os.path.join(self.root, *parts)
        )

    def exists(self, relpath: str) -> bool:
        return self.fs.get_file_info(self.path(relpath)).type != pafs.FileType.NotFound

    def is_dir(self, relpath: str) -> bool:
        return self.fs.get_file_info(self.path(relpath)).type == pafs.FileType.Directory

    def list_dir(self, relpath: str) -> list[str]:
        """Names directly under ``relpath`` (empty when it does not exist)."""
        selector = pafs.FileSelector(self.path(relpath), allow_not_found=True, recursive=False)
        return sorted(
            posixpath.basename(i.path.rstrip("/")) for i in self.fs.get_file_info(selector)
        )

    def read_bytes(self, relpath: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(relpath)) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
                raise FileNotFoundError(errno.ENOENT, "not found", relpath) from None
            raise StorageError(f"cannot read {redact_uri(self.uri)}/{relpath}: {exc}") from None

    def read_json(self, relpath: str) -> object:
        return json.loads(self.read_bytes(relpath))

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Write a whole file so that readers see the old content or the new, never a part.

        Local: write a temporary file beside it, then rename (atomic). Object stores replace
        an object atomically on a single PUT.
        """
        target = self.path(relpath)
        parent = posixpath.dirname(target) if not self.is_local else os.path.dirname(target)
        try:
            if self.is_local:
                # private by default: prediction logs and reference samples hold raw inputs
                _makedirs_private(parent)
                tmp = f"{target}.tmp-{uuid.uuid4().hex}"
                # on disk before the rename makes it visible, and the rename on disk before
                # returning: a power cut leaves the old file or the new, never an empty one
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
                _fsync_dir(parent)
            else:
                self.fs.create_dir(parent, recursive=True)
                with self.fs.open_output_stream(target) as out:
                    out.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write {redact_uri(self.uri)}/{relpath}: {exc}") from None

    def write_json(self, relpath: str, payload: object) -> None:
        self.write_bytes(relpath, json.dumps(payload, indent=2, sort_keys=True).encode() + b"\n")

    def sync_dir(self, relpath: str) -> None:
        """Flush a local folder's entries to disk (a no-op on object stores)."""
        if self.is_local:
            _fsync_dir(self.path(relpath))

    def delete_dir(self, relpath: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(self.path(relpath))

    def move(self, src: str, dest: str) -> None:
        """Rename ``src`` to ``dest`` (atomic on a local filesystem)."""
        self.fs.move(self.path(src), self.path(dest))

    @contextlib.contextmanager
    def lock(
        self, relpath: str, *, timeout_s: float = 60.0, lease_s: float = 30.0
    ) -> Iterator[None]:
        """Hold an exclusive lock named ``relpath`` across processes.

        Local: ``fcntl.flock`` on a lock file (released by the OS if the holder dies).
        S3: a lock object created with a conditional write (``If-None-Match: *``), kept alive
        by a heartbeat and broken by others only after ``lease_s`` without one (see
        :mod:`raymlops.s3lock`); one process wins, the others wait up to ``timeout_s``.
        Other object stores: a best-effort lease (no conditional writes through pyarrow);
        a warning says so.

        Example:
            >>> with Storage.from_uri("/tmp/raymlops-doc").lock("models/m/.lock"):
            ...     pass

        Raises:
            StorageError: the lock was not acquired within ``timeout_s``, or was lost.
        """
        if self.is_local:
            with self._flock(relpath, timeout_s=timeout_s):
                yield
        elif self.is_s3:
            from raymlops.s3lock import S3Lock

            bucket, _, key = self.path(relpath).partition("/")
            with S3Lock(_s3_client(self.fs), bucket, key, timeout_s=timeout_s, lease_s=lease_s):
                yield
        else:
            warnings.warn(
                f"storage {redact_uri(self.uri)!r}: this object store has no conditional writes through "
                "pyarrow, so the registry lock is best effort; do not promote from two places "
                "at once (s3:// and local folders have safe locks)",
                stacklevel=3,
            )
            with self._lease(relpath, timeout_s=timeout_s):
                yield

    @contextlib.contextmanager
    def _flock(self, relpath: str, *, timeout_s: float) -> Iterator[None]:
        import fcntl

        path = self.path(relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StorageError(
                            f"could not lock {path} within {timeout_s:.0f}s: another raymlops "
                            "process holds it; retry when it is done"
                        ) from None
                    time.sleep(_LOCK_POLL_S)
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def _lease(self, relpath: str, *, timeout_s: float) -> Iterator[None]:
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        deadline = time.monotonic() + timeout_s
        while True:
            held = None
            with contextlib.suppress(FileNotFoundError, ValueError):
                held = self.read_json(relpath)
            expired = isinstance(held, dict) and held.get("expires", 0) < time.time()
            if held is None or expired:
                self.write_json(relpath, {"owner": token, "expires": time.time() + timeout_s})
                time.sleep(_LOCK_POLL_S)
                with contextlib.suppress(FileNotFoundError, ValueError):
                    confirmed = self.read_json(relpath)
                    if isinstance(confirmed, dict) and confirmed.get("owner") == token:
                        break
            if time.monotonic() > deadline:
                raise StorageError(
                    f"could not lock {redact_uri(self.uri)}/{relpath} within {timeout_s:.0f}s"
                )
            time.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                self.fs.delete_file(self.path(relpath))


_S3_CLIENTS: dict[str, Any] = {}


def _makedirs_private(path: str) -> None:
    """``os.makedirs`` whose every new level is 0700 (``makedirs`` gives the mode to the
    last level only)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, _PRIVATE_DIR)
        except FileExistsError:
            continue


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not a folder we can open (e.g. on Windows): the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _s3_client(fs: pafs.FileSystem) -> Any:
    """One boto3 client per S3 endpoint and account (creating one costs ~50 ms)."""
    from raymlops.s3lock import s3_client_for

    key = json.dumps(fs.__reduce__()[1][0], sort_keys=True, default=str)
    if key not in _S3_CLIENTS:
        _S3_CLIENTS[key] = s3_client_for(fs)
    return _S3_CLIENTS[key]


def local_storage_warning(storage_uri: str, address: str | None) -> str | None:
    """A warning when a local storage path meets a cluster address, else None.

    A local folder is not shared between machines: on a cluster each node would write its own
    registry. On a local multi-node cluster (every node on this machine) an absolute folder
    works; anywhere else use ``s3://bucket/prefix`` or ``gs://bucket/prefix``.

    Example:
        >>> local_storage_warning("/data/reg", "http://10.0.0.5:8265") is not None
        True
        >>> local_storage_warning("s3://bucket/reg", "http://10.0.0.5:8265") is None
        True
    """
    if address is None or "://" in storage_uri and not storage_uri.startswith("file://"):
        return None
    if is_loopback_address(address):
        return (
            f"storage {storage_uri!r} is a local folder: fine for a cluster whose nodes all run "
            "on this machine, but on a cloud or Kubernetes cluster each machine would keep its "
            "own registry there; set `storage: s3://bucket/prefix` for those"
        )
    return (
        f"storage {storage_uri!r} is a local folder, but the work runs on the cluster at "
        f"{address}: a local folder is not shared between nodes, so each machine would keep "
        "its own registry (and this machine would not see it). Set "
        "`storage: s3://bucket/prefix` (or gs://), readable by every node"
    )
