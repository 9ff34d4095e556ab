"""Hot switching speculation under load (issue 2's acceptance): while >= 16 streaming
requests run, >= 50 PUTs cycle off / K=1..8 / mixed schedules / both methods. No request
fails, greedy output never changes, and every PUT shows up in specfleet_step_k."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from server_harness import MODEL_NAME, Replica
from specfleet.contract import SpeculationConfig

MAX_TOKENS = 40
WORKERS = 18  # > 16, so >= 16 stay in flight while a worker is between two requests
MIN_IN_FLIGHT = 16
PROMPTS = [f"{word}(self, value):\n    return" for word in
           ("def parse", "def render", "class Spec", "def wrap", "async def fetch", "def split", "for item in", "if x")]
MIXED = [
    [[1, 6, 5], [7, 12, 3], [13, 4096, 0]],  # DESIGN.md's example body
    [[1, 2, 8], [3, 8, 2], [9, 16, 1]],
    [[1, 4, 1], [10, 16, 7]],  # batches 5..9 fall outside every row: K=0
]
UPDATES = (
    [{"enabled": False}]
    + [{"enabled": True, "method": "draft", "schedule": [[1, 16, k]]} for k in range(1, 9)]
    + [{"enabled": True, "method": "draft", "schedule": s} for s in MIXED]
    + [{"enabled": True, "method": "ngram", "schedule": [[1, 16, 3]]}]
) * 4  # 13 x 4 = 52 PUTs


def step_k_counts(replica_metrics: dict[str, list]) -> dict[int, float]:
    """Steps per K value, from the cumulative histogram buckets (one bucket per K <= 16)."""
    cumulative = {float(s.labels["le"]): s.value for s in replica_metrics["specfleet_step_k"]
                  if s.name == "specfleet_step_k_bucket" and s.labels["le"] != "+Inf"}
    return {k: cumulative[float(k)] - cumulative.get(float(k - 1), 0.0) for k in range(0, 17)}


def possible_ks(config: SpeculationConfig, max_batch: int) -> set[int]:
    return {config.k_for_batch(b) for b in range(1, max_batch + 1)}


async def stream_completion(client: httpx.AsyncClient, prompt: str) -> str:
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    if lines[-1] != "data: [DONE]":
        raise AssertionError(f"stream ended without [DONE]: {lines[-1]!r}")
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    if chunks[-1]["choices"][0]["finish_reason"] not in ("stop", "length"):
        raise AssertionError(f"bad finish: {chunks[-1]}")
    return "".join(c["choices"][0]["text"] for c in chunks)


def test_hot_switch_under_streaming_load(replica: Replica, restore_speculation: None) -> None:
    with httpx.Client(timeout=60) as sync:
        assert replica.put_speculation(sync, enabled=False).status_code == 200
        reference = {
            p: sync.post(f"{replica.url}/v1/completions",
                         json={"model": MODEL_NAME, "prompt": p, "max_tokens": MAX_TOKENS, "temperature": 0}).json()
            ["choices"][0]["text"]
            for p in PROMPTS
        }

    failures: list[str] = []
    completed = 0
    in_flight = 0
    stop = asyncio.Event()

    async def worker(client: httpx.AsyncClient, index: int) -> None:
        nonlocal completed, in_flight
        i = index
        while not stop.is_set():
            prompt = PROMPTS[i % len(PROMPTS)]
            i += 1
            in_flight += 1
            try:
                text = await stream_completion(client, prompt)
                if text != reference[prompt]:
                    failures.append(f"{prompt!r}: {text!r} != {reference[prompt]!r}")
            except Exception as exc:  # any failed request fails the test, with its cause
                failures.append(f"{prompt!r}: {type(exc).__name__}: {exc}")
            finally:
                in_flight -= 1
            completed += 1

    async def switcher(client: httpx.AsyncClient) -> list[int]:
        in_flight_at_put = []
        while in_flight < WORKERS or replica.engine.num_running < MIN_IN_FLIGHT:
            await asyncio.sleep(0.01)
        for update in UPDATES:
            in_flight_at_put.append(in_flight)
            response = await client.put("/admin/speculation", json=update, headers=replica.admin_headers)
            assert response.status_code == 200, response.text
            # Counted from after the PUT returned: from here on only the step that was
            # running while the PUT landed may still report the old config.
            before = step_k_counts(await scrape(client))
            config = SpeculationConfig.model_validate(response.json())
            assert config == SpeculationConfig.model_validate(
                {**config.model_dump(), **update}), "the PUT's fields are in force"
            allowed = possible_ks(config, replica.engine.max_batch)
            deadline = time.monotonic() + 20
            while True:
                after = step_k_counts(await scrape(client))
                delta = {k: after[k] - before[k] for k in after}
                new_steps = sum(delta[k] for k in allowed)
                if new_steps >= 2:
                    break
                assert time.monotonic() < deadline, f"no step with K in {allowed} after PUT {update}"
                await asyncio.sleep(0.005)
            stale = sum(v for k, v in delta.items() if k not in allowed)
            assert stale <= 1, f"after PUT {update}: {stale} steps with K outside {allowed}: {delta}"
        return in_flight_at_put

    async def scrape(client: httpx.AsyncClient) -> dict[str, list]:
        from prometheus_client.parser import text_string_to_metric_families

        text = (await client.get("/metrics")).text
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    async def scenario() -> list[int]:
        limits = httpx.Limits(max_connections=WORKERS + 4)
        async with httpx.AsyncClient(base_url=replica.url, timeout=120, limits=limits) as client:
            workers = [asyncio.create_task(worker(client, i)) for i in range(WORKERS)]
            try:
                return await switcher(client)
            finally:
                stop.set()
                await asyncio.gather(*workers)

    in_flight_at_put = asyncio.run(scenario())
    assert len(in_flight_at_put) >= 50
    assert min(in_flight_at_put) >= MIN_IN_FLIGHT
    assert completed >= WORKERS
    assert failures == []
