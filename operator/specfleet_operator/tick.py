"""What one timer tick hands the control loop (engineer C's `control` package plugs in here)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from specfleet_operator.kube import Kube


@dataclass
class TickContext:
    kube: Kube  # API access: pods by label, the admin-token Secret, pod annotations
    namespace: str
    prometheus_url: str | None  # spec.metrics.prometheusUrl, else the operator's --prometheus-url
    now: float  # time.time() at the start of the tick
    state: dict[str, Any] = field(default_factory=dict)  # per CR, kept between ticks (not persisted)
    logger: logging.Logger | logging.LoggerAdapter = logging.getLogger("specfleet.operator")
