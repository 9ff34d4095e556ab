"""The SpeculativeDeployment custom resource as pydantic models: the one source of truth.

`crd.py` generates the CRD's openAPIV3Schema from these models (descriptions, defaults,
bounds, enums, patterns) and copies each model's `cel_rules` into
`x-kubernetes-validations`. Every CEL rule carries the same rule in Python (`holds`), which
these models enforce, so a CR file is judged the same way by `specfleet up` (offline) and
by the API server; tests/operator prove the two agree case by case.

YAML field names are camelCase (pydantic aliases). Durations are Go-style strings ("15s",
"2m", "1h30m"), see durations.py. Importable without kopf or kubernetes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from specfleet.contract import MAX_K
from specfleet_operator.durations import DURATION_PATTERN, parse_duration

GROUP = "specfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SpeculativeDeployment"
PLURAL = "speculativedeployments"
SINGULAR = "speculativedeployment"
SHORT_NAMES = ["specdeploy", "sdep"]

DEFAULT_IMAGE = "ghcr.io/specfleet/runtime:0.1.0"
# Children are named <cr>, <cr>-admin, ...; pods add a ReplicaSet and pod hash (~17 chars).
MAX_NAME_LENGTH = 45
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MODEL_SOURCE_PATTERN = (
    r"^(hf://[A-Za-z0-9][-._A-Za-z0-9]*/[A-Za-z0-9][-._A-Za-z0-9]*(@[-._A-Za-z0-9]+)?"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^/]+)*/?"
    r"|file:///.+"
    r"|bundled://[A-Za-z0-9][-._A-Za-z0-9]*)$"
)
# Kubernetes' own pattern for resource.Quantity strings.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
GPU_RESOURCE = "nvidia.com/gpu"
# Flags the operator sets itself; engine.args may not override them.
MANAGED_FLAGS = (
    "model", "draft", "method", "k-max", "schedule", "speculation", "host", "port", "admin-port",
    "admin-token-file", "device", "max-batch", "max-model-len", "served-model-name",
)
MANAGED_FLAG_REGEX = "^--(" + "|".join(MANAGED_FLAGS) + ")(=.*)?$"


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule: standard CEL for the API server, the same rule in Python here."""

    rule: str
    message: str
    field: str  # the field the violation is reported on, relative to the rule's object
    holds: Callable[[Any], bool]


class CrdModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> "CrdModel":
        for rule in self.cel_rules:
            if not rule.holds(self):
                raise PydanticCustomError("cel_rule", "{message}", {"field": rule.field, "message": rule.message})
        return self


Duration = str
Quantity = int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]


def duration_field(default: str, description: str) -> Any:
    return Field(default=default, pattern=DURATION_PATTERN, max_length=32, description=description)


class ModelSpec(CrdModel):
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][-._/A-Za-z0-9]*$",
        description="Model name served on the OpenAI API (`model` in requests); the CR's name when omitted.",
    )
    source: str = Field(
        pattern=MODEL_SOURCE_PATTERN,
        description=(
            "Where the target model's Hugging Face folder comes from: hf://org/name[@revision] "
            "(downloaded by an init container), pvc://claim/path (a PersistentVolumeClaim), "
            "file:///path (a hostPath on the node) or bundled://NAME (shipped in the runtime image)."
        ),
    )


class DraftSpec(CrdModel):
    source: str = Field(
        pattern=MODEL_SOURCE_PATTERN,
        description="The draft model's source, in the same forms as model.source; it must share the target's tokenizer.",
    )


class ControlSpec(CrdModel):
    interval: Duration = duration_field("15s", "How often the controller re-learns each replica's K schedule (at least 1s).")
    window: Duration = duration_field("2m", "How much recent metric history each decision uses; at least interval.")
    min_gain: float = Field(
        default=0.05, ge=0, le=10,
        description="Speculate at a batch size only when expected goodput beats no speculation by this fraction.",
    )
    cooldown: Duration = duration_field("1m", "Least time between two schedule pushes to the same replica.")
    prior_acceptance: float = Field(
        default=0.6, gt=0, lt=1,
        description="Per-position acceptance probability assumed until enough drafts have been measured.",
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "duration(self.interval) >= duration('1s')", "must be >= 1s", "interval",
            lambda c: parse_duration(c.interval) >= 1.0,
        ),
        CelRule(
            "duration(self.window) >= duration(self.interval)", "must be >= interval", "window",
            lambda c: parse_duration(c.window) >= parse_duration(c.interval),
        ),
    )


