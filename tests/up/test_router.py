"""The local fleet's router: least-loaded choice, streaming passthrough, errors passed on.

The backends here are small real HTTP servers whose answers the test controls (they hold
a request until told to finish it), so which replica a request reaches and when is
observable; the end-to-end path through real `specfleet serve` replicas is covered by the
`specfleet up` tests.
"""

import asyncio
import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from asgi_thread import serve_in_thread
from specfleet.local.processes import free_port
from specfleet.local.router import Backend, LeastLoaded, Router


def controllable_backend(name: str) -> Starlette:
    """Answers /v1/completions with its name. Requests with "hold": true wait while the
    backend's gate is closed (POST /open, POST /close); "stream": true sends one SSE event,
    waits for the gate, then sends the rest. The gate starts closed."""
    state: dict = {}

    def gate() -> asyncio.Event:
        return state.setdefault("gate", asyncio.Event())

    async def completions(request: Request):
        body = await request.json()
        if body.get("max_tokens", 1) <= 0:
            return JSONResponse({"error": {"message": "max_tokens must be > 0"}}, status_code=422)
        if body.get("stream"):
            async def events():
                yield f"data: {json.dumps({'backend': name, 'part': 1})}\n\n"
                await gate().wait()
                yield f"data: {json.dumps({'backend': name, 'part': 2})}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        if body.get("hold"):
            await gate().wait()
        return JSONResponse({"backend": name, "auth": request.headers.get("authorization")})

    async def open_gate(request: Request):
        gate().set()
        return JSONResponse({})

    async def close_gate(request: Request):
        if gate().is_set():
            state["gate"] = asyncio.Event()
        return JSONResponse({})

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [{"id": "pycode", "object": "model"}]})

    return Starlette(routes=[
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/open", open_gate, methods=["POST"]),
        Route("/close", close_gate, methods=["POST"]),
        Route("/v1/models", models),
    ])


@pytest.fixture
def fleet():
    with serve_in_thread(controllable_backend("a")) as url_a, serve_in_thread(controllable_backend("b")) as url_b:
        router = Router([Backend("a", url_a), Backend("b", url_b)])
        with serve_in_thread(router.app) as router_url:
            yield router, router_url, {"a": url_a, "b": url_b}


async def wait_in_flight(router: Router, expected: dict[str, int]) -> None:
    for _ in range(200):
        if router.balance.in_flight() == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"in flight {router.balance.in_flight()}, expected {expected}")


def test_least_loaded_picks_the_emptiest_backend_and_rotates_ties():
    balance = LeastLoaded([Backend("a", "u"), Backend("b", "u"), Backend("c", "u")])
    picks = [balance.acquire().name for _ in range(3)]
    assert sorted(picks) == ["a", "b", "c"]  # an idle fleet is spread, not piled on the first
    balance.release(Backend("b", "u"))
    assert balance.acquire().name == "b"
    assert balance.in_flight() == {"a": 1, "b": 1, "c": 1}
    with pytest.raises(LookupError, match="no replicas"):
        LeastLoaded([]).acquire()


async def test_requests_go_to_the_replica_with_fewest_in_flight(fleet):
    router, url, backends = fleet
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        held = [asyncio.create_task(client.post("/v1/completions", json={"hold": True})) for _ in range(4)]
        await wait_in_flight(router, {"a": 2, "b": 2})
        # Finish b's two: b is now empty and a still has two, so the next two go to b.
        await client.post(f"{backends['b']}/open")
        await wait_in_flight(router, {"a": 2, "b": 0})
        await client.post(f"{backends['b']}/close")
        later = [asyncio.create_task(client.post("/v1/completions", json={"hold": True})) for _ in range(2)]
        await wait_in_flight(router, {"a": 2, "b": 2})
        for name in backends:
            await client.post(f"{backends[name]}/open")
        answers = [r.json()["backend"] for r in await asyncio.gather(*held, *later)]
        assert answers.count("a") == 2 and answers.count("b") == 4
        assert router.balance.in_flight() == {"a": 0, "b": 0}
        stats = (await client.get("/router/stats")).json()
        assert stats["routed"] == {"a": 2, "b": 4}


async def test_streams_pass_through_event_by_event(fleet):
    router, url, backends = fleet
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with client.stream("POST", "/v1/completions", json={"stream": True}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            serving = response.headers["x-specfleet-replica"]
            lines = response.aiter_lines()
            first = await anext(lines)
            # The first event arrived while the backend still holds the second one.
            assert json.loads(first.removeprefix("data: ")) == {"backend": serving, "part": 1}
            assert router.balance.in_flight()[serving] == 1
            await client.post(f"{backends[serving]}/open")
            rest = [line async for line in lines if line]
        assert rest == [f"data: {json.dumps({'backend': serving, 'part': 2})}", "data: [DONE]"]
        await wait_in_flight(router, {"a": 0, "b": 0})


async def test_replica_errors_and_headers_reach_the_client_unchanged(fleet):
    router, url, _ = fleet
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        bad = await client.post("/v1/completions", json={"max_tokens": 0})
        assert bad.status_code == 422 and bad.json()["error"]["message"] == "max_tokens must be > 0"
        ok = await client.post("/v1/completions", json={}, headers={"Authorization": "Bearer sk-test"})
        assert ok.json()["auth"] == "Bearer sk-test"
        models = await client.get("/v1/models")
        assert models.json()["data"][0]["id"] == "pycode"
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["replicas"] == 2


async def test_an_unreachable_replica_is_a_502_naming_it():
    router = Router([Backend("gone", f"http://127.0.0.1:{free_port()}")])
    with serve_in_thread(router.app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            response = await client.post("/v1/completions", json={"prompt": "x"})
    assert response.status_code == 502
    assert "replica gone unreachable" in response.json()["error"]["message"]
    assert router.balance.in_flight() == {"gone": 0}


async def test_an_empty_fleet_answers_503():
    router = Router([])
    with serve_in_thread(router.app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.post("/v1/completions", json={})).status_code == 503
            assert (await client.get("/health")).status_code == 503
