"""Status conditions from the runtime Deployment (pure)."""

from __future__ import annotations

from typing import Any

from specfleet_operator.spec import Status, parse_cr
from specfleet_operator.status import invalid_spec_status, set_condition, workload_status

CR = parse_cr({
    "apiVersion": "specfleet.io/v1alpha1", "kind": "SpeculativeDeployment",
    "metadata": {"name": "fleet", "generation": 4},
    "spec": {"replicas": 3, "model": {"source": "bundled://m"}, "speculation": {"method": "ngram"}},
})


def deployment(generation: int = 2, observed: int = 2, **status: Any) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "status": {"observedGeneration": observed, **status}}


def by_type(status: Status) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_a_rollout_in_progress_is_progressing_and_not_ready() -> None:
    status = workload_status(CR, deployment(replicas=3, readyReplicas=1, updatedReplicas=2), Status(), "t1", 4)
    assert by_type(status)["Ready"] == ("False", "ReplicasNotReady")
    assert by_type(status)["Progressing"] == ("True", "RollingOut")
    assert (status.replicas, status.ready_replicas, status.observed_generation) == (3, 1, 4)


def test_a_finished_rollout_is_ready_and_keeps_transition_times_while_unchanged() -> None:
    done = deployment(replicas=3, readyReplicas=3, updatedReplicas=3)
    first = workload_status(CR, done, Status(), "t1", 4)
    assert by_type(first)["Ready"] == ("True", "AllReplicasReady")
    assert by_type(first)["Progressing"] == ("False", "RolloutComplete")
    again = workload_status(CR, done, first, "t2", 4)
    assert [c.last_transition_time for c in again.conditions] == [c.last_transition_time for c in first.conditions]
    worse = workload_status(CR, deployment(replicas=3, readyReplicas=2, updatedReplicas=3), again, "t3", 4)
    ready = next(c for c in worse.conditions if c.type == "Ready")
    assert (ready.status, ready.last_transition_time) == ("False", "t3")


def test_a_stuck_or_failing_deployment_is_degraded() -> None:
    stuck = deployment(replicas=3, readyReplicas=0, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}])
    assert by_type(workload_status(CR, stuck, Status(), "t", 4))["Degraded"] == ("True", "ProgressDeadlineExceeded")
    quota = deployment(replicas=0, conditions=[
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "exceeded quota"}])
    assert by_type(workload_status(CR, quota, Status(), "t", 4))["Degraded"] == ("True", "ReplicaFailure")


def test_no_deployment_yet_and_scaled_to_zero() -> None:
    assert by_type(workload_status(CR, None, Status(), "t", 4))["Ready"] == ("False", "DeploymentMissing")
    zero = CR.model_copy(update={"spec": CR.spec.model_copy(update={"replicas": 0})})
    assert by_type(workload_status(zero, deployment(), Status(), "t", 4))["Ready"] == ("True", "ScaledToZero")


def test_control_loop_conditions_start_unknown_and_are_then_left_alone() -> None:
    status = workload_status(CR, None, Status(), "t", 4)
    assert by_type(status)["MetricsAvailable"] == ("Unknown", "AwaitingControlLoop")
    controlled = status.model_copy(update={"conditions": set_condition(
        status.conditions, "MetricsAvailable", "True", "MetricsFresh", "", 4, "t2")})
    assert by_type(workload_status(CR, None, controlled, "t3", 4))["MetricsAvailable"] == ("True", "MetricsFresh")


def test_invalid_spec_is_observed_and_reported() -> None:
    status = invalid_spec_status(Status(), "spec.replicas: must be >= 0", 7, "t")
    assert status.observed_generation == 7
    assert by_type(status) == {"Ready": ("False", "InvalidSpec"), "Progressing": ("False", "InvalidSpec"), "Degraded": ("True", "InvalidSpec")}
