"""A real Prometheus on loopback for the local fleet and for integration tests.

The config uses file-based service discovery: the scrape targets live in a JSON file that
`set_targets` rewrites atomically whenever replicas come or go, and Prometheus picks the
change up by itself (inotify where it works, and a re-read every scrape interval); no reload
needed. Prometheus applies discovered changes at most every 5 s (its discovery and scrape
managers throttle updates), so a target added while it runs is scraped within ~5-6 s, and
one written before `start()` from the first scrape.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

from specfleet.local.processes import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    start_process,
    stop_process,
    wait_ready,
)

PROMETHEUS_ENV = "SPECFLEET_PROMETHEUS"
JOB_NAME = "specfleet"
# The label a target's replica name goes in: the same one a PodMonitor gives a pod's series
# on a cluster, so a PromQL selector written for the cluster works locally unchanged.
REPLICA_LABEL = "pod"


def find_prometheus() -> Path | None:
    """The `prometheus` binary: $SPECFLEET_PROMETHEUS if set, else the one on PATH."""
    override = os.environ.get(PROMETHEUS_ENV)
    if override:
        path = Path(override)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("prometheus")
    return Path(found) if found else None


@dataclass(frozen=True)
class ScrapeTarget:
    name: str  # replica name, exported as the `pod` label
    address: str  # host:port serving /metrics
    labels: Mapping[str, str] | None = None


def render_config(*, targets_file: Path, scrape_interval: float, job: str = JOB_NAME) -> dict:
    """The prometheus.yml content: one job whose targets come from `targets_file`."""
    interval = _duration(scrape_interval)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "metrics_path": "/metrics",
                # Re-read as often as we scrape: inotify on the targets file does not fire on
                # every filesystem (overlayfs, bind mounts), and a new replica should not
                # wait minutes to be scraped.
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": interval}],
            }
        ],
    }


def render_targets(targets: list[ScrapeTarget]) -> list[dict]:
    """The file_sd JSON: one group per target so each carries its own replica label."""
    return [
        {"targets": [t.address], "labels": {REPLICA_LABEL: t.name, **dict(t.labels or {})}}
        for t in targets
    ]


def _duration(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    if millis < 1:
        raise ValueError("scrape interval must be at least 1ms")
    return f"{millis}ms"


class LocalPrometheus:
    """A `prometheus` child process with its config, targets file and TSDB in `state_dir`.

    `stop()` then `start()` brings it back on the same port with the same data, which is
    what a test of the controller's behaviour during a metrics outage needs.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        scrape_interval: float = 1.0,
        port: int | None = None,
        enable_lifecycle: bool = False,
        binary: Path | None = None,
        retention: str = "1h",
    ) -> None:
        found = binary or find_prometheus()
        if found is None:
            raise FileNotFoundError(
                f"no prometheus binary on PATH (install Debian's `prometheus` or set ${PROMETHEUS_ENV})"
            )
        self.binary = found
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="specfleet-prometheus-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.scrape_interval = scrape_interval
        self.port = port or free_port()
        self.enable_lifecycle = enable_lifecycle
        self.retention = retention
        self.config_path = self.state_dir / "prometheus.yml"
        self.targets_path = self.state_dir / "targets.json"
        self.data_dir = self.state_dir / "data"
        self._process: ManagedProcess | None = None
        self._targets: list[ScrapeTarget] = []
        self._write_targets()
        self.config_path.write_text(
            yaml.safe_dump(
                render_config(targets_file=self.targets_path, scrape_interval=scrape_interval),
                sort_keys=False,
            )
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def process(self) -> ManagedProcess | None:
        return self._process

    def running(self) -> bool:
        return self._process is not None and self._process.alive()

    def argv(self) -> list[str]:
        args = [
            str(self.binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log.level=warn",
        ]
        if self.enable_lifecycle:
            args.append("--web.enable-lifecycle")
        return args

    def start(self, *, timeout: float = 30.0) -> "LocalPrometheus":
        """Start the process (if not running) and wait until /-/ready answers 200."""
        if not self.running():
            self._process = start_process("prometheus", self.argv(), log_dir=self.state_dir)
        self.wait_ready(timeout=timeout)
        return self

    def wait_ready(self, *, timeout: float = 30.0) -> None:
        if self._process is None:
            raise RuntimeError("prometheus is not started")
        wait_ready(self._process, f"{self.url}/-/ready", timeout=timeout)

    def stop(self, grace: float = 5.0) -> None:
        if self._process is not None:
            stop_process(self._process, grace)
            self._process = None

    def restart(self, *, timeout: float = 30.0) -> "LocalPrometheus":
        self.stop()
        return self.start(timeout=timeout)

    def close(self) -> None:
        """Stop, and remove the state directory if this object created it."""
        self.stop()
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def set_targets(self, targets: list[ScrapeTarget]) -> None:
        """Replace the scrape targets; Prometheus notices the file change on its own."""
        self._targets = list(targets)
        self._write_targets()

    @property
    def targets(self) -> list[ScrapeTarget]:
        return list(self._targets)

    def _write_targets(self) -> None:
        # Write-then-rename, so Prometheus never reads a half-written file.
        tmp = self.targets_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(render_targets(self._targets), indent=1))
        os.replace(tmp, self.targets_path)

    def __enter__(self) -> "LocalPrometheus":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
