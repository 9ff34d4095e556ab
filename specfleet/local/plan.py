"""From a SpeculativeDeployment to what `specfleet up` runs on this machine (pure).

The same validated CR the operator reconciles, read for one host: model sources must be
local (`bundled://`, `file://`), the engine is specfleet's torch engine, and the control
settings are the CR's. Problems are CRValidationErrors naming the field, like the schema's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specfleet.contract import SpeculationConfig, constant_schedule
from specfleet.model_sources import resolve_local_model
from specfleet_operator.control.controller import ControlSettings
from specfleet_operator.control.policy import PolicyParams
from specfleet_operator.durations import parse_duration
from specfleet_operator.spec import CRValidationError, SpeculativeDeployment


@dataclass(frozen=True)
class FleetPlan:
    name: str
    replicas: int
    model_dir: Path
    draft_dir: Path | None
    served_model_name: str
    method: str
    k_max: int
    max_batch: int
    max_model_len: int
    control: ControlSettings
    interval_s: float
    initial: SpeculationConfig | None  # what replicas start with (None: speculation off)
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def _local_model(source: str, field: str) -> Path:
    try:
        return resolve_local_model(source)
    except ValueError as exc:
        raise CRValidationError(field, f"{exc} (specfleet up needs a bundled:// or file:// model)") from None


def plan_from_cr(cr: SpeculativeDeployment) -> FleetPlan:
    spec = cr.spec
    spec_s = spec.speculation
    if spec.replicas < 1:
        raise CRValidationError("spec.replicas", "specfleet up needs at least 1 replica")
    env_from = [e.name for e in spec.engine.env if e.value is None]
    if env_from:
        raise CRValidationError("spec.engine.env", f"{env_from[0]}: valueFrom needs a cluster; give a value")
    model_dir = _local_model(spec.model.source, "spec.model.source")
    draft_dir = None
    if spec_s.method == "draft":
        assert spec_s.draft is not None  # the schema requires a draft for method draft
        draft_dir = _local_model(spec_s.draft.source, "spec.speculation.draft.source")
    control = spec_s.control
    k_max = spec_s.k_max
    settings = ControlSettings(
        mode=spec_s.mode,
        method=spec_s.method,
        k_max=k_max,
        k=spec_s.k,
        window_s=parse_duration(control.window),
        params=PolicyParams(
            k_max=k_max,
            max_batch=spec.serving.max_batch,
            min_gain=control.min_gain,
            cooldown_s=parse_duration(control.cooldown),
            prior_rate=control.prior_acceptance,
        ),
    )
    # mode auto starts without speculation: the controller's first decision (made from the
    # startup calibration and the prior) comes within one interval, and until then plain
    # decoding is the choice that is never far off.
    initial = (
        SpeculationConfig(method=spec_s.method, k_max=k_max, schedule=constant_schedule(spec_s.k or k_max))
        if spec_s.mode == "on"
        else None
    )
    return FleetPlan(
        name=cr.metadata.name,
        replicas=spec.replicas,
        model_dir=model_dir,
        draft_dir=draft_dir,
        served_model_name=cr.served_model_name,
        method=spec_s.method,
        k_max=k_max,
        max_batch=spec.serving.max_batch,
        max_model_len=spec.serving.max_model_len,
        control=settings,
        interval_s=parse_duration(control.interval),
        initial=initial,
        extra_args=tuple(spec.engine.args),
        env=tuple((e.name, e.value or "") for e in spec.engine.env),
    )
