"""The Prometheus Operator PodMonitor, created only when the spec asks and its CRD exists."""

from __future__ import annotations

from typing import Any

from specfleet_operator.builders.labels import SERVING_PORT_NAME, metadata, selector_labels
from specfleet_operator.durations import parse_duration
from specfleet_operator.spec import SpeculativeDeployment

PODMONITOR_API_VERSION = "monitoring.coreos.com/v1"


def build_pod_monitor(cr: SpeculativeDeployment, namespace: str) -> dict[str, Any]:
    # Scrape at least twice per control interval so every decision sees fresh samples.
    interval = max(1, int(parse_duration(cr.spec.speculation.control.interval) // 2))
    return {
        "apiVersion": PODMONITOR_API_VERSION,
        "kind": "PodMonitor",
        "metadata": metadata(cr, cr.name, namespace),
        "spec": {
            "selector": {"matchLabels": selector_labels(cr)},
            "podMetricsEndpoints": [{"port": SERVING_PORT_NAME, "path": "/metrics", "interval": f"{interval}s"}],
        },
    }
