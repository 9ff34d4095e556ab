"""Error bodies in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`), with
messages that name the offending field, for every 4xx the server sends."""

from __future__ import annotations

from typing import Any, Iterable

from fastapi.responses import JSONResponse

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               422: "invalid_request_error", 503: "service_unavailable"}


def field_path(loc: Iterable[Any]) -> str:
    """("body", "schedule", 0) -> "schedule[0]": the field as a client would spell it."""
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def describe(errors: Iterable[dict[str, Any]]) -> tuple[str, str | None]:
    """One line naming every bad field, and the first field (OpenAI's `param`)."""
    errors = list(errors)
    parts = [f"{field_path(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in errors]
    first = field_path(errors[0]["loc"]) if errors else None
    return "; ".join(parts), first


def error_response(status: int, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"), "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)
