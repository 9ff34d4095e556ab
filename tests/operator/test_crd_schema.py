"""The CRD and the pydantic models judge custom resources the same way.

Each case runs through the API server's checks emulated from the committed CRD
(crd_validation.py: defaulting, strict fields, openAPIV3Schema, CEL) and through the models
(spec.parse_cr). Valid ones pass both; invalid ones fail both, on the expected field.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import kubernetes_validate
import pytest
import yaml
from crd_validation import CRD_FILE, api_server_errors, crd_schema

from specfleet_operator import crd as crd_module
from specfleet_operator.spec import CRValidationError, parse_cr

MINIMAL = {
    "apiVersion": "specfleet.io/v1alpha1",
    "kind": "SpeculativeDeployment",
    "metadata": {"name": "fleet"},
    "spec": {
        "model": {"source": "bundled://pycode-target"},
        "speculation": {"draft": {"source": "bundled://pycode-draft"}},
    },
}


def with_spec(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        for dotted, value in changes.items():
            node = body["spec"]
            *parents, leaf = dotted.split("__")
            for key in parents:
                node = node.setdefault(key, {})
            if value is DELETE:
                node.pop(leaf, None)
            else:
                node[leaf] = value
    return mutate


DELETE = object()

VALID: dict[str, Callable[[dict[str, Any]], None]] = {
    "minimal": with_spec(),
    "ngram without a draft": with_spec(speculation={"method": "ngram"}),
    "mode on with a fixed k": with_spec(speculation__mode="on", speculation__k=3, speculation__kMax=4),
    "mode off": with_spec(speculation__mode="off"),
    "hf target with revision, pvc draft": with_spec(
        model={"name": "meta-llama/Llama-3.1-8B", "source": "hf://meta-llama/Llama-3.1-8B@main"},
        speculation__draft={"source": "pvc://models/llama-1b"},
    ),
    "file source, GPUs and scheduling": with_spec(
        model={"source": "file:///mnt/models/target"},
        resources={"gpus": 2, "requests": {"cpu": 4, "memory": "32Gi"}, "limits": {"memory": "64Gi"}},
        scheduling={"nodeSelector": {"gpu": "h100"}, "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}]},
    ),
    "affinity and env from a secret": with_spec(
        scheduling={"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}]}}}},
        engine={"env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
                        {"name": "LOG_LEVEL", "value": "debug"}]},
    ),
    "vllm engine with extra args": with_spec(engine={"kind": "vllm", "image": "example/vllm:1", "args": ["--enforce-eager"]}),
    "compound durations": with_spec(speculation__control={"interval": "1.5s", "window": "1h30m", "cooldown": "90s"}),
    "scaled to zero": with_spec(replicas=0),
    "metrics with a PodMonitor": with_spec(metrics={"prometheusUrl": "http://prometheus.monitoring:9090", "podMonitor": True}),
    "serving limits": with_spec(serving={"port": 8080, "maxBatch": 64, "maxModelLen": 8192}),
    "both ports moved": with_spec(serving={"port": 9000, "adminPort": 9443}),
    "admin port below the serving port": with_spec(serving={"port": 8001, "adminPort": 8000}),
}

# name -> (mutation, the field the refusal must name)
INVALID: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "kMax above 64": (with_spec(speculation__kMax=65), "spec.speculation.kMax"),
    "k above kMax": (with_spec(speculation__mode="on", speculation__k=9), "spec.speculation.k"),
    "k outside mode on": (with_spec(speculation__k=2), "spec.speculation.k"),
    "draft method without a draft": (with_spec(speculation__draft=DELETE), "spec.speculation.draft"),
    "ngram with a draft": (with_spec(speculation__method="ngram"), "spec.speculation.draft"),
    "window shorter than interval": (with_spec(speculation__control={"interval": "30s", "window": "10s"}), "spec.speculation.control.window"),
    "interval below a second": (with_spec(speculation__control={"interval": "500ms", "window": "1s"}), "spec.speculation.control.interval"),
    "duration in words": (with_spec(speculation__control={"interval": "15 seconds"}), "spec.speculation.control.interval"),
    "unknown model scheme": (with_spec(model={"source": "s3://bucket/model"}), "spec.model.source"),
    "no model": (with_spec(model=DELETE), "spec.model"),
    "no speculation section": (with_spec(speculation=DELETE), "spec.speculation"),
    "unknown field": (with_spec(replica=2), "spec.replica"),
    "unknown mode": (with_spec(speculation__mode="sometimes"), "spec.speculation.mode"),
    "negative replicas": (with_spec(replicas=-1), "spec.replicas"),
    "engine args override a managed flag": (with_spec(engine={"args": ["--port=9000"]}), "spec.engine.args"),
    "GPUs through requests": (with_spec(resources={"requests": {"nvidia.com/gpu": 1}}), "spec.resources.gpus"),
    "toleration Exists with a value": (
        with_spec(scheduling={"tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}]}),
        "spec.scheduling.tolerations[0].value",
    ),
    "env value and valueFrom": (
        with_spec(engine={"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
        "spec.engine.env[0].valueFrom",
    ),
    "quantity in words": (with_spec(resources={"requests": {"memory": "lots"}}), "spec.resources.requests.memory"),
    "prior acceptance of 1": (with_spec(speculation__control={"priorAcceptance": 1.0}), "spec.speculation.control.priorAcceptance"),
    "privileged port": (with_spec(serving={"port": 80}), "spec.serving.port"),
    "unknown engine": (with_spec(engine={"kind": "tensorrt"}), "spec.engine.kind"),
    "admin port equal to the serving port": (with_spec(serving={"port": 9000, "adminPort": 9000}), "spec.serving.adminPort"),
    "serving port on the default admin port": (with_spec(serving={"port": 8001}), "spec.serving.adminPort"),
    "privileged admin port": (with_spec(serving={"adminPort": 443}), "spec.serving.adminPort"),
    "engine args set the admin port": (with_spec(engine={"args": ["--admin-port", "9000"]}), "spec.engine.args"),
}


def case(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = copy.deepcopy(MINIMAL)
    mutate(body)
    return body


@pytest.mark.parametrize("name", list(VALID))
def test_valid_resources_pass_the_crd_and_the_models(name: str) -> None:
    body = case(VALID[name])
    assert api_server_errors(body) == []
    parse_cr(body)


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_resources_fail_the_crd_and_the_models_on_the_same_field(name: str) -> None:
    mutate, field = INVALID[name]
    body = case(mutate)
    errors = api_server_errors(body)
    assert errors, "the API server would accept it"
    assert field in [path for path, _ in errors], errors
    with pytest.raises(CRValidationError) as refused:
        parse_cr(body)
    assert refused.value.path == field
    assert str(refused.value).startswith(f"{field}: ") and "\n" not in str(refused.value)


def test_names_children_cannot_carry_are_refused() -> None:
    for name in ("Fleet", "a" * 46, "9fleet"):
        body = case(with_spec())
        body["metadata"]["name"] = name
        assert [p for p, _ in api_server_errors(body)] == ["metadata.name"]
        with pytest.raises(CRValidationError, match="^metadata.name: "):
            parse_cr(body)


def test_the_example_resource_is_valid() -> None:
    body = yaml.safe_load((CRD_FILE.parents[1] / "examples" / "speculative-deployment.yaml").read_text())
    assert api_server_errors(body) == []
    parse_cr(body)


def test_committed_crd_files_are_generated_from_the_models() -> None:
    expected = crd_module.crd_yaml()
    for path in crd_module.CRD_PATHS:
        assert path.read_text() == expected, f"{path} is stale: run python -m specfleet_operator.crd"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for key, sub in schema.get("properties", {}).items():
        out += _walk(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        out += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _walk(schema["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural_and_documents_every_field() -> None:
    for path, node in _walk(crd_schema()["properties"]["spec"]) + _walk(crd_schema()["properties"]["status"]):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"
        for keyword in ("anyOf", "oneOf", "allOf"):
            for branch in node.get(keyword, []):
                assert node.get("x-kubernetes-int-or-string") and set(branch) == {"type"}, f"{path}: {keyword}"


def test_crd_declares_scale_status_and_printer_columns() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector",
    }}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Mode", "Speculating", "Acceptance", "BreakEven", "Age"} <= columns
    assert crd["spec"]["names"]["shortNames"] == ["specdeploy", "sdep"]


def test_the_crd_object_itself_passes_strict_kubernetes_schemas() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    for version in ("1.30", "1.35"):
        kubernetes_validate.validate(crd, version, strict=True)
