"""`specfleet serve --admin-port`: the admin API on a port of its own (so a NetworkPolicy can
admit that port to the operator only), everything else on the serving port. Real processes,
real HTTP on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from specfleet.contract import ADMIN_SPECULATION_PATH

SERVE = [str(Path(sys.executable).with_name("specfleet")), "serve"]
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class TwoPortReplica:
    proc: subprocess.Popen
    url: str
    admin_url: str


def serve_args(model_pair: tuple[Path, Path], *extra: str) -> list[str]:
    target, draft = model_pair
    return [*SERVE, "--model", str(target), "--draft", str(draft), "--k-max", "4", "--schedule", "2",
            "--served-model-name", "served", "--calibration-seconds", "0", "--max-batch", "4",
            "--max-model-len", "128", *extra]


def refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    return False


@contextlib.contextmanager
def two_port_replica(model_pair: tuple[Path, Path]) -> Iterator[TwoPortReplica]:
    proc = subprocess.Popen(
        serve_args(model_pair, "--port", "0", "--admin-port", "0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "SPECFLEET_ADMIN_TOKEN": TOKEN},
    )
    try:
        ready, admin = proc.stdout.readline(), proc.stdout.readline()
        assert ready.startswith("specfleet serve: ready on http://127.0.0.1:"), proc.stderr.read()
        assert admin.startswith("specfleet serve: admin API on http://127.0.0.1:"), admin
        yield TwoPortReplica(proc, ready.split(" on ")[1].strip(), admin.split(" on ")[1].strip())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def two_ports(model_pair: tuple[Path, Path]) -> Iterator[TwoPortReplica]:
    with two_port_replica(model_pair) as replica:
        yield replica


def test_the_admin_api_answers_on_its_own_port_with_the_token(two_ports: TwoPortReplica) -> None:
    url = two_ports.admin_url + ADMIN_SPECULATION_PATH
    assert httpx.get(url, headers=AUTH).json() == {"enabled": True, "method": "draft", "k_max": 4,
                                                   "schedule": [[1, 1 << 20, 2]]}
    put = httpx.put(url, headers=AUTH, json={"schedule": [[1, 2, 3]]})
    assert put.status_code == 200 and put.json()["schedule"] == [[1, 2, 3]]
    assert httpx.get(url, headers=AUTH).json()["schedule"] == [[1, 2, 3]]


def test_the_admin_port_refuses_requests_without_the_right_token(two_ports: TwoPortReplica) -> None:
    url = two_ports.admin_url + ADMIN_SPECULATION_PATH
    missing = httpx.get(url)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert httpx.put(url, json={"enabled": False}).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_the_serving_port_has_no_admin_api(two_ports: TwoPortReplica) -> None:
    url = two_ports.url + ADMIN_SPECULATION_PATH
    assert httpx.get(url, headers=AUTH).status_code == 404
    assert httpx.put(url, headers=AUTH, json={"enabled": False}).status_code == 404
    assert httpx.get(two_ports.admin_url + ADMIN_SPECULATION_PATH, headers=AUTH).json()["enabled"] is True


def test_completions_health_and_metrics_stay_on_the_serving_port(two_ports: TwoPortReplica) -> None:
    body = {"model": "served", "prompt": "def f(", "max_tokens": 4, "temperature": 0}
    completion = httpx.post(f"{two_ports.url}/v1/completions", json=body, timeout=30)
    assert completion.status_code == 200 and completion.json()["usage"]["completion_tokens"] == 4
    assert httpx.get(f"{two_ports.url}/health").json() == {"status": "ok"}
    assert "specfleet_speculation_enabled" in httpx.get(f"{two_ports.url}/metrics").text
    for path in ("/health", "/metrics", "/v1/models"):
        assert httpx.get(two_ports.admin_url + path).status_code == 404
    assert httpx.post(f"{two_ports.admin_url}/v1/completions", json=body).status_code == 404


def test_sigterm_stops_both_servers_and_the_engine(model_pair: tuple[Path, Path]) -> None:
    with two_port_replica(model_pair) as replica:
        replica.proc.send_signal(signal.SIGTERM)
        assert replica.proc.wait(timeout=30) == 0, replica.proc.stderr.read()
        assert replica.proc.stdout.read().strip() == "specfleet serve: stopped"  # after the engine thread joined
        assert refused(f"{replica.url}/health") and refused(replica.admin_url + ADMIN_SPECULATION_PATH)


def run_serve(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SPECFLEET_ADMIN_TOKEN": TOKEN})


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("specfleet serve: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_one_port_for_both_is_refused_with_a_one_line_cause(model_pair: tuple[Path, Path]) -> None:
    result = run_serve(serve_args(model_pair, "--port", "8123", "--admin-port", "8123"))
    assert result.returncode == 2
    assert "--admin-port 8123 is also --port" in one_error_line(result)


def test_a_port_outside_the_tcp_range_is_refused(model_pair: tuple[Path, Path]) -> None:
    result = run_serve(serve_args(model_pair, "--port", "0", "--admin-port", "70000"))
    assert result.returncode == 2
    assert "--admin-port 70000 is not a TCP port" in one_error_line(result)


def test_a_taken_admin_port_fails_startup_with_a_one_line_cause(model_pair: tuple[Path, Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(serve_args(model_pair, "--port", "0", "--admin-port", str(port)))
    assert result.returncode == 1 and result.stdout == ""
    line = one_error_line(result)
    assert f"--admin-port {port}" in line and "in use" in line
