"""The push after a promotion: replicas swap now, not at their next alias poll.

Every model replica long-polls a small named actor, ``alias-notifier:{model}`` in the
``raymlops`` namespace. Whoever moves an alias on a cluster that serves the model (``raymlops
registry promote --address ...``, the retrain job) calls :func:`push_alias_moved`, which wakes
every waiting replica; each then reads the alias from the registry as it would on a poll. The
registry stays the one source of truth: a lost push costs at most ``serving.reload_poll_s``.

The notifier is owned by the replica that created it (not detached), so nothing is left behind
when the app is deleted; if its owner dies, the next replica to subscribe creates a new one.

Example:
    >>> push_alias_moved("churn")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

import ray

__all__ = ["AliasListener", "push_alias_moved"]

NAMESPACE = "raymlops"
_log = logging.getLogger("raymlops.serving")


def _actor_name(model: str) -> str:
    return f"alias-notifier:{model}"


@ray.remote(num_cpus=0)
class _AliasNotifier:
    """A sequence number and the replicas waiting for it to move."""

    def __init__(self) -> None:
        self._sequence = 0
        self._moved = asyncio.Event()

    async def wait(self, seen: int, timeout_s: float) -> int:
        if self._sequence == seen:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._moved.wait(), timeout_s)
        return self._sequence

    async def notify(self) -> int:
        self._sequence += 1
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
        return self._sequence


def push_alias_moved(model: str, *, timeout_s: float = 10.0) -> bool:
    """Wake the replicas serving ``model`` on the connected cluster; False when none listens."""
    if not ray.is_initialized():
        return False
    try:
        notifier = ray.get_actor(_actor_name(model), namespace=NAMESPACE)
        ray.get(notifier.notify.remote(), timeout=timeout_s)
    except (ValueError, ray.exceptions.RayError) as exc:  # nobody serves it here, or it just died
        _log.debug("no push for %s: %s", model, exc)
        return False
    return True


class AliasListener:
    """A daemon thread in a replica that calls ``on_push`` each time the alias is pushed."""

    #: how long one long-poll waits in the notifier before asking again
    _WAIT_S = 30.0

    def __init__(self, model: str, on_push: Callable[[], None], *, retry_s: float) -> None:
        self._model = model
        self._on_push = on_push
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raymlops-alias-push", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _subscribe(self):  # type: ignore[no-untyped-def]
        return _AliasNotifier.options(  # type: ignore[attr-defined]
            name=_actor_name(self._model), namespace=NAMESPACE, get_if_exists=True
        ).remote()

    def _run(self) -> None:
        seen: int | None = None
        while not self._stop.is_set():
            try:
                notifier = self._subscribe()
                if seen is None:
                    seen = ray.get(notifier.wait.remote(-1, 0.0))
                    self._on_push()  # a push sent before this subscription is not lost
                while not self._stop.is_set():
                    now = ray.get(notifier.wait.remote(seen, self._WAIT_S))
                    if now != seen:
                        seen = now
                        self._on_push()
            except Exception as exc:  # the notifier died with its owner: subscribe again
                if self._stop.is_set():
                    return
                _log.info("alias push channel for %s lost (%s); polling meanwhile", self._model, exc)
                seen = None
                self._stop.wait(self._retry_s)
