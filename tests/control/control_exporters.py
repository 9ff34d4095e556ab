"""Replica-shaped /metrics endpoints without an engine: the runtime's own RuntimeMetrics,
fed StepReports by the test and served over HTTP by prometheus_client. Used where a test
needs exact, chosen counter values (the runtime's real series, real Prometheus scraping).

Served the way the runtime server serves them: `RuntimeMetrics.exposition()` as text format
0.0.4 whatever the scraper asks for (prometheus_client's own server would negotiate
OpenMetrics with Prometheus and rewrite `vllm:` names to `vllm_`)."""

from __future__ import annotations

from dataclasses import dataclass, field
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from specfleet.local.processes import LOOPBACK, free_port
from specfleet_runtime.engine.api import ForwardTiming, StepReport
from specfleet_runtime.metrics import RuntimeMetrics


@dataclass
class Exporter:
    name: str
    metrics: RuntimeMetrics
    port: int
    _server: object = field(repr=False)
    _thread: object = field(repr=False)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    def stop(self) -> None:
        self._server.shutdown()  # type: ignore[attr-defined]
        self._server.server_close()  # type: ignore[attr-defined]

    def drafting_step(
        self, batch: int, k: int, accepted: list[int], t_target: float, t_draft: float, t_overhead: float = 0.003
    ) -> None:
        """One decode step of `batch` sequences each drafting k tokens; accepted[i] of them
        accepted position i. The step lasts its passes plus `t_overhead`."""
        self.metrics.on_step(
            StepReport(
                decode_batch=batch, k=k, generated_tokens=batch + sum(accepted), num_drafts=batch,
                draft_tokens_per_pos=[batch] * k, accepted_per_pos=list(accepted),
                forward_timings=[ForwardTiming("draft", batch, t_draft, "decode", batch)] * k
                + [ForwardTiming("target", batch * (k + 1), t_target, "verify", batch)],
                decode_seconds=t_target + k * t_draft + t_overhead, decode_forward_seconds=t_target + k * t_draft,
            )
        )


def start_exporter(name: str, *, enabled: bool = True) -> Exporter:
    metrics = RuntimeMetrics("tiny")
    metrics.follow_engine(lambda: 0.0, lambda: 0.0, lambda: _Config(enabled))
    metrics.set_calibration(
        [ForwardTiming("target", n, 0.010 * max(1, n // 4), "decode", n) for n in (1, 2, 4, 8, 16, 32, 64)]
        + [ForwardTiming("target", n, 0.010 * max(1, n // 8), "verify", max(n // 4, 1)) for n in (2, 4, 8, 16, 32, 64)]
        + [ForwardTiming("draft", n, 0.001, "decode", n) for n in (1, 2, 4, 8, 16, 32, 64)]
    )
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer((LOOPBACK, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return Exporter(name, metrics, port, server, thread)


@dataclass
class _Config:
    enabled: bool
    k_max: int = 4

