"""A mutual-exclusion lock on S3, built on conditional writes (no Ray; needs ``boto3``).

S3 has had strongly consistent reads and conditional writes since 2024: ``PutObject`` with
``If-None-Match: *`` creates an object only when it does not exist, atomically, and
``If-Match: <etag>`` replaces or deletes it only when nobody changed it since. pyarrow's
``S3FileSystem`` cannot send those headers, so the lock talks to S3 through boto3, with the
same endpoint, region and credentials as the storage's pyarrow filesystem.

The protocol:

* **acquire**: create the lock object with ``If-None-Match: *``. Exactly one of several
  concurrent writers gets 200; the others get 412 (or 409 while a write is in flight) and wait.
* **lease**: a holder that dies leaves its object behind, so the lock carries a lease: the
  holder re-writes it every ``lease_s / 4`` with ``If-Match`` (a heartbeat), and a waiter
  may delete a lock whose ``Last-Modified`` is older than ``lease_s`` by the *server's* clock
  (the ``Date`` of the same response), so clocks of different machines never matter. The
  delete is conditional on the stale ETag: two waiters breaking the same stale lock cannot
  delete a fresh one.
* **release**: delete with ``If-Match`` on our own ETag, so a holder that lost its lease
  never deletes the next holder's lock; it reports the loss instead.

Example:
    >>> with S3Lock(client, "bucket", "models/churn/.lock"):  # doctest: +SKIP
    ...     move_alias()
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import os
import random
import socket
import threading
import time
import uuid
from typing import Any

from raymlops.errors import StorageError

__all__ = ["S3Lock", "s3_client_for"]

_BUSY_STATUS = {409, 412}  # 412 PreconditionFailed; 409 ConditionalRequestConflict
_MISSING_STATUS = {404}


def s3_client_for(fs: Any) -> Any:
    """A boto3 S3 client speaking to the same endpoint, region and account as pyarrow's ``fs``.

    Raises:
        StorageError: boto3 is not installed (``pip install 'raymlops[s3]'``).
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StorageError(
            "locking an s3:// registry needs boto3 (S3 conditional writes): "
            "pip install 'raymlops[s3]'"
        ) from None
    # pyarrow exposes its constructor arguments through pickling support; the keys used here
    # have been stable since pyarrow 8.
    options: dict[str, Any] = fs.__reduce__()[1][0]
    endpoint = options.get("endpoint_override") or None
    if endpoint and "://" not in endpoint:
        endpoint = f"{options.get('scheme') or 'https'}://{endpoint}"
    kwargs: dict[str, Any] = {
        "region_name": options.get("region") or None,
        "endpoint_url": endpoint,
        "config": Config(retries={"max_attempts": 3, "mode": "standard"}),
    }
    if options.get("access_key"):
        kwargs["aws_access_key_id"] = options["access_key"]
        kwargs["aws_secret_access_key"] = options.get("secret_key")
        kwargs["aws_session_token"] = options.get("session_token") or None
    return boto3.client("s3", **kwargs)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


