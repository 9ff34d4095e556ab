"""The Prometheus launcher: a real `prometheus` scraping real /metrics endpoints."""

import time

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from specfleet.local.processes import free_port, port_is_listening
from specfleet.local.prometheus import LocalPrometheus, ScrapeTarget, find_prometheus


@pytest.fixture
def metrics_target():
    """A real Prometheus exposition endpoint (prometheus_client's HTTP server) on loopback."""
    registry = CollectorRegistry()
    gauge = Gauge("specfleet_test_value", "a value the test sets", registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield gauge, f"127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


def query(prom: LocalPrometheus, promql: str) -> list[dict]:
    response = httpx.get(f"{prom.url}/api/v1/query", params={"query": promql}, timeout=5, trust_env=False)
    response.raise_for_status()
    return response.json()["data"]["result"]


def wait_for_value(prom: LocalPrometheus, promql: str, expected: float, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < deadline:
        result = query(prom, promql)
        if result and float(result[0]["value"][1]) == expected:
            return result
        time.sleep(0.25)
    raise AssertionError(f"{promql} never became {expected}; last result {result}")


def test_find_prometheus_finds_debians_binary():
    binary = find_prometheus()
    assert binary is not None and binary.name == "prometheus"


def test_find_prometheus_honours_the_override(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECFLEET_PROMETHEUS", str(tmp_path / "nope"))
    assert find_prometheus() is None


def test_prometheus_scrapes_a_target_added_after_start_and_labels_it_by_replica(tmp_path, metrics_target):
    gauge, address = metrics_target
    gauge.set(42)
    with LocalPrometheus(tmp_path / "prom", scrape_interval=0.5) as prom:
        assert query(prom, "up") == []
        prom.set_targets([ScrapeTarget(name="replica-0", address=address)])
        result = wait_for_value(prom, 'specfleet_test_value{pod="replica-0"}', 42)
        assert result[0]["metric"]["job"] == "specfleet"
        assert result[0]["metric"]["instance"] == address
        gauge.set(7)
        wait_for_value(prom, 'specfleet_test_value{pod="replica-0"}', 7)
        # Removing the target ends its scrapes: `up` for it disappears from the live set.
        prom.set_targets([])
        deadline = time.monotonic() + 20
        while query(prom, 'up{pod="replica-0"}') and time.monotonic() < deadline:
            time.sleep(0.25)
        assert query(prom, 'up{pod="replica-0"}') == []


def test_prometheus_restarts_on_the_same_port_with_its_data(tmp_path, metrics_target):
    gauge, address = metrics_target
    gauge.set(3)
    prom = LocalPrometheus(tmp_path / "prom", scrape_interval=0.5, enable_lifecycle=True)
    try:
        prom.set_targets([ScrapeTarget(name="r", address=address)])
        prom.start()
        wait_for_value(prom, 'specfleet_test_value{pod="r"}', 3)
        port = prom.port
        prom.stop()
        assert not prom.running()
        assert not port_is_listening(port)
        with pytest.raises(httpx.ConnectError):
            query(prom, "up")
        prom.start()
        assert prom.port == port and port_is_listening(port)
        # Samples from before the restart are still there (same TSDB directory).
        before = query(prom, 'count_over_time(specfleet_test_value{pod="r"}[10m])')
        assert before and float(before[0]["value"][1]) >= 1
        gauge.set(5)
        wait_for_value(prom, 'specfleet_test_value{pod="r"}', 5)
        # --web.enable-lifecycle exposes the reload endpoint.
        assert httpx.post(f"{prom.url}/-/reload", timeout=5, trust_env=False).status_code == 200
    finally:
        prom.close()
    assert not port_is_listening(port)


def test_missing_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECFLEET_PROMETHEUS", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no prometheus binary"):
        LocalPrometheus(tmp_path)
