"""One OpenAI-compatible endpoint in front of the local replicas.

Each request goes to the replica with the fewest requests in flight through this router
(ties rotate, so an idle fleet is used evenly). Responses are passed through as they
arrive, so server-sent event streams stay streams. The router never parses or rewrites
bodies: the replicas do all validation, and their 4xx answers reach the client unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# Hop-by-hop and length headers are the proxy's own business on each side.
_DROP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"}


@dataclass(frozen=True)
class Backend:
    name: str
    base_url: str


class LeastLoaded:
    """In-flight counts per backend and the choice of the least-loaded one (pure, no I/O)."""

    def __init__(self, backends: list[Backend] | None = None) -> None:
        self._backends: list[Backend] = []
        self._in_flight: dict[str, int] = {}
        self._routed: dict[str, int] = {}
        self._next = 0
        self.set_backends(backends or [])

    def set_backends(self, backends: list[Backend]) -> None:
        """Replace the backend list; requests in flight to a removed backend finish there."""
        self._backends = list(backends)
        for b in self._backends:
            self._in_flight.setdefault(b.name, 0)
            self._routed.setdefault(b.name, 0)

    @property
    def backends(self) -> list[Backend]:
        return list(self._backends)

    def acquire(self) -> Backend:
        """The backend with the fewest requests in flight, counted as one more from now."""
        if not self._backends:
            raise LookupError("no replicas are available")
        n = len(self._backends)
        order = [self._backends[(self._next + i) % n] for i in range(n)]
        chosen = min(order, key=lambda b: self._in_flight[b.name])
        self._next = (self._backends.index(chosen) + 1) % n
        self._in_flight[chosen.name] += 1
        self._routed[chosen.name] += 1
        return chosen

    def release(self, backend: Backend) -> None:
        self._in_flight[backend.name] -= 1

    def in_flight(self) -> dict[str, int]:
        return {b.name: self._in_flight[b.name] for b in self._backends}

    def routed(self) -> dict[str, int]:
        return {b.name: self._routed[b.name] for b in self._backends}


# Serve the router with at least this keep-alive, longer than clients' usual idle expiry
# (httpx: 5 s), for the same reason as the upstream expiry below.
KEEP_ALIVE_SECONDS = 30


class Router:
    """The proxy: a LeastLoaded choice plus an httpx client; `app` is the ASGI application."""

    def __init__(self, backends: list[Backend], *, timeout: float = 600.0) -> None:
        self.balance = LeastLoaded(backends)
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/completions", self._proxy, methods=["POST"]),
                Route("/v1/chat/completions", self._proxy, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/router/stats", self._stats, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # No pool limit: the router must never be what queues requests (least-loaded
        # routing needs them to reach the replicas), and no proxy settings: loopback only.
        # Idle connections expire well before the replicas' server closes them (uvicorn: 5 s),
        # so a request is never sent on a connection the other side is just closing.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=2.0)
        async with httpx.AsyncClient(timeout=self._timeout, limits=limits, trust_env=False) as client:
            self._client = client
            yield
        self._client = None

    def set_backends(self, backends: list[Backend]) -> None:
        self.balance.set_backends(backends)

    def _forward_headers(self, request: Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k.lower() not in _DROP_HEADERS}

    async def _proxy(self, request: Request) -> Response:
        try:
            backend = self.balance.acquire()
        except LookupError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "unavailable"}}, status_code=503)
        assert self._client is not None
        try:
            upstream_request = self._client.build_request(
                "POST",
                f"{backend.base_url}{request.url.path}",
                content=await request.body(),
                headers=self._forward_headers(request),
                params=request.query_params,
            )
            upstream = await self._client.send(upstream_request, stream=True)
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            self.balance.release(backend)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return JSONResponse(
                {"error": {"message": f"replica {backend.name} unreachable: {type(exc).__name__}", "type": "bad_gateway"}},
                status_code=502,
            )

        released = False

        async def finish() -> None:
            nonlocal released
            if not released:
                released = True
                self.balance.release(backend)
                await upstream.aclose()

        async def body() -> AsyncIterator[bytes]:
            # The finally also runs when the client goes away mid-stream (the response task
            # is cancelled), so an abandoned stream stops counting as load.
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await finish()

        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_HEADERS}
        headers["x-specfleet-replica"] = backend.name
        return StreamingResponse(
            body(),
            status_code=upstream.status_code,
            headers=headers,
            background=BackgroundTask(finish),
        )

    async def _models(self, request: Request) -> Response:
        assert self._client is not None
        for backend in self.balance.backends:
            try:
                upstream = await self._client.get(f"{backend.base_url}/v1/models", timeout=10.0)
            except httpx.HTTPError:
                continue
            return Response(upstream.content, status_code=upstream.status_code, media_type="application/json")
        return JSONResponse({"error": {"message": "no replica answered /v1/models", "type": "unavailable"}}, status_code=503)

    async def _health(self, request: Request) -> Response:
        n = len(self.balance.backends)
        return JSONResponse({"status": "ok" if n else "no replicas", "replicas": n}, status_code=200 if n else 503)

    async def _stats(self, request: Request) -> Response:
        return JSONResponse({"in_flight": self.balance.in_flight(), "routed": self.balance.routed()})
