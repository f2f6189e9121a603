"""Whether a host or an address stays on this machine: the one loopback check.

Binding checks (Serve's HTTP host, the benchmark's listeners, the socket tests) and address
checks (a cluster on this machine, local storage beside a cluster) ask the same question;
Python < 3.13 calls ``::ffff:127.0.0.1`` not loopback, so asking it in one place matters.

Example:
    >>> is_loopback_host("127.0.0.1"), is_loopback_host("0.0.0.0"), is_loopback_host("[::1]")
    (True, False, True)
    >>> is_loopback_address("ray://localhost:10001"), is_loopback_address("10.0.0.9:6379")
    (True, False)
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["is_loopback_address", "is_loopback_host"]


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (an IP, bracketed or not, or ``localhost``) is this machine only;
    ``0.0.0.0``, ``::``, ``*``, empty and other names are not."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 (Python < 3.13 calls it not loopback)
    return ip.is_loopback


def is_loopback_address(address: str | None) -> bool:
    """Whether a cluster address (``host:port``, ``[v6]:port`` or a URL such as
    ``ray://host:port``) names this machine, so its nodes see this machine's folders."""
    if not address:
        return False
    try:
        host = urlsplit(address if "://" in address else f"tcp://{address}").hostname
    except ValueError:  # an unbalanced bracket
        return False
    return is_loopback_host(host)
