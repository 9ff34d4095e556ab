"""Where a replica's window of measurements comes from: Prometheus, or the replicas themselves.

Both sources reduce to the same thing: per replica, the *increase* of every counter and
histogram series over the window, and the *latest* value of the gauges; `to_window` turns
that into the numbers the policy needs. A replica absent from a fetch's result has no fresh
data (its series are stale or it could not be scraped): the controller keeps what is in
force for it. A source that cannot answer at all raises MetricsUnavailable.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from specfleet.contract import Metric
from specfleet_operator.control.http_client import replica_client
from specfleet_operator.control.policy import PassKind, PassTotals

# sample name -> [(labels, value)]
Samples = dict[str, list[tuple[dict[str, str], float]]]

ACCEPTED = Metric.ACCEPTED_PER_POS
DRAFTED = Metric.DRAFT_TOKENS_PER_POS
FORWARD_SUM = Metric.FORWARD_DURATION + "_sum"
FORWARD_COUNT = Metric.FORWARD_DURATION + "_count"
FORWARD_TOKENS = Metric.FORWARD_TOKENS
FORWARD_ROWS = Metric.FORWARD_ROWS
BATCH_BUCKET = Metric.DECODE_BATCH_SIZE + "_bucket"
STEP_K_BUCKET = Metric.STEP_K + "_bucket"
STEP_SUM = Metric.STEP_DURATION + "_sum"
STEP_COUNT = Metric.STEP_DURATION + "_count"
STEP_FORWARD = Metric.STEP_FORWARD_SECONDS
COUNTERS = (
    ACCEPTED, DRAFTED, FORWARD_SUM, FORWARD_COUNT, FORWARD_TOKENS, FORWARD_ROWS,
    BATCH_BUCKET, STEP_K_BUCKET, STEP_SUM, STEP_COUNT, STEP_FORWARD,
)
GAUGES = (Metric.CALIBRATED_FORWARD, Metric.SPECULATION_ENABLED)
# The labels each family is kept by (besides the replica); everything else is summed away.
KEEP_LABELS: dict[str, tuple[str, ...]] = {
    ACCEPTED: (Metric.POSITION_LABEL,),
    DRAFTED: (Metric.POSITION_LABEL,),
    FORWARD_SUM: (Metric.MODEL_LABEL, Metric.SHAPE_LABEL, Metric.TOKENS_LABEL),
    FORWARD_COUNT: (Metric.MODEL_LABEL, Metric.SHAPE_LABEL, Metric.TOKENS_LABEL),
    FORWARD_TOKENS: (Metric.MODEL_LABEL, Metric.SHAPE_LABEL, Metric.TOKENS_LABEL),
    FORWARD_ROWS: (Metric.MODEL_LABEL, Metric.SHAPE_LABEL, Metric.TOKENS_LABEL),
    BATCH_BUCKET: ("le",),
    STEP_K_BUCKET: ("le",),
    STEP_SUM: (Metric.K_LABEL, Metric.BATCH_LABEL),
    STEP_COUNT: (Metric.K_LABEL, Metric.BATCH_LABEL),
    STEP_FORWARD: (Metric.K_LABEL, Metric.BATCH_LABEL),
    Metric.CALIBRATED_FORWARD: (Metric.MODEL_LABEL, Metric.SHAPE_LABEL, Metric.TOKENS_LABEL),
    Metric.SPECULATION_ENABLED: (),
}


class MetricsUnavailable(Exception):
    """The source could not answer; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class ReplicaWindow:
    """One replica's measurements over the window (counters as increases)."""

    accepted_per_pos: list[float] = field(default_factory=list)  # index = draft position
    draft_tokens_per_pos: list[float] = field(default_factory=list)
    # (model, pass shape) -> token bucket -> passes / calibrated seconds
    forward: dict[PassKind, dict[int, PassTotals]] = field(default_factory=dict)
    calibrated: dict[PassKind, dict[int, float]] = field(default_factory=dict)
    batch_histogram: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative)
    step_k_histogram: list[tuple[float, float]] = field(default_factory=list)
    # (K, batch bucket) -> (step wall seconds, forward seconds inside those steps, steps)
    steps: dict[tuple[int, int], tuple[float, float, float]] = field(default_factory=dict)
    speculation_enabled: bool | None = None

    @property
    def decode_steps(self) -> float:
        return max((c for _, c in self.batch_histogram), default=0.0)

    def mean_step_k(self) -> float | None:
        """Mean K per decode step, from the step-K histogram (one bucket per small K)."""
        total, weighted, prev_le, prev = 0.0, 0.0, -1.0, 0.0
        for le, cumulative in sorted(self.step_k_histogram):
            mass = cumulative - prev
            if mass > 0 and not math.isinf(le):
                weighted += mass * le
                total += mass
            elif mass > 0:
                weighted += mass * prev_le
                total += mass
            prev_le, prev = le, max(prev, cumulative)
        return weighted / total if total > 0 else None


class MetricsSource(Protocol):
    async def fetch(self, replicas: Mapping[str, str], window_s: float) -> dict[str, ReplicaWindow]:
        """Windows for the replicas (name -> base URL) that have fresh data; raises
        MetricsUnavailable when the source cannot answer at all."""
        ...


