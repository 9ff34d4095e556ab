"""Pure builders: what each model source, speculation mode and resource setting becomes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from specfleet_operator.builders import build_children
from specfleet_operator.builders.deployment import build_deployment, initial_speculation
from specfleet_operator.builders.network import OperatorPods, build_network_policy, parse_pod_labels
from specfleet_operator.builders.service import build_service
from specfleet_operator.spec import SpeculativeDeployment, parse_cr

BASE = {
    "apiVersion": "specfleet.io/v1alpha1", "kind": "SpeculativeDeployment",
    "metadata": {"name": "fleet", "namespace": "ml", "uid": "1234"},
    "spec": {"model": {"source": "bundled://pycode-target"}, "speculation": {"method": "ngram"}},
}


def make(**spec: Any) -> SpeculativeDeployment:
    body = copy.deepcopy(BASE)
    body["spec"] |= spec
    return parse_cr(body)


def pod(cr: SpeculativeDeployment) -> dict[str, Any]:
    return build_deployment(cr, "ml")["spec"]["template"]["spec"]


def flag(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


@pytest.mark.parametrize(("source", "path", "volume"), [
    ("bundled://pycode-target", "bundled://pycode-target", None),
    ("file:///mnt/models/llama", "/models/target", {"hostPath": {"path": "/mnt/models/llama", "type": "Directory"}}),
    ("pvc://weights/llama/8b", "/models/target/llama/8b", {"persistentVolumeClaim": {"claimName": "weights", "readOnly": True}}),
    ("hf://meta-llama/Llama-3.1-8B@v2", "/models/target", {"emptyDir": {}}),
])
def test_each_model_source_becomes_a_path_the_runtime_can_read(source: str, path: str, volume: dict | None) -> None:
    spec = pod(make(model={"source": source}))
    runtime = spec["containers"][0]
    assert flag(runtime["command"], "--model") == path
    volumes = {v["name"]: {k: x for k, x in v.items() if k != "name"} for v in spec["volumes"]}
    assert volumes.get("target-model") == volume
    if volume is not None:
        mount = next(m for m in runtime["volumeMounts"] if m["name"] == "target-model")
        assert mount == {"name": "target-model", "mountPath": "/models/target", "readOnly": True}
    fetchers = spec.get("initContainers", [])
    if source.startswith("hf://"):
        (fetch,) = fetchers
        assert fetch["command"][-3:] == ["meta-llama/Llama-3.1-8B", "v2", "/models/target"]
        assert fetch["securityContext"] == runtime["securityContext"]
    else:
        assert fetchers == []


def test_speculation_modes_set_the_startup_flags_and_annotation() -> None:
    auto = make(speculation={"method": "ngram", "kMax": 6})
    assert flag(pod(auto)["containers"][0]["command"], "--schedule") == "6"
    on = make(speculation={"method": "ngram", "mode": "on", "k": 2, "kMax": 6})
    assert initial_speculation(on).k_for_batch(1000) == 2
    off = make(speculation={"method": "ngram", "mode": "off"})
    command = pod(off)["containers"][0]["command"]
    assert flag(command, "--speculation") == "off" and "--schedule" not in command
    assert initial_speculation(off).enabled is False
    assert "--draft" not in command


def test_gpus_become_requests_and_limits_and_select_cuda() -> None:
    runtime = pod(make(resources={"gpus": 2, "requests": {"memory": "40Gi"}}))["containers"][0]
    assert runtime["resources"] == {"requests": {"memory": "40Gi", "nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}
    assert flag(runtime["command"], "--device") == "cuda"
    assert flag(pod(make(resources={"gpus": 0}))["containers"][0]["command"], "--device") == "cpu"


def test_runtime_runs_locked_down() -> None:
    spec = pod(make())
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    context = spec["containers"][0]["securityContext"]
    assert context == {
        "runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert "/tmp" in mounts and mounts["/var/run/specfleet/admin"]["readOnly"]
    assert {p: spec["containers"][0][p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {
        "startupProbe": "/health", "readinessProbe": "/health", "livenessProbe": "/health",
    }


def test_user_env_overrides_defaults_and_args_come_last() -> None:
    spec = pod(make(engine={"env": [{"name": "HOME", "value": "/data"}], "args": ["--dtype", "bfloat16"]}))
    runtime = spec["containers"][0]
    assert [e for e in runtime["env"] if e["name"] == "HOME"] == [{"name": "HOME", "value": "/data"}]
    assert runtime["command"][-2:] == ["--dtype", "bfloat16"]


def test_pod_monitor_needs_both_the_spec_and_the_crd() -> None:
    asked = make(metrics={"podMonitor": True})
    assert [c["kind"] for c in build_children(asked, "ml", "t", pod_monitors_available=True)][-1] == "PodMonitor"
    assert "PodMonitor" not in [c["kind"] for c in build_children(asked, "ml", "t", pod_monitors_available=False)]
    assert "PodMonitor" not in [c["kind"] for c in build_children(make(), "ml", "t", pod_monitors_available=True)]


def test_children_without_a_uid_carry_no_owner_reference() -> None:
    body = copy.deepcopy(BASE)
    del body["metadata"]["uid"]
    for child in build_children(parse_cr(body), "ml", "t", pod_monitors_available=False):
        assert "ownerReferences" not in child["metadata"]


def test_the_runtime_serves_the_admin_api_on_its_own_named_port() -> None:
    runtime = pod(make(serving={"port": 9000, "adminPort": 9443}))["containers"][0]
    assert runtime["ports"] == [
        {"name": "http", "containerPort": 9000, "protocol": "TCP"},
        {"name": "admin", "containerPort": 9443, "protocol": "TCP"},
    ]
    assert (flag(runtime["command"], "--port"), flag(runtime["command"], "--admin-port")) == ("9000", "9443")
    assert {runtime[p]["httpGet"]["port"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {"http"}


def test_the_service_exposes_the_serving_port_only() -> None:
    ports = build_service(make(serving={"port": 9000, "adminPort": 9443}), "ml")["spec"]["ports"]
    assert ports == [{"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}]


def test_the_network_policy_admits_the_admin_port_to_the_operator_pods_only() -> None:
    operator = OperatorPods("platform", {"app.kubernetes.io/name": "specfleet-operator", "app.kubernetes.io/instance": "sf"})
    policy = build_network_policy(make(), "ml", operator)["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "specfleet-runtime",
                                                     "specfleet.io/deployment": "fleet"}}
    assert policy["policyTypes"] == ["Ingress"]
    serving, admin = policy["ingress"]
    assert serving == {"ports": [{"port": "http", "protocol": "TCP"}]}  # no `from`: every client
    assert admin == {
        # One peer holding both selectors: these pods AND that namespace, not either.
        "from": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "specfleet-operator",
                                            "app.kubernetes.io/instance": "sf"}},
        }],
        "ports": [{"port": "admin", "protocol": "TCP"}],
    }


def test_by_default_the_policy_admits_the_operator_as_the_chart_installs_it() -> None:
    (policy,) = [c for c in build_children(make(), "ml", "t", pod_monitors_available=False) if c["kind"] == "NetworkPolicy"]
    (peer,) = policy["spec"]["ingress"][1]["from"]
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "specfleet-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "specfleet-operator"}},
    }


@pytest.mark.parametrize(("text", "labels"), [
    ("a=b", {"a": "b"}),
    ("app.kubernetes.io/name=specfleet-operator, app.kubernetes.io/instance=sf",
     {"app.kubernetes.io/name": "specfleet-operator", "app.kubernetes.io/instance": "sf"}),
])
def test_operator_pod_labels_are_key_value_pairs(text: str, labels: dict[str, str]) -> None:
    assert parse_pod_labels(text) == labels


@pytest.mark.parametrize("text", ["", "a", "a=b,", "=b"])
def test_operator_pod_labels_without_a_key_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not key=value"):
        parse_pod_labels(text)