class SpeculationSpec(CrdModel):
    mode: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="auto: the controller learns per replica when speculation pays and with which K; on: always speculate with k (or kMax); off: never.",
    )
    method: Literal["draft", "ngram"] = Field(
        default="draft",
        description="draft: a small draft model (draft.source); ngram: prompt lookup, no model.",
    )
    draft: DraftSpec | None = Field(default=None, description="The draft model; required exactly when method is draft.")
    k_max: int = Field(default=8, ge=1, le=MAX_K, description="Largest number of draft tokens per step.")
    k: int | None = Field(default=None, ge=1, le=MAX_K, description="Fixed draft length for mode on (kMax when omitted).")
    control: ControlSpec = Field(default_factory=ControlSpec, description="Control loop settings for mode auto.")

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("!has(self.k) || self.k <= self.kMax", "must be <= kMax", "k", lambda s: s.k is None or s.k <= s.k_max),
        CelRule("!has(self.k) || self.mode == 'on'", "is only allowed with mode on", "k", lambda s: s.k is None or s.mode == "on"),
        CelRule(
            "self.method != 'draft' || has(self.draft)", "is required when method is draft", "draft",
            lambda s: s.method != "draft" or s.draft is not None,
        ),
        CelRule(
            "self.method == 'draft' || !has(self.draft)", "must be omitted unless method is draft", "draft",
            lambda s: s.method == "draft" or s.draft is None,
        ),
    )


class EnvVar(CrdModel):
    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Environment variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None, description="A core/v1 EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)."
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!(has(self.value) && has(self.valueFrom))", "value and valueFrom are mutually exclusive", "valueFrom",
            lambda e: e.value is None or e.value_from is None,
        ),
    )


class EngineSpec(CrdModel):
    kind: Literal["torch", "vllm"] = Field(default="torch", description="torch: specfleet's own engine; vllm: vLLM wrapped by specfleet.")
    image: str = Field(default=DEFAULT_IMAGE, min_length=1, description="Runtime container image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Pull policy for the runtime image."
    )
    args: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=list, max_length=64,
        description="Extra `specfleet serve` arguments; flags the operator sets (--model, --port, ...) are not allowed.",
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=64, description="Extra environment variables for the runtime container.")

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            f"self.args.all(a, !a.matches('{MANAGED_FLAG_REGEX}'))",
            "must not set a flag the operator manages (" + ", ".join("--" + f for f in MANAGED_FLAGS) + ")",
            "args",
            lambda e: not any(re.search(MANAGED_FLAG_REGEX, a) for a in e.args),
        ),
    )


class ResourcesSpec(CrdModel):
    gpus: int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu per replica (request = limit); 0 runs on CPU.")
    requests: dict[str, Quantity] = Field(default_factory=dict, description="Resource requests (cpu, memory, ...) per replica.")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Resource limits (cpu, memory, ...) per replica.")

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            f"!('{GPU_RESOURCE}' in self.requests) && !('{GPU_RESOURCE}' in self.limits)",
            f"{GPU_RESOURCE} is set through gpus, not requests/limits", "gpus",
            lambda r: GPU_RESOURCE not in r.requests and GPU_RESOURCE not in r.limits,
        ),
    )


class Toleration(CrdModel):
    key: str | None = Field(default=None, description="Taint key; empty with operator Exists matches every taint.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; all effects when omitted."
    )
    toleration_seconds: int | None = Field(default=None, ge=0, description="For NoExecute: how long the pod stays bound.")

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.operator != 'Exists' || !has(self.value)", "must be omitted with operator Exists", "value",
            lambda t: t.operator != "Exists" or t.value is None,
        ),
    )


class SchedulingSpec(CrdModel):
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the runtime pods require.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the runtime pods tolerate.")
    affinity: dict[str, Any] | None = Field(default=None, description="A core/v1 Affinity for the runtime pods.")


