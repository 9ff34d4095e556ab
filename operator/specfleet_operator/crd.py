"""The SpeculativeDeployment CRD, generated from the pydantic models in spec.py.

`python -m specfleet_operator.crd` writes it to crds/ and to the Helm chart's crds/ (the
same bytes); tests fail when the committed files are stale. The schema is structural:
every field has a type and a description, defaults are explicit (objects default to {} so
their own defaults apply), and cross-field rules are the models' CEL rules.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from specfleet_operator import spec as s

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILENAME = f"{s.PLURAL}.{s.GROUP}.yaml"
CRD_PATHS = (REPO_ROOT / "crds" / CRD_FILENAME, REPO_ROOT / "charts" / "specfleet" / "crds" / CRD_FILENAME)

# JSON-schema keywords that carry over unchanged into a Kubernetes structural schema.
_KEPT = ("type", "description", "enum", "pattern", "format", "minimum", "maximum",
         "minLength", "maxLength", "minItems", "maxItems")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin is list


def _leaf(node: dict[str, Any]) -> dict[str, Any]:
    """Turn one pydantic JSON-schema node into its structural-schema form."""
    variants = [v for v in node.get("anyOf", []) if v.get("type") != "null"]
    if len(variants) == 1:  # Optional[X]: absence, not null, is how a CR leaves it out
        return _leaf({**variants[0], **{k: v for k, v in node.items() if k not in ("anyOf", "default")}})
    if variants and {v.get("type") for v in variants} == {"integer", "string"}:
        out = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
        out.update({k: v for v in variants for k, v in v.items() if k == "pattern"})
        return out | ({"description": node["description"]} if "description" in node else {})
    out = {k: node[k] for k in _KEPT if k in node}
    if "exclusiveMinimum" in node:  # OpenAPI v3.0 spells exclusive bounds as booleans
        out |= {"minimum": node["exclusiveMinimum"], "exclusiveMinimum": True}
    if "exclusiveMaximum" in node:
        out |= {"maximum": node["exclusiveMaximum"], "exclusiveMaximum": True}
    if "enum" in node and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "array":
        out["items"] = _leaf(node.get("items", {}))
    if out.get("type") == "object":
        extra = node.get("additionalProperties", True)
        if extra is True or extra == {}:
            out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            out["additionalProperties"] = _leaf(extra)
    if node.get("default") is not None:
        out["default"] = node["default"]
    return out


def _field_default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        if isinstance(field.default_factory, type) and issubclass(field.default_factory, BaseModel):
            return {}
        return field.default_factory()  # type: ignore[call-arg]
    return None


def object_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one model: properties, required, CEL rules."""
    js = model.model_json_schema(by_alias=True)
    defs = js.get("$defs", {})
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        node = js["properties"][alias]
        nested = _models_in(field.annotation)
        if nested and _is_list(field.annotation):
            prop = {"type": "array", "items": object_schema(nested[0])}
            prop |= {k: node[k] for k in ("maxItems",) if k in node}
        elif nested:
            prop = object_schema(nested[0])
        else:
            prop = _leaf(_resolve(node, defs))
        prop["description"] = field.description or ""
        default = _field_default(field)
        if default is not None:
            prop["default"] = default
        if field.is_required():
            required.append(alias)
        properties[alias] = prop
    # The description comes from the field that holds this object (set by the caller).
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    rules = getattr(model, "cel_rules", ())
    if rules:
        out["x-kubernetes-validations"] = [
            {"rule": r.rule, "message": f"{r.field}: {r.message}"}
            | ({"fieldPath": f".{r.field}"} if r.field in properties else {})
            for r in rules
        ]
    return out


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
     "description": "Whether every replica is ready."},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Ready replicas."},
    {"name": "Mode", "type": "string", "jsonPath": ".spec.speculation.mode", "description": "Speculation mode."},
    {"name": "Speculating", "type": "string", "jsonPath": ".status.speculation.speculating",
     "description": "Replicas speculating / replicas."},
    {"name": "Acceptance", "type": "number", "jsonPath": ".status.speculation.acceptance",
     "description": "Mean per-token draft acceptance."},
    {"name": "BreakEven", "type": "integer", "jsonPath": ".status.speculation.breakEvenBatch",
     "description": "Decode batch size from which speculation stops paying."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    spec_schema = object_schema(s.Spec)
    spec_schema["description"] = "Desired state of a speculative-decoding fleet."
    status_schema = object_schema(s.Status)
    status_schema["description"] = "Observed state, written by the operator."
    name_rule = s.SpeculativeDeployment.cel_rules[0]
    root = {
        "type": "object",
        "description": "A fleet of LLM replicas whose speculative decoding specfleet tunes per replica.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "specfleet.io/v1alpha1"},
            "kind": {"type": "string", "description": "SpeculativeDeployment"},
            "metadata": {"type": "object", "description": "Standard object metadata."},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [{"rule": name_rule.rule, "message": f"{name_rule.field}: {name_rule.message}"}],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{s.PLURAL}.{s.GROUP}", "labels": {"app.kubernetes.io/part-of": "specfleet"}},
        "spec": {
            "group": s.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": s.KIND, "listKind": f"{s.KIND}List", "plural": s.PLURAL,
                "singular": s.SINGULAR, "shortNames": list(s.SHORT_NAMES), "categories": ["specfleet"],
            },
            "versions": [{
                "name": s.VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": root},
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "additionalPrinterColumns": PRINTER_COLUMNS,
            }],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `python -m specfleet_operator.crd` from operator/specfleet_operator/spec.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


def write(paths: tuple[Path, ...] = CRD_PATHS) -> list[Path]:
    text = crd_yaml()
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(paths)


def main() -> None:
    for path in write():
        print(f"wrote {path.relative_to(REPO_ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
