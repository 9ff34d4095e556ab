"""`specfleet operator`: run the kopf operator with specfleet's handlers.

High availability is kopf peering: run several replicas with the same --peering name; the
one with the highest --priority handles resources and the others stand by, taking over
when its heartbeat in the (Cluster)KopfPeering object stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import List, Optional

import typer

from specfleet_operator.builders.network import OperatorPods, parse_pod_labels
from specfleet_operator.operator_pod_options import OPERATOR_NAMESPACE_OPTION, OPERATOR_POD_LABELS_OPTION

app = typer.Typer(add_completion=False, help="Run the kopf operator that reconciles SpeculativeDeployments.")


def _refuse(cause: str) -> None:
    typer.echo(f"specfleet operator: {cause}", err=True)
    raise SystemExit(2)  # typer's exceptions are not click's under the lazy `specfleet` group


@app.command()
def operator(
    namespace: Optional[List[str]] = typer.Option(
        None, "--namespace", "-n", help="Namespace (or glob) to serve; repeat for several."
    ),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="Serve every namespace."),
    peering: Optional[str] = typer.Option(None, help="kopf peering name for HA (KopfPeering, or ClusterKopfPeering with -A)."),
    priority: int = typer.Option(0, help="Peering priority: the highest live replica is the active one."),
    standalone: bool = typer.Option(False, help="No peering at all (exactly one operator replica)."),
    liveness: Optional[str] = typer.Option(None, help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz."),
    metrics_port: Optional[int] = typer.Option(None, help="Serve the operator's Prometheus metrics on this port."),
    prometheus_url: Optional[str] = typer.Option(
        os.environ.get("SPECFLEET_PROMETHEUS_URL"), help="Prometheus the control loop queries (unless a CR names one)."
    ),
    operator_namespace: str = OPERATOR_NAMESPACE_OPTION,
    operator_pod_labels: str = OPERATOR_POD_LABELS_OPTION,
    context: Optional[str] = typer.Option(None, help="kubeconfig context (outside a cluster)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the operator until interrupted."""
    if bool(namespace) == all_namespaces:
        _refuse("give --namespace NS (repeatable) or --all-namespaces, exactly one")
    if standalone and peering:
        _refuse("--standalone and --peering exclude each other")
    try:
        operator_pods = OperatorPods(operator_namespace, parse_pod_labels(operator_pod_labels))
    except ValueError as exc:
        _refuse(f"--operator-pod-labels: {exc}")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from specfleet_operator import handlers
    from specfleet_operator.kube import Connection

    if metrics_port is not None:
        import prometheus_client

        prometheus_client.start_http_server(metrics_port)
    asyncio.run(handlers.run(
        connection=Connection.from_environment(context),
        prometheus_url=prometheus_url,
        operator_pods=operator_pods,
        namespaces=namespace or [],
        clusterwide=all_namespaces,
        peering_name=peering,
        priority=priority,
        standalone=standalone or None,
        liveness_endpoint=liveness,
    ))
