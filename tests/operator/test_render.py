"""`specfleet render`: valid Kubernetes objects, exactly what the operator applies, one-line errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator.v1 import PodMonitor
from operator_harness import CR_RESOURCE, EXAMPLE, ApiServer, create_cr, eventually, example_cr, stored

from specfleet_operator.builders.secret import token_from_secret

SPECFLEET = Path(sys.executable).parent / "specfleet"
KUBERNETES_VERSIONS = ("1.30", "1.35")

EVERYTHING_ON = {
    "apiVersion": "specfleet.io/v1alpha1",
    "kind": "SpeculativeDeployment",
    "metadata": {"name": "llama", "namespace": "serving"},
    "spec": {
        "replicas": 4,
        "model": {"name": "llama-8b", "source": "hf://meta-llama/Llama-3.1-8B-Instruct@main"},
        "speculation": {"mode": "on", "k": 4, "kMax": 6, "draft": {"source": "pvc://models/llama-1b"}},
        "engine": {
            "kind": "torch", "image": "example/runtime:1", "imagePullPolicy": "Always", "args": ["--dtype=bfloat16"],
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
        },
        "resources": {"gpus": 1, "requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "96Gi"}},
        "scheduling": {
            "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                   "labelSelector": {"matchLabels": {"specfleet.io/deployment": "llama"}}}}]}},
        },
        "serving": {"port": 8080, "maxBatch": 64, "maxModelLen": 8192},
        "metrics": {"prometheusUrl": "http://prometheus.monitoring:9090", "podMonitor": True},
    },
}
FILE_SOURCES = {**EVERYTHING_ON, "metadata": {"name": "local"}, "spec": {
    **EVERYTHING_ON["spec"],
    "model": {"source": "file:///mnt/models/target"},
    "speculation": {"mode": "auto", "method": "ngram"},
}}


def render(path: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(SPECFLEET), "render", "-f", str(path), *args], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


@pytest.mark.parametrize("body", [None, EVERYTHING_ON, FILE_SOURCES], ids=["example", "everything-on", "file-and-ngram"])
def test_rendered_objects_pass_strict_kubernetes_schemas(body: dict[str, Any] | None, tmp_path: Path) -> None:
    path = EXAMPLE
    if body is not None:
        path = tmp_path / "cr.yaml"
        path.write_text(yaml.safe_dump(body))
    objects = render(path)
    kinds = [o["kind"] for o in objects]
    assert kinds[:5] == ["Secret", "Service", "NetworkPolicy", "PodDisruptionBudget", "Deployment"]
    for obj in objects:
        if obj["kind"] == "PodMonitor":
            # Not a Kubernetes built-in: kubernetes-validate has no schema for it. Checked instead
            # against prometheus-operator's own generated models, unknown fields refused.
            PodMonitor.model_validate(obj, extra="forbid", by_alias=True)
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    if body is EVERYTHING_ON:
        assert kinds[-1] == "PodMonitor"
        pod = objects[4]["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["initContainers"]] == ["fetch-target-model"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert {v["name"]: sorted(v) for v in pod["volumes"]}["draft-model"] == ["name", "persistentVolumeClaim"]
        assert all(o["metadata"]["namespace"] == "serving" for o in objects)


def test_bad_file_exits_2_with_one_line_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("kMax: 8", "kMax: 80"))
    result = subprocess.run([str(SPECFLEET), "render", "-f", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"specfleet render: {bad}: spec.speculation.kMax: must be <= 64"]


def test_the_operator_pods_admitted_to_the_admin_port_come_from_flags_or_the_chart_env() -> None:
    def admin_peer(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        out = subprocess.run([str(SPECFLEET), "render", "-f", str(EXAMPLE), *args], check=True, capture_output=True,
                             text=True, env={"PATH": "/usr/bin:/bin", **(env or {})}).stdout
        (policy,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "NetworkPolicy"]
        (peer,) = policy["spec"]["ingress"][1]["from"]
        return {"namespace": peer["namespaceSelector"]["matchLabels"], "pods": peer["podSelector"]["matchLabels"]}

    assert admin_peer("--operator-namespace", "ops", "--operator-pod-labels", "team=ml,app=op") == {
        "namespace": {"kubernetes.io/metadata.name": "ops"}, "pods": {"team": "ml", "app": "op"},
    }
    assert admin_peer(env={"SPECFLEET_OPERATOR_NAMESPACE": "ops", "SPECFLEET_OPERATOR_POD_LABELS": "app=op"}) == {
        "namespace": {"kubernetes.io/metadata.name": "ops"}, "pods": {"app": "op"},
    }
    bad = subprocess.run([str(SPECFLEET), "render", "-f", str(EXAMPLE), "--operator-pod-labels", "app"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "specfleet render: --operator-pod-labels: 'app' is not key=value"
    ]


async def test_render_prints_exactly_what_the_operator_applies(operator: ApiServer, tmp_path: Path) -> None:
    api = operator
    await create_cr(api, example_cr())
    await eventually(lambda: (stored(api, CR_RESOURCE, "pycode") or {}).get("status", {}).get("observedGeneration") == 1)
    applied = [
        json.loads(r.text) for r in api._requests
        if r.method == "PATCH" and r.params.get("fieldManager") == "specfleet"
    ]
    # Render the CR as the cluster has it (uid for owner references), with the operator's token.
    as_stored = {k: v for k, v in stored(api, CR_RESOURCE, "pycode").items() if k != "status"}
    path = tmp_path / "cr.yaml"
    path.write_text(yaml.safe_dump(as_stored))
    token = token_from_secret(stored(api, "v1/secrets", "pycode-admin"))
    rendered = await asyncio.to_thread(render, path, "--admin-token", token, "--no-pod-monitors")
    assert rendered == applied