class S3Lock:
    """An exclusive lock held as the object ``s3://{bucket}/{key}`` (see the module docstring).

    Args:
        client: a boto3 S3 client (see :func:`s3_client_for`).
        bucket, key: where the lock object lives.
        timeout_s: how long :meth:`acquire` waits before failing with :class:`StorageError`.
        lease_s: how long a holder that stopped heart-beating keeps the lock.
        poll_s: the wait between attempts (with jitter, so waiters do not march in step).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        timeout_s: float = 60.0,
        lease_s: float = 30.0,
        poll_s: float = 0.1,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.timeout_s = timeout_s
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._etag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._guard = threading.Lock()  # the heartbeat and release never write at once
        self._heartbeat: threading.Thread | None = None

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def _body(self) -> bytes:
        return json.dumps(
            {"owner": self.owner, "lease_s": self.lease_s, "written_at": time.time()}
        ).encode()

    # -- acquire ---------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout_s``.

        Raises:
            StorageError: another process held it for the whole wait, or S3 refused the write.
        """
        deadline = time.monotonic() + self.timeout_s
        holder = "unknown"
        while True:
            try:
                response = self.client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=self._body(), IfNoneMatch="*"
                )
            except Exception as exc:
                if _status(exc) not in _BUSY_STATUS:
                    raise StorageError(f"cannot create the lock {self.where}: {exc}") from None
                holder = self._break_if_stale()
            else:
                self._etag = response["ETag"]
                self._start_heartbeat()
                return
            if time.monotonic() > deadline:
                raise StorageError(
                    f"could not lock {self.where} within {self.timeout_s:.0f}s: held by "
                    f"{holder}. Another raymlops process is changing this registry; retry when "
                    f"it is done (a lock whose holder died expires after {self.lease_s:.0f}s)"
                )
            time.sleep(self.poll_s * (0.5 + random.random()))

    def _break_if_stale(self) -> str:
        """Delete the current lock if its lease ran out; returns who holds it, for messages."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            if _status(exc) in _MISSING_STATUS:
                return "nobody (released just now)"
            raise StorageError(f"cannot read the lock {self.where}: {exc}") from None
        payload = self._payload(head)
        renewed = head["LastModified"].astimezone(dt.timezone.utc).isoformat(timespec="seconds")
        holder = f"{payload.get('owner', 'an unknown process')} (renewed {renewed})"
        age = (_server_time(head) - head["LastModified"]).total_seconds()
        # the lease is the holder's, not ours: a waiter with a shorter lease must not cut it short
        if age <= float(payload.get("lease_s", self.lease_s)):
            return holder
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=head["ETag"])
        except Exception as exc:
            # someone renewed or broke it first: not ours to delete, try again
            if _status(exc) not in _BUSY_STATUS | _MISSING_STATUS:
                raise StorageError(f"cannot break the stale lock {self.where}: {exc}") from None
        return f"{holder}, whose lease ran out {age:.0f}s ago (broken)"

    def _payload(self, head: dict[str, Any]) -> dict[str, Any]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key, IfMatch=head["ETag"])
            payload = json.loads(body["Body"].read())
        except Exception:  # changed or gone since the HEAD, or not ours: describe it vaguely
            return {}
        return payload if isinstance(payload, dict) else {}

    # -- heartbeat and release -------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"raymlops-lock-{self.key}", daemon=True
        )
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            with self._guard:
                if self._stop.is_set():
                    return
                try:
                    response = self.client.put_object(
                        Bucket=self.bucket, Key=self.key, Body=self._body(), IfMatch=self._etag
                    )
                    self._etag = response["ETag"]
                except Exception as exc:
                    self._lost = f"the lease could not be renewed: {exc}"
                    return

    def release(self) -> None:
        """Give the lock back (only our own: the delete is conditional on our ETag).

        Raises:
            StorageError: the lease was lost while held (the work done under it may have
                overlapped another holder's).
        """
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=10)
        with self._guard:
            etag, self._etag = self._etag, None
            if etag is None:
                return
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)
            except Exception as exc:
                if _status(exc) not in _BUSY_STATUS | _MISSING_STATUS:
                    raise StorageError(f"cannot release the lock {self.where}: {exc}") from None
                self._lost = self._lost or "another process took it after the lease ran out"
        if self._lost:
            raise StorageError(
                f"the lock {self.where} was lost while held ({self._lost}); the operation may "
                f"have overlapped another process's: check it (raymlops registry list/verify)"
            )

    def __enter__(self) -> S3Lock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.release()
            return
        with contextlib.suppress(StorageError):  # the original error is the one to report
            self.release()


def _server_time(response: dict[str, Any]) -> dt.datetime:
    """The S3 server's clock from a response's ``Date`` header (our own clock if it has none)."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        try:
            return email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            pass
    return dt.datetime.now(dt.timezone.utc)
