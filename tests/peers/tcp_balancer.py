"""A TCP load balancer on 127.0.0.1: each new connection goes to the next backend in turn
(what a Kubernetes Service in front of two importer pods does, per connection), bytes pumped
both ways by two threads per connection::

    with TcpBalancer([adapter_a.port, adapter_b.port]) as lb:
        storescu(lb.port, files)
        lb.connections  # per backend port: how many connections it got
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections import Counter
from collections.abc import Sequence
from types import TracebackType

from tests.peers.ports import LOOPBACK

__all__ = ["TcpBalancer"]


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 20):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class TcpBalancer:
    """Round robin over ``backends`` (ports on 127.0.0.1)."""

    def __init__(self, backends: Sequence[int]) -> None:
        self.backends = list(backends)
        self.connections: Counter[int] = Counter()
        self._next = itertools.cycle(self.backends)
        self._listener = socket.create_server((LOOPBACK, 0), backlog=64)
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="tcp-balancer", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            backend = next(self._next)
            try:
                upstream = socket.create_connection((LOOPBACK, backend), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections[backend] += 1
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def start(self) -> TcpBalancer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for s in self._open:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> TcpBalancer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
