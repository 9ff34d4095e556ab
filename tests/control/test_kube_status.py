"""How one decision record lands in a SpeculativeDeployment's status (pure)."""

from __future__ import annotations

from specfleet.contract import SpeculationConfig
from specfleet_operator.control.controller import ConditionState, DecisionRecord, ReplicaReport
from specfleet_operator.control.kube_backend import (
    pod_incarnation, pod_is_ready, pod_url, recorded_config, status_with_record,
)
from specfleet_operator.spec import Status
from specfleet_operator.status import set_condition

NOW = "2026-12-01T20:00:00Z"


def record(degraded: str, metrics: str) -> DecisionRecord:
    on = SpeculationConfig(method="ngram", k_max=4, schedule=[(1, 3, 2)])
    return DecisionRecord(
        time=1_796_155_200.0, mode="auto",
        replicas=[ReplicaReport("a", on, 4, 0.8), ReplicaReport("b", SpeculationConfig(enabled=False), None, 0.6)],
        conditions=[
            ConditionState("MetricsAvailable", metrics, "SeriesFresh" if metrics == "True" else "PrometheusUnreachable"),
            ConditionState("SpeculationControlled", "True", "AllReplicasControlled"),
            ConditionState("Degraded", degraded, "AdminApiFailing" if degraded == "True" else "AsExpected"),
        ],
        events=[], acceptance=0.71234, break_even=4, speculating_replicas=1, mean_k=1.23456,
        last_decision_time=1_796_155_200.0,
    )


def workload_status() -> Status:
    conditions = set_condition([], "Ready", "True", "AllReplicasReady", "2/2 replicas ready", 1, NOW)
    conditions = set_condition(conditions, "Degraded", "False", "AsExpected", "", 1, NOW)
    return Status(conditions=conditions)


def by_type(status: Status) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_the_summary_and_the_loops_conditions_are_written_and_workload_ones_kept() -> None:
    status = status_with_record(workload_status(), record("False", "True"), 1, NOW)
    assert by_type(status) == {
        "Ready": ("True", "AllReplicasReady"),
        "Degraded": ("False", "AsExpected"),
        "MetricsAvailable": ("True", "SeriesFresh"),
        "SpeculationControlled": ("True", "AllReplicasControlled"),
    }
    s = status.speculation
    assert (s.speculating, s.speculating_replicas, s.acceptance, s.break_even_batch, s.mean_k) == ("1/2", 1, 0.7123, 4, 1.235)
    assert s.last_decision_time == "2026-12-01T20:00:00Z"


def test_a_failing_admin_api_raises_degraded_but_the_loop_never_clears_the_workloads() -> None:
    raised = status_with_record(workload_status(), record("True", "False"), 1, NOW)
    assert by_type(raised)["Degraded"] == ("True", "AdminApiFailing")
    assert by_type(raised)["MetricsAvailable"] == ("False", "PrometheusUnreachable")
    workload_degraded = Status(conditions=set_condition([], "Degraded", "True", "ReplicaFailure", "", 1, NOW))
    assert by_type(status_with_record(workload_degraded, record("False", "True"), 1, NOW))["Degraded"] == (
        "True", "ReplicaFailure",
    )


def pod(ready: str = "True", phase: str = "Running", ip: str | None = "10.0.0.7", restarts: int = 0, **meta) -> dict:
    return {
        "metadata": {"name": "p", "uid": "u-1", **meta},
        "status": {
            "phase": phase, **({"podIP": ip} if ip else {}),
            "conditions": [{"type": "Ready", "status": ready}],
            "containerStatuses": [{"name": "runtime", "restartCount": restarts}],
        },
    }


def test_only_running_ready_pods_with_an_ip_that_are_not_terminating_count() -> None:
    assert pod_is_ready(pod())
    assert not pod_is_ready(pod(ready="False"))
    assert not pod_is_ready(pod(phase="Pending"))
    assert not pod_is_ready(pod(ip=None))
    assert not pod_is_ready(pod(deletionTimestamp="2026-12-01T20:00:00Z"))


def test_a_container_restart_invalidates_the_recorded_config() -> None:
    config = SpeculationConfig(method="ngram", k_max=4, schedule=[(1, 2, 3)])
    annotations = {
        "specfleet.io/speculation": config.model_dump_json(),
        "specfleet.io/speculation-incarnation": "u-1/0",
    }
    assert recorded_config(pod(annotations=annotations), pod_incarnation(pod())) == config
    restarted = pod(restarts=1, annotations=annotations)
    assert pod_incarnation(restarted) == "u-1/1"
    assert recorded_config(restarted, pod_incarnation(restarted)) is None


def test_replica_urls_bracket_ipv6_pod_ips():
    assert pod_url("10.1.2.3", 8001) == "http://10.1.2.3:8001"
    assert pod_url("fd00:10:244::7", 8000) == "http://[fd00:10:244::7]:8000"
