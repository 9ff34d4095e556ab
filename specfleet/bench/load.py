"""A bounded closed-loop load generator for replicas on loopback (OpenAI streaming API).

`concurrency` workers per replica each keep one streaming completion in flight until the
deadline (`run_load`) or until stopped (`ContinuousLoad`); every request's tokens come from
the final usage chunk, its TPOT from the time between its first and last streamed chunk.
Used by `specfleet bench fleet` and the control-plane integration tests.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Sequence

import httpx

DEFAULT_PROMPTS = (
    "def add(a, b):\n    return a + b\n\ndef add(a, b):\n    return a + b\n\ndef add(",
    "for i in range(10):\n    print(i)\nfor i in range(10):\n    print(i)\nfor i in range(",
    "import os\nimport sys\nimport os\nimport sys\nimport os\nimport",
    "x = x + 1\ny = y + 1\nx = x + 1\ny = y + 1\nx = x + 1\n",
)


@dataclass(frozen=True)
class RequestRecord:
    """One completed request: when its first and last chunks came, and its TPOT."""

    first: float
    last: float
    tokens: int

    @property
    def tpot_s(self) -> float:
        return (self.last - self.first) / (self.tokens - 1)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(max(int(q), 1), 99) - 1]


@dataclass
class LoadResult:
    started: float
    finished: float
    completed: int = 0
    failed: int = 0
    tokens: int = 0
    tpot_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)  # those with a TPOT

    @property
    def seconds(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def goodput(self) -> float:
        """Output tokens per second over the run."""
        return self.tokens / self.seconds

    def tpot_percentile(self, q: float) -> float | None:
        return percentile(self.tpot_s, q)

    def merge(self, other: "LoadResult") -> "LoadResult":
        return LoadResult(
            min(self.started, other.started), max(self.finished, other.finished),
            self.completed + other.completed, self.failed + other.failed, self.tokens + other.tokens,
            self.tpot_s + other.tpot_s, self.errors + other.errors, self.requests + other.requests,
        )


async def _one_request(client: httpx.AsyncClient, url: str, body: dict, result: LoadResult) -> None:
    first = last = None
    tokens = 0
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = int(chunk["usage"]["completion_tokens"])
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    last = time.perf_counter()
                    first = first or last
    except (httpx.HTTPError, RuntimeError, ValueError) as exc:
        result.failed += 1
        result.errors.append(f"{url}: {type(exc).__name__}: {exc}")
        return
    result.completed += 1
    result.tokens += tokens
    if first is not None and last is not None and tokens > 1:
        record = RequestRecord(first, last, tokens)
        result.tpot_s.append(record.tpot_s)
        result.requests.append(record)


def _body(model: str, prompt: str, max_tokens: int) -> dict:
    return {
        "model": model, "prompt": prompt, "max_tokens": max_tokens,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
    }


async def run_load(
    base_urls: Sequence[str],
    concurrency: int | Sequence[int],
    duration_s: float,
    *,
    model: str,
    max_tokens: int = 48,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    timeout_s: float = 120.0,
    cut_at_deadline: bool = False,
) -> LoadResult:
    """`concurrency` streams per replica (one number, or one per replica) for `duration_s`;
    none start after the deadline. Requests in flight then finish and are counted, or, with
    `cut_at_deadline`, are cancelled and counted nowhere (for measuring a fixed window)."""
    per_url = [concurrency] * len(base_urls) if isinstance(concurrency, int) else list(concurrency)
    if len(per_url) != len(base_urls):
        raise ValueError(f"{len(per_url)} concurrencies for {len(base_urls)} replicas")
    result = LoadResult(started=time.perf_counter(), finished=0.0)
    deadline = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=sum(per_url) + 4)

    async def worker(url: str, index: int) -> None:
        n = index
        while time.perf_counter() < deadline:
            body = _body(model, prompts[n % len(prompts)], max_tokens)
            n += 1
            await _one_request(client, url.rstrip("/") + "/v1/completions", body, result)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        workers = asyncio.gather(*(worker(url, i) for url, n in zip(base_urls, per_url) for i in range(n)))
        if cut_at_deadline:
            try:
                await asyncio.wait_for(workers, timeout=duration_s)
            except asyncio.TimeoutError:
                pass
        else:
            await workers
    result.finished = time.perf_counter()
    return result


class ContinuousLoad:
    """`concurrency` streams per replica from entering until leaving the context, so the
    batch never drains between the measurements taken inside it. `result` fills as
    requests complete; `requests_within` picks those that lived inside a time span."""

    def __init__(
        self, base_urls: Sequence[str], concurrency: int, *, model: str, max_tokens: int = 48,
        prompts: Sequence[str] = DEFAULT_PROMPTS, timeout_s: float = 120.0,
    ) -> None:
        self._urls = [u.rstrip("/") + "/v1/completions" for u in base_urls]
        self._concurrency = concurrency
        self._body = lambda n: _body(model, prompts[n % len(prompts)], max_tokens)
        self._timeout = timeout_s
        self.result = LoadResult(started=0.0, finished=0.0)
        self._client: httpx.AsyncClient | None = None
        self._workers: asyncio.Future | None = None

    async def _worker(self, url: str, index: int) -> None:
        assert self._client is not None
        n = index
        while True:
            await _one_request(self._client, url, self._body(n), self.result)
            n += 1

    async def __aenter__(self) -> "ContinuousLoad":
        limits = httpx.Limits(max_connections=self._concurrency * len(self._urls) + 4)
        self._client = httpx.AsyncClient(timeout=self._timeout, limits=limits)
        self.result.started = time.perf_counter()
        self._workers = asyncio.gather(
            *(self._worker(url, i) for url in self._urls for i in range(self._concurrency))
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._workers is not None and self._client is not None
        self._workers.cancel()
        try:
            await self._workers
        except asyncio.CancelledError:
            pass
        await self._client.aclose()
        self.result.finished = time.perf_counter()

    def requests_within(self, start: float, end: float) -> list[RequestRecord]:
        """Completed requests whose first and last chunks both came in [start, end]
        (time.perf_counter): their TPOT is that span's alone."""
        return [r for r in self.result.requests if r.first >= start and r.last <= end]
