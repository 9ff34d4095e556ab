"""Run an ASGI app on a real loopback port in a background thread (uvicorn), for tests."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import uvicorn

from specfleet.local.processes import free_port


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
