"""Every API call the real operator makes is granted by the chart's RBAC, and the chart grants
no wildcard. The operator runs with kopf peering on, through a lifecycle that takes every
code path that talks to the API: create, update, scale, PodMonitor on and off, a bad spec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kmock
import yaml
from operator_harness import (
    CR_RESOURCE, ApiServer, create_cr, eventually, example_cr, patch_cr, running_operator, stored,
)

from specfleet_operator.kube import RESOURCES

REPO = Path(__file__).resolve().parents[2]
HELM = Path(sys.executable).parent / "helm"
PEERING = "specfleet"
PEERING_RESOURCE = "kopf.dev/v1/clusterkopfpeerings"
DISCOVERY_PREFIXES = ("/api", "/apis", "/version")

Call = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def verbs_of(request: kmock.Request) -> set[str]:
    method = str(request.method.value).upper()
    if method == "GET":
        return {"watch"} if request.params.get("watch") == "true" else ({"get"} if request.name else {"list"})
    if method == "PATCH":
        content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        # Server-side apply creates missing objects, which the API server authorizes as create.
        return {"patch", "create"} if content_type.startswith("application/apply-patch") else {"patch"}
    return {{"POST": "create", "PUT": "update", "DELETE": "delete"}[method]}


def operator_calls(api: ApiServer) -> set[Call]:
    calls: set[Call] = set()
    for request in api._requests:
        if request.headers.get("User-Agent", "").startswith("kmock/"):
            continue  # the test's own requests
        if request.resource is None or request.resource.plural is None:
            assert request.url.path.startswith(DISCOVERY_PREFIXES), request.url.path
            continue  # discovery: non-resource URLs every authenticated client may read
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        calls |= {(request.resource.group, resource, verb) for verb in verbs_of(request)}
        # With OwnerReferencesPermissionEnforcement (OpenShift, hardened clusters), setting
        # blockOwnerDeletion needs update on the owner's finalizers subresource.
        owners = ((request.data or {}).get("metadata") or {}).get("ownerReferences", []) if isinstance(request.data, dict) else []
        for owner in owners:
            if owner.get("blockOwnerDeletion"):
                group, plural = owner["apiVersion"].rpartition("/")[0], RESOURCES[owner["kind"]][1]
                calls.add((group, f"{plural}/finalizers", "update"))
    return calls


def chart_rules(*sets: str) -> list[dict[str, Any]]:
    args = [str(HELM), "template", "sf", str(REPO / "charts" / "specfleet"), "--namespace", "specfleet"]
    for s in sets:
        args += ["--set", s]
    rendered = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    roles = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in ("ClusterRole", "Role")]
    operator_roles = [r for r in roles if not r["metadata"]["name"].endswith(("-view", "-edit"))]
    assert operator_roles, "the chart renders no operator role"
    return [rule for role in operator_roles for rule in role["rules"]]


def granted(rules: list[dict[str, Any]], call: Call) -> bool:
    group, resource, verb = call
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


async def test_every_api_call_is_granted_by_the_chart_and_nothing_is_wildcarded(api: ApiServer) -> None:
    api.resources[PEERING_RESOURCE] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False,
        verbs={"get", "list", "watch", "patch"},
    )
    api.objects[PEERING_RESOURCE, None, PEERING] = {
        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
        "metadata": {"name": PEERING, "resourceVersion": "1"}, "status": {},
    }
    async with running_operator(api, standalone=False, peering_name=PEERING, priority=100):
        body = example_cr()
        body["spec"]["metrics"] = {"podMonitor": True}
        await create_cr(api, body)
        await eventually(lambda: (stored(api, CR_RESOURCE, "pycode") or {}).get("status", {}).get("observedGeneration") == 1)
        await patch_cr(api, "pycode", {"spec": {"engine": {"image": "example/runtime:2"}, "metrics": {"podMonitor": False}}})
        await eventually(lambda: stored(api, CR_RESOURCE, "pycode")["status"]["observedGeneration"] == 2)
        await patch_cr(api, "pycode", {"spec": {"replicas": 3}}, subresource="scale")
        await eventually(lambda: stored(api, CR_RESOURCE, "pycode")["status"]["observedGeneration"] == 3)
        bad = example_cr(replicas=1)
        bad["metadata"]["name"] = "bad"
        bad["spec"]["speculation"]["kMax"] = 100
        await create_cr(api, bad)
        await eventually(lambda: (stored(api, CR_RESOURCE, "bad") or {}).get("status", {}).get("observedGeneration") == 1)

    calls = operator_calls(api)
    print("operator API calls:", *sorted(calls), sep="\n  ")
    # The paths above really were taken (else this test would prove little).
    assert {
        ("apps", "deployments", "patch"), ("", "secrets", "get"), ("monitoring.coreos.com", "podmonitors", "delete"),
        ("specfleet.io", "speculativedeployments/status", "patch"), ("", "events", "create"),
        ("kopf.dev", "clusterkopfpeerings", "patch"), ("apps", "deployments", "watch"),
    } <= calls, sorted(calls)

    for values in (["rbac.podMonitors=true"], ["rbac.podMonitors=true", "replicaCount=2"]):
        rules = chart_rules(*values)
        missing = sorted(call for call in calls if not granted(rules, call))
        assert not missing, f"the chart ({values}) does not grant: {missing}"
        wildcards = [r for r in rules if any("*" in item for key in ("apiGroups", "resources", "verbs") for item in r.get(key, []))]
        assert not wildcards, wildcards
