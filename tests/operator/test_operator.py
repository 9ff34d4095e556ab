"""The real kopf operator against kmock's emulated API server: what a SpeculativeDeployment
turns into, how changes and scaling propagate, and what a bad spec does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from operator_harness import (
    CR_RESOURCE, NAMESPACE, PODMONITOR_RESOURCE, ApiServer, create_cr, eventually, example_cr, patch_cr,
    running_operator, stored,
)

from specfleet.contract import POD_SPECULATION_ANNOTATION
from specfleet_operator.builders.secret import token_from_secret

CHILDREN = {
    "v1/secrets": "pycode-admin",
    "v1/services": "pycode",
    "networking.k8s.io/v1/networkpolicies": "pycode",
    "policy/v1/poddisruptionbudgets": "pycode",
    "apps/v1/deployments": "pycode",
}
CONTRACT_LABELS = {
    "app.kubernetes.io/name": "specfleet-runtime",
    "app.kubernetes.io/instance": "pycode",
    "app.kubernetes.io/managed-by": "specfleet",
    "specfleet.io/deployment": "pycode",
}
FAST = {"control": {"interval": "1s", "window": "2s", "minGain": 0.05, "cooldown": "1s", "priorAcceptance": 0.6}}


def fast_example(**spec_changes: Any) -> dict[str, Any]:
    body = example_cr(**spec_changes)
    body["spec"]["speculation"] |= FAST
    return body


def cr(api: ApiServer, name: str = "pycode") -> dict[str, Any]:
    body = stored(api, CR_RESOURCE, name)
    assert body is not None
    return body


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in body.get("status", {}).get("conditions", []) if c["type"] == type_)


def container(api: ApiServer) -> dict[str, Any]:
    return stored(api, "apps/v1/deployments", "pycode")["spec"]["template"]["spec"]["containers"][0]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def events(api: ApiServer, reason: str) -> list[dict[str, Any]]:
    return [
        obj.raw for (resource, _, _), obj in api.objects.items()
        if resource.plural == "events" and obj.raw.get("reason") == reason
    ]


async def reconciled(api: ApiServer, generation: int) -> dict[str, Any]:
    return await eventually(
        lambda: cr(api).get("status", {}).get("observedGeneration") == generation and cr(api),
        what=f"observedGeneration {generation}",
    )


async def test_applying_the_example_creates_every_child_owned_and_labelled(operator: ApiServer) -> None:
    api = operator
    await create_cr(api, example_cr())
    await reconciled(api, 1)
    uid = cr(api)["metadata"]["uid"]
    for resource, name in CHILDREN.items():
        child = stored(api, resource, name)
        assert child is not None, resource
        assert child["metadata"]["labels"] == CONTRACT_LABELS, resource
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "specfleet.io/v1alpha1", "kind": "SpeculativeDeployment", "name": "pycode",
            "uid": uid, "controller": True, "blockOwnerDeletion": True,
        }, resource
    assert stored(api, PODMONITOR_RESOURCE, "pycode") is None  # the example does not ask for one
    assert not cr(api)["metadata"].get("finalizers"), "deletion must rely on owner references only"
    deployment = stored(api, "apps/v1/deployments", "pycode")
    assert deployment["spec"]["replicas"] == 2
    command = container(api)["command"]
    assert command[:2] == ["specfleet", "serve"]
    assert flag(command, "--model") == "bundled://pycode-target"
    assert flag(command, "--draft") == "bundled://pycode-draft"
    assert flag(command, "--max-batch") == "64"
    assert token_from_secret(stored(api, "v1/secrets", "pycode-admin"))
    await eventually(lambda: events(api, "Created"), what="a Created event")


async def test_status_follows_the_runtime_deployment(operator: ApiServer) -> None:
    api = operator
    await create_cr(api, fast_example())
    body = await reconciled(api, 1)
    assert body["status"]["selector"] == "app.kubernetes.io/name=specfleet-runtime,specfleet.io/deployment=pycode"
    ready = condition(body, "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("False", "ReplicasNotReady", 1)
    assert condition(body, "Progressing")["status"] == "True"
    # The control loop owns these two; until it has run they exist as Unknown.
    assert {"MetricsAvailable", "SpeculationControlled"} <= {c["type"] for c in body["status"]["conditions"]}

    # kmock runs no Deployment controller: report the rollout as one would.
    key = ("apps/v1/deployments", NAMESPACE, "pycode")
    generation = api.objects[key].raw["metadata"]["generation"]
    api.objects[key].patch({"status": {
        "observedGeneration": generation, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
    }})
    body = await eventually(lambda: condition(cr(api), "Ready")["status"] == "True" and cr(api), what="Ready=True")
    assert condition(body, "Ready")["reason"] == "AllReplicasReady"
    assert condition(body, "Progressing")["reason"] == "RolloutComplete"
    assert condition(body, "Degraded")["status"] == "False"
    assert (body["status"]["replicas"], body["status"]["readyReplicas"]) == (2, 2)


async def test_changing_image_and_speculation_patches_the_deployment(operator: ApiServer) -> None:
    api = operator
    await create_cr(api, example_cr())
    await reconciled(api, 1)
    token = token_from_secret(stored(api, "v1/secrets", "pycode-admin"))

    await patch_cr(api, "pycode", {"spec": {
        "engine": {"image": "registry.example/specfleet/runtime:0.2.0"},
        "speculation": {"mode": "on", "k": 3, "kMax": 4},
    }})
    await reconciled(api, 2)
    runtime = container(api)
    assert runtime["image"] == "registry.example/specfleet/runtime:0.2.0"
    assert flag(runtime["command"], "--k-max") == "4"
    assert flag(runtime["command"], "--schedule") == "3"
    annotations = stored(api, "apps/v1/deployments", "pycode")["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations[POD_SPECULATION_ANNOTATION]) == {
        "enabled": True, "method": "draft", "k_max": 4, "schedule": [[1, 1 << 20, 3]],
    }
    assert token_from_secret(stored(api, "v1/secrets", "pycode-admin")) == token, "the admin token must survive"
    await eventually(lambda: events(api, "Updated"), what="an Updated event")

    await patch_cr(api, "pycode", {"spec": {"speculation": {"mode": "off", "k": None}}})
    await reconciled(api, 3)
    command = container(api)["command"]
    assert flag(command, "--speculation") == "off" and "--schedule" not in command


async def test_scaling_through_the_scale_subresource_reaches_the_deployment(operator: ApiServer) -> None:
    api = operator
    await create_cr(api, example_cr())
    await reconciled(api, 1)
    await patch_cr(api, "pycode", {"spec": {"replicas": 5}}, subresource="scale")
    await reconciled(api, 2)
    assert stored(api, "apps/v1/deployments", "pycode")["spec"]["replicas"] == 5
    scaled = await eventually(lambda: events(api, "Scaled"), what="a Scaled event")
    assert "5" in scaled[0]["message"]
    assert not events(api, "Updated"), "a pure scale is reported as Scaled"


async def test_pod_monitor_follows_the_spec(operator: ApiServer) -> None:
    api = operator
    body = example_cr()
    body["spec"]["metrics"] = {"podMonitor": True}
    await create_cr(api, body)
    await reconciled(api, 1)
    monitor = stored(api, PODMONITOR_RESOURCE, "pycode")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert monitor["metadata"]["labels"] == CONTRACT_LABELS
    await patch_cr(api, "pycode", {"spec": {"metrics": {"podMonitor": False}}})
    await reconciled(api, 2)
    assert stored(api, PODMONITOR_RESOURCE, "pycode") is None


async def test_pod_monitor_asked_for_without_its_crd_is_skipped_with_a_warning(operator: ApiServer) -> None:
    api = operator
    del api.resources[PODMONITOR_RESOURCE]  # no prometheus-operator in this cluster
    body = example_cr()
    body["spec"]["metrics"] = {"podMonitor": True}
    await create_cr(api, body)
    await reconciled(api, 1)
    assert stored(api, "apps/v1/deployments", "pycode") is not None
    assert stored(api, PODMONITOR_RESOURCE, "pycode") is None
    (warning,) = await eventually(lambda: events(api, "PodMonitorUnavailable"), what="a PodMonitorUnavailable event")
    assert warning["type"] == "Warning"


async def test_invalid_spec_gets_a_condition_and_no_children(operator: ApiServer) -> None:
    api = operator
    body = fast_example()
    body["metadata"]["name"] = "broken"
    body["spec"]["resources"] = {"gpus": 0, "requests": {"memory": "8Gi"}, "limits": {"memory": "4Gi"}}
    await create_cr(api, body)
    broken = await eventually(lambda: cr(api, "broken").get("status", {}).get("observedGeneration") == 1 and cr(api, "broken"))
    ready = condition(broken, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"] == "spec.resources.requests.memory: request 8Gi exceeds limit 4Gi"
    assert condition(broken, "Degraded")["status"] == "True"
    for resource in CHILDREN:
        assert stored(api, resource, "broken") is None and stored(api, resource, "broken-admin") is None, resource
    await eventually(lambda: events(api, "InvalidSpec"), what="an InvalidSpec warning event")

    # Handled once, not retried: a few timer periods later nothing new was attempted.
    attempts = sum(1 for r in api._requests if r.name == "broken-admin")
    writes = sum(1 for r in api._requests if r.name == "broken" and r.method == "PATCH")
    await asyncio.sleep(3)
    assert sum(1 for r in api._requests if r.name == "broken-admin") == attempts == 0
    assert sum(1 for r in api._requests if r.name == "broken" and r.method == "PATCH") == writes

    # A schema violation the API server would reject (kmock does not validate) is caught too.
    await patch_cr(api, "broken", {"spec": {"resources": {"requests": None, "limits": None}, "speculation": {"kMax": 99}}})
    broken = await eventually(lambda: cr(api, "broken")["status"]["observedGeneration"] == 2 and cr(api, "broken"))
    assert condition(broken, "Ready")["message"] == "spec.speculation.kMax: must be <= 64"
    assert stored(api, "apps/v1/deployments", "broken") is None

    # Fixing the spec brings the children.
    await patch_cr(api, "broken", {"spec": {"speculation": {"kMax": 8}}})
    await eventually(lambda: stored(api, "apps/v1/deployments", "broken"), what="children after the fix")


async def test_changes_made_while_the_operator_is_down_are_applied_when_it_returns(api: ApiServer) -> None:
    async with running_operator(api):
        await create_cr(api, example_cr())
        await reconciled(api, 1)
    await patch_cr(api, "pycode", {"spec": {"engine": {"image": "example/runtime:while-down"}}})
    async with running_operator(api):
        await reconciled(api, 2)
        assert container(api)["image"] == "example/runtime:while-down"
        await eventually(lambda: events(api, "Updated"), what="an Updated event")
    assert len(events(api, "Created")) == 1, "kopf's last-handled state survived the restart"


SLOW_TIMER = {"control": {"interval": "1h", "window": "1h", "minGain": 0.05, "cooldown": "1m", "priorAcceptance": 0.6}}
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"


async def report_rollout(api: ApiServer, name: str, status: dict[str, Any]) -> None:
    """What the Deployment controller does, through the API (so watchers see it)."""
    async with api.patch(f"{DEPLOYMENTS}/{name}/status", json={"status": status},
                         headers={"Content-Type": "application/merge-patch+json"}) as response:
        assert response.status < 300, await response.text()


async def test_a_child_deployment_change_reaches_the_status_without_waiting_for_the_timer(operator: ApiServer) -> None:
    api = operator
    body = example_cr()
    body["spec"]["speculation"] |= SLOW_TIMER  # the timer acts once at start, then not for an hour
    await create_cr(api, body)
    await reconciled(api, 1)
    await eventually(lambda: condition(cr(api), "Ready")["reason"] == "ReplicasNotReady", what="not ready yet")

    generation = stored(api, "apps/v1/deployments", "pycode")["metadata"]["generation"]
    await report_rollout(api, "pycode", {"observedGeneration": generation, "replicas": 2, "readyReplicas": 1,
                                         "updatedReplicas": 2})
    half = await eventually(lambda: cr(api)["status"].get("readyReplicas") == 1 and cr(api), timeout=5,
                            what="readyReplicas 1")
    assert condition(half, "Ready")["message"] == "1/2 replicas ready"
    await report_rollout(api, "pycode", {"readyReplicas": 2})
    ready = await eventually(lambda: condition(cr(api), "Ready")["status"] == "True" and cr(api), timeout=5,
                             what="Ready=True")
    assert condition(ready, "Progressing")["reason"] == "RolloutComplete"

    async with api.delete(f"{DEPLOYMENTS}/pycode") as response:  # behind the operator's back; the CR remains
        assert response.status < 300, await response.text()
    missing = await eventually(lambda: condition(cr(api), "Ready")["reason"] == "DeploymentMissing" and cr(api),
                               timeout=5, what="Ready=False, DeploymentMissing")
    assert condition(missing, "Ready")["status"] == "False"
    assert not (stored(api, CR_RESOURCE, "pycode")["metadata"].get("finalizers"))


async def test_a_deployment_the_cr_does_not_control_leaves_its_status_alone(operator: ApiServer) -> None:
    api = operator
    body = example_cr()
    body["spec"]["speculation"] |= SLOW_TIMER
    await create_cr(api, body)
    await reconciled(api, 1)
    before = cr(api)["status"]
    # Same contract labels, but no controller reference to this CR (a copy, or a leftover).
    impostor = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pycode-copy", "namespace": NAMESPACE, "labels": CONTRACT_LABELS},
        "spec": {"replicas": 9, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }
    async with api.post(DEPLOYMENTS, json=impostor) as response:
        assert response.status < 300, await response.text()
    await report_rollout(api, "pycode-copy", {"replicas": 9, "readyReplicas": 9})
    status_writes = lambda: sum(1 for r in api._requests if r.name == "pycode" and r.subresource == "status")  # noqa: E731
    writes = status_writes()
    await asyncio.sleep(2)
    assert status_writes() == writes
    assert cr(api)["status"]["readyReplicas"] == before["readyReplicas"] == 0
