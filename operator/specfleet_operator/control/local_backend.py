"""Replicas on loopback (`specfleet up`, tests, benchmarks): ready = GET /health is 200.

The caller supplies the replica list (it owns the processes); applied configs are kept in
memory per incarnation, and published records are kept for the caller to read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Callable, Iterable

import httpx

from specfleet.contract import SpeculationConfig
from specfleet_operator.control.fleet import Replica
from specfleet_operator.control.http_client import replica_client

if TYPE_CHECKING:
    from specfleet_operator.control.controller import DecisionRecord

log = logging.getLogger("specfleet.control.local")


class LocalBackend:
    def __init__(
        self,
        replicas: Callable[[], Iterable[Replica]],
        *,
        health_timeout_s: float = 1.0,
        keep_records: int = 1000,
    ) -> None:
        self._replicas = replicas
        self._timeout = health_timeout_s
        self._applied: dict[tuple[str, str], SpeculationConfig] = {}
        self._keep = keep_records
        self.records: list["DecisionRecord"] = []

    async def _ready(self, client: httpx.AsyncClient, replica: Replica) -> bool:
        try:
            return (await client.get(replica.base_url.rstrip("/") + "/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def list_ready(self) -> list[Replica]:
        candidates = list(self._replicas())
        async with replica_client(self._timeout) as client:
            ready = await asyncio.gather(*(self._ready(client, r) for r in candidates))
        return [
            Replica(r.name, r.base_url, r.admin_token, r.incarnation, self._applied.get((r.name, r.incarnation)))
            for r, ok in zip(candidates, ready)
            if ok
        ]

    async def record_applied(self, replica: Replica, config: SpeculationConfig) -> None:
        self._applied[(replica.name, replica.incarnation)] = config

    def forget(self) -> None:
        """Drop every record, so the next tick treats each replica as unconfigured."""
        self._applied.clear()

    def applied(self, name: str) -> SpeculationConfig | None:
        """The latest config recorded for any incarnation of `name`."""
        found = [c for (n, _), c in self._applied.items() if n == name]
        return found[-1] if found else None

    async def publish(self, record: "DecisionRecord") -> None:
        self.records.append(record)
        del self.records[: -self._keep]
        for event in record.events:
            log.info("%s %s: %s", event.replica or "fleet", event.reason, event.message)
