"""What the API server does with a CR before storing it, from the committed CRD alone:
structural defaulting, strict field validation (kubectl's default: unknown fields are
errors), the openAPIV3Schema (jsonschema, Draft 4 = OpenAPI v3.0's dialect) and every
x-kubernetes-validations rule (cel-python; the rules use standard CEL only)."""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "speculativedeployments.specfleet.io.yaml"


@cache
def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in value:
            value[key] = apply_defaults(schema["additionalProperties"], value[key])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _unknown_fields(schema: dict[str, Any], value: Any, path: str) -> list[tuple[str, str]]:
    errors = []
    if isinstance(value, dict) and "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for key, item in value.items():
            if key not in schema["properties"]:
                errors.append((_join(path, key), "unknown field"))
            else:
                errors += _unknown_fields(schema["properties"][key], item, _join(path, key))
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            errors += _unknown_fields(schema["additionalProperties"], item, _join(path, key))
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _unknown_fields(schema["items"], item, _join(path, i))
    return errors


def _schema_errors(value: Any) -> list[tuple[str, str]]:
    errors = []
    for error in jsonschema.Draft4Validator(crd_schema()).iter_errors(value):
        path = ""
        for key in error.absolute_path:
            path = _join(path, key)
        if error.validator == "required":
            path = _join(path, re.match(r"'([^']+)'", error.message).group(1))
        errors.append((path, error.message))
    return errors


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_errors(schema: dict[str, Any], value: Any, path: str) -> list[tuple[str, str]]:
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        if not _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)}):
            field, _, _ = rule["message"].partition(":")
            errors.append((_join(path, field), rule["message"]))
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key in value:
                errors += _cel_errors(sub, value[key], _join(path, key))
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, _join(path, i))
    return errors


def api_server_errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) for every reason the API server would refuse `body`.

    CEL runs only on a schema-valid object, as in Kubernetes (rules assume the types)."""
    obj = apply_defaults(crd_schema(), copy.deepcopy(body))
    errors = _unknown_fields(crd_schema(), obj, "") + _schema_errors(obj)
    return errors or _cel_errors(crd_schema(), obj, "")
