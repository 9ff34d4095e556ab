"""The NetworkPolicy in front of a CR's runtime pods.

Two ports are open, every other is closed:
- the serving port (`spec.serving.port`: OpenAI API, /health, /metrics) to every client, as
  the Service, the kubelet's probes and Prometheus need;
- the admin port (`spec.serving.adminPort`: /admin/speculation) only to the operator's pods,
  selected by their labels in the operator's namespace (OperatorPods). The bearer token from
  the CR's Secret still guards the admin API behind the policy.

A policy is only enforced where the cluster's network plugin supports NetworkPolicy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from specfleet_operator.builders.labels import ADMIN_PORT_NAME, SERVING_PORT_NAME, metadata, selector_labels
from specfleet_operator.spec import SpeculativeDeployment

OPERATOR_NAMESPACE_ENV = "SPECFLEET_OPERATOR_NAMESPACE"
OPERATOR_POD_LABELS_ENV = "SPECFLEET_OPERATOR_POD_LABELS"
# What the Helm chart installs: `helm install ... -n specfleet-system`, pods labelled by its
# selectorLabels (charts/specfleet/templates/_helpers.tpl); the chart sets both env vars.
DEFAULT_OPERATOR_NAMESPACE = "specfleet-system"
DEFAULT_OPERATOR_POD_LABELS = "app.kubernetes.io/name=specfleet-operator"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server


def parse_pod_labels(text: str) -> dict[str, str]:
    """`key=value,key2=value2` -> labels; ValueError naming the bad item."""
    labels = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item.strip()!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


@dataclass(frozen=True)
class OperatorPods:
    """Where the operator runs and how its pods are labelled: the only peers of the admin port."""

    namespace: str = DEFAULT_OPERATOR_NAMESPACE
    labels: Mapping[str, str] = field(default_factory=lambda: parse_pod_labels(DEFAULT_OPERATOR_POD_LABELS))


def build_network_policy(cr: SpeculativeDeployment, namespace: str, operator: OperatorPods) -> dict[str, Any]:
    operator_pods = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: operator.namespace}},
        "podSelector": {"matchLabels": dict(operator.labels)},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cr, cr.name, namespace),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(cr)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"port": SERVING_PORT_NAME, "protocol": "TCP"}]},
                # One peer with both selectors: pods with these labels in that namespace (AND).
                {"from": [operator_pods], "ports": [{"port": ADMIN_PORT_NAME, "protocol": "TCP"}]},
            ],
        },
    }
