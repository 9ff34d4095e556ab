"""`helm lint --strict` passes, and values.schema.json turns bad values into clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from chart_render import CHART, NAMESPACE, RELEASE, VALUE_SETS, helm_args
from k8s_tools import HELM, run


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict_passes(values: Path | None) -> None:
    out = run(HELM, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *helm_args(values, ())).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


# (bad values, text the error must contain: the path of the offending value)
BAD_VALUES = [
    ({"replicaCount": "two"}, "replicaCount"),
    ({"replicaCount": 0}, "replicaCount"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
    ({"rbac": {"creat": True}}, "creat"),
    ({"metrics": {"port": 70000}}, "port"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "interval"),
    ({"resources": {"limits": {"memory": "lots"}}}, "memory"),
    ({"peering": {"name": "Has Spaces"}}, "name"),
    ({"grafanaDashboard": {"enabled": "yes"}}, "enabled"),
    ({"image": {"digest": "latest"}}, "digest"),
]


@pytest.mark.parametrize(("bad", "named"), BAD_VALUES, ids=[n for _, n in BAD_VALUES])
@pytest.mark.parametrize("command", ["template", "lint"])
def test_schema_rejects_bad_values_naming_the_value(bad: dict, named: str, command: str, tmp_path: Path) -> None:
    values = tmp_path / "bad.yaml"
    values.write_text(yaml.safe_dump(bad))
    args = [command, RELEASE, str(CHART)] if command == "template" else [command, "--strict", str(CHART)]
    proc = run(HELM, *args, "-f", str(values), check=False)
    assert proc.returncode != 0, f"helm {command} accepted {bad}"
    message = proc.stdout + proc.stderr
    assert "values don't meet the specifications of the schema" in message, message
    assert named in message, message


# Rules the schema cannot express; the templates fail with the reason.
CONFLICTS = [
    (["replicaCount=2", "peering.enabled=false"], "needs peering.enabled=true"),
    (["metrics.serviceMonitor.enabled=true"], "needs metrics.enabled=true"),
]


@pytest.mark.parametrize(("sets", "reason"), CONFLICTS, ids=["ha-without-peering", "servicemonitor-without-metrics"])
def test_conflicting_values_fail_with_the_reason(sets: list[str], reason: str) -> None:
    proc = run(HELM, "template", RELEASE, str(CHART), *helm_args(None, tuple(sets)), check=False)
    assert proc.returncode != 0
    assert reason in proc.stderr, proc.stderr


def test_chart_needs_kubernetes_1_30() -> None:
    """The StatefulSet's pod-index label (the operator's peering priority) is on by default
    from 1.28, and 1.30 is the oldest release the objects are validated against."""
    assert run(HELM, "template", RELEASE, str(CHART), "--kube-version", "1.30.0").returncode == 0
    proc = run(HELM, "template", RELEASE, str(CHART), "--kube-version", "1.29.5", check=False)
    assert proc.returncode != 0 and "chart requires kubeVersion: >=1.30.0-0" in proc.stderr


def test_schema_types_every_value_in_values_yaml() -> None:
    """A new value cannot slip in untyped: every key of values.yaml has a schema node with a
    type, and objects the chart defines list their keys (additionalProperties is false)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(values: dict, node: dict, path: str) -> None:
        for key, value in values.items():
            child = node.get("properties", {}).get(key)
            assert child is not None, f"{path}{key} has no schema"
            assert "type" in child or "anyOf" in child, f"{path}{key} has no type"
            if isinstance(value, dict) and child.get("additionalProperties") is False:
                walk(value, child, f"{path}{key}.")

    assert schema["additionalProperties"] is False
    walk(defaults, schema, "")
