"""The two CLI options naming the operator's own pods, shared by `specfleet operator` and
`specfleet render` so that render prints exactly the NetworkPolicy the operator applies."""

from __future__ import annotations

import typer

from specfleet_operator.builders.network import (
    DEFAULT_OPERATOR_NAMESPACE, DEFAULT_OPERATOR_POD_LABELS, OPERATOR_NAMESPACE_ENV, OPERATOR_POD_LABELS_ENV,
)

OPERATOR_NAMESPACE_OPTION = typer.Option(
    DEFAULT_OPERATOR_NAMESPACE, envvar=OPERATOR_NAMESPACE_ENV,
    help="The operator's namespace: runtime pods admit admin calls from there only (NetworkPolicy).",
)
OPERATOR_POD_LABELS_OPTION = typer.Option(
    DEFAULT_OPERATOR_POD_LABELS, envvar=OPERATOR_POD_LABELS_ENV,
    help="key=value[,key=value] labels of the operator's pods, the only ones admitted to the admin port.",
)
