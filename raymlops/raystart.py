"""``ray start`` for a node of a one-machine cluster that stays on loopback.

``python -m raymlops.raystart start --node-ip-address=127.0.0.1 ...`` is Ray's own ``ray start``
with one change: Ray turns a loopback ``--node-ip-address`` into the machine's outward address
(``services.resolve_ip_for_localhost``, so that other machines can reach the node), and every
server of the node then binds there. A cluster whose nodes all run on this machine needs the
opposite: with the loopback address kept, the GCS, raylets, workers, agents and metrics
exporters bind 127.0.0.1 only. Any other address is passed on unchanged.

:func:`loopback_worker` is the ``worker_process_setup_hook`` of a local Ray that raymlops
starts: Ray Serve 2.60 binds each replica's inter-deployment gRPC server to ``[::]:0`` (every
interface) whatever the node's address; in a raymlops worker it binds 127.0.0.1 instead.
"""

from __future__ import annotations

import ipaddress
import sys

__all__ = ["LOOPBACK_ENV", "keep_loopback", "loopback_address", "loopback_worker", "main"]

#: in the environment of every process of a loopback Ray: Ray's processes that connect to the
#: GCS themselves (the dashboard agent's job module, job drivers) resolve a loopback address
#: to the machine's outward one unless this says the machine is no cluster host; that address
#: has nothing listening, and the Jobs API hangs ("No available agent to submit job")
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

_WILDCARDS = ("[::]:", "0.0.0.0:", ":")


def keep_loopback(resolve):  # type: ignore[no-untyped-def]
    """Wrap Ray's resolver so that a loopback IP address stays what it is."""

    def resolved(host: str) -> str:
        try:
            if ipaddress.ip_address(host).is_loopback:
                return host
        except ValueError:
            pass
        return resolve(host)

    return resolved


def loopback_address(address: str) -> str:
    """``address`` with a wildcard host (``[::]``, ``0.0.0.0`` or none) made 127.0.0.1.

    Example:
        >>> loopback_address("[::]:0"), loopback_address("10.0.0.5:80")
        ('127.0.0.1:0', '10.0.0.5:80')
    """
    for wildcard in _WILDCARDS:
        if address.startswith(wildcard):
            return "127.0.0.1:" + address[len(wildcard) :]
    return address


def loopback_worker() -> None:
    """Make gRPC servers that Ray code adds in this worker listen on 127.0.0.1, not everywhere."""
    from ray._common import tls_utils

    original = tls_utils.add_port_to_grpc_server
    if getattr(original, "_raymlops_loopback", False):
        return

    def add_port(server, address):  # type: ignore[no-untyped-def]
        return original(server, loopback_address(address))

    add_port._raymlops_loopback = True  # type: ignore[attr-defined]
    tls_utils.add_port_to_grpc_server = add_port
    # modules that imported the function by name before this hook ran
    for name in ("ray.serve._private.replica",):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "add_port_to_grpc_server"):
            module.add_port_to_grpc_server = add_port


def main() -> None:
    from ray._private import ray_constants, services
    from ray.scripts.scripts import main as ray_main

    services.resolve_ip_for_localhost = keep_loopback(services.resolve_ip_for_localhost)
    # LOOPBACK_ENV turned this off for the node's children; `ray start --address` (a worker
    # node) refuses to run without it
    ray_constants.ENABLE_RAY_CLUSTER = True
    ray_main()


if __name__ == "__main__":
    main()
