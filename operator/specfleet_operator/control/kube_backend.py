"""The fleet of one SpeculativeDeployment on Kubernetes, and the kopf timer's control tick.

Replicas are the CR's ready pods (by the contract labels): their admin API at pod IP and the
CR's admin port (spec.serving.adminPort, which the NetworkPolicy opens to the operator only)
with the bearer token from the CR's admin Secret; everything else at the serving port. What each pod runs is
recorded on the pod itself: `specfleet.io/speculation` (the admin API body, DESIGN.md §2)
and `specfleet.io/speculation-incarnation` (pod uid and container restart count), so an
operator restart knows what is in force, and a restarted container - back on its startup
flags - is recognised and re-configured at the next tick.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from typing import TYPE_CHECKING, Any, Callable

from pydantic import ValidationError

from specfleet.contract import POD_SPECULATION_ANNOTATION, SpeculationConfig
from specfleet_operator.builders.labels import admin_secret_name, selector_string
from specfleet_operator.builders.secret import token_from_secret
from specfleet_operator.control.controller import ControlSettings, Controller, DecisionRecord, Event
from specfleet_operator.control.fleet import Replica
from specfleet_operator.control.metrics_source import MetricsSource, MetricsUnavailable, PrometheusSource, ReplicaWindow
from specfleet_operator.kube import KubeError
from specfleet_operator.spec import SpeculativeDeployment, Status
from specfleet_operator.status import now_rfc3339, set_condition

if TYPE_CHECKING:
    from specfleet_operator.kube import Kube
    from specfleet_operator.tick import TickContext

INCARNATION_ANNOTATION = "specfleet.io/speculation-incarnation"
RUNTIME_CONTAINER = "runtime"
log = logging.getLogger("specfleet.control.kube")

EventSink = Callable[[Event], None]


def pod_is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or not status.get("podIP"):
        return False
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def pod_url(ip: str, port: int) -> str:
    """An IPv6 pod IP goes in brackets (dual-stack and IPv6-only clusters)."""
    host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
    return f"http://{host}:{port}"


def pod_incarnation(pod: dict[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    return f"{pod['metadata'].get('uid', pod['metadata']['name'])}/{restarts}"


def recorded_config(pod: dict[str, Any], incarnation: str) -> SpeculationConfig | None:
    """The config the annotations say is in force, if they were written for this incarnation."""
    annotations = pod["metadata"].get("annotations") or {}
    if annotations.get(INCARNATION_ANNOTATION) != incarnation or POD_SPECULATION_ANNOTATION not in annotations:
        return None
    try:
        return SpeculationConfig.model_validate_json(annotations[POD_SPECULATION_ANNOTATION])
    except (ValidationError, ValueError):
        return None


class KubeBackend:
    def __init__(self, kube: "Kube", cr: SpeculativeDeployment, emit: EventSink) -> None:
        self.kube = kube
        self.cr = cr
        self.namespace = cr.metadata.namespace or "default"
        self.emit = emit

    async def _token(self) -> str | None:
        secret = await self.kube.get("Secret", self.namespace, admin_secret_name(self.cr))
        return token_from_secret(secret) if secret else None

    async def list_ready(self) -> list[Replica]:
        pods = await self.kube.list("Pod", self.namespace, selector_string(self.cr))
        ready = [p for p in pods if pod_is_ready(p)]
        if not ready:
            return []
        token = await self._token()
        serving = self.cr.spec.serving
        out = []
        for pod in sorted(ready, key=lambda p: p["metadata"]["name"]):
            incarnation = pod_incarnation(pod)
            ip = pod["status"]["podIP"]
            out.append(
                Replica(
                    name=pod["metadata"]["name"],
                    base_url=pod_url(ip, serving.port),
                    admin_url=pod_url(ip, serving.admin_port),
                    admin_token=token,
                    incarnation=incarnation,
                    applied=recorded_config(pod, incarnation),
                )
            )
        return out

    async def record_applied(self, replica: Replica, config: SpeculationConfig) -> None:
        await self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": replica.name,
                    "namespace": self.namespace,
                    "annotations": {
                        POD_SPECULATION_ANNOTATION: config.model_dump_json(),
                        INCARNATION_ANNOTATION: replica.incarnation,
                    },
                },
            }
        )

    async def publish(self, record: DecisionRecord) -> None:
        for event in record.events:
            self.emit(event)


def status_with_record(status: Status, record: DecisionRecord, generation: int | None, now: str) -> Status:
    """The CR status with the control loop's conditions and speculation summary (pure).

    MetricsAvailable and SpeculationControlled are the loop's own; Degraded belongs to the
    workload status, which the loop only raises (admin API failing), never clears.
    """
    conditions = list(status.conditions)
    for c in record.conditions:
        if c.type == "Degraded" and c.status != "True":
            continue
        conditions = set_condition(conditions, c.type, c.status, c.reason, c.message, generation, now)
    n = len(record.replicas)
    summary = status.speculation.model_copy(
        update={
            "speculating": f"{record.speculating_replicas}/{n}",
            "speculating_replicas": record.speculating_replicas,
            "acceptance": None if record.acceptance is None else round(record.acceptance, 4),
            "break_even_batch": record.break_even,
            "mean_k": None if record.mean_k is None else round(record.mean_k, 3),
            "last_decision_time": _rfc3339(record.last_decision_time) or status.speculation.last_decision_time,
        }
    )
    return status.model_copy(update={"conditions": conditions, "speculation": summary})


def _rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class _NoPrometheus:
    """The source when neither the CR nor the operator names a Prometheus: never guess."""

    async def fetch(self, replicas: dict[str, str], window_s: float) -> dict[str, ReplicaWindow]:
        raise MetricsUnavailable(
            "NoPrometheusConfigured", "set spec.metrics.prometheusUrl or the operator's --prometheus-url"
        )


def _source(ctx: "TickContext", cr: SpeculativeDeployment) -> MetricsSource:
    if not ctx.prometheus_url:
        return _NoPrometheus()
    return PrometheusSource(ctx.prometheus_url, {"namespace": cr.metadata.namespace or "default"})


async def control_tick(ctx: "TickContext", cr: SpeculativeDeployment, body: dict[str, Any], status: Status) -> Status:
    """One control tick for one CR, from the kopf timer: returns `status` with the loop's part.

    The Controller (acceptance estimates, push times, failure counts) lives in ctx.state
    between ticks and is rebuilt when the spec's control settings or Prometheus URL change.
    """
    import kopf

    settings = ControlSettings.from_spec(cr.spec)
    key = (settings, ctx.prometheus_url, cr.spec.serving.port, cr.spec.serving.admin_port)

    def emit(event: Event) -> None:
        message = f"{event.replica}: {event.message}" if event.replica else event.message
        kopf.event(body, type=event.type, reason=event.reason, message=message)

    if ctx.state.get("controller_key") != key:
        backend = KubeBackend(ctx.kube, cr, emit)
        ctx.state["backend"] = backend
        ctx.state["controller"] = Controller(backend, _source(ctx, cr), settings)
        ctx.state["controller_key"] = key
    ctx.state["backend"].cr = cr  # labels and the Secret's name follow the CR as it is now
    ctx.state["backend"].emit = emit  # kopf.event needs this tick's body
    try:
        record = await ctx.state["controller"].tick()
    except KubeError as exc:  # pods or Secret unreadable: keep everything as it is
        ctx.logger.warning("control tick skipped: %s", exc)
        return status
    return status_with_record(status, record, cr.metadata.generation, now_rfc3339())
