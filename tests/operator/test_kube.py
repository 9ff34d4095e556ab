"""The operator's API client: credentials as Kubernetes hands them out, apply semantics."""

from __future__ import annotations

from pathlib import Path

import yaml
from operator_harness import NAMESPACE, ApiServer

from specfleet_operator.kube import Connection, Kube


async def test_a_rotated_service_account_token_is_used_from_the_next_request(api: ApiServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    kube = Kube(Connection(server=str(api.url).rstrip("/"), token_path=str(token)))
    try:
        await kube.get("Secret", NAMESPACE, "absent")
        token.write_text("second\n")
        assert await kube.get("Secret", NAMESPACE, "absent") is None
    finally:
        await kube.aclose()
    sent = [r.headers.get("Authorization") for r in api._requests if r.name == "absent"]
    assert sent == ["Bearer first", "Bearer second"]


async def test_apply_creates_then_updates_and_patch_leaves_a_missing_object_missing(api: ApiServer) -> None:
    kube = Kube(Connection(server=str(api.url).rstrip("/")))
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": NAMESPACE},
               "spec": {"ports": [{"port": 80}]}}
    try:
        assert (await kube.apply(service))["spec"]["ports"] == [{"port": 80}]
        service["spec"]["ports"] = [{"port": 8080}]
        await kube.apply(service)
        assert (await kube.get("Service", NAMESPACE, "s"))["spec"]["ports"] == [{"port": 8080}]
        assert await kube.patch("Pod", NAMESPACE, "gone", {"metadata": {"annotations": {"a": "b"}}}) is None
        assert await kube.delete("Service", NAMESPACE, "s") is True
        assert await kube.delete("Service", NAMESPACE, "s") is False
    finally:
        await kube.aclose()
    applies = [r for r in api._requests if r.params.get("fieldManager") == "specfleet"]
    assert len(applies) == 2 and all(r.params["force"] == "true" for r in applies)
    assert all(r.headers["Content-Type"] == "application/apply-patch+yaml" for r in applies)


def test_kubeconfig_credentials_are_read_with_the_kubernetes_client(tmp_path: Path, monkeypatch) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not parsed here")
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "dev",
        "clusters": [{"name": "c", "cluster": {"server": "https://k8s.example:6443", "certificate-authority": str(ca)}}],
        "users": [{"name": "u", "user": {"token": "tok"}}],
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    connection = Connection.from_environment()
    assert (connection.server, connection.current_token(), connection.ca_path) == ("https://k8s.example:6443", "tok", str(ca))
