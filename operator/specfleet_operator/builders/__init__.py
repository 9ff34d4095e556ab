"""Pure builders: a SpeculativeDeployment in, the child objects the operator applies out."""

from __future__ import annotations

from typing import Any

from specfleet_operator.builders.deployment import build_deployment
from specfleet_operator.builders.disruption import build_pdb
from specfleet_operator.builders.monitoring import build_pod_monitor
from specfleet_operator.builders.network import OperatorPods, build_network_policy
from specfleet_operator.builders.secret import build_admin_secret
from specfleet_operator.builders.service import build_service
from specfleet_operator.spec import SpeculativeDeployment


def build_children(
    cr: SpeculativeDeployment, namespace: str, admin_token: str, pod_monitors_available: bool,
    operator: OperatorPods = OperatorPods(),
) -> list[dict[str, Any]]:
    """Every child, in apply order (the Secret before the pods that mount it). `operator`:
    the pods the NetworkPolicy admits to the admin port."""
    children = [
        build_admin_secret(cr, namespace, admin_token),
        build_service(cr, namespace),
        build_network_policy(cr, namespace, operator),
        build_pdb(cr, namespace),
        build_deployment(cr, namespace),
    ]
    if cr.spec.metrics.pod_monitor and pod_monitors_available:
        children.append(build_pod_monitor(cr, namespace))
    return children
