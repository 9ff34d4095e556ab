"""Child processes of the local fleet: start in their own process group, wait until ready,
stop for sure.

Every child gets its own session (so one signal ends it and whatever it forked, and a
Ctrl-C in the terminal reaches only the parent, which then stops children in order), its
output goes to a log file (a pipe nobody reads would fill up and stall it), and every stop
path reaps it, so no zombie and no listening port outlives the fleet.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import httpx

LOOPBACK = "127.0.0.1"
DEFAULT_GRACE_SECONDS = 5.0
STDERR_TAIL_LINES = 20


class ProcessStartError(RuntimeError):
    """A child died or did not become ready in time; the message carries its last output."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that nothing listens on right now.

    The kernel picks it (bind to port 0); there is a window before the child binds it, which
    is why callers start children one port at a time and a failed bind is a clear error.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_listening(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class ManagedProcess:
    """One child process, its command line and the file its stdout and stderr go to."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = DEFAULT_GRACE_SECONDS) -> int | None:
        return stop_process(self, grace)


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start `argv` in a new session (its own process group), output to `log_dir/name.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    child_env = dict(os.environ if env is None else env)
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=cwd,
            start_new_session=True,
        )
    return ManagedProcess(name=name, argv=list(argv), log_path=log_path, popen=popen)


def wait_ready(
    proc: ManagedProcess,
    url: str,
    *,
    timeout: float,
    expect_status: int = 200,
    poll_interval: float = 0.2,
) -> None:
    """Poll `url` until it answers `expect_status`; raise ProcessStartError if the child
    exits first or `timeout` seconds pass (the message ends with the child's last output)."""
    deadline = time.monotonic() + timeout
    last_problem = "no answer yet"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            code = proc.popen.poll()
            if code is not None:
                raise ProcessStartError(
                    f"{proc.name} exited with code {code} before {url} was ready; "
                    f"last output ({proc.log_path}):\n{proc.log_tail()}"
                )
            try:
                response = client.get(url)
                if response.status_code == expect_status:
                    return
                last_problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last_problem = f"{type(exc).__name__}"
            if time.monotonic() >= deadline:
                raise ProcessStartError(
                    f"{proc.name} was not ready at {url} within {timeout:.0f}s ({last_problem}); "
                    f"last output ({proc.log_path}):\n{proc.log_tail()}"
                )
            time.sleep(poll_interval)


def _signal_group(proc: ManagedProcess, sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        # The group is gone and its id reused by someone else's process: signal only ours.
        if proc.alive():
            proc.popen.send_signal(sig)


def stop_process(proc: ManagedProcess, grace: float = DEFAULT_GRACE_SECONDS) -> int | None:
    """SIGTERM the child's process group, SIGKILL it after `grace` seconds, and reap it.

    Returns the exit code. Safe to call more than once and on a child that already exited
    (its group may still hold grandchildren, so the group is signalled regardless).
    """
    if proc.alive():
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc, signal.SIGKILL)
    return proc.popen.wait()


def stop_all(procs: Sequence[ManagedProcess], grace: float = DEFAULT_GRACE_SECONDS) -> None:
    """Stop several children, signalling all of them first so their shutdowns overlap."""
    for proc in procs:
        if proc.alive():
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        stop_process(proc, grace=0.0)
