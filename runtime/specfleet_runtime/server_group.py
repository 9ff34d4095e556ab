"""uvicorn servers that run and stop together in one event loop.

`specfleet serve --admin-port` serves the replica's app on one port and the admin API on
another: two uvicorn servers sharing the process, the event loop and the engine. uvicorn
installs signal handlers per server (the last one started would get SIGTERM, the other
would keep serving), so the group owns the signals, and one server stopping for any reason
(a signal, the weights failing to load, a failed startup) stops them all. The sockets are
bound by the caller first, so a taken port is an error before anything loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn

GRACEFUL_SHUTDOWN_S = 10


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (OSError if taken); port 0 picks a free one. uvicorn
    listens on it once its server starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart may bind a port in TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class _GroupMember(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # ServerGroup.serve handles them for all
        yield


class ServerGroup:
    def __init__(self, apps: Sequence[tuple[Any, socket.socket]]) -> None:
        """`apps`: (ASGI app, bound socket) pairs, each app served on its socket."""
        self.sockets = [sock for _, sock in apps]
        self.servers = [
            _GroupMember(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
            for app, _ in apps
        ]

    @property
    def loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        return self.servers[0].config.get_loop_factory()  # uvloop where installed, as uvicorn.run

    @property
    def started(self) -> bool:
        return all(s.started for s in self.servers)

    @property
    def should_exit(self) -> bool:
        return any(s.should_exit for s in self.servers)

    def stop(self) -> None:
        """Graceful stop of every server. Safe from any thread: it sets flags the servers poll."""
        for server in self.servers:
            server.should_exit = True

    def _on_signal(self, sig: int) -> None:
        for server in self.servers:  # uvicorn's own rule: a second SIGINT stops waiting for clients
            server.handle_exit(sig, None)

    async def serve(self) -> None:
        """Serve until SIGTERM/SIGINT or until any server stops; returns once all have."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(self.servers, self.sockets)]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self.stop()
            await asyncio.gather(*tasks)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            for sock in self.sockets:
                sock.close()
