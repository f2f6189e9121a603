"""Joining a cluster on this machine by its loopback address (raymlops cluster up)."""

from __future__ import annotations

import os

import pytest

from raymlops import runtime
from raymlops.loopback import is_loopback_address
from raymlops.raystart import LOOPBACK_ENV


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:6379", True),
        ("ray://127.0.0.1:10001", True),
        ("localhost:6379", True),
        ("[::1]:6379", True),
        ("10.0.0.5:6379", False),
        ("head.example.com:6379", False),
        ("auto", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback


@pytest.mark.parametrize(("address", "kept"), [("127.0.0.1:6379", True), ("10.0.0.5:6379", False)])
def test_joining_a_loopback_cluster_keeps_its_address_loopback(
    address: str, kept: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray resolves a loopback GCS address to the machine's outward one unless told the
    machine is no cluster host (a plain shell joining `raymlops cluster up` hung)."""
    import ray

    for key in LOOPBACK_ENV:  # absent now, and again after the test (monkeypatch restores it)
        monkeypatch.setenv(key, "x")
        monkeypatch.delenv(key)
    joined: list[str] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address, **kwargs: joined.append(address))
    monkeypatch.setattr(runtime, "use_cluster_token", lambda: None)
    runtime.ensure_ray(address)
    assert joined == [address]
    assert all((os.environ.get(k) == v) is kept for k, v in LOOPBACK_ENV.items())
