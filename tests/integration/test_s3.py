"""The registry on s3:// against a real S3 API server (moto) started here on a free port.

The server runs in this process (``ThreadedMotoServer``); storage URIs carry
``endpoint_override`` so pyarrow and boto3 talk to it over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from raymlops.errors import StorageError
from raymlops.registry import Registry
from raymlops.registry.bundle import BundleReader
from raymlops.s3lock import S3Lock
from raymlops.schema import Schema
from raymlops.storage import Storage, _s3_client
from tests.conftest import write_project
from tests.helpers import register_model

BUCKET = "raymlops-test"
REPO = Path(__file__).parents[2]
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serialised_moto_server(port: int) -> Any:
    """moto's server, one request at a time.

    moto checks ``If-None-Match`` and then stores the object without a lock, so two threads of
    its threaded server can both pass the check; real S3 makes the check and the write one
    atomic step. Serving requests one at a time gives the emulator S3's semantics.
    """
    from moto.server import ThreadedMotoServer

    class Serialised(ThreadedMotoServer):
        def _server_entry(self) -> None:
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                create_backend_app,
            )
            from werkzeug.serving import make_server

            app = DomainDispatcherApplication(create_backend_app)
            guard = threading.Lock()

            def one_at_a_time(environ: Any, start_response: Any) -> Any:
                with guard:
                    return list(app(environ, start_response))

            self._server = make_server(self._ip_address, self._port, one_at_a_time, True)
            self._server_ready_event.set()
            self._server.serve_forever()

    return Serialised(ip_address="127.0.0.1", port=port, verbose=False)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A local S3 API with one bucket; yields ``host:port``."""
    import boto3

    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    port = _free_port()
    server = _serialised_moto_server(port)
    server.start()
    try:
        endpoint = f"127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=f"http://{endpoint}").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _uri(endpoint: str, prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def _schema(tmp_path: Path) -> Schema:
    from raymlops.config import load_config

    return Schema.from_config(load_config(write_project(tmp_path)))


def test_registry_round_trip_on_s3(
    s3_endpoint: str, churn_frame: pd.DataFrame, tmp_path: Path
) -> None:
    # given a registry on s3://
    storage = Storage.from_uri(_uri(s3_endpoint, "round-trip"))
    assert storage.is_s3
    assert not storage.is_local
    registry = Registry(storage, "churn")
    schema = _schema(tmp_path)

    # when two versions are registered, promoted and rolled back
    v1 = register_model(registry, churn_frame, schema)
    v2 = register_model(registry, churn_frame, schema, params={"C": 0.5})
    registry.promote(v1, reason="first")
    registry.promote(v2, reason="better")
    event = registry.rollback(reason="oops")

    # then every file verifies, the alias and the audit say what happened, no lock is left
    assert (v1, v2) == ("v1", "v2")
    assert registry.versions() == ["v1", "v2"]
    assert all(registry.verify(v).ok for v in ("v1", "v2"))
    assert registry.champion() == "v1"
    assert event.previous == "v2"
    assert [e.action for e in registry.audit()] == ["promote", "promote", "rollback"]
    assert BundleReader(registry, "v2").metrics()
    assert not storage.exists("models/churn/.lock"), "the lock object is deleted on release"
    # and a fresh Storage (as another process would open it) reads the same registry
    again = Registry(Storage.from_uri(_uri(s3_endpoint, "round-trip")), "churn")
    assert again.champion() == "v1"
    assert again.verify("champion").ok


def test_a_held_lock_makes_others_wait_then_fail_clearly(s3_endpoint: str) -> None:
    storage = Storage.from_uri(_uri(s3_endpoint, "held"))
    client = _s3_client(storage.fs)
    with S3Lock(client, BUCKET, "held/models/m/.lock", lease_s=30):
        started = time.monotonic()
        with (
            pytest.raises(
                StorageError,
                match=r"could not lock s3://raymlops-test/held/\S+ within 1s: held by \S+:\d+:",
            ),
            storage.lock("models/m/.lock", timeout_s=1.0),
        ):
            pass
        assert time.monotonic() - started >= 1.0, "the waiter waits for the whole timeout"
    with storage.lock("models/m/.lock", timeout_s=1.0):
        assert storage.exists("models/m/.lock")


def test_a_lock_whose_holder_died_is_broken_after_its_lease(s3_endpoint: str) -> None:
    storage = Storage.from_uri(_uri(s3_endpoint, "stale"))
    client = _s3_client(storage.fs)
    # a holder that died: its lock object stays, with a 1 s lease and no heartbeat
    client.put_object(
        Bucket=BUCKET, Key="stale/models/m/.lock", Body=json.dumps({"lease_s": 1}).encode()
    )
    started = time.monotonic()
    with storage.lock("models/m/.lock", timeout_s=15.0):
        waited = time.monotonic() - started
    # Last-Modified has 1 s resolution, so the lease is over within ~2 s of server time
    assert 0.9 <= waited < 10, (
        f"the stale lock should be broken after its 1 s lease, took {waited:.1f}s"
    )


