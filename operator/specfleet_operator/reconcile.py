"""One reconciliation: validate the CR, build its children, apply them, report status.

The only side effects are the Kube calls; handlers.py wires this into kopf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from specfleet_operator.builders import build_children
from specfleet_operator.builders.labels import DEPLOYMENT_LABEL, admin_secret_name
from specfleet_operator.builders.monitoring import PODMONITOR_API_VERSION
from specfleet_operator.builders.network import OperatorPods
from specfleet_operator.builders.secret import new_admin_token, token_from_secret
from specfleet_operator.checks import check_deep
from specfleet_operator.kube import Kube, KubeError
from specfleet_operator.spec import KIND, CRValidationError, SpeculativeDeployment, Status, parse_cr
from specfleet_operator.status import invalid_spec_status, previous_status, status_patch, workload_status


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


def controlled_by(child: dict[str, Any], owner: dict[str, Any]) -> bool:
    """Whether `owner` (a SpeculativeDeployment body) is `child`'s controller."""
    uid = (owner.get("metadata") or {}).get("uid")
    return uid is not None and any(
        ref.get("kind") == KIND and ref.get("uid") == uid and ref.get("controller")
        for ref in (child.get("metadata") or {}).get("ownerReferences") or []
    )


async def refresh_from_deployment(
    kube: Kube, deployment: dict[str, Any], deleted: bool, now: str, attempts: int = 3
) -> bool:
    """Bring the owning CR's workload status in line with its runtime Deployment as it is now
    (`deleted`: it is gone, and `deployment` is its last state). A CR that is gone, not the
    Deployment's controller, or InvalidSpec is left alone. True if the status was patched.

    The patch names the resourceVersion the status was computed from, so it never overwrites
    a status someone (a reconcile, the timer) wrote in between: on a conflict it starts over
    from the CR as it is then. Nothing is written when nothing changed (the operator's own
    applies to the Deployment come back as events too).
    """
    meta = deployment["metadata"]
    namespace, name = meta["namespace"], meta["labels"][DEPLOYMENT_LABEL]
    for _ in range(attempts):
        body = await kube.get(KIND, namespace, name)
        if body is None or not controlled_by(deployment, body):
            return False
        try:
            cr = validate(body)
        except CRValidationError:
            return False  # its InvalidSpec status stands until the spec changes
        previous = previous_status(body)
        status = workload_status(
            cr, None if deleted else deployment, previous, now, observed_generation=previous.observed_generation
        )
        new = status_patch(status)
        if new == (body.get("status") or {}):
            return False
        patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]}, "status": new}
        try:
            return await kube.patch(KIND, namespace, name, patch, subresource="status") is not None
        except KubeError as exc:
            if exc.status != 409:
                raise
    return False