class ServingSpec(CrdModel):
    port: int = Field(default=8000, ge=1024, le=65535, description="Container port of the OpenAI API, /health and /metrics.")
    admin_port: int = Field(
        default=8001, ge=1024, le=65535,
        description=(
            "Container port of the admin API (/admin/speculation), which the operator calls to set each "
            "replica's speculation; the NetworkPolicy admits only the operator's pods to it, and the Service "
            "does not expose it."
        ),
    )
    max_batch: int = Field(default=32, ge=1, le=1024, description="Most sequences decoded together per replica.")
    max_model_len: int = Field(default=2048, ge=16, le=1048576, description="Longest prompt plus completion, in tokens.")

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.adminPort != self.port", "must differ from port", "adminPort", lambda s: s.admin_port != s.port),
    )


class MetricsSpec(CrdModel):
    prometheus_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s]+$",
        description="Prometheus the controller queries; the operator's --prometheus-url when omitted.",
    )
    pod_monitor: bool = Field(default=False, description="Create a monitoring.coreos.com PodMonitor for the runtime pods.")


class Spec(CrdModel):
    replicas: int = Field(default=1, ge=0, le=1000, description="Number of runtime replicas (the scale subresource).")
    model: ModelSpec = Field(description="The target model.")
    speculation: SpeculationSpec = Field(description="Speculative decoding settings (the draft model or ngram).")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="The runtime engine and container.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Per-replica compute resources.")
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Where the runtime pods may run.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Serving limits and ports.")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="Metrics collection.")


class StatusModel(CrdModel):
    """Status is written by operators; reading it tolerates fields a newer one added."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    """metav1.Condition."""

    type: str = Field(max_length=316, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$", description="Condition type in CamelCase.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(default=None, ge=0, description="The .metadata.generation this condition was set for.")
    last_transition_time: str = Field(
        json_schema_extra={"format": "date-time"}, description="When the condition last changed status (RFC 3339)."
    )
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason for the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")


class SpeculationStatus(StatusModel):
    speculating: str | None = Field(default=None, description="Replicas speculating / replicas, e.g. 3/4 (printer column).")
    speculating_replicas: int | None = Field(default=None, ge=0, description="Replicas whose schedule has K > 0 somewhere.")
    acceptance: float | None = Field(default=None, ge=0, le=1, description="Mean per-token draft acceptance over the fleet.")
    break_even_batch: int | None = Field(default=None, ge=0, description="Median break-even decode batch b* over replicas.")
    mean_k: float | None = Field(default=None, ge=0, description="Mean K per decode step over the fleet.")
    last_decision_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="When the controller last decided (RFC 3339)."
    )


class Status(StatusModel):
    observed_generation: int | None = Field(default=None, ge=0, description="The .metadata.generation last reconciled.")
    replicas: int | None = Field(default=None, ge=0, description="Runtime pods that exist (the scale subresource).")
    ready_replicas: int | None = Field(default=None, ge=0, description="Runtime pods that are ready.")
    selector: str | None = Field(default=None, description="Label selector of the runtime pods, as a string (the scale subresource).")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing, MetricsAvailable, SpeculationControlled, Degraded.")
    speculation: SpeculationStatus = Field(default_factory=SpeculationStatus, description="Speculation summary.")


class ObjectMeta(BaseModel):
    """The part of metav1.ObjectMeta the operator reads; the rest is kept as given."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = Field(min_length=1)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class SpeculativeDeployment(CrdModel):
    """A fleet of LLM replicas whose speculative decoding specfleet tunes per replica."""

    # Only metadata.name is visible to CEL; children are named after it (Service: DNS-1035).
    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && self.metadata.name.matches('{NAME_PATTERN}')",
            f"must be a lowercase DNS label of at most {MAX_NAME_LENGTH} characters", "metadata.name",
            lambda cr: len(cr.metadata.name) <= MAX_NAME_LENGTH and re.search(NAME_PATTERN, cr.metadata.name) is not None,
        ),
    )

    api_version: Literal["specfleet.io/v1alpha1"] = API_VERSION
    kind: Literal["SpeculativeDeployment"] = KIND
    metadata: ObjectMeta
    spec: Spec
    status: Status | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def served_model_name(self) -> str:
        return self.spec.model.name or self.metadata.name


