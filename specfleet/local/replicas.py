"""Runtime replicas on loopback: each one a `specfleet serve` child process on a free port."""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from specfleet.contract import SpeculationConfig
from specfleet.local.processes import (
    DEFAULT_GRACE_SECONDS,
    LOOPBACK,
    ManagedProcess,
    ProcessStartError,
    free_port,
    start_process,
    stop_all,
    wait_ready,
)

Device = Literal["cpu", "cuda"]
# This interpreter's specfleet, whatever is on PATH (and with no console script needed).
SPECFLEET_COMMAND = (sys.executable, "-m", "specfleet.cli")
DEFAULT_READY_TIMEOUT = 300.0


@dataclass
class LocalReplica:
    name: str
    port: int
    admin_token: str
    process: ManagedProcess = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        """host:port, the form a Prometheus scrape target takes."""
        return f"{LOOPBACK}:{self.port}"


def serve_argv(
    *,
    model: Path,
    draft: Path | None,
    port: int,
    admin_token_file: Path,
    method: str,
    k_max: int,
    max_batch: int,
    max_model_len: int,
    speculation: SpeculationConfig | None,
    device: Device,
    served_model_name: str | None,
    extra_args: Sequence[str],
    threads: int | None = None,
) -> list[str]:
    """The `specfleet serve` command line for one replica.

    `speculation` is the config the replica starts with; None starts it with speculation
    off, which is what a controlled fleet wants until the controller's first decision.
    `threads`: the CPU threads its ops may use (None: torch's default, every core).
    """
    argv = [
        *SPECFLEET_COMMAND, "serve",
        "--model", str(model),
        "--method", method,
        "--k-max", str(k_max),
        "--host", LOOPBACK,
        "--port", str(port),
        "--admin-token-file", str(admin_token_file),
        "--device", device,
        "--max-batch", str(max_batch),
        "--max-model-len", str(max_model_len),
    ]
    if draft is not None:
        argv += ["--draft", str(draft)]
    if speculation is None or not speculation.enabled:
        argv += ["--speculation", "off"]
    else:
        argv += ["--speculation", "on", "--schedule", json.dumps([list(row) for row in speculation.schedule])]
    if served_model_name:
        argv += ["--served-model-name", served_model_name]
    if threads is not None:
        argv += ["--threads", str(threads)]
    return argv + list(extra_args)


def threads_per_replica(replicas: int, cpus: int | None = None) -> int:
    """CPU threads each of `replicas` replicas on this host may use (`cpus`: the cores this
    process may run on). Each using every core oversubscribes them: two replicas of two
    threads each on two cores run a bf16 matmul of 30 rows ~10x slower than one thread
    each does (oneDNN's threads spin at every barrier while the other process holds the
    core), and the slowdown, paid per pass, makes every timing the controller reads noise."""
    cpus = cpus or len(os.sched_getaffinity(0))
    return max(1, cpus // max(replicas, 1))


class ReplicaSet:
    """The replicas of one local fleet; a context manager that stops them all on exit."""

    def __init__(self, replicas: list[LocalReplica]) -> None:
        self.replicas = replicas

    def __iter__(self):
        return iter(self.replicas)

    def __len__(self) -> int:
        return len(self.replicas)

    def __getitem__(self, index: int) -> LocalReplica:
        return self.replicas[index]

    def stop(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        stop_all([r.process for r in self.replicas], grace)

    def __enter__(self) -> "ReplicaSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_replicas(
    n: int,
    *,
    model: Path,
    draft: Path | None = None,
    method: str = "draft",
    k_max: int = 8,
    max_batch: int = 16,
    max_model_len: int = 2048,
    speculation: SpeculationConfig | None = None,
    admin_token: str | None = None,
    device: Device = "cpu",
    extra_args: Sequence[str] = (),
    served_model_name: str | None = None,
    state_dir: Path | None = None,
    name_prefix: str = "replica",
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
    env: dict[str, str] | None = None,
) -> ReplicaSet:
    """Start `n` replicas and wait until each answers GET /health with 200.

    One at a time: each replica ends its startup with a forward-time calibration sweep that
    the controller's cost model starts from, and sweeps run side by side on shared cores
    (or one GPU) measure each other's contention instead. If any fails, every one already
    started is stopped before the error (ProcessStartError, carrying the failed child's
    last output) propagates. On the CPU each replica gets its share of the cores
    (`threads_per_replica`); `extra_args` may name `--threads` to override it.
    """
    state = Path(state_dir or tempfile.mkdtemp(prefix="specfleet-replicas-"))
    state.mkdir(parents=True, exist_ok=True)
    token = admin_token or secrets.token_urlsafe(24)
    token_file = state / "admin-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    threads = threads_per_replica(n) if device == "cpu" else None
    replicas: list[LocalReplica] = []
    try:
        for i in range(n):
            port = free_port()
            argv = serve_argv(
                model=model, draft=draft, port=port, admin_token_file=token_file, method=method,
                k_max=k_max, max_batch=max_batch, max_model_len=max_model_len,
                speculation=speculation, device=device, served_model_name=served_model_name,
                extra_args=extra_args, threads=threads,
            )
            name = f"{name_prefix}-{i}"
            proc = start_process(name, argv, log_dir=state / "logs", env=env)
            replica = LocalReplica(name=name, port=port, admin_token=token, process=proc)
            replicas.append(replica)
            wait_ready(proc, f"{replica.base_url}/health", timeout=ready_timeout)
    except BaseException:
        stop_all([r.process for r in replicas], grace=2.0)
        raise
    return ReplicaSet(replicas)


__all__ = ["LocalReplica", "ReplicaSet", "ProcessStartError", "start_replicas", "serve_argv", "threads_per_replica"]