def test_a_heartbeat_keeps_a_long_hold(s3_endpoint: str) -> None:
    storage = Storage.from_uri(_uri(s3_endpoint, "beat"))
    client = _s3_client(storage.fs)
    # the waiter tries for three leases: without renewals it would break the holder's lock
    with (
        S3Lock(client, BUCKET, "beat/models/m/.lock", lease_s=1.2),
        pytest.raises(StorageError, match="could not lock"),
        S3Lock(client, BUCKET, "beat/models/m/.lock", timeout_s=3.6, lease_s=1.2),
    ):
        pass


_WORKER = textwrap.dedent(
    """
    import sys, time
    from raymlops.registry import Registry
    from raymlops.storage import Storage

    uri, name, start_at, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    # the lock is under test, and these files are no models: no probe (tests/unit/test_probe.py)
    registry = Registry(Storage.from_uri(uri), "churn", probe=None)
    time.sleep(max(0.0, start_at - time.time()))
    made = [registry.register({"model.json": f"{name}-{i}".encode()}) for i in range(2)]
    for i in range(rounds):
        registry.promote(made[i % 2], reason=f"{name} round {i}")
    print(" ".join(made))
    """
)


def test_two_processes_promoting_at_once_never_lose_or_tear_an_update(s3_endpoint: str) -> None:
    # given two processes that register and promote on the same s3:// registry at the same time
    uri = _uri(s3_endpoint, "race")
    rounds = 8
    start_at = time.time() + 4.0  # both interpreters are up by then
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, uri, name, str(start_at), str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("a", "b")
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for proc, (_stdout, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, f"a promoting process failed:\n{stderr[-3000:]}"

    # then each version number went to exactly one process, and every file verifies
    registry = Registry(Storage.from_uri(uri), "churn")
    made = [out.split() for out, _ in outs]
    assert sorted(made[0] + made[1]) == ["v1", "v2", "v3", "v4"], made
    assert all(registry.verify(v).ok for v in registry.versions())
    # every promotion is in the audit log: a read-modify-write outside the lock would lose some
    audit = registry.audit()
    assert len(audit) == 2 * rounds, f"{2 * rounds} promotions, audit has {len(audit)}"
    # and the alias is whole JSON pointing at the last promoted version
    assert registry.aliases() == {"champion": audit[-1].version}
    chain = [e.previous for e in audit[1:]]
    assert chain == [e.version for e in audit[:-1]], "each promotion saw the one before it"


def test_bad_s3_endpoint_is_a_clear_storage_error() -> None:
    port = _free_port()  # nothing listens there
    with pytest.raises(StorageError, match="not reachable"):
        Storage.from_uri(
            f"s3://{BUCKET}/x?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        )


def test_train_reads_data_from_s3_and_registers_on_s3(s3_endpoint: str, tmp_path: Path) -> None:
    """The whole pipeline on S3: data read by Ray Data, the version and its lock on S3."""
    import boto3

    from raymlops.cli import main
    from raymlops.config import load_config
    from raymlops.examples import make_churn
    from raymlops.pipeline import open_registry

    # given a CSV in the bucket and a config whose storage and data are s3:// URIs
    client = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}")
    body = make_churn(1500, seed=4).to_csv(index=False).encode()
    client.put_object(Bucket=BUCKET, Key="data/churn/train.csv", Body=body)
    query = f"endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    # Ray's workers started before this module set the AWS variables, so the data URI carries
    # the (fake) keys itself; on a cluster the nodes' own credentials (instance profile) do
    config = write_project(
        tmp_path,
        source=f"s3://testing:testing@{BUCKET}/data/churn/train.csv?{query}",
        search="{num_samples: 2, max_concurrent: 2, max_boosting_rounds: 20, time_budget_s: 120}",
    )
    config.write_text(
        config.read_text().replace("storage: ./store", f"storage: {_uri(s3_endpoint, 'train')}")
    )

    # when it is trained and promoted
    assert main(["train", "--config", str(config), "--promote", "--quiet"]) == 0

    # then the version is on S3, verifies, and its lineage names the S3 source
    registry = open_registry(load_config(config))
    assert registry.champion() == "v1"
    assert registry.verify("v1").ok
    lineage = BundleReader(registry, "v1").lineage()
    assert f"{BUCKET}/data/churn/train.csv" in lineage["data"]["source"]
    assert lineage["data"]["rows"]["total"] == 1500
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="train/models/churn/versions/v1/")
    assert {o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]} >= {"MANIFEST.json"}
