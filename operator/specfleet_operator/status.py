"""Status of a SpeculativeDeployment, computed from what the API server reports (pure).

Conditions follow metav1.Condition: a transition time that moves only when the status
does, CamelCase reasons, the generation they were computed for. This module owns Ready,
Progressing and Degraded; MetricsAvailable and SpeculationControlled belong to the control
loop and are carried over untouched (Unknown until it has run).
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

from specfleet_operator.builders.labels import selector_string
from specfleet_operator.spec import Condition, SpeculativeDeployment, Status

ConditionStatus = Literal["True", "False", "Unknown"]
WORKLOAD_CONDITIONS = ("Ready", "Progressing", "Degraded")
CONTROL_CONDITIONS = ("MetricsAvailable", "SpeculationControlled")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[Condition], type_: str, status: ConditionStatus, reason: str, message: str,
    generation: int | None, now: str,
) -> list[Condition]:
    """conditions with `type_` set; lastTransitionTime kept when the status did not change."""
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous is not None and previous.status == status else now
    updated = Condition(
        type=type_, status=status, reason=reason, message=message,
        observed_generation=generation, last_transition_time=since,
    )
    return [c for c in conditions if c.type != type_] + [updated] if previous is None else [
        updated if c.type == type_ else c for c in conditions
    ]


def _deployment_condition(deployment: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (deployment.get("status") or {}).get("conditions", []) if c.get("type") == type_), None)


def _with_control_defaults(conditions: list[Condition], generation: int | None, now: str) -> list[Condition]:
    for type_ in CONTROL_CONDITIONS:
        if not any(c.type == type_ for c in conditions):
            conditions = set_condition(conditions, type_, "Unknown", "AwaitingControlLoop",
                                       "the control loop has not run yet", generation, now)
    return conditions


def workload_status(
    cr: SpeculativeDeployment, deployment: dict[str, Any] | None, previous: Status, now: str,
    observed_generation: int | None,
) -> Status:
    """Status from the runtime Deployment as the API server reports it."""
    generation = cr.metadata.generation
    wanted = cr.spec.replicas
    dstatus = (deployment or {}).get("status") or {}
    replicas = int(dstatus.get("replicas", 0))
    ready = int(dstatus.get("readyReplicas", 0))
    updated = int(dstatus.get("updatedReplicas", 0))
    rolled_out = deployment is not None and int(dstatus.get("observedGeneration", 0)) >= int(
        (deployment.get("metadata") or {}).get("generation", 0)
    )
    deadline = _deployment_condition(deployment or {}, "Progressing")
    stuck = deadline is not None and deadline.get("reason") == "ProgressDeadlineExceeded"
    failure = _deployment_condition(deployment or {}, "ReplicaFailure")

    conditions = list(previous.conditions)
    if deployment is None:
        conditions = set_condition(conditions, "Ready", "False", "DeploymentMissing", "the runtime Deployment does not exist yet", generation, now)
        conditions = set_condition(conditions, "Progressing", "True", "Reconciling", "creating the runtime Deployment", generation, now)
    elif wanted == 0:
        conditions = set_condition(conditions, "Ready", "True", "ScaledToZero", "spec.replicas is 0", generation, now)
        conditions = set_condition(conditions, "Progressing", "False", "RolloutComplete", "no replicas wanted", generation, now)
    else:
        done = rolled_out and ready >= wanted and updated >= wanted and replicas == wanted
        if ready >= wanted:
            conditions = set_condition(conditions, "Ready", "True", "AllReplicasReady", f"{ready}/{wanted} replicas ready", generation, now)
        else:
            conditions = set_condition(conditions, "Ready", "False", "ReplicasNotReady", f"{ready}/{wanted} replicas ready", generation, now)
        if stuck:
            conditions = set_condition(conditions, "Progressing", "False", "ProgressDeadlineExceeded", deadline.get("message", ""), generation, now)
        elif done:
            conditions = set_condition(conditions, "Progressing", "False", "RolloutComplete", f"{wanted} replicas up to date", generation, now)
        else:
            conditions = set_condition(conditions, "Progressing", "True", "RollingOut", f"{updated}/{wanted} replicas updated, {ready} ready", generation, now)
    if failure is not None and failure.get("status") == "True":
        conditions = set_condition(conditions, "Degraded", "True", "ReplicaFailure", failure.get("message", ""), generation, now)
    elif stuck:
        conditions = set_condition(conditions, "Degraded", "True", "ProgressDeadlineExceeded", deadline.get("message", ""), generation, now)
    else:
        conditions = set_condition(conditions, "Degraded", "False", "AsExpected", "", generation, now)
    return previous.model_copy(update={
        "observed_generation": observed_generation,
        "replicas": replicas,
        "ready_replicas": ready,
        "selector": selector_string(cr),
        "conditions": _with_control_defaults(conditions, generation, now),
    })


def invalid_spec_status(previous: Status, message: str, generation: int | None, now: str) -> Status:
    """Ready=False/InvalidSpec: the spec was judged (observedGeneration moves) and not applied."""
    conditions = list(previous.conditions)
    conditions = set_condition(conditions, "Ready", "False", "InvalidSpec", message, generation, now)
    conditions = set_condition(conditions, "Progressing", "False", "InvalidSpec", "fix the spec to continue", generation, now)
    conditions = set_condition(conditions, "Degraded", "True", "InvalidSpec", message, generation, now)
    return previous.model_copy(update={"observed_generation": generation, "conditions": conditions})


def previous_status(body: dict[str, Any]) -> Status:
    """The status a CR body carries now (tolerant: an unreadable status starts empty)."""
    try:
        return Status.model_validate(body.get("status") or {})
    except ValueError:
        return Status()


def status_patch(status: Status) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)
