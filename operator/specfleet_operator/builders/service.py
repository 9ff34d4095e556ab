"""The ClusterIP Service in front of a CR's runtime pods (OpenAI API and /metrics)."""

from __future__ import annotations

from typing import Any

from specfleet_operator.builders.labels import ADMIN_PORT_NAME, metadata, selector_labels
from specfleet_operator.spec import SpeculativeDeployment


def build_service(cr: SpeculativeDeployment, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(cr, cr.name, namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cr),
            "ports": [{"name": ADMIN_PORT_NAME, "port": cr.spec.serving.port, "targetPort": ADMIN_PORT_NAME, "protocol": "TCP"}],
        },
    }
