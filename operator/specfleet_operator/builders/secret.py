"""The Secret holding the bearer token of the replicas' admin API."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from specfleet_operator.builders.labels import ADMIN_TOKEN_KEY, admin_secret_name, metadata
from specfleet_operator.spec import SpeculativeDeployment


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)


def build_admin_secret(cr: SpeculativeDeployment, namespace: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(cr, admin_secret_name(cr), namespace),
        "type": "Opaque",
        "data": {ADMIN_TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def token_from_secret(secret: dict[str, Any]) -> str | None:
    """The admin token in a Secret read from the API, or None when it holds none."""
    encoded = (secret.get("data") or {}).get(ADMIN_TOKEN_KEY)
    return base64.b64decode(encoded).decode() if encoded else None
