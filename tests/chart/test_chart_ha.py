"""High availability as the chart sets it up, with real kopf peering against kmock.

Each test runs two kopf operators in-process, configured from the chart's rendered command
line (peering name, priority from the StatefulSet pod index, identity from the pod name),
sharing the chart's ClusterKopfPeering object in kmock's Kubernetes emulator. The
operators' only handler records the ConfigMaps it sees, which tells which replica is
active. specfleet's own handlers are not involved: tests/operator runs those.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kmock import KubernetesEmulator, ResourceInfo
import kopf
import pytest

from chart_render import container, kubelet_expand, one, parse_operator_args, render

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"
VERSIONS = itertools.count(1)


@dataclass
class Replica:
    """One operator pod: kopf with the options the chart's args give pod `index`."""

    name: str
    priority: int
    peering: str
    seen: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self, api: KubernetesEmulator) -> None:
        registry = kopf.OperatorRegistry()
        server = str(api.url).rstrip("/")

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server)

        @kopf.on.event("v1", "configmaps", registry=registry)
        def record(name: str, type: str | None, **_: Any) -> None:
            if type in ("ADDED", None):
                self.seen.append(name)

        settings = kopf.OperatorSettings()
        settings.posting.enabled = False
        self.task = asyncio.create_task(kopf.operator(
            registry=registry, settings=settings, clusterwide=True, identity=self.name,
            peering_name=self.peering, priority=self.priority, stop_flag=self.stop,
        ))

    async def shut_down(self) -> None:
        self.stop.set()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.task, 20)


def replicas_from_chart(count: int, *sets: str) -> tuple[list[Replica], dict[str, Any]]:
    objects = render(None, f"replicaCount={count}", *sets)
    c = container(objects)
    statefulset = one(objects, "StatefulSet")["metadata"]["name"]
    replicas = []
    for index in range(count):
        opts = parse_operator_args(kubelet_expand(c, {"POD_INDEX": str(index)}))
        assert opts["all_namespaces"] and not opts["standalone"]
        replicas.append(Replica(f"{statefulset}-{index}", opts["priority"], opts["peering"]))
    return replicas, one(objects, "ClusterKopfPeering")


async def create(api: KubernetesEmulator, path: str, body: dict[str, Any]) -> None:
    body["metadata"]["resourceVersion"] = str(next(VERSIONS))  # kmock does not assign one
    async with api.post(path, json=body) as response:
        assert response.status < 300, await response.text()


async def create_configmap(api: KubernetesEmulator, name: str) -> None:
    await create(api, "/api/v1/namespaces/default/configmaps",
                 {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}})


def heartbeats(api: KubernetesEmulator, peering: str) -> dict[str, Any]:
    return api.objects[PEERINGS, None, peering].raw.get("status") or {}


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.fixture()
async def api(kmock: KubernetesEmulator) -> AsyncIterator[KubernetesEmulator]:
    kmock.resources.load_bundled()
    kmock.resources[PEERINGS] = ResourceInfo(
        kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False,
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
    )
    logging.getLogger("kopf").setLevel(logging.INFO)
    yield kmock


async def run_pair(api: KubernetesEmulator, replicas: list[Replica], peering: dict[str, Any]) -> None:
    await create(api, f"/apis/{PEERINGS}", peering)
    for replica in replicas:
        replica.start(api)
    name = peering["metadata"]["name"]
    await until(lambda: {r.name for r in replicas} <= set(heartbeats(api, name)), 20, "both heartbeats")
    await asyncio.sleep(1)  # both have now seen each other's heartbeat


@pytest.mark.slow
async def test_highest_pod_index_is_active_and_the_other_takes_over(api: KubernetesEmulator) -> None:
    (low, high), peering = replicas_from_chart(2)
    assert (low.priority, high.priority) == (0, 1)
    try:
        await run_pair(api, [low, high], peering)
        await create_configmap(api, "first")
        await until(lambda: "first" in high.seen, 10, "the active replica to see the ConfigMap")
        await asyncio.sleep(1)
        assert "first" not in low.seen, "the standby handled a resource while the active one ran"

        high.stop.set()  # a rollout or drain: kopf drops its heartbeat on the way out
        # the standby resumes, lists what exists, and handles it
        await until(lambda: "first" in low.seen, 10, "the standby to take over")
    finally:
        for replica in (low, high):
            await replica.shut_down()


@pytest.mark.slow
async def test_replicas_of_equal_priority_all_pause(api: KubernetesEmulator) -> None:
    """Why the chart gives each replica its own priority: with a shared one (what a
    Deployment's identical pods would get) kopf pauses everyone and nothing is handled."""
    (a, b), peering = replicas_from_chart(2)
    a.priority = b.priority = 0
    try:
        await run_pair(api, [a, b], peering)
        await create_configmap(api, "orphan")
        await asyncio.sleep(3)
        assert a.seen == [] and b.seen == []
    finally:
        for replica in (a, b):
            await replica.shut_down()
