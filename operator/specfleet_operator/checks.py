"""Checks a CR can pass the CRD's schema and CEL rules and still fail.

These need Kubernetes quantity arithmetic, which standard CEL lacks (the API server's
`quantity()` is a Kubernetes extension cel-python cannot evaluate), so they live here: the
operator runs them before touching any child object and reports a failure as Ready=False,
reason InvalidSpec; `specfleet up` refuses the file with the same one-line message.
"""

from __future__ import annotations

import re
from decimal import Decimal

from specfleet_operator.spec import CRValidationError, SpeculativeDeployment

_SUFFIXES = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"),
    "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: int | str) -> Decimal:
    """The value of a Kubernetes resource.Quantity ("500m" -> 0.5, "4Gi" -> 4294967296)."""
    match = _QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = match.groups()
    return Decimal(number) * _SUFFIXES[suffix or ""]


def check_deep(cr: SpeculativeDeployment) -> None:
    """Raise CRValidationError for the first problem the schema cannot see."""
    if cr.spec.engine.kind != "torch":
        # The schema keeps the enum so CRs written for the vLLM engine stay valid YAML; this
        # release refuses them instead of silently running the torch engine.
        raise CRValidationError("spec.engine.kind", f"{cr.spec.engine.kind} is not implemented in this release; use torch")
    resources = cr.spec.resources
    for name, request in resources.requests.items():
        if name in resources.limits and parse_quantity(request) > parse_quantity(resources.limits[name]):
            raise CRValidationError(
                f"spec.resources.requests.{name}",
                f"request {request} exceeds limit {resources.limits[name]}",
            )
    for section in ("requests", "limits"):
        for name, value in getattr(resources, section).items():
            if parse_quantity(value) < 0:
                raise CRValidationError(f"spec.resources.{section}.{name}", f"{value} must not be negative")
