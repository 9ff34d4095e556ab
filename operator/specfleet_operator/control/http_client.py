"""The HTTP client for the controller's calls to replicas (readiness, /metrics, admin PUTs)."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # httpx builds a default context per client, loading the CA bundle each time: ~50 ms,
    # three clients a tick. One context, built once, serves every client.
    return httpx.create_ssl_context()


def replica_client(timeout: float | httpx.Timeout) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, verify=_tls_context())
