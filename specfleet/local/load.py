"""The demo's scripted load: closed-loop streams (each sends its next request as soon as
the previous one ends), so the offered concurrency is exactly the number of streams."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import httpx

from specfleet.model_sources import bundled_models_dir

HELDOUT_PROMPTS = "heldout_prompts.jsonl"

# Used when the bundled model pair ships no held-out prompts file.
BUILTIN_PROMPTS = (
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "import os\n\n\ndef list_python_files(root):\n    for dirpath, dirnames, filenames in os.walk(root):\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
    "def parse_args(argv=None):\n    parser = argparse.ArgumentParser(description=__doc__)\n",
    "    def __repr__(self):\n        return f\"{type(self).__name__}(",
    "def read_json(path):\n    with open(path, encoding=\"utf-8\") as f:\n",
)


def load_prompts(path: Path | None = None) -> list[str]:
    """Prompts from a JSONL file of {"prompt": ...} rows (default: the bundled pair's
    held-out prompts), or the built-in ones when there is no such file."""
    path = path or bundled_models_dir() / HELDOUT_PROMPTS
    if not path.is_file():
        return list(BUILTIN_PROMPTS)
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if isinstance(row, dict) and isinstance(row.get("prompt"), str) and row["prompt"]:
                prompts.append(row["prompt"])
    return prompts or list(BUILTIN_PROMPTS)


@dataclass(frozen=True)
class Phase:
    name: str
    streams: int  # offered concurrency over the whole fleet
    seconds: float
    high: bool = False
    measured: bool = True  # part of the summary


def demo_phases(replicas: int, max_batch: int, seconds: float, warm_up: float) -> list[Phase]:
    """Warm-up, then low -> high -> low. Low: one stream per replica (decode batch 1, where
    speculation pays most). High: as many streams per replica as it decodes at once
    (`max_batch`), the furthest above any break-even batch the fleet can be pushed.

    The warm-up runs the low load unmeasured for `warm_up` seconds: the first decision
    rests on the startup calibration and the prior acceptance alone, and the controller
    may replace it only after its cooldown, from live measurements."""
    phases = [Phase("0-warm-up", replicas, warm_up, measured=False)] if warm_up > 0 else []
    return phases + [
        Phase("1-low", replicas, seconds),
        Phase("2-high", replicas * max_batch, seconds, high=True),
        Phase("3-low", replicas, seconds),
    ]


@dataclass
class LoadStats:
    completed: int = 0
    failed: int = 0
    completion_tokens: int = 0
    last_error: str | None = None


class LoadGenerator:
    """`set_streams(n)` keeps n closed-loop request streams running against `base_url`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        prompts: list[str],
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        timeout: float = 300.0,
        seed: int = 0,
    ) -> None:
        if not prompts:
            raise ValueError("the load generator needs at least one prompt")
        self._url = base_url.rstrip("/") + "/v1/completions"
        self._model = model
        self._prompts = itertools.cycle(prompts)
        self._max_tokens = max_tokens
        self._rng = random.Random(seed)
        self._temperature = temperature
        self._client = httpx.AsyncClient(
            timeout=timeout, limits=httpx.Limits(max_connections=None, keepalive_expiry=2.0), trust_env=False
        )
        self._streams: list[tuple[asyncio.Task, asyncio.Event]] = []
        self._retired: list[asyncio.Task] = []
        self.stats = LoadStats()

    @property
    def streams(self) -> int:
        return len(self._streams)

    def set_streams(self, n: int) -> None:
        """Grow or shrink to n streams; a removed stream finishes its request in flight."""
        while len(self._streams) < n:
            stop = asyncio.Event()
            self._streams.append((asyncio.create_task(self._stream(stop)), stop))
        while len(self._streams) > n:
            task, stop = self._streams.pop()
            stop.set()
            self._retired.append(task)

    def _request_tokens(self) -> int:
        """Lengths spread over [max/2, 3*max/2]: equal lengths would make streams that
        started together finish together, and the batch would pulse between full and empty."""
        half = max(1, self._max_tokens // 2)
        return self._rng.randint(half, self._max_tokens + half)

    async def _stream(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            body = {
                "model": self._model,
                "prompt": next(self._prompts),
                "max_tokens": self._request_tokens(),
                "temperature": self._temperature,
            }
            try:
                response = await self._client.post(self._url, json=body)
                response.raise_for_status()
                self.stats.completed += 1
                self.stats.completion_tokens += int(response.json().get("usage", {}).get("completion_tokens", 0))
            except (httpx.HTTPError, ValueError) as exc:
                self.stats.failed += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.5)  # a failing fleet must not be hammered in a tight loop

    async def aclose(self) -> None:
        """Stop every stream now (requests in flight are cancelled) and close the client."""
        tasks = [task for task, _ in self._streams] + self._retired
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._streams.clear()
        self._retired.clear()
        await self._client.aclose()
