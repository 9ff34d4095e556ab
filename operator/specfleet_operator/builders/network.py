"""The NetworkPolicy in front of a CR's runtime pods.

Only the serving port is admitted: it carries the OpenAI API, /health, /metrics and, today,
the admin API (DESIGN.md §3 puts /admin/speculation on the same HTTP surface). Every other
port is closed. Until the runtime listens for admin calls on a port of its own, the bearer
token from the CR's Secret is what keeps clients away from /admin/speculation; with such a
port, a second rule admitting only the operator's pods is what this policy would add.
"""

from __future__ import annotations

from typing import Any

from specfleet_operator.builders.labels import ADMIN_PORT_NAME, metadata, selector_labels
from specfleet_operator.spec import SpeculativeDeployment


def build_network_policy(cr: SpeculativeDeployment, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cr, cr.name, namespace),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(cr)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"port": ADMIN_PORT_NAME, "protocol": "TCP"}]}],
        },
    }
