"""The ClusterIP Service in front of a CR's runtime pods: the serving port only (OpenAI API,
/health, /metrics). The admin port is left out: only the operator calls it, at pod IPs."""

from __future__ import annotations

from typing import Any

from specfleet_operator.builders.labels import SERVING_PORT_NAME, metadata, selector_labels
from specfleet_operator.spec import SpeculativeDeployment


def build_service(cr: SpeculativeDeployment, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(cr, cr.name, namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cr),
            "ports": [{"name": SERVING_PORT_NAME, "port": cr.spec.serving.port, "targetPort": SERVING_PORT_NAME, "protocol": "TCP"}],
        },
    }
