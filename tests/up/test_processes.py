"""Child processes of the local fleet: readiness, clear start errors, sure stops."""

import os
import sys
import textwrap
import time

import pytest

from specfleet.local.processes import (
    ProcessStartError,
    free_port,
    port_is_listening,
    start_process,
    stop_all,
    stop_process,
    wait_ready,
)

PY = sys.executable


def pid_exists(pid: int) -> bool:
    """True while the kernel still has the pid (zombies included: reaping is part of the test)."""
    return os.path.exists(f"/proc/{pid}")


def http_server_script(port: int, *, ignore_sigterm: bool = False, spawn_grandchild: bool = False) -> str:
    return textwrap.dedent(
        f"""
        import http.server, signal, subprocess, sys
        if {ignore_sigterm}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if {spawn_grandchild}:
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            print("grandchild", child.pid, flush=True)
        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/health" else 404)
                self.end_headers()
            def log_message(self, *args):
                pass
        http.server.HTTPServer(("127.0.0.1", {port}), Health).serve_forever()
        """
    )


def test_free_port_is_bindable_and_not_listening():
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_is_listening(port)


def test_ready_child_is_stopped_with_sigterm_and_reaped(tmp_path):
    port = free_port()
    proc = start_process("srv", [PY, "-c", http_server_script(port)], log_dir=tmp_path)
    wait_ready(proc, f"http://127.0.0.1:{port}/health", timeout=20)
    assert port_is_listening(port)
    code = stop_process(proc, grace=5)
    assert code == -15  # ended by SIGTERM, not by the SIGKILL fallback
    assert not pid_exists(proc.pid)
    assert not port_is_listening(port)


def test_child_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    port = free_port()
    proc = start_process("stubborn", [PY, "-c", http_server_script(port, ignore_sigterm=True)], log_dir=tmp_path)
    wait_ready(proc, f"http://127.0.0.1:{port}/health", timeout=20)
    started = time.monotonic()
    code = stop_process(proc, grace=0.5)
    assert code == -9
    assert time.monotonic() - started < 5
    assert not pid_exists(proc.pid)
    assert not port_is_listening(port)


def test_stopping_a_child_also_ends_the_processes_it_started(tmp_path):
    port = free_port()
    proc = start_process("parent", [PY, "-c", http_server_script(port, spawn_grandchild=True)], log_dir=tmp_path)
    wait_ready(proc, f"http://127.0.0.1:{port}/health", timeout=20)
    grandchild = int(proc.log_tail().split("grandchild")[1].split()[0])
    assert pid_exists(grandchild)
    stop_process(proc, grace=5)
    # The grandchild is not ours to reap (init adopts it); wait for it to disappear.
    deadline = time.monotonic() + 5
    while pid_exists(grandchild) and _state(grandchild) != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_exists(grandchild) or _state(grandchild) == "Z"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_child_that_dies_during_startup_raises_with_its_last_stderr_lines(tmp_path):
    script = "import sys; print('loading weights', file=sys.stderr); sys.exit('model dir has no config.json')"
    proc = start_process("broken", [PY, "-c", script], log_dir=tmp_path)
    with pytest.raises(ProcessStartError) as info:
        wait_ready(proc, f"http://127.0.0.1:{free_port()}/health", timeout=20)
    message = str(info.value)
    assert "broken exited with code 1" in message
    assert "model dir has no config.json" in message
    assert "loading weights" in message
    stop_process(proc)
    assert not pid_exists(proc.pid)


def test_a_child_that_never_gets_ready_times_out_with_a_clear_error(tmp_path):
    proc = start_process("silent", [PY, "-c", "import time; print('still warming up', flush=True); time.sleep(60)"], log_dir=tmp_path)
    try:
        deadline = time.monotonic() + 30  # a loaded machine may take seconds to start python
        while "still warming up" not in proc.log_tail() and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(ProcessStartError, match=r"silent was not ready .* within 1s[\s\S]*still warming up"):
            wait_ready(proc, f"http://127.0.0.1:{free_port()}/health", timeout=1)
        assert time.monotonic() - started < 5
    finally:
        stop_process(proc, grace=1)
    assert not pid_exists(proc.pid)


def test_stop_all_overlaps_the_shutdowns_and_reaps_everyone(tmp_path):
    ports = [free_port() for _ in range(3)]
    procs = [
        start_process(f"s{i}", [PY, "-c", http_server_script(p, ignore_sigterm=True)], log_dir=tmp_path)
        for i, p in enumerate(ports)
    ]
    for proc, port in zip(procs, ports):
        wait_ready(proc, f"http://127.0.0.1:{port}/health", timeout=20)
    started = time.monotonic()
    stop_all(procs, grace=1.0)
    # One shared grace period, not one per child.
    assert time.monotonic() - started < 2.5
    assert not any(pid_exists(p.pid) for p in procs)
    assert not any(port_is_listening(p) for p in ports)
    stop_all(procs)  # stopping twice is harmless