def _positions(samples: list[tuple[dict[str, str], float]]) -> list[float]:
    by_pos = {int(labels[Metric.POSITION_LABEL]): value for labels, value in samples}
    return [by_pos.get(i, 0.0) for i in range(max(by_pos) + 1)] if by_pos else []


def _per_pass(samples: list[tuple[dict[str, str], float]]) -> dict[PassKind, dict[int, float]]:
    out: dict[PassKind, dict[int, float]] = defaultdict(dict)
    for labels, value in samples:
        kind = (labels[Metric.MODEL_LABEL], labels.get(Metric.SHAPE_LABEL, ""))
        bucket = int(labels[Metric.TOKENS_LABEL])
        out[kind][bucket] = out[kind].get(bucket, 0.0) + value
    return dict(out)


def _buckets(samples: list[tuple[dict[str, str], float]]) -> list[tuple[float, float]]:
    merged: dict[float, float] = defaultdict(float)
    for labels, value in samples:
        merged[float(labels["le"])] += value
    return sorted(merged.items())


def _per_step_kind(samples: list[tuple[dict[str, str], float]]) -> dict[tuple[int, int], float]:
    out: dict[tuple[int, int], float] = defaultdict(float)
    for labels, value in samples:
        out[(int(labels[Metric.K_LABEL]), int(labels[Metric.BATCH_LABEL]))] += value
    return dict(out)


def to_window(increases: Samples, gauges: Samples) -> ReplicaWindow:
    sums, counts = _per_pass(increases.get(FORWARD_SUM, [])), _per_pass(increases.get(FORWARD_COUNT, []))
    tokens, rows = _per_pass(increases.get(FORWARD_TOKENS, [])), _per_pass(increases.get(FORWARD_ROWS, []))
    forward = {
        kind: {
            b: PassTotals(sums.get(kind, {}).get(b, 0.0), n, tokens.get(kind, {}).get(b, 0.0), rows.get(kind, {}).get(b, 0.0))
            for b, n in per_bucket.items()
        }
        for kind, per_bucket in counts.items()
    }
    step_sums, step_counts = _per_step_kind(increases.get(STEP_SUM, [])), _per_step_kind(increases.get(STEP_COUNT, []))
    step_forward = _per_step_kind(increases.get(STEP_FORWARD, []))
    enabled = [value for _, value in gauges.get(Metric.SPECULATION_ENABLED, [])]
    return ReplicaWindow(
        accepted_per_pos=_positions(increases.get(ACCEPTED, [])),
        draft_tokens_per_pos=_positions(increases.get(DRAFTED, [])),
        forward=forward,
        calibrated=_per_pass(gauges.get(Metric.CALIBRATED_FORWARD, [])),
        batch_histogram=_buckets(increases.get(BATCH_BUCKET, [])),
        step_k_histogram=_buckets(increases.get(STEP_K_BUCKET, [])),
        steps={kind: (step_sums.get(kind, 0.0), step_forward.get(kind, 0.0), n) for kind, n in step_counts.items()},
        speculation_enabled=bool(max(enabled)) if enabled else None,
    )


# ---------------------------------------------------------------------------- Prometheus


def _duration(seconds: float) -> str:
    return f"{max(int(math.ceil(seconds)), 1)}s"


def _label_matchers(labels: Mapping[str, str], replica_label: str, replicas: "Iterable[str]") -> str:
    quote = lambda v: v.replace("\\", "\\\\").replace('"', '\\"')  # noqa: E731
    parts = [f'{k}="{quote(v)}"' for k, v in sorted(labels.items())]
    parts.append(f'{replica_label}=~"{quote("|".join(re.escape(r) for r in sorted(replicas)))}"')
    return "{" + ",".join(parts) + "}"


