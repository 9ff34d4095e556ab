"""The PodDisruptionBudget: node drains take down at most one replica at a time."""

from __future__ import annotations

from typing import Any

from specfleet_operator.builders.labels import metadata, selector_labels
from specfleet_operator.spec import SpeculativeDeployment


def build_pdb(cr: SpeculativeDeployment, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(cr, cr.name, namespace),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(cr)}},
    }
