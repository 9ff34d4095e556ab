"""Run an ASGI app on a real loopback port in a background thread (uvicorn), for tests."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import uvicorn



@contextlib.contextmanager
def serve_in_thread(app, start_timeout: float = 30.0) -> Iterator[str]:
    """Yields the server's base URL; the port is the one the kernel picked."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