class PrometheusSource:
    """PromQL over the window, one query per metric family for the whole deployment.

    `selector` holds label matchers that pick the deployment's series (e.g. namespace);
    `replica_label` is the label naming the replica (`pod` for a PodMonitor and locally).
    Freshness comes from the instant `specfleet_speculation_enabled` gauge: Prometheus
    marks a target's series stale as soon as its scrape fails, so a replica that stopped
    answering drops out of that query at the next scrape.
    """

    def __init__(
        self,
        url: str,
        selector: Mapping[str, str] | None = None,
        *,
        replica_label: str = "pod",
        timeout_s: float = 5.0,
    ) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url
        self.selector = dict(selector or {})
        self.replica_label = replica_label
        self._timeout = timeout_s
        self._client = PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=0), timeout=timeout_s)
        # No retries here: the controller's next tick is the retry, and a tick must stay short.

    def queries(self, replicas: "Iterable[str]", window_s: float) -> dict[str, str]:
        """Sample name -> PromQL; exposed so tests can see one query covers every replica."""
        matchers = _label_matchers(self.selector, self.replica_label, replicas)
        window = _duration(window_s)
        out = {}
        for name in COUNTERS:
            by = ", ".join((self.replica_label, *KEEP_LABELS[name]))
            out[name] = f"sum by ({by}) (increase({name}{matchers}[{window}]))"
        for name in GAUGES:
            by = ", ".join((self.replica_label, *KEEP_LABELS[name]))
            out[name] = f"max by ({by}) ({name}{matchers})"
        return out

    def _query_all(self, queries: dict[str, str]) -> dict[str, list[dict]]:
        from prometheus_api_client.exceptions import PrometheusApiClientException

        # One evaluation time for every query, so the families describe the same window.
        params = {"time": f"{time.time():.3f}"}
        results = {}
        for name, promql in queries.items():
            try:
                results[name] = self._client.custom_query(promql, params=params)
            except PrometheusApiClientException as exc:
                raise MetricsUnavailable("PrometheusQueryFailed", f"{self.url}: {exc}") from exc
            except Exception as exc:  # requests' connection errors and timeouts
                raise MetricsUnavailable(
                    "PrometheusUnreachable", f"{self.url}: {type(exc).__name__}: {exc}"
                ) from exc
        return results

    async def fetch(self, replicas: Mapping[str, str], window_s: float) -> dict[str, ReplicaWindow]:
        if not replicas:
            return {}
        results = await asyncio.to_thread(self._query_all, self.queries(replicas, window_s))
        increases: dict[str, Samples] = defaultdict(lambda: defaultdict(list))
        gauges: dict[str, Samples] = defaultdict(lambda: defaultdict(list))
        for name, series in results.items():
            target = gauges if name in GAUGES else increases
            for item in series:
                labels = dict(item["metric"])
                value = float(item["value"][1])
                replica = labels.pop(self.replica_label, None)
                if replica is not None and math.isfinite(value):
                    target[replica][name].append((labels, value))
        fresh = {r for r, g in gauges.items() if g.get(Metric.SPECULATION_ENABLED)}
        return {r: to_window(increases.get(r, {}), gauges[r]) for r in replicas if r in fresh}


# ---------------------------------------------------------------------------- direct scrape

Snapshot = dict[tuple[str, frozenset[tuple[str, str]]], float]


WANTED_SAMPLES = frozenset(COUNTERS) | frozenset(GAUGES)


def _sample_name(line: str) -> str:
    return line.split("{", 1)[0].split(" ", 1)[0]


def parse_exposition(text: str) -> Snapshot:
    """Prometheus text -> {(sample name, labels): value} for the series the policy reads.

    Only those samples' lines reach the parser: it costs ~10 µs a line, and most of a
    replica's lines are families the policy never reads (latency histograms, process
    metrics). Without their TYPE lines the samples parse as untyped, under the same names."""
    lines = [line for line in text.splitlines() if line and line[0] != "#" and _sample_name(line) in WANTED_SAMPLES]
    out: Snapshot = {}
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name in WANTED_SAMPLES:
                out[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return out


def snapshot_delta(old: Snapshot | None, new: Snapshot) -> tuple[Samples, Samples]:
    """Counter increases from `old` to `new` (a drop means the replica restarted: count from
    zero) and the gauges as of `new`."""
    increases: Samples = defaultdict(list)
    gauges: Samples = defaultdict(list)
    for (name, labels), value in new.items():
        if name in GAUGES:
            gauges[name].append((dict(labels), value))
            continue
        before = old.get((name, labels), 0.0) if old is not None else value
        increases[name].append((dict(labels), value - before if value >= before else value))
    return increases, gauges


class ScrapeSource:
    """Scrape each replica's /metrics directly; windows are deltas between kept snapshots.

    For setups without Prometheus. The first fetch of a replica has no earlier snapshot,
    so its counters show no increase yet (the policy then runs on calibration and prior).
    """

    def __init__(self, *, timeout_s: float = 3.0, max_parallel: int = 16) -> None:
        self._timeout = timeout_s
        self._limit = asyncio.Semaphore(max_parallel)
        self._history: dict[str, deque[tuple[float, Snapshot]]] = defaultdict(deque)

    async def _scrape(self, client: httpx.AsyncClient, base_url: str) -> Snapshot | None:
        async with self._limit:
            try:
                response = await client.get(base_url.rstrip("/") + "/metrics")
                response.raise_for_status()
                return await asyncio.to_thread(parse_exposition, response.text)
            except (httpx.HTTPError, ValueError):
                return None

    async def fetch(self, replicas: Mapping[str, str], window_s: float) -> dict[str, ReplicaWindow]:
        async with replica_client(self._timeout) as client:
            snapshots = await asyncio.gather(*(self._scrape(client, url) for url in replicas.values()))
        if replicas and all(s is None for s in snapshots):
            raise MetricsUnavailable("ScrapeFailed", "no replica answered GET /metrics")
        now = time.monotonic()
        out = {}
        for replica, snapshot in zip(replicas, snapshots):
            if snapshot is None:
                continue
            history = self._history[replica]
            while len(history) > 1 and now - history[1][0] >= window_s:
                history.popleft()
            base = history[0][1] if history else None
            out[replica] = to_window(*snapshot_delta(base, snapshot))
            history.append((now, snapshot))
        for gone in set(self._history) - set(replicas):
            del self._history[gone]
        return out
