"""Push speculation configs to replicas: PUT /admin/speculation, concurrently and briefly.

A tick must finish well inside the control interval even when replicas hang, so each
request has a short timeout, transport errors and 5xx get a bounded number of quick
retries, and at most `max_parallel` requests are in flight. Client errors (401, 422) are
not retried: they will not fix themselves, and the message says what the replica refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Sequence

import httpx
from pydantic import ValidationError

from specfleet.contract import ADMIN_SPECULATION_PATH, SpeculationConfig
from specfleet_operator.control.fleet import Replica
from specfleet_operator.control.http_client import replica_client


@dataclass(frozen=True)
class ApplyResult:
    replica: str
    config: SpeculationConfig | None  # what the replica says is in force; None on failure
    error: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.config is not None


async def _apply_one(
    client: httpx.AsyncClient,
    limit: asyncio.Semaphore,
    replica: Replica,
    config: SpeculationConfig,
    retries: int,
    backoff_s: float,
) -> ApplyResult:
    headers = {"Authorization": f"Bearer {replica.admin_token}"} if replica.admin_token else {}
    url = replica.admin_base_url.rstrip("/") + ADMIN_SPECULATION_PATH
    error = "not attempted"
    for attempt in range(1, retries + 2):
        async with limit:
            try:
                response = await client.put(url, json=config.model_dump(mode="json"), headers=headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code == 200:
                    try:
                        return ApplyResult(replica.name, SpeculationConfig.model_validate(response.json()), None, attempt)
                    except (ValueError, ValidationError) as exc:
                        return ApplyResult(replica.name, None, f"unreadable response: {exc}", attempt)
                error = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code < 500:
                    return ApplyResult(replica.name, None, error, attempt)
        if attempt <= retries:
            await asyncio.sleep(backoff_s * attempt)
    return ApplyResult(replica.name, None, error, retries + 1)


async def apply_configs(
    targets: Sequence[tuple[Replica, SpeculationConfig]],
    *,
    timeout_s: float = 2.0,
    retries: int = 2,
    backoff_s: float = 0.2,
    max_parallel: int = 16,
) -> list[ApplyResult]:
    """PUT each config to its replica; one result per target, in order."""
    if not targets:
        return []
    limit = asyncio.Semaphore(max_parallel)
    async with replica_client(httpx.Timeout(timeout_s)) as client:
        return list(
            await asyncio.gather(
                *(_apply_one(client, limit, r, c, retries, backoff_s) for r, c in targets)
            )
        )
