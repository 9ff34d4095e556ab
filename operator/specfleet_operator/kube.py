"""The few Kubernetes API calls the handlers make, over one async HTTP client.

kopf logs in with the same Connection (handlers.py), so the framework and our calls use
one identity. Children are written with server-side apply (field manager `specfleet`,
force: the operator owns every field it sets).
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from specfleet_operator.builders.labels import FIELD_MANAGER
from specfleet_operator.spec import API_VERSION, KIND, PLURAL

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# kind -> (apiVersion, plural); every kind here is namespaced.
RESOURCES: dict[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "Secret": ("v1", "secrets"),
    "Pod": ("v1", "pods"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "PodMonitor": ("monitoring.coreos.com/v1", "podmonitors"),
    KIND: (API_VERSION, PLURAL),
}


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Connection:
    server: str
    token: str | None = None
    ca_path: str | None = None
    insecure: bool = False
    certificate_path: str | None = None
    private_key_path: str | None = None
    # Projected service-account tokens rotate (about hourly): re-read the file, never cache it.
    token_path: str | None = None

    def current_token(self) -> str | None:
        return Path(self.token_path).read_text().strip() if self.token_path else self.token

    @classmethod
    def in_cluster(cls) -> "Connection":
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        host = f"[{host}]" if ":" in host else host
        return cls(
            server=f"https://{host}:{port}",
            token_path=str(SERVICE_ACCOUNT_DIR / "token"),
            ca_path=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
        )

    @classmethod
    def from_kubeconfig(cls, context: str | None = None) -> "Connection":
        from kubernetes import client, config  # only here: the operator's pods use in_cluster()

        configuration = client.Configuration()
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), context=context, client_configuration=configuration
        )
        keys = {k.lower(): v for k, v in (configuration.api_key or {}).items()}  # "BearerToken" in client 37
        bearer = keys.get("bearertoken") or keys.get("authorization") or ""
        return cls(
            server=configuration.host,
            token=bearer.removeprefix("Bearer ").strip() or None,
            ca_path=configuration.ssl_ca_cert,
            insecure=not configuration.verify_ssl,
            certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file,
        )

    @classmethod
    def from_environment(cls, context: str | None = None) -> "Connection":
        if "KUBERNETES_SERVICE_HOST" in os.environ and context is None:
            return cls.in_cluster()
        return cls.from_kubeconfig(context)

    def httpx_verify(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        context = ssl.create_default_context(cafile=self.ca_path)
        if self.certificate_path:
            context.load_cert_chain(self.certificate_path, self.private_key_path)
        return context


def object_path(api_version: str, plural: str, namespace: str, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class _BearerAuth(httpx.Auth):
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def auth_flow(self, request: httpx.Request) -> Any:
        token = self._connection.current_token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


class Kube:
    def __init__(self, connection: Connection, timeout: float = 30.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=connection.server, auth=_BearerAuth(connection), verify=connection.httpx_verify(), timeout=timeout
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._client.request(method, path, **kwargs)
        if response.status_code >= 400 and response.status_code != 404:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise KubeError(response.status_code, f"{method} {path}: {message}")
        return response

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply one namespaced object; returns the object as stored."""
        api_version, plural = RESOURCES[obj["kind"]]
        path = object_path(api_version, plural, obj["metadata"]["namespace"], obj["metadata"]["name"])
        response = await self._request(
            "PATCH", path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content=json.dumps(obj),  # JSON is YAML: the apply-patch body
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        if response.status_code == 404:
            raise KubeError(404, f"PATCH {path}: the API has no {obj['kind']} resource")
        return response.json()

    async def patch(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any] | None:
        """JSON merge patch of an existing object (e.g. pod annotations) or of its subresource
        (`status`); None when it is gone."""
        api_version, plural = RESOURCES[kind]
        path = object_path(api_version, plural, namespace, name) + (f"/{subresource}" if subresource else "")
        response = await self._request(
            "PATCH", path,
            content=json.dumps(patch), headers={"Content-Type": "application/merge-patch+json"},
        )
        return None if response.status_code == 404 else response.json()

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        api_version, plural = RESOURCES[kind]
        response = await self._request("GET", object_path(api_version, plural, namespace, name))
        return None if response.status_code == 404 else response.json()

    async def list(self, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        api_version, plural = RESOURCES[kind]
        response = await self._request(
            "GET", object_path(api_version, plural, namespace), params={"labelSelector": label_selector}
        )
        return [] if response.status_code == 404 else response.json().get("items", [])

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete if present; True when something was deleted."""
        api_version, plural = RESOURCES[kind]
        response = await self._request("DELETE", object_path(api_version, plural, namespace, name))
        return response.status_code != 404

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API server serves a resource (discovery; needs no RBAC rule)."""
        response = await self._request("GET", f"/apis/{api_version}")
        if response.status_code == 404:
            return False
        return any(r.get("name") == plural for r in response.json().get("resources", []))
