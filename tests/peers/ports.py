"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import random
import socket
import threading

LOOPBACK = "127.0.0.1"

# Ports are drawn below Linux's default ephemeral range (32768-60999) so that an outgoing
# connection made by some other process between "found free" and "bound by the peer" cannot
# take the port.
_LOW, _HIGH = 20000, 32000
_handed_out: set[int] = set()
_lock = threading.Lock()


def _bindable(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    # Also make sure nothing listens on the wildcard address with this port (Orthanc binds to
    # 0.0.0.0; a bind to 127.0.0.1 could succeed next to it only with SO_REUSEADDR games).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` now and was not returned before.

    Never returns the same port twice within one process, so several peers started by one test
    session never collide with each other. Another process may still take the port before the
    caller binds it; peers that start servers retry with new ports when binding fails.
    """
    rng = random.SystemRandom()
    with _lock:
        for _ in range(500):
            port = rng.randint(_LOW, _HIGH)
            if port in _handed_out:
                continue
            if _bindable(port, host):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free TCP port found on {host} in {_LOW}-{_HIGH}")


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free ports."""
    return [free_port(host) for _ in range(count)]


def is_listening(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
