"""Which ZeroMQ endpoints never leave this machine: the one loopback check, used by the server (a non-loopback bind
needs encryption) and by the add-on (a non-loopback backend needs Blender's online access)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// endpoints on a loopback address only (127.0.0.0/8, ::1, localhost)."""
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("ipc", "inproc"):
        return True
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: reachable from outside
