"""Names and labels every child object carries (DESIGN.md §2, contract)."""

from __future__ import annotations

from typing import Any

from specfleet_operator.spec import API_VERSION, KIND, SpeculativeDeployment

RUNTIME_NAME = "specfleet-runtime"
FIELD_MANAGER = "specfleet"
DEPLOYMENT_LABEL = "specfleet.io/deployment"
SERVING_PORT_NAME = "http"  # OpenAI API, /health, /metrics: probes, Service, PodMonitor
ADMIN_PORT_NAME = "admin"  # /admin/speculation: the operator only (NetworkPolicy)
ADMIN_TOKEN_KEY = "token"
ADMIN_TOKEN_DIR = "/var/run/specfleet/admin"
ADMIN_TOKEN_FILE = f"{ADMIN_TOKEN_DIR}/{ADMIN_TOKEN_KEY}"


def contract_labels(cr: SpeculativeDeployment) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": RUNTIME_NAME,
        "app.kubernetes.io/instance": cr.name,
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        DEPLOYMENT_LABEL: cr.name,
    }


def selector_labels(cr: SpeculativeDeployment) -> dict[str, str]:
    """The immutable subset that selects a CR's runtime pods."""
    return {"app.kubernetes.io/name": RUNTIME_NAME, DEPLOYMENT_LABEL: cr.name}


def selector_string(cr: SpeculativeDeployment) -> str:
    """status.selector, the form the scale subresource and HPA read."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(cr).items()))


def admin_secret_name(cr: SpeculativeDeployment) -> str:
    return f"{cr.name}-admin"


def metadata(cr: SpeculativeDeployment, name: str, namespace: str) -> dict[str, Any]:
    """Child metadata: contract labels and, once the CR exists, its controller reference."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": contract_labels(cr)}
    if cr.metadata.uid:
        meta["ownerReferences"] = [{
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": cr.name,
            "uid": cr.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }]
    return meta
