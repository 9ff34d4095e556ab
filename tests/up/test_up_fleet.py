"""`specfleet up` as a user runs it (a real subprocess with real replicas, Prometheus and
router): it serves the OpenAI API, the controller takes over every replica, and Ctrl-C
ends every child and frees every port."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from fleet_cr import write_fleet_cr
from procfs import alive, cmdline, descendants, ports_in
from specfleet.local.processes import port_is_listening

SPECFLEET = [sys.executable, "-m", "specfleet.cli"]
SERVING = re.compile(r"serving (http://127\.0\.0\.1:(\d+))/v1")


class UpProcess:
    """`specfleet up` in the background, its stdout collected line by line."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = dict(os.environ, COLUMNS="200")
        self.popen = subprocess.Popen([*SPECFLEET, "up", *args], cwd=cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = pattern.search(line)
                if match:
                    return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {pattern.pattern!r} in the output of specfleet up:\n{self.output}")

    def children_and_ports(self) -> tuple[list[int], list[int]]:
        pids = descendants(self.popen.pid)
        return pids, sorted({p for pid in pids for p in ports_in(cmdline(pid))})

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        finally:
            self._reader.join(timeout=5)

    def kill_tree(self) -> None:
        """Last-resort cleanup if a test failed half-way: end whatever is left."""
        for pid in descendants(self.popen.pid) + [self.popen.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait()


def assert_all_gone(pids: list[int], ports: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    assert [p for p in pids if alive(p)] == []
    assert [p for p in ports if port_is_listening(p)] == []


@pytest.fixture
def up_running(tmp_path, fleet_cr):
    up = UpProcess(["-f", str(fleet_cr), "--port", "0", "--device", "cpu", "--state-dir", str(tmp_path / "state"), "--no-view"], tmp_path)
    try:
        yield up
    finally:
        if up.popen.poll() is None:
            up.kill_tree()


def test_up_serves_openai_through_the_router_and_ctrl_c_leaves_nothing_behind(up_running, tmp_path):
    up = up_running
    match = up.wait_for(SERVING, timeout=240)
    router_url, router_port = match.group(1), int(match.group(2))
    pids, ports = up.children_and_ports()
    # Two replicas and Prometheus, each with its port.
    assert len([p for p in pids if "serve" in cmdline(p)]) == 2
    assert len([p for p in pids if any("prometheus" in a for a in cmdline(p)[:1])]) == 1
    assert len(ports) == 3 and all(port_is_listening(p) for p in ports)

    client = openai.OpenAI(base_url=f"{router_url}/v1", api_key="unused")
    done = client.completions.create(model="tiny", prompt="def add(a, b):", max_tokens=8, temperature=0)
    assert done.usage.completion_tokens >= 1
    streamed = list(client.completions.create(model="tiny", prompt="class Stack:", max_tokens=8, temperature=0, stream=True))
    assert len(streamed) >= 2 and "".join(c.choices[0].text for c in streamed)
    assert [m.id for m in client.models.list().data] == ["tiny"]

    # The controller pushes a schedule to every replica (mode auto) within a few intervals.
    token = (tmp_path / "state" / "admin-token").read_text()
    replica_ports = [port for pid in pids if "serve" in cmdline(pid) for port in ports_in(cmdline(pid))]
    deadline = time.monotonic() + 60
    while True:
        configs = [
            httpx.get(f"http://127.0.0.1:{port}/admin/speculation", headers={"Authorization": f"Bearer {token}"}).json()
            for port in replica_ports
        ]
        if all(c["enabled"] for c in configs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(configs) == 2 and all(c["enabled"] for c in configs), configs

    up.popen.send_signal(signal.SIGINT)
    assert up.finish() == 130
    assert "stopped by SIGINT" in up.output
    assert_all_gone(pids, ports + [router_port])


def test_ctrl_c_while_the_replicas_are_still_loading_leaves_nothing_behind(up_running):
    up = up_running
    up.wait_for(re.compile(r"starting 2 replicas"), timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not [p for p in descendants(up.popen.pid) if "serve" in cmdline(p)]:
        time.sleep(0.05)
    pids, ports = up.children_and_ports()
    assert len(pids) >= 2 and len(ports) >= 2  # Prometheus and the first replica, still loading
    up.popen.send_signal(signal.SIGINT)
    assert up.finish() == 130
    assert_all_gone(pids, ports)
    assert SERVING.search(up.output) is None


def test_without_a_prometheus_binary_the_controller_scrapes_the_replicas(tmp_path, tiny_pair, monkeypatch):
    cr = write_fleet_cr(tmp_path / "one.yaml", tiny_pair, replicas=1)
    monkeypatch.setenv("SPECFLEET_PROMETHEUS", str(tmp_path / "no-prometheus-here"))
    up = UpProcess(["-f", str(cr), "--port", "0", "--device", "cpu", "--state-dir", str(tmp_path / "state"), "--no-view"], tmp_path)
    try:
        up.wait_for(SERVING, timeout=240)
        assert "warning: no prometheus binary found" in up.output
        assert "metrics: direct scrape" in up.output
        pids, ports = up.children_and_ports()
        assert not any("prometheus" in " ".join(cmdline(p)[:1]) for p in pids)
        token = (tmp_path / "state" / "admin-token").read_text()
        (port,) = ports
        deadline = time.monotonic() + 60
        while not httpx.get(f"http://127.0.0.1:{port}/admin/speculation", headers={"Authorization": f"Bearer {token}"}).json()["enabled"]:
            assert time.monotonic() < deadline, "the controller never pushed a config"
            time.sleep(1)
        up.popen.send_signal(signal.SIGTERM)
        assert up.finish() == 143
        assert_all_gone(pids, ports)
    finally:
        if up.popen.poll() is None:
            up.kill_tree()


def test_demo_reports_each_phase_and_flags_a_fleet_that_speculates_under_high_load(tmp_path, tiny_pair):
    """mode: on pins K=2 at every batch size, so the demo's verdict must reject the high
    phase (and only it): the summary is measured, not assumed."""
    cr = write_fleet_cr(tmp_path / "pinned.yaml", tiny_pair, replicas=1, mode="on", k=2, max_batch=4)
    state = tmp_path / "state"
    up = UpProcess(["-f", str(cr), "--demo", "--port", "0", "--device", "cpu", "--state-dir", str(state), "--no-view",
                    "--phase-seconds", "6", "--settle-seconds", "2", "--max-tokens", "16"], tmp_path)
    try:
        code = up.finish(timeout=240)
    finally:
        if up.popen.poll() is None:
            up.kill_tree()
    assert code == 1, up.output
    summary = json.loads((state / "demo-summary.json").read_text())
    rows = {(r["phase"], r["replica"]): r for r in summary["phases"]}
    assert set(rows) == {("1-low", "tiny-0"), ("2-high", "tiny-0"), ("3-low", "tiny-0")}
    assert rows[("1-low", "tiny-0")]["offered"] == 1 and rows[("2-high", "tiny-0")]["offered"] == 4
    assert all(r["mean_k"] == 2 for r in rows.values())
    assert rows[("2-high", "tiny-0")]["mean_batch"] > rows[("1-low", "tiny-0")]["mean_batch"]
    assert summary["problems"] == ["tiny-0 in phase 2-high: speculated on 100.0% of steps (mean K 2.00) under high load"]
    assert "not as expected: tiny-0 in phase 2-high" in up.output
    assert (state / "demo-timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert f"timeline: {state / 'demo-timeline.png'}" in up.output
