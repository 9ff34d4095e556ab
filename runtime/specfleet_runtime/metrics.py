"""Prometheus series for one replica (DESIGN.md §3): engine steps in, contract names out.

One CollectorRegistry per server, so several servers in one process (tests, benchmarks)
never share counters. Engine-level series come from StepReports (called on the engine
thread; prometheus_client is thread-safe); request-level latencies come from each
request's event stream through a RequestTimer.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from specfleet.contract import Metric, token_bucket
from specfleet_runtime.engine.api import ForwardTiming, RequestOutput, StepReport

if TYPE_CHECKING:
    from specfleet.contract import SpeculationConfig

# K and decode batch sizes are small integers: one bucket per value where the controller
# needs exact counts (K up to 16, batch up to 16), coarser above.
STEP_K_BUCKETS = tuple(range(0, 17)) + (24, 32, 48, 64)
DECODE_BATCH_BUCKETS = tuple(range(1, 17)) + (20, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
FORWARD_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# vLLM's request-latency buckets, extended downwards for fast GPUs.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0)


class RuntimeMetrics:
    """Every contract series for one served model; `on_step` makes it an engine StepObserver."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry()
        name_label = [Metric.MODEL_NAME_LABEL]
        per_pos = [Metric.MODEL_NAME_LABEL, Metric.POSITION_LABEL]
        per_pass = [Metric.MODEL_NAME_LABEL, Metric.MODEL_LABEL, Metric.SHAPE_LABEL, Metric.TOKENS_LABEL]

        # Series labelled by model_name only are created at once, so a scrape shows zeros
        # (not absent series) before the first request; per-position/per-pass ones on use.
        def born(metric, labels: list[str]):
            if labels == name_label:
                metric.labels(model_name)
            return metric

        def counter(name: str, doc: str, labels: list[str] = name_label) -> Counter:
            # prometheus_client adds "_total" itself; the contract names already carry it.
            return born(Counter(name.removesuffix("_total"), doc, labels, registry=self.registry), labels)

        def gauge(name: str, doc: str, labels: list[str] = name_label) -> Gauge:
            return born(Gauge(name, doc, labels, registry=self.registry), labels)

        def histogram(name: str, doc: str, buckets: Iterable[float], labels: list[str] = name_label) -> Histogram:
            return born(Histogram(name, doc, labels, buckets=tuple(buckets), registry=self.registry), labels)

        self.running = gauge(Metric.REQUESTS_RUNNING, "Requests in the running batch (prefill or decode).")
        self.waiting = gauge(Metric.REQUESTS_WAITING, "Requests queued for admission.")
        self.generation_tokens = counter(Metric.GENERATION_TOKENS, "Generated (output) tokens.")
        self.prompt_tokens = counter(Metric.PROMPT_TOKENS, "Prefilled prompt tokens.")
        self.ttft = histogram(Metric.TTFT, "Time from arrival to the first output token.", TTFT_BUCKETS)
        self.tpot = histogram(
            Metric.TPOT, "Per request: mean time per output token after the first.", TPOT_BUCKETS
        )
        self.e2e = histogram(Metric.E2E_LATENCY, "Time from arrival to the last output token.", E2E_BUCKETS)
        self.num_drafts = counter(Metric.NUM_DRAFTS, "Sequence-steps that proposed at least one draft token.")
        self.num_draft_tokens = counter(Metric.NUM_DRAFT_TOKENS, "Draft tokens proposed.")
        self.num_accepted = counter(Metric.NUM_ACCEPTED_TOKENS, "Draft tokens accepted.")
        self.accepted_per_pos = counter(
            Metric.ACCEPTED_PER_POS, "Draft tokens accepted at each draft position.", per_pos
        )
        self.draft_tokens_per_pos = counter(
            Metric.DRAFT_TOKENS_PER_POS, "Draft tokens proposed at each draft position.", per_pos
        )
        self.speculation_enabled = gauge(Metric.SPECULATION_ENABLED, "1 when speculation is enabled.")
        self.speculation_k_max = gauge(Metric.SPECULATION_K_MAX, "Largest K the schedule may use.")
        self.decode_batch = histogram(
            Metric.DECODE_BATCH_SIZE, "Sequences in the decode phase, one observation per decode step.",
            DECODE_BATCH_BUCKETS,
        )
        self.step_k = histogram(Metric.STEP_K, "Draft length K per decode step (0: no speculation).", STEP_K_BUCKETS)
        self.forward = histogram(
            Metric.FORWARD_DURATION, "Forward pass wall time by model, pass shape and power-of-two token bucket.",
            FORWARD_BUCKETS, per_pass,
        )
        self.forward_tokens = counter(
            Metric.FORWARD_TOKENS, "Tokens in the forward passes of specfleet_forward_duration_seconds.", per_pass
        )
        self.forward_rows = counter(
            Metric.FORWARD_ROWS, "Sequences (rows) in the forward passes of specfleet_forward_duration_seconds.", per_pass
        )
        per_step_kind = [Metric.MODEL_NAME_LABEL, Metric.K_LABEL, Metric.BATCH_LABEL]
        self.step_duration = histogram(
            Metric.STEP_DURATION,
            "Decode step wall time (the step less its prefill) by K and power-of-two decode batch bucket.",
            FORWARD_BUCKETS, per_step_kind,
        )
        self.step_forward = counter(
            Metric.STEP_FORWARD_SECONDS,
            "Forward-pass seconds inside the decode steps of specfleet_step_duration_seconds.", per_step_kind,
        )
        self.calibrated = gauge(
            Metric.CALIBRATED_FORWARD, "Startup calibration: forward seconds by model, pass shape and token bucket.", per_pass
        )

    # -- engine thread -------------------------------------------------------------------

    def on_step(self, report: StepReport) -> None:
        name = self.model_name
        if report.generated_tokens:
            self.generation_tokens.labels(name).inc(report.generated_tokens)
        if report.prefill_tokens:
            self.prompt_tokens.labels(name).inc(report.prefill_tokens)
        if report.decode_batch > 0:
            self.decode_batch.labels(name).observe(report.decode_batch)
            self.step_k.labels(name).observe(report.k)
            if report.decode_seconds is not None:
                kind = (name, str(report.k), str(token_bucket(report.decode_batch)))
                self.step_duration.labels(*kind).observe(report.decode_seconds)
                self.step_forward.labels(*kind).inc(report.decode_forward_seconds)
        if report.num_drafts:
            self.num_drafts.labels(name).inc(report.num_drafts)
        drafted, accepted = report.draft_tokens_per_pos, report.accepted_per_pos
        if sum(drafted):
            self.num_draft_tokens.labels(name).inc(sum(drafted))
            self.num_accepted.labels(name).inc(sum(accepted))
            for pos, (n_draft, n_acc) in enumerate(zip(drafted, accepted, strict=True)):
                self.draft_tokens_per_pos.labels(name, str(pos)).inc(n_draft)
                self.accepted_per_pos.labels(name, str(pos)).inc(n_acc)
        for timing in report.forward_timings:
            kind = (name, timing.model, timing.shape, str(token_bucket(timing.tokens)))
            self.forward.labels(*kind).observe(timing.seconds)
            self.forward_tokens.labels(*kind).inc(timing.tokens)
            self.forward_rows.labels(*kind).inc(timing.rows)

    # -- server side ---------------------------------------------------------------------

    def follow_engine(
        self, num_running: Callable[[], float], num_waiting: Callable[[], float],
        speculation: Callable[[], "SpeculationConfig"],
    ) -> None:
        """Read queue depths and the speculation config live at scrape time, so the gauges
        are right even while the engine is idle (no steps, no reports) or just switched."""
        self.running.labels(self.model_name).set_function(num_running)
        self.waiting.labels(self.model_name).set_function(num_waiting)
        self.speculation_enabled.labels(self.model_name).set_function(lambda: float(speculation().enabled))
        self.speculation_k_max.labels(self.model_name).set_function(lambda: float(speculation().k_max))

    def set_calibration(self, timings: Iterable[ForwardTiming]) -> None:
        """Export the startup sweep; repeated passes in one bucket give their median."""
        grouped: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        for timing in timings:
            grouped[(timing.model, timing.shape, token_bucket(timing.tokens))].append(timing.seconds)
        for (model, shape, bucket), seconds in grouped.items():
            self.calibrated.labels(self.model_name, model, shape, str(bucket)).set(statistics.median(seconds))

    def request_timer(self) -> "RequestTimer":
        return RequestTimer(self)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimer:
    """Latency of one request, from its events; call `on_output` as each event arrives."""

    def __init__(self, metrics: RuntimeMetrics, clock: Callable[[], float] = time.perf_counter) -> None:
        self._metrics = metrics
        self._clock = clock
        self._arrival = clock()
        self._first: float | None = None

    def on_output(self, output: RequestOutput) -> None:
        t = self._clock()
        if self._first is None and output.new_token_ids:
            self._first = t
            self._metrics.ttft.labels(self._metrics.model_name).observe(t - self._arrival)
        if output.finished and output.finish_reason != "abort" and self._first is not None:
            name = self._metrics.model_name
            self._metrics.e2e.labels(name).observe(t - self._arrival)
            if output.completion_tokens > 1:
                self._metrics.tpot.labels(name).observe((t - self._first) / (output.completion_tokens - 1))
