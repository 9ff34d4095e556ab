"""The control loop inside the real operator: kopf's per-CR timer against kmock's emulated
API server, pods whose IPs reach real runtime replicas (127.0.0.x loopback addresses, the
same two ports for all, as pods share the CR's serving and admin ports), and a real
Prometheus scraping them on the serving port."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from operator_harness import CR_RESOURCE, NAMESPACE, ApiServer, create_cr, eventually, example_cr, running_operator, started_api, stored
from periodic_model import make_periodic_model

from specfleet.contract import POD_SPECULATION_ANNOTATION, SpeculationConfig
from specfleet.local.processes import free_port, start_process, stop_all, wait_ready
from specfleet.local.prometheus import LocalPrometheus, ScrapeTarget
from specfleet_operator.builders.secret import token_from_secret
from specfleet_operator.control.kube_backend import INCARNATION_ANNOTATION

pytestmark = pytest.mark.slow

READY_IPS = {"pycode-7d9f-a": "127.0.0.2", "pycode-7d9f-b": "127.0.0.3"}
NOT_READY = ("pycode-7d9f-c", "127.0.0.4")
LABELS = {
    "app.kubernetes.io/name": "specfleet-runtime",
    "app.kubernetes.io/instance": "pycode",
    "app.kubernetes.io/managed-by": "specfleet",
    "specfleet.io/deployment": "pycode",
}


def pod(name: str, ip: str, ready: bool) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": LABELS},
        "spec": {"containers": [{"name": "runtime", "image": "specfleet-runtime"}]},
        "status": {
            "phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "runtime", "ready": ready, "restartCount": 0}],
        },
    }


async def create_pod(api: ApiServer, body: dict) -> None:
    async with api.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=body) as response:
        assert response.status < 300, await response.text()


def events(api: ApiServer, reason: str) -> list[dict]:
    return [
        obj.raw for (resource, _, _), obj in api.objects.items()
        if resource.plural == "events" and obj.raw.get("reason") == reason
    ]


def condition(body: dict, type_: str) -> dict:
    return next(c for c in body.get("status", {}).get("conditions", []) if c["type"] == type_)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_periodic_model(tmp_path_factory.mktemp("model") / "periodic", hidden=256, layers=2)


async def test_the_timer_configures_ready_pods_annotates_them_and_reports_in_status_and_events(
    model, tmp_path
) -> None:
    port, admin_port = free_port(), free_port()
    prometheus = LocalPrometheus(tmp_path / "prometheus", scrape_interval=1.0)
    replicas = []
    body = example_cr(replicas=2)
    body["spec"]["speculation"] = {
        "mode": "auto", "method": "ngram", "kMax": 4,
        # A repetitive workload: an optimistic prior, so the first decision speculates.
        "control": {"interval": "1s", "window": "5s", "minGain": 0.0, "cooldown": "1s", "priorAcceptance": 0.95},
    }
    body["spec"]["serving"] |= {"port": port, "adminPort": admin_port}
    body["spec"]["metrics"] = {"prometheusUrl": prometheus.url}
    try:
        async with started_api() as api, running_operator(api):
            await create_cr(api, body)
            secret = await eventually(lambda: stored(api, "v1/secrets", "pycode-admin"), what="admin Secret")
            token_file = tmp_path / "token"
            token_file.write_text(token_from_secret(secret))
            for name, ip in READY_IPS.items():
                argv = [
                    sys.executable, "-m", "specfleet.cli", "serve", "--model", str(model), "--method", "ngram",
                    "--k-max", "4", "--host", ip, "--port", str(port), "--admin-port", str(admin_port),
                    "--admin-token-file", str(token_file),
                    "--speculation", "off", "--max-batch", "8", "--calibration-seconds", "1",
                ]
                replicas.append(start_process(name, argv, log_dir=tmp_path / "logs"))
            for proc, ip in zip(replicas, READY_IPS.values()):
                wait_ready(proc, f"http://{ip}:{port}/health", timeout=120)
            prometheus.set_targets(
                [ScrapeTarget(name, f"{ip}:{port}", {"namespace": NAMESPACE}) for name, ip in READY_IPS.items()]
            )
            prometheus.start()
            for name, ip in READY_IPS.items():
                await create_pod(api, pod(name, ip, ready=True))
            await create_pod(api, pod(*NOT_READY, ready=False))

            def annotated() -> dict[str, SpeculationConfig]:
                pods = {n: stored(api, "v1/pods", n) for n in READY_IPS}
                return {
                    n: SpeculationConfig.model_validate_json(p["metadata"]["annotations"][POD_SPECULATION_ANNOTATION])
                    for n, p in pods.items()
                }

            configs = await eventually(annotated, timeout=60, what="speculation annotations on the ready pods")
            auth = {"Authorization": f"Bearer {token_file.read_text()}"}
            for name, ip in READY_IPS.items():
                # The operator can only have reached the admin port: the serving port has no admin API.
                assert httpx.get(f"http://{ip}:{port}/admin/speculation", headers=auth).status_code == 404
                in_force = httpx.get(f"http://{ip}:{admin_port}/admin/speculation", headers=auth).json()
                assert SpeculationConfig.model_validate(in_force) == configs[name]
                assert configs[name].method == "ngram" and configs[name].enabled
                assert stored(api, "v1/pods", name)["metadata"]["annotations"][INCARNATION_ANNOTATION].endswith("/0")
            assert POD_SPECULATION_ANNOTATION not in (stored(api, "v1/pods", NOT_READY[0])["metadata"].get("annotations") or {})

            cr = await eventually(
                lambda: (b := stored(api, CR_RESOURCE, "pycode"))
                and condition(b, "MetricsAvailable")["status"] == "True"
                and b["status"]["speculation"].get("lastDecisionTime")
                and b,
                timeout=60, what="MetricsAvailable=True and a decision in the CR status",
            )
            summary = cr["status"]["speculation"]
            speculating = sum(any(k > 0 for _, _, k in c.schedule) for c in configs.values())
            assert summary["speculating"] == f"{speculating}/2"
            assert condition(cr, "SpeculationControlled")["status"] == "True"
            assert speculating > 0, configs
            on = await eventually(lambda: events(api, "SpeculationOn"), what="a SpeculationOn event")
            assert {e["message"].split(":")[0] for e in on} <= set(READY_IPS)
            assert all(e["involvedObject"]["name"] == "pycode" for e in on)
    finally:
        prometheus.close()
        stop_all(replicas, grace=3)
