"""`specfleet render -f CR.yaml`: the objects the operator would apply for a CR, offline.

Same validation and builders as the operator. Two things only a cluster knows are made
explicit: the admin token (a fresh one, or --admin-token) and whether the PodMonitor CRD is
installed (--pod-monitors/--no-pod-monitors; the operator asks the API server). Owner
references appear when the CR file carries metadata.uid, as a CR read from a cluster does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from specfleet_operator.builders.network import OperatorPods, parse_pod_labels
from specfleet_operator.operator_pod_options import OPERATOR_NAMESPACE_OPTION, OPERATOR_POD_LABELS_OPTION

app = typer.Typer(add_completion=False, help="Print the manifests the operator applies for a CR file, offline.")


@app.command()
def render(
    file: Path = typer.Option(..., "--file", "-f", help="A SpeculativeDeployment YAML file."),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="Namespace (default: the CR's, else default)."),
    admin_token: Optional[str] = typer.Option(None, help="Admin API token for the Secret (default: a fresh random one)."),
    pod_monitors: bool = typer.Option(True, help="Whether the cluster serves monitoring.coreos.com/v1 PodMonitors."),
    operator_namespace: str = OPERATOR_NAMESPACE_OPTION,
    operator_pod_labels: str = OPERATOR_POD_LABELS_OPTION,
) -> None:
    """Print the child objects as multi-document YAML."""
    from specfleet_operator.builders import build_children
    from specfleet_operator.builders.secret import new_admin_token
    from specfleet_operator.spec import CRValidationError, load_cr_file

    try:
        operator = OperatorPods(operator_namespace, parse_pod_labels(operator_pod_labels))
    except ValueError as exc:
        typer.echo(f"specfleet render: --operator-pod-labels: {exc}", err=True)
        raise SystemExit(2) from None
    try:
        cr = load_cr_file(file)
    except (CRValidationError, OSError) as exc:
        typer.echo(f"specfleet render: {file}: {exc}" if isinstance(exc, CRValidationError) else f"specfleet render: {exc}", err=True)
        raise SystemExit(2) from None  # typer.Exit is not click's Exit under the lazy click group
    ns = namespace or cr.metadata.namespace or "default"
    children = build_children(
        cr, ns, admin_token or new_admin_token(), pod_monitors_available=pod_monitors, operator=operator
    )
    yaml.safe_dump_all(children, sys.stdout, sort_keys=False)
