"""The chart's RBAC: exact verbs and resources, no wildcard, scoped to what the values ask."""

from __future__ import annotations

from typing import Any

import pytest

from chart_render import ALL_ON, NAMESPACE, Grant, Grants, by_kind, one, render

CRUD = ("get", "list", "watch", "create", "patch", "update", "delete")
CHILDREN = [("apps", "deployments"), ("", "services"), ("", "secrets"),
            ("policy", "poddisruptionbudgets"), ("networking.k8s.io", "networkpolicies")]


def expected_workload_grants(namespace: str | None, pod_monitors: bool) -> set[Grant]:
    children = CHILDREN + ([("monitoring.coreos.com", "podmonitors")] if pod_monitors else [])
    out = {Grant(g, r, v, namespace) for g, r in children for v in CRUD}
    out |= {Grant("specfleet.io", "speculativedeployments", v, namespace) for v in ("get", "list", "watch", "patch", "update")}
    out |= {Grant("specfleet.io", "speculativedeployments/status", v, namespace) for v in ("get", "patch", "update")}
    out.add(Grant("specfleet.io", "speculativedeployments/finalizers", "update", namespace))
    out |= {Grant("", "pods", v, namespace) for v in ("get", "list", "watch", "patch")}
    out |= {Grant("", "events", v, namespace) for v in ("create", "patch")}
    return out


CRD_DISCOVERY = {Grant("apiextensions.k8s.io", "customresourcedefinitions", v, None) for v in ("get", "list", "watch")}


def rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for o in objects if o["kind"] in ("Role", "ClusterRole") for rule in o["rules"]]


@pytest.mark.parametrize("sets", [(), ("rbac.podMonitors=true",), ("watchNamespaces={a,b}",), ("peering.enabled=false", "replicaCount=1")],
                         ids=["default", "podmonitors", "namespaced", "standalone"])
def test_rendered_roles_have_no_wildcard(sets: tuple[str, ...]) -> None:
    for values in (None, ALL_ON):
        found = rules(render(values, *sets))
        assert found
        for rule in found:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field] and not any("*" in item for item in rule[field]), rule
            assert "nonResourceURLs" not in rule, rule


def test_cluster_wide_grants_exactly_what_the_operator_and_kopf_use() -> None:
    grants = Grants.of(render()).grants
    expected = expected_workload_grants(None, pod_monitors=False) | CRD_DISCOVERY
    expected |= {Grant("", "namespaces", v, None) for v in ("get", "list", "watch")}
    expected |= {Grant("kopf.dev", "clusterkopfpeerings", v, None) for v in ("get", "list", "watch", "patch")}
    assert grants == expected, {"extra": grants - expected, "missing": expected - grants}


def test_watch_namespaces_grant_roles_in_those_namespaces_only() -> None:
    objects = render(None, "watchNamespaces={ml-a,ml-b}")
    grants = Grants.of(objects)
    expected = expected_workload_grants("ml-a", False) | expected_workload_grants("ml-b", False) | CRD_DISCOVERY
    expected |= {Grant("kopf.dev", "kopfpeerings", v, ns) for v in ("get", "list", "watch", "patch") for ns in ("ml-a", "ml-b")}
    assert grants.grants == expected, {"extra": grants.grants - expected, "missing": expected - grants.grants}
    assert grants.allows("apps", "deployments", "patch", "ml-a")
    assert not grants.allows("apps", "deployments", "patch", "default")
    assert not grants.allows("apps", "deployments", "list", None)
    # the only cluster-wide grant is read-only CRD discovery
    assert {g for g in grants.grants if g.namespace is None} == CRD_DISCOVERY


def test_pod_monitor_access_only_when_asked() -> None:
    assert not Grants.of(render()).allows("monitoring.coreos.com", "podmonitors", "create", "team")
    assert Grants.of(render(None, "rbac.podMonitors=true")).allows("monitoring.coreos.com", "podmonitors", "create", "team")
    assert Grants.of(render(ALL_ON)).allows("monitoring.coreos.com", "podmonitors", "patch", "ml-serving")


def test_standalone_operator_gets_no_peering_access() -> None:
    for sets in [("peering.enabled=false",), ("peering.enabled=false", "watchNamespaces={x}")]:
        objects = render(None, *sets)
        assert not any(g.group == "kopf.dev" for g in Grants.of(objects).grants)
        assert not by_kind(objects, "ClusterKopfPeering") and not by_kind(objects, "KopfPeering")


def test_bindings_name_the_operator_service_account_in_the_release_namespace() -> None:
    objects = render(ALL_ON)
    sa = one(objects, "ServiceAccount")
    assert sa["metadata"] == {**sa["metadata"], "name": "specfleet-operator", "namespace": NAMESPACE}
    workload = one(objects, "StatefulSet")
    assert workload["spec"]["template"]["spec"]["serviceAccountName"] == "specfleet-operator"
    for binding in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "specfleet-operator", "namespace": NAMESPACE}]


def test_no_roles_without_rbac_create() -> None:
    objects = render(None, "rbac.create=false")
    assert not [o for o in objects if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]


def test_users_get_speculative_deployments_through_aggregated_roles() -> None:
    roles = {o["metadata"]["name"]: o for o in by_kind(render(), "ClusterRole")}
    view, edit = roles["sf-specfleet-view"], roles["sf-specfleet-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert {"update", "patch"} <= {v for r in edit["rules"] if "speculativedeployments/scale" in r["resources"] for v in r["verbs"]}
    # view never writes
    assert {v for r in view["rules"] for v in r["verbs"]} == {"get", "list", "watch"}
