"""kopf registrations, kept thin: validation, building and applying live in reconcile.py.

No finalizer: children go away with their SpeculativeDeployment through owner-reference
garbage collection, and a CR stays deletable while the operator is down or uninstalled.
kopf adds a finalizer for every timer, so the timer is registered without one (see
_without_finalizer). kopf's own state is kept in `specfleet.io/*` annotations rather than in
.status, which the CRD's schema owns. The runtime Deployments are watched with a raw event
handler, so a CR's status follows its pods as they become ready, between timer ticks.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import kopf

from specfleet_operator.builders.labels import DEPLOYMENT_LABEL, FIELD_MANAGER, RUNTIME_NAME
from specfleet_operator.builders.network import OperatorPods
from specfleet_operator.durations import parse_duration
from specfleet_operator.kube import Connection, Kube, KubeError
from specfleet_operator.reconcile import observe, reconcile, refresh_from_deployment, validate
from specfleet_operator.spec import GROUP, PLURAL, VERSION, CRValidationError
from specfleet_operator.status import now_rfc3339, status_patch
from specfleet_operator.control.kube_backend import control_tick
from specfleet_operator.tick import TickContext

registry = kopf.OperatorRegistry()
RESOURCE = (GROUP, VERSION, PLURAL)
# Timers fire this often and act when the CR's own spec.speculation.control.interval is due
# (kopf timers have one fixed interval per handler; CRs each have their own).
TIMER_RESOLUTION_S = 1.0
RETRY_BACKOFF_S = 15.0


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # kopf's log lines become Events only for warnings and errors; our Events are explicit.
    settings.posting.level = logging.WARNING


def operator_memo(connection: Connection, prometheus_url: str | None, operator_pods: OperatorPods) -> kopf.Memo:
    """The operator-wide memo kopf copies into every CR's memo."""
    return kopf.Memo(connection=connection, prometheus_url=prometheus_url, operator_pods=operator_pods)


@kopf.on.startup(registry=registry)
async def startup_fn(memo: kopf.Memo, **_: Any) -> None:
    memo.kube = Kube(memo.connection)


@kopf.on.cleanup(registry=registry)
async def cleanup_fn(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.aclose()


@kopf.on.login(registry=registry)
def login_fn(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf logs in again after a 401, which picks up a rotated service-account token."""
    c: Connection = memo.connection
    return kopf.ConnectionInfo(
        server=c.server, token=c.current_token(), ca_path=c.ca_path, insecure=c.insecure,
        certificate_path=c.certificate_path, private_key_path=c.private_key_path,
    )


def change_reason(cause: str, diff: Any) -> str | None:
    """Event reason: Created, Scaled (only spec.replicas changed) or Updated; None on resume."""
    if cause == "create":
        return "Created"
    if cause != "update":
        return None
    fields = {tuple(field) for _, field, _, _ in diff}
    return "Scaled" if fields == {("spec", "replicas")} else "Updated"


@kopf.on.resume(*RESOURCE, registry=registry, backoff=RETRY_BACKOFF_S)
@kopf.on.create(*RESOURCE, registry=registry, backoff=RETRY_BACKOFF_S)
@kopf.on.update(*RESOURCE, registry=registry, backoff=RETRY_BACKOFF_S)
async def reconcile_fn(body: kopf.Body, reason: str, diff: Any, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    pod_monitor_dropped = any(
        tuple(field) == ("spec", "metrics", "podMonitor") and old and not new for _, field, old, new in diff
    )
    try:
        outcome = await reconcile(
            memo.kube, dict(body), now_rfc3339(), remove_pod_monitor=pod_monitor_dropped, operator=memo.operator_pods
        )
    except KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_BACKOFF_S) from exc
    patch.status.update(status_patch(outcome.status))
    if outcome.invalid is not None:
        # Handled, not failed: nothing changes until the spec does, so no retry loop.
        kopf.event(body, type="Warning", reason="InvalidSpec", message=str(outcome.invalid))
        return
    if outcome.pod_monitor_unavailable:
        kopf.event(body, type="Warning", reason="PodMonitorUnavailable",
                   message="spec.metrics.podMonitor is true but the API serves no monitoring.coreos.com/v1 PodMonitors")
    event = change_reason(reason, diff)
    if event == "Scaled":
        kopf.event(body, type="Normal", reason="Scaled", message=f"replicas set to {body['spec']['replicas']}")
    elif event is not None:
        kinds = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in outcome.applied)
        kopf.event(body, type="Normal", reason=event, message=f"applied {kinds}")


@kopf.on.event(
    "apps", "v1", "deployments", registry=registry,
    labels={"app.kubernetes.io/name": RUNTIME_NAME, "app.kubernetes.io/managed-by": FIELD_MANAGER,
            DEPLOYMENT_LABEL: kopf.PRESENT},
)
async def child_deployment_fn(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """A runtime Deployment changed (pods became ready, a rollout moved, it was deleted): the
    owner's status follows now, not at its next timer tick. A raw event handler on purpose:
    kopf keeps no state on the Deployments (no annotations, no finalizer)."""
    try:
        await refresh_from_deployment(memo.kube, dict(body), event.get("type") == "DELETED", now_rfc3339())
    except KubeError as exc:  # the timer refreshes the status anyway: no retry here
        logger.warning("status refresh from Deployment %s skipped: %s", body.metadata.name, exc)


def _without_finalizer(fn: Any) -> Any:
    """Drop the finalizer kopf requires for timers. kopf has no public switch for this; the
    timer only refreshes status, and kopf stops it on the DELETED event without one.
    test_operator.py asserts no finalizer is ever added, so a kopf change cannot slip by."""
    spawning = registry._spawning
    spawning._handlers = [
        dataclasses.replace(h, requires_finalizer=False) if h.fn is fn else h for h in spawning._handlers
    ]
    return fn


def _due(memo: kopf.Memo, interval_s: float) -> bool:
    now = time.monotonic()
    if now < memo.get("next_tick", 0.0):
        return False
    memo["next_tick"] = now + interval_s
    return True


@_without_finalizer
@kopf.timer(*RESOURCE, registry=registry, interval=TIMER_RESOLUTION_S)
async def tick_fn(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    try:
        cr = validate(dict(body))
    except CRValidationError:
        return  # reconcile_fn has reported it in the conditions
    if not _due(memo, parse_duration(cr.spec.speculation.control.interval)):
        return
    ctx = TickContext(
        kube=memo.kube, namespace=cr.metadata.namespace or "default",
        prometheus_url=cr.spec.metrics.prometheus_url or memo.prometheus_url,
        now=time.time(), state=memo.setdefault("control_state", {}), logger=logger,
    )
    status = await observe(ctx.kube, cr, dict(body), now_rfc3339())
    status = await control_tick(ctx, cr, dict(body), status)
    # The control loop (control.kube_backend.control_tick) refines `status` here, from ctx.
    new = status_patch(status)
    if new != dict(body.get("status") or {}):
        patch.status.update(new)


async def run(
    *, connection: Connection, prometheus_url: str | None = None, operator_pods: OperatorPods = OperatorPods(),
    stop_flag: Any = None, ready_flag: Any = None, **operator_options: Any,
) -> None:
    """Run kopf with these handlers; operator_options go to kopf.operator (namespaces, peering...).
    `operator_pods`: this operator's own pods, the only ones the runtime's admin port admits."""
    settings = kopf.OperatorSettings()
    configure(settings)
    await kopf.operator(
        registry=registry, settings=settings, memo=operator_memo(connection, prometheus_url, operator_pods),
        stop_flag=stop_flag, ready_flag=ready_flag, **operator_options,
    )
