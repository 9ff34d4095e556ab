"""SpeculativeDeployment -> apps/v1 Deployment running `specfleet serve`."""

from __future__ import annotations

import json
from typing import Any

from specfleet.contract import POD_SPECULATION_ANNOTATION, SpeculationConfig, constant_schedule
from specfleet_operator.builders.labels import (
    ADMIN_PORT_NAME, ADMIN_TOKEN_DIR, ADMIN_TOKEN_FILE, SERVING_PORT_NAME, admin_secret_name, contract_labels,
    metadata, selector_labels,
)
from specfleet_operator.builders.models import model_mount
from specfleet_operator.spec import GPU_RESOURCE, SpeculativeDeployment

CONTAINER_NAME = "runtime"
RUNTIME_UID = 10001  # the runtime image's non-root user (Dockerfile)
# Model loading plus the startup calibration sweep can take minutes on big models.
STARTUP_SECONDS = 900


def initial_k(cr: SpeculativeDeployment) -> int:
    """K at every batch size when a pod starts. mode auto starts like mode on without k
    (K = kMax) until the controller's first decision replaces the schedule over the admin API."""
    spec = cr.spec.speculation
    return 0 if spec.mode == "off" else (spec.k if spec.k is not None else spec.k_max)


def initial_speculation(cr: SpeculativeDeployment) -> SpeculationConfig:
    spec = cr.spec.speculation
    k = initial_k(cr)
    return SpeculationConfig(enabled=k > 0, method=spec.method, k_max=spec.k_max, schedule=constant_schedule(k))


def speculation_annotation(config: SpeculationConfig) -> str:
    return json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(cr: SpeculativeDeployment) -> list[dict[str, Any]]:
    # The root filesystem is read-only: every cache goes to the /tmp emptyDir.
    fixed = [{"name": "HOME", "value": "/tmp"}, {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"}]
    user = [e.model_dump(by_alias=True, exclude_none=True) for e in cr.spec.engine.env]
    user_names = {e["name"] for e in user}
    return [e for e in fixed if e["name"] not in user_names] + user


def _resources(cr: SpeculativeDeployment) -> dict[str, Any]:
    res = cr.spec.resources
    requests = {k: str(v) for k, v in res.requests.items()}
    limits = {k: str(v) for k, v in res.limits.items()}
    if res.gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(res.gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def serve_command(cr: SpeculativeDeployment, model_path: str, draft_path: str | None) -> list[str]:
    spec, serving = cr.spec, cr.spec.serving
    k = initial_k(cr)
    command = [
        "specfleet", "serve",
        "--model", model_path,
        "--served-model-name", cr.served_model_name,
        "--method", spec.speculation.method,
        "--k-max", str(spec.speculation.k_max),
        "--speculation", "on" if k else "off",
        "--host", "0.0.0.0",
        "--port", str(serving.port),
        "--admin-port", str(serving.admin_port),
        "--max-batch", str(serving.max_batch),
        "--max-model-len", str(serving.max_model_len),
        "--admin-token-file", ADMIN_TOKEN_FILE,
        "--device", "cuda" if spec.resources.gpus else "cpu",
    ]
    if k:
        command += ["--schedule", str(k)]
    if draft_path is not None:
        command += ["--draft", draft_path]
    return command + list(spec.engine.args)


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": SERVING_PORT_NAME}, "periodSeconds": period,
            "failureThreshold": failures, "timeoutSeconds": 5}


def build_deployment(cr: SpeculativeDeployment, namespace: str) -> dict[str, Any]:
    spec = cr.spec
    engine = spec.engine
    tmp_mount = {"name": "tmp", "mountPath": "/tmp"}
    env = _env(cr)
    init_template = {
        "image": engine.image, "imagePullPolicy": engine.image_pull_policy, "env": env,
        "securityContext": _security_context(), "volumeMounts": [tmp_mount],
    }
    target = model_mount(spec.model.source, "target", init_template)
    draft = model_mount(spec.speculation.draft.source, "draft", init_template) if spec.speculation.draft else None
    mounts = [m for m in (target, draft) if m is not None]
    config = initial_speculation(cr)

    container = {
        "name": CONTAINER_NAME,
        "image": engine.image,
        "imagePullPolicy": engine.image_pull_policy,
        "command": serve_command(cr, target.path, draft.path if draft else None),
        "ports": [
            {"name": SERVING_PORT_NAME, "containerPort": spec.serving.port, "protocol": "TCP"},
            {"name": ADMIN_PORT_NAME, "containerPort": spec.serving.admin_port, "protocol": "TCP"},
        ],
        "env": env,
        "resources": _resources(cr),
        "startupProbe": _probe(period=10, failures=STARTUP_SECONDS // 10),
        "readinessProbe": _probe(period=5, failures=2),
        "livenessProbe": _probe(period=10, failures=3),
        "securityContext": _security_context(),
        "volumeMounts": [tmp_mount, {"name": "admin-token", "mountPath": ADMIN_TOKEN_DIR, "readOnly": True}]
        + [m for mount in mounts for m in mount.mounts],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the runtime never calls the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUNTIME_UID, "runAsGroup": RUNTIME_UID, "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "admin-token", "secret": {"secretName": admin_secret_name(cr), "defaultMode": 0o440}},
        ] + [v for mount in mounts for v in mount.volumes],
    }
    init_containers = [c for mount in mounts for c in mount.init_containers]
    if init_containers:
        pod_spec["initContainers"] = init_containers
    scheduling = spec.scheduling
    if scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in scheduling.tolerations]
    if scheduling.affinity:
        pod_spec["affinity"] = scheduling.affinity

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(cr, cr.name, namespace),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(cr)},
            # GPU clusters rarely have a spare GPU to surge into: replace one pod at a time.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": contract_labels(cr),
                    "annotations": {
                        POD_SPECULATION_ANNOTATION: speculation_annotation(config),
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(spec.serving.port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }
