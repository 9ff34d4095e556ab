"""reconcile.refresh_from_deployment against kmock's emulated API server, without kopf: the
CR's status follows its Deployment, and a refresh never reverts a status someone else wrote
between its read and its write (optimistic concurrency on resourceVersion)."""

from __future__ import annotations

from typing import Any

from operator_harness import CR_RESOURCE, NAMESPACE, ApiServer, create_cr, example_cr, stored

from specfleet_operator.kube import Connection, Kube
from specfleet_operator.reconcile import refresh_from_deployment

NOW = "2026-12-01T00:00:00Z"
# What a reconcile (observedGeneration) and a control tick (its condition) wrote meanwhile.
RACING_STATUS = {"observedGeneration": 2, "conditions": [{
    "type": "MetricsAvailable", "status": "True", "reason": "SeriesFresh", "message": "fresh series for 2 replicas",
    "lastTransitionTime": NOW, "observedGeneration": 2,
}]}


def runtime_deployment(owner: dict[str, Any], ready: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "specfleet-runtime", "app.kubernetes.io/instance": "pycode",
              "app.kubernetes.io/managed-by": "specfleet", "specfleet.io/deployment": "pycode"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "pycode", "namespace": NAMESPACE, "labels": labels, "generation": 1,
            "ownerReferences": [{"apiVersion": "specfleet.io/v1alpha1", "kind": "SpeculativeDeployment",
                                 "name": "pycode", "uid": owner["metadata"]["uid"], "controller": True}],
        },
        "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": ready, "updatedReplicas": 2},
    }


class RacingKube(Kube):
    """A real client whose first read of the CR is followed by another writer's status
    patch (as a reconcile finishing at that moment would), before the refresh writes."""

    def __init__(self, api: ApiServer) -> None:
        super().__init__(Connection(server=str(api.url).rstrip("/")))
        self.raced = False

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        body = await super().get(kind, namespace, name)
        if kind == "SpeculativeDeployment" and not self.raced:
            self.raced = True
            await super().patch(kind, namespace, name, {"status": RACING_STATUS}, subresource="status")
        return body


async def test_the_status_takes_the_deployments_replica_counts(api: ApiServer) -> None:
    await create_cr(api, example_cr())
    kube = Kube(Connection(server=str(api.url).rstrip("/")))
    try:
        assert await refresh_from_deployment(kube, runtime_deployment(stored(api, CR_RESOURCE, "pycode"), 1), False, NOW)
        status = stored(api, CR_RESOURCE, "pycode")["status"]
        assert (status["replicas"], status["readyReplicas"]) == (2, 1)
        # Nothing changed: nothing is written.
        assert not await refresh_from_deployment(kube, runtime_deployment(stored(api, CR_RESOURCE, "pycode"), 1), False, NOW)
    finally:
        await kube.aclose()


async def test_a_status_written_meanwhile_is_kept_and_the_refresh_starts_over(api: ApiServer) -> None:
    await create_cr(api, example_cr())
    kube = RacingKube(api)
    try:
        await Kube.patch(kube, "SpeculativeDeployment", NAMESPACE, "pycode", {"status": {"observedGeneration": 1}},
                         subresource="status")
        assert await refresh_from_deployment(kube, runtime_deployment(stored(api, CR_RESOURCE, "pycode"), 2), False, NOW)
    finally:
        await kube.aclose()
    status = stored(api, CR_RESOURCE, "pycode")["status"]
    assert kube.raced
    assert status["observedGeneration"] == 2, "the other writer's observedGeneration was reverted"
    metrics = next(c for c in status["conditions"] if c["type"] == "MetricsAvailable")
    assert metrics["status"] == "True", "the other writer's condition was reverted"
    assert status["readyReplicas"] == 2
    status_writes = [r for r in api._requests if r.subresource == "status" and r.method == "PATCH"]
    assert len(status_writes) == 4  # the first status, the other writer's, the refused one, the retry


async def test_a_deployment_another_cr_controls_is_ignored(api: ApiServer) -> None:
    await create_cr(api, example_cr())
    kube = Kube(Connection(server=str(api.url).rstrip("/")))
    stranger = runtime_deployment({"metadata": {"uid": "someone-else"}}, 2)
    try:
        assert not await refresh_from_deployment(kube, stranger, False, NOW)
    finally:
        await kube.aclose()
    assert "readyReplicas" not in (stored(api, CR_RESOURCE, "pycode").get("status") or {})
