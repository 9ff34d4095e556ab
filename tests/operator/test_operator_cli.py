"""`specfleet operator` as a process: kubeconfig in, reconciled children out, clean SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import yaml
from operator_harness import ApiServer, create_cr, eventually, example_cr, stored

SPECFLEET = Path(sys.executable).parent / "specfleet"


async def test_the_operator_command_reconciles_from_a_kubeconfig_and_stops_on_sigterm(
    api: ApiServer, tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(api.url).rstrip("/")}}],
        "users": [{"name": "op", "user": {"token": "operator-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "op"}}],
    }))
    process = await asyncio.create_subprocess_exec(
        str(SPECFLEET), "operator", "--all-namespaces", "--standalone",
        # As the chart's StatefulSet sets them: the operator's namespace and pod labels.
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "SPECFLEET_OPERATOR_NAMESPACE": "platform",
             "SPECFLEET_OPERATOR_POD_LABELS": "app.kubernetes.io/name=specfleet-operator,app.kubernetes.io/instance=sf"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await create_cr(api, example_cr())
        await eventually(lambda: stored(api, "apps/v1/deployments", "pycode"), timeout=30, what="the Deployment")
        policy = await eventually(lambda: stored(api, "networking.k8s.io/v1/networkpolicies", "pycode"), what="the policy")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, output.decode()[-3000:]
    (admin_peer,) = policy["spec"]["ingress"][1]["from"]
    assert admin_peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "specfleet-operator", "app.kubernetes.io/instance": "sf"}},
    }
    operator_requests = [r for r in api._requests if not r.headers.get("User-Agent", "").startswith("kmock/")]
    assert operator_requests and all(r.headers.get("Authorization") == "Bearer operator-token" for r in operator_requests)


async def test_conflicting_options_are_refused_with_exit_code_2() -> None:
    for args in (["--standalone"], ["-A", "-n", "default"], ["-A", "--standalone", "--peering", "p"],
                 ["-A", "--standalone", "--operator-pod-labels", "app.kubernetes.io/name"]):
        process = await asyncio.create_subprocess_exec(
            str(SPECFLEET), "operator", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 2, (args, err.decode())
        assert len(err.decode().strip().splitlines()) == 1 and err.decode().startswith("specfleet operator: ")