class CRValidationError(ValueError):
    """A CR that breaks the schema or a rule; str() is one line: `field.path: problem`."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_PATTERN_HINTS = {
    MODEL_SOURCE_PATTERN: "a model source (hf://org/name, pvc://claim/path, file:///path or bundled://NAME)",
    DURATION_PATTERN: "a duration like 15s, 2m or 1h30m",
    QUANTITY_PATTERN: "a quantity like 500m, 2 or 4Gi",
}

_PROBLEMS: dict[str, Callable[[dict[str, Any]], str]] = {
    "missing": lambda e: "is required",
    "extra_forbidden": lambda e: "is not a known field",
    "less_than_equal": lambda e: f"must be <= {e['ctx']['le']}",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']}",
    "less_than": lambda e: f"must be < {e['ctx']['lt']}",
    "greater_than": lambda e: f"must be > {e['ctx']['gt']}",
    "literal_error": lambda e: f"must be one of {e['ctx']['expected']}",
    "string_pattern_mismatch": lambda e: f"{e['input']!r} is not {_PATTERN_HINTS.get(e['ctx']['pattern'], 'matching ' + e['ctx']['pattern'])}",
    "string_too_long": lambda e: f"must be at most {e['ctx']['max_length']} characters",
    "string_too_short": lambda e: f"must be at least {e['ctx']['min_length']} characters",
    "too_long": lambda e: f"must have at most {e['ctx']['max_length']} items",
    "string_type": lambda e: "must be a string",
    "int_type": lambda e: "must be an integer",
    "int_parsing": lambda e: "must be an integer",
    "int_from_float": lambda e: "must be an integer",
    "float_type": lambda e: "must be a number",
    "float_parsing": lambda e: "must be a number",
    "bool_type": lambda e: "must be true or false",
    "bool_parsing": lambda e: "must be true or false",
    "model_type": lambda e: "must be a mapping",
    "model_attributes_type": lambda e: "must be a mapping",
    "dict_type": lambda e: "must be a mapping",
    "list_type": lambda e: "must be a list",
}


# pydantic reports every branch of a union (int | str quantities); keep the branch of the
# input's own type.
_BRANCH_TYPES: dict[str, type] = {"int": int, "str": str, "constrained-str": str}


def _relevant(errors: list[Any]) -> list[Any]:
    kept, other_branches = [], []
    for err in errors:
        tag = err["loc"][-1] if err["loc"] else None
        if isinstance(tag, str) and tag in _BRANCH_TYPES:
            err = err | {"loc": err["loc"][:-1]}
            if not isinstance(err["input"], _BRANCH_TYPES[tag]):
                other_branches.append(err)
                continue
        kept.append(err)
    return kept or other_branches


def error_from_validation(exc: ValidationError) -> CRValidationError:
    """The first problem in a pydantic ValidationError, as a one-line CRValidationError."""
    err = _relevant(exc.errors())[0]
    loc = tuple(err["loc"])
    if err["type"] == "cel_rule":
        return CRValidationError(_path(loc + (err["ctx"]["field"],)), err["ctx"]["message"])
    problem = _PROBLEMS.get(err["type"], lambda e: e["msg"][0].lower() + e["msg"][1:])(err)
    return CRValidationError(_path(loc), problem)


def parse_cr(body: dict[str, Any]) -> SpeculativeDeployment:
    """Validate a CR body (schema and cross-field rules); raises CRValidationError."""
    if not isinstance(body, dict):
        raise CRValidationError("", "a SpeculativeDeployment must be a YAML mapping")
    try:
        return SpeculativeDeployment.model_validate(body)
    except ValidationError as exc:
        raise error_from_validation(exc) from None


def load_cr_file(path: str | Path) -> SpeculativeDeployment:
    """Read one SpeculativeDeployment from a YAML file and validate it fully.

    Runs the schema and cross-field rules and the deeper checks the operator makes
    (checks.py), so `specfleet up` refuses exactly what the operator would mark InvalidSpec.
    """
    from specfleet_operator.checks import check_deep

    try:
        documents = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise CRValidationError("", f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if len(documents) != 1:
        raise CRValidationError("", f"{path}: expected exactly one YAML document, found {len(documents)}")
    cr = parse_cr(documents[0])
    check_deep(cr)
    return cr
