"""The operator Deployment the chart renders: its command line, probes, peering and metrics
fit together, and the pod is locked down."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kopf._cogs.structs import references

from chart_render import ALL_ON, NAMESPACE, by_kind, container, kubelet_expand, one, parse_operator_args, render
from k8s_tools import REPO
from specfleet_operator.builders.network import OperatorPods, build_network_policy, parse_pod_labels
from specfleet_operator.spec import parse_cr

EXAMPLE = REPO / "examples" / "speculative-deployment.yaml"


def test_default_operator_watches_all_namespaces_with_cluster_peering() -> None:
    objects = render()
    args = container(objects)["args"]
    peering = one(objects, "ClusterKopfPeering")
    assert args == ["operator", "--liveness=http://0.0.0.0:8080/healthz", "--all-namespaces",
                    f"--peering={peering['metadata']['name']}", "--priority=$(POD_INDEX)"]


def test_watch_namespaces_become_namespace_flags_and_a_peering_in_each() -> None:
    objects = render(ALL_ON)
    args = container(objects)["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=ml-serving", "--namespace=ml-canary"]
    assert "--all-namespaces" not in args
    peerings = by_kind(objects, "KopfPeering")
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings} == {
        ("ml-serving", "specfleet-ha"), ("ml-canary", "specfleet-ha")}
    assert "--peering=specfleet-ha" in args
    assert not by_kind(objects, "ClusterKopfPeering")


def test_peering_objects_are_of_the_resources_kopf_looks_for() -> None:
    """kopf's own selectors for the peering resources match the CRDs the chart ships."""
    resources = [
        references.Resource(group=c["spec"]["group"], version=v["name"], plural=c["spec"]["names"]["plural"],
                            kind=c["spec"]["names"]["kind"], namespaced=c["spec"]["scope"] == "Namespaced")
        for c in by_kind(render(), "CustomResourceDefinition") if c["spec"]["group"] == "kopf.dev"
        for v in c["spec"]["versions"]
    ]
    for selector, namespaced in ((references.CLUSTER_PEERINGS_K, False), (references.NAMESPACED_PEERINGS_K, True)):
        (match,) = [r for r in resources if selector.check(r)]
        assert match.namespaced is namespaced


def test_standalone_when_peering_is_off() -> None:
    args = container(render(None, "peering.enabled=false"))["args"]
    assert "--standalone" in args and not any(a.startswith("--peering") for a in args)


def test_probes_hit_the_liveness_endpoint_kopf_serves() -> None:
    for values, port in ((None, 8080), (ALL_ON, 8081)):
        c = container(render(values))
        assert f"--liveness=http://0.0.0.0:{port}/healthz" in c["args"]
        assert {"name": "healthz", "containerPort": port, "protocol": "TCP"} in c["ports"]
        for probe in (c["livenessProbe"], c["startupProbe"]):
            assert probe["httpGet"] == {"path": "/healthz", "port": "healthz"}


def test_each_replica_gets_its_own_peering_priority_and_identity() -> None:
    """kopf pauses every replica when peers share a priority, so the priority is the
    StatefulSet pod index, and the peering identity the (stable) pod name."""
    objects = render(ALL_ON)
    workload = one(objects, "StatefulSet")
    assert workload["spec"]["replicas"] == 3
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    priorities = {parse_operator_args(kubelet_expand(container(objects), {"POD_INDEX": str(i)}))["priority"] for i in range(3)}
    assert priorities == {0, 1, 2}


def test_operator_pod_is_locked_down() -> None:
    objects = render()
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["limits"]["memory"]


def test_metrics_service_and_service_monitor_reach_the_metrics_port() -> None:
    objects = render(ALL_ON)
    c = container(objects)
    assert "--metrics-port=9464" in c["args"]
    assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in c["ports"]
    service = one(objects, "Service")
    pod_labels = one(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"} in service["spec"]["ports"]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # off by default: no flag, no port
    default = render()
    assert [p["name"] for p in one(default, "Service")["spec"]["ports"]] == ["healthz"]
    assert not any("--metrics-port" in a for a in container(default)["args"])


def test_headless_service_governs_the_statefulset() -> None:
    objects = render()
    service, workload = one(objects, "Service"), one(objects, "StatefulSet")
    assert service["spec"]["clusterIP"] == "None"
    assert workload["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]


def test_image_reference_prefers_the_digest() -> None:
    assert container(render())["image"] == "ghcr.io/specfleet/specfleet-operator:0.1.0"
    assert container(render(ALL_ON))["image"] == (
        "registry.example.com/ml/specfleet-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")


def test_operator_pdb_selects_the_operator_pods() -> None:
    objects = render(ALL_ON)
    pdb = one(objects, "PodDisruptionBudget")
    pod_labels = one(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_operator_cli_accepts_the_rendered_command_line() -> None:
    pod = {"POD_INDEX": "0"}
    default = parse_operator_args(kubelet_expand(container(render()), pod))
    assert default["all_namespaces"] is True and not default["namespace"]
    assert default["liveness"] == "http://0.0.0.0:8080/healthz"
    assert (default["peering"], default["priority"], default["standalone"]) == ("sf-specfleet", 0, False)
    all_on = parse_operator_args(kubelet_expand(container(render(ALL_ON)), pod))
    assert all_on["namespace"] == ["ml-serving", "ml-canary"] and all_on["all_namespaces"] is False
    assert (all_on["peering"], all_on["metrics_port"], all_on["verbose"]) == ("specfleet-ha", 9464, True)
    assert all_on["prometheus_url"] == "http://prometheus-operated.monitoring.svc:9090"
    standalone = parse_operator_args(kubelet_expand(container(render(None, "peering.enabled=false")), pod))
    assert standalone["standalone"] is True and standalone["peering"] is None


def downward_api_env(c: dict[str, Any], pod_namespace: str) -> dict[str, str]:
    """The container's env as the kubelet sets it in a pod of `pod_namespace`."""
    env = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[e["name"]] = pod_namespace
    return env


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["default", "all-on"])
def test_the_runtime_network_policy_admits_the_operator_pods_the_chart_runs(
    values: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart tells the operator who it is (env); the NetworkPolicy the operator then builds
    for a SpeculativeDeployment admits exactly those pods, in that namespace, to the admin port."""
    objects = render(values)
    workload = one(objects, "StatefulSet")
    for name, value in downward_api_env(container(objects), "team-ops").items():
        monkeypatch.setenv(name, value)
    params = parse_operator_args(kubelet_expand(container(objects), {"POD_INDEX": "0"}))
    operator = OperatorPods(params["operator_namespace"], parse_pod_labels(params["operator_pod_labels"]))
    cr = parse_cr(yaml.safe_load(EXAMPLE.read_text()))
    (peer,) = build_network_policy(cr, "ml", operator)["spec"]["ingress"][1]["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "team-ops"}}
    assert peer["podSelector"]["matchLabels"] == workload["spec"]["selector"]["matchLabels"]
    assert peer["podSelector"]["matchLabels"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()
