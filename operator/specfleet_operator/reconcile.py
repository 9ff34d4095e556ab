"""One reconciliation: validate the CR, build its children, apply them, report status.

The only side effects are the Kube calls; handlers.py wires this into kopf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from specfleet_operator.builders import build_children
from specfleet_operator.builders.labels import admin_secret_name
from specfleet_operator.builders.monitoring import PODMONITOR_API_VERSION
from specfleet_operator.builders.network import OperatorPods
from specfleet_operator.builders.secret import new_admin_token, token_from_secret
from specfleet_operator.checks import check_deep
from specfleet_operator.kube import Kube
from specfleet_operator.spec import CRValidationError, SpeculativeDeployment, Status, parse_cr
from specfleet_operator.status import invalid_spec_status, previous_status, workload_status


@dataclass
class Outcome:
    status: Status
    applied: list[dict[str, Any]]  # children as the API server stored them
    invalid: CRValidationError | None = None
    pod_monitor_unavailable: bool = False  # asked for, but the API serves no PodMonitors


def validate(body: dict[str, Any]) -> SpeculativeDeployment:
    """The CR as models, after the checks the schema cannot make; raises CRValidationError."""
    cr = parse_cr({k: v for k, v in body.items() if k != "status"})
    check_deep(cr)
    return cr


async def admin_token(kube: Kube, cr: SpeculativeDeployment, namespace: str) -> str:
    """The token in the CR's Secret, or a new one: tokens survive every re-apply."""
    secret = await kube.get("Secret", namespace, admin_secret_name(cr))
    return (token_from_secret(secret) if secret else None) or new_admin_token()


async def reconcile(
    kube: Kube, body: dict[str, Any], now: str, remove_pod_monitor: bool = False,
    operator: OperatorPods = OperatorPods(),
) -> Outcome:
    previous = previous_status(body)
    generation = (body.get("metadata") or {}).get("generation")
    try:
        cr = validate(body)
    except CRValidationError as exc:
        return Outcome(invalid_spec_status(previous, str(exc), generation, now), [], exc)

    namespace = cr.metadata.namespace or "default"
    wants_monitor = cr.spec.metrics.pod_monitor or remove_pod_monitor
    monitors = wants_monitor and await kube.serves(PODMONITOR_API_VERSION, "podmonitors")
    children = build_children(
        cr, namespace, await admin_token(kube, cr, namespace), pod_monitors_available=monitors, operator=operator
    )
    applied = [await kube.apply(child) for child in children]
    if remove_pod_monitor and monitors and not cr.spec.metrics.pod_monitor:
        await kube.delete("PodMonitor", namespace, cr.name)
    deployment = next(obj for obj in applied if obj.get("kind") == "Deployment")
    status = workload_status(cr, deployment, previous, now, observed_generation=generation)
    return Outcome(status, applied, pod_monitor_unavailable=cr.spec.metrics.pod_monitor and not monitors)


async def observe(kube: Kube, cr: SpeculativeDeployment, body: dict[str, Any], now: str) -> Status:
    """Status from the Deployment as it is now (the timer's job)."""
    previous = previous_status(body)
    deployment = await kube.get("Deployment", cr.metadata.namespace or "default", cr.name)
    return workload_status(cr, deployment, previous, now, observed_generation=previous.observed_generation)
