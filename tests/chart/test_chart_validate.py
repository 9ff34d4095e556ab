"""Every object `helm template` renders passes strict schema validation for Kubernetes 1.30
and 1.35: built-in kinds with kubernetes-validate, the ServiceMonitor with
prometheus-operator's generated models, kopf's peering objects with the chart's CRDs."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pydantic
import pytest
import referencing
import yaml
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor
from kubernetes_validate.utils import schema_contents

from chart_render import CHART, VALUE_SETS, render

VERSIONS = ["1.30.0", "1.35.0"]


@cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(VALUE_SETS[name]))


@cache
def k8s_fragment(file: str, version: str) -> jsonschema.protocols.Validator:
    """A validator for one type of kubernetes-validate's strict schemas (e.g. ObjectMeta),
    for the parts of custom resources that are plain Kubernetes types."""
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = schema_contents(f"{folder}/{file}", version)
    defs = schema_contents(f"{folder}/_definitions.json", version)
    registry = referencing.Resource.from_contents(defs) @ (referencing.Resource.from_contents(schema) @ referencing.Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def chart_crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, for every CRD the chart ships."""
    out = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            for v in crd["spec"]["versions"]:
                out[(f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
    return out


def validate_custom(obj: dict[str, Any], version: str, crds: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Custom resources: the ServiceMonitor against prometheus-operator's generated models
    (its CRDs cannot be installed here), the rest against the CRDs the chart ships."""
    key = (obj["apiVersion"], obj["kind"])
    if key == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        ServiceMonitor.model_validate(obj, extra="forbid", by_alias=True)
        return
    k8s_fragment("objectmeta-meta-v1.json", version).validate(obj["metadata"])
    assert key in crds, f"no schema for {key}: neither Kubernetes' nor a CRD the chart ships"
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.Draft202012Validator(crds[key]).validate(body)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_rendered_object_passes_strict_validation(values: str, version: str) -> None:
    crds = chart_crd_schemas()
    custom = 0
    objects = rendered(values)
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            validate_custom(obj, version, crds)
            custom += 1
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: {e.message} at {list(e.path)}") from None
    # both value sets render kopf peering objects, so both paths above ran
    assert 0 < custom < len(objects)


def test_strict_validation_catches_a_misplaced_field() -> None:
    """The check above can fail: a field in the wrong place is an error, not ignored."""
    workload = next(o for o in rendered("default") if o["kind"] == "StatefulSet")
    broken = {**workload, "spec": {**workload["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(broken, "1.35.0", strict=True)
    monitor = next(o for o in rendered("all-on") if o["kind"] == "ServiceMonitor")
    bad = {**monitor, "spec": {**monitor["spec"], "endpoints": [{"port": "metrics", "interval": "often"}]}}
    with pytest.raises(pydantic.ValidationError, match="often"):
        validate_custom(bad, "1.35.0", chart_crd_schemas())


def test_all_on_values_render_every_optional_object() -> None:
    kinds = {o["kind"] for o in rendered("all-on")}
    assert kinds >= {
        "CustomResourceDefinition", "StatefulSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        "Role", "RoleBinding", "KopfPeering", "Service", "ServiceMonitor", "ConfigMap", "PodDisruptionBudget",
    }, kinds
    assert {o["kind"] for o in rendered("default")} >= {"ClusterKopfPeering", "ClusterRole", "StatefulSet"}


def test_all_on_values_set_every_key_of_values_yaml() -> None:
    """values-all-on.yaml stays an honest 'every option on': a new option must be added to it."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    all_on = yaml.safe_load(Path(VALUE_SETS["all-on"]).read_text())
    assert set(all_on) == set(defaults)
    for key, value in defaults.items():
        if isinstance(value, dict) and value and key not in ("resources", "podSecurityContext", "securityContext"):
            assert set(all_on[key]) == set(value), key
