"""The harness for running the real kopf operator in-process against kmock's emulator.

kmock keeps objects and serves list/watch/get/create/patch/delete, discovery included, but
leaves out API-server behaviour our operator relies on; its docs invite subclassing for
that. `ApiServer` adds exactly those parts: resourceVersion and generation bumps, uid and
creationTimestamp on creation, names from generateName, server-side apply (an apply PATCH creates a missing
object, and replaces the fields of its single manager), and 409 Conflict for a patch whose
metadata.resourceVersion is not the stored one. Schema validation is not emulated
here; test_crd_schema.py checks CRs against the CRD's schema and CEL rules instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps  # the Server class the kmock fixture itself uses

from specfleet_operator import handlers
from specfleet_operator.kube import Connection
from specfleet_operator.spec import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "speculative-deployment.yaml"
NAMESPACE = "default"
CR_RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"
PODMONITOR_RESOURCE = "monitoring.coreos.com/v1/podmonitors"


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch that turns `old` into `new` (None deletes a key)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key not in old or old[key] != value:
            patch[key] = merge_patch(old.get(key), value)
    return patch


def merged(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                self._stamp_new(request.data, request.namespace)
            elif request.action == kmock.action.UPDATE:
                async with self._lock:
                    conflict = await self._stamp_update(request)
                if conflict:
                    return aiohttp.web.json_response({
                        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                        "message": "the object has been modified; please apply your changes to the latest version",
                    }, status=409)
        return await super()._handle(request)

    def _stamp_new(self, data: dict[str, Any], namespace: str | None) -> None:
        meta = data.setdefault("metadata", {})
        if "name" not in meta and "generateName" in meta:
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))
        if namespace:
            meta.setdefault("namespace", namespace)

    async def _stamp_update(self, request: kmock.Request) -> bool:
        """Stamps an update; True when it must be refused as a conflict (a patch that names a
        metadata.resourceVersion other than the stored one: optimistic concurrency)."""
        data = request.data
        key = (request.resource, request.namespace, request.name)
        content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        is_apply = content_type.startswith("application/apply-patch")
        if key not in self._objects or self._objects[key].deleted:
            if is_apply:  # server-side apply creates what is missing
                self._stamp_new(data, request.namespace)
                self._objects[key] = dict(data)
                await self._buses[request.resource].put({"type": "ADDED", "object": dict(data)})
            return False
        current = self._objects[key].raw
        expected = (data.get("metadata") or {}).get("resourceVersion")
        if not is_apply and expected is not None and expected != current.get("metadata", {}).get("resourceVersion"):
            return True
        if is_apply:
            replacement = {k: v for k, v in data.items() if k not in ("metadata", "status")}
            replacement["metadata"] = {**current.get("metadata", {}), **data.get("metadata", {})}
            if "status" in current:
                replacement["status"] = current["status"]
            self._objects[key].patch(merge_patch(current, replacement))
            current = self._objects[key].raw
        meta = data.setdefault("metadata", {})
        if request.subresource != "status" and merged(current, data).get("spec") != current.get("spec"):
            meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1
        meta["resourceVersion"] = str(next(self._versions))
        return False


def crd_resource_info() -> kmock.ResourceInfo:
    return kmock.ResourceInfo(
        kind=KIND, singular=SINGULAR, namespaced=True, shortnames=set(SHORT_NAMES),
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status", "scale"},
    )


@contextlib.asynccontextmanager
async def started_api() -> AsyncIterator[ApiServer]:
    """kmock's emulator with Kubernetes' built-in resources, the CRD's and PodMonitors."""
    async with ApiServer() as server, apps.Server(server):
        server.resources.load_bundled()
        server.resources[CR_RESOURCE] = crd_resource_info()
        server.resources[PODMONITOR_RESOURCE] = kmock.ResourceInfo(
            kind="PodMonitor", singular="podmonitor", namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
        yield server


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy without raising; its last error otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return result
            error: Exception = AssertionError(f"still false: {what}")
        except (AssertionError, KeyError, LookupError, TypeError) as exc:
            error = exc
        if asyncio.get_running_loop().time() > deadline:
            raise error
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_operator(api: ApiServer, **options: Any) -> AsyncIterator[ApiServer]:
    """The real operator (handlers.run, as `specfleet operator` runs it) against `api`.

    It runs in a thread with its own event loop, as in production: on stop, kopf cancels
    every task of its loop, which must not include the emulator's. Cluster-wide: kmock
    cannot parse GET /api/v1/namespaces, which kopf's namespace observer needs."""
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(handlers.run(
                connection=Connection(server=str(api.url).rstrip("/")),
                clusterwide=True, stop_flag=stop, ready_flag=ready, **({"standalone": True} | options),
            ))
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=serve, name="kopf-operator", daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 20), "the operator did not start"
    assert not errors, errors
    try:
        yield api
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 20)
        assert not thread.is_alive(), "the operator did not stop"
        assert not errors, errors


def example_cr(**spec_changes: Any) -> dict[str, Any]:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = NAMESPACE
    body["spec"] |= spec_changes
    return body


async def create_cr(api: ApiServer, body: dict[str, Any]) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"
    async with api.post(path, json=body) as response:
        assert response.status < 300, await response.text()


async def patch_cr(api: ApiServer, name: str, patch: dict[str, Any], subresource: str = "") -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/{name}" + (f"/{subresource}" if subresource else "")
    async with api.patch(path, json=patch, headers={"Content-Type": "application/merge-patch+json"}) as response:
        assert response.status < 300, await response.text()


def stored(api: ApiServer, resource: str, name: str) -> dict[str, Any] | None:
    try:  # kmock's `in` does not parse "group/version/plural" keys; indexing does
        obj = api.objects[resource, NAMESPACE, name]
    except KeyError:
        return None
    return None if obj.deleted else obj.raw
