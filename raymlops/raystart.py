"""``ray start`` for a node of a one-machine cluster that stays on loopback.

``python -m raymlops.raystart start --node-ip-address=127.0.0.1 ...`` is Ray's own ``ray start``
with one change: Ray turns a loopback ``--node-ip-address`` into the machine's outward address
(``services.resolve_ip_for_localhost``, so that other machines can reach the node), and every
server of the node then binds there. A cluster whose nodes all run on this machine needs the
opposite: with the loopback address kept, the GCS, raylets, workers, agents and metrics
exporters bind 127.0.0.1 only. Any other address is passed on unchanged.

:func:`loopback_worker` is the ``worker_process_setup_hook`` of a local Ray that raymlops
starts: Ray Serve 2.60 binds each replica's inter-deployment gRPC server to ``[::]:0`` (every
interface) whatever the node's address; in a raymlops worker it binds 127.0.0.1 instead. It also
makes Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``) bind loopback only: Ray 2.60's
HAProxy config template binds the stats page and the Prometheus exporter to every interface
(``bind *:`` and ``bind :``) whatever ``http_options.host`` says; in a raymlops worker they bind
127.0.0.1 (:func:`loopback_haproxy_template`). And while no model replica is up, HAProxy's own
503 ("no server available") reaches the client as a 503 with ``Retry-After``, like the replicas'
own overload answer, not as Ray's 500 (:func:`retryable_haproxy_503`).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import ipaddress
import re
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = [
    "HAPROXY_TEMPLATES",
    "LOOPBACK_ENV",
    "keep_loopback",
    "loopback_address",
    "loopback_haproxy_template",
    "loopback_worker",
    "main",
    "retryable_haproxy_503",
]

#: in the environment of every process of a loopback Ray: Ray's processes that connect to the
#: GCS themselves (the dashboard agent's job module, job drivers) resolve a loopback address
#: to the machine's outward one unless this says the machine is no cluster host; that address
#: has nothing listening, and the Jobs API hangs ("No available agent to submit job")
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

_WILDCARDS = ("[::]:", "0.0.0.0:", ":")

#: the module of Serve's HAProxy config template, and the template's name in it (also imported
#: by name into ``ray.serve._private.haproxy``, which renders it in the HAProxy manager actor)
HAPROXY_TEMPLATES = "ray.serve._private.haproxy_templates"
_HAPROXY_TEMPLATE = "HAPROXY_CONFIG_TEMPLATE"
_HAPROXY_RENDERER = "ray.serve._private.haproxy"
#: a bind line with no host or a wildcard one before a templated port: ``bind :{{ ... }}``,
#: ``bind *:{{ ... }}``
_WILDCARD_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|\[::\]|::)?(:\{\{)", re.MULTILINE)
#: the hosts a bind line may keep: 127.0.0.1 and Serve's configured ``http_options.host``
#: (Ray renders a configured wildcard as ``*``: a cluster may choose to listen everywhere)
_ALLOWED_BIND = re.compile(
    r"^\s*bind\s+(?:127\.0\.0\.1:|\{\{ config\.(?:grpc_)?frontend_host \}\}:)", re.MULTILINE
)
_BIND_LINE = re.compile(r"^\s*bind\s.*$", re.MULTILINE)


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


def loopback_haproxy_template(template: str) -> str:
    """Serve's HAProxy config ``template`` with every listener that names no host (or a
    wildcard one) bound to 127.0.0.1; the frontends keep Serve's ``http_options.host``.

    Raises:
        ValueError: a bind line would still listen elsewhere (Ray changed its template): the
            HAProxy ingress is refused rather than opened to the network.

    Example:
        >>> loopback_haproxy_template("listen stats\\n  bind *:{{ config.stats_port }}\\n")
        'listen stats\\n  bind 127.0.0.1:{{ config.stats_port }}\\n'
    """
    patched = _WILDCARD_BIND.sub(r"\g<1>127.0.0.1\2", template)
    others = [
        line.strip()
        for line in _BIND_LINE.findall(patched)
        if not _ALLOWED_BIND.match(line)
    ]
    if others:
        raise ValueError(
            f"Ray Serve's HAProxy config template binds {others}, which raymlops cannot keep on "
            "127.0.0.1: set RAY_SERVE_ENABLE_HA_PROXY=0 to use Serve's own proxy"
        )
    return patched


#: Ray 2.60's template maps HAProxy's own 502, 503 and 504 to one fixed "500 Internal Server
#: Error" page (``errorfile 503 <dir>/500.http``); its 503 is "no server is available", which
#: is what a client gets while no ingress replica is up (starting, or all restarting)
_ERRORFILE_503 = re.compile(r"^(\s*)errorfile 503 \{\{ config\.error_file_path \}\}$", re.MULTILINE)
#: the body has the shape of the API's own errors (raymlops.serving.api); single quotes: HAProxy
#: takes the string as it is
_HTTP_ERROR_503 = (
    r"\1http-error status 503 content-type application/json string "
    """'{"error": {"code": 503, "message": "no model replica is up yet; retry shortly", """
    """"details": []} }' hdr Retry-After 1"""
)


def retryable_haproxy_503(template: str) -> str:
    """Serve's HAProxy config ``template`` with HAProxy's own 503 (no replica up) answered as
    503 with ``Retry-After: 1`` and a JSON error body, instead of Ray's fixed 500 page. The
    502 and 504 (a replica failed or timed out mid-request) stay Ray's 500.

    Example:
        >>> retryable_haproxy_503("    errorfile 503 {{ config.error_file_path }}")[:38]
        '    http-error status 503 content-type'
    """
    return _ERRORFILE_503.sub(_HTTP_ERROR_503, template)


def _patch_haproxy_templates(module: ModuleType) -> None:
    template = getattr(module, _HAPROXY_TEMPLATE)
    template = retryable_haproxy_503(loopback_haproxy_template(template))
    setattr(module, _HAPROXY_TEMPLATE, template)
    renderer = sys.modules.get(_HAPROXY_RENDERER)
    if renderer is not None and hasattr(renderer, _HAPROXY_TEMPLATE):
        setattr(renderer, _HAPROXY_TEMPLATE, getattr(module, _HAPROXY_TEMPLATE))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``patch`` on the module ``name`` as soon as this process imports it.

    The worker setup hook runs before a worker knows what it will run; importing Serve there
    to patch it would cost every worker (Ray Data's and Tune's too) over a second.
    """

    def __init__(self, name: str, patch: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.patch = patch

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once; and the look-up below must not come back here
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, patch = spec.loader, self.patch
        exec_module = loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            patch(module)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def _after_import(name: str, patch: Callable[[ModuleType], None]) -> None:
    module = sys.modules.get(name)
    if module is not None:
        patch(module)
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, patch))


def loopback_worker() -> None:
    """Make gRPC servers that Ray code adds in this worker listen on 127.0.0.1, not everywhere,
    and Serve's HAProxy ingress (when this worker runs it) too."""
    _after_import(HAPROXY_TEMPLATES, _patch_haproxy_templates)
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
