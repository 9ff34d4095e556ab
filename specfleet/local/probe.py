"""What the live view and the demo summary read from each replica: its /metrics counters.

The controller decides from Prometheus (or its own scrapes) over a long window; the view
wants the last second, so it scrapes the replicas itself and differences two readings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import httpx
from prometheus_client.parser import text_string_to_metric_families

from specfleet.contract import Metric


@dataclass(frozen=True)
class ReplicaCounters:
    """Cumulative counters of one replica at one moment (plus the instant gauges)."""

    time: float
    generation_tokens: float = 0.0
    decode_steps: float = 0.0  # observations of specfleet_decode_batch_size
    decode_batch_sum: float = 0.0
    step_k_sum: float = 0.0
    step_k_zero: float = 0.0  # decode steps that ran with K=0
    draft_tokens: float = 0.0
    accepted_tokens: float = 0.0
    running: float = 0.0
    waiting: float = 0.0


_CUMULATIVE = ("generation_tokens", "decode_steps", "decode_batch_sum", "step_k_sum", "step_k_zero", "draft_tokens", "accepted_tokens")


def parse_counters(text: str, time: float) -> ReplicaCounters:
    """Read the counters the view needs from Prometheus exposition text (summed over labels)."""
    wanted = {
        Metric.GENERATION_TOKENS: "generation_tokens",
        Metric.DECODE_BATCH_SIZE + "_count": "decode_steps",
        Metric.DECODE_BATCH_SIZE + "_sum": "decode_batch_sum",
        Metric.STEP_K + "_sum": "step_k_sum",
        Metric.NUM_DRAFT_TOKENS: "draft_tokens",
        Metric.NUM_ACCEPTED_TOKENS: "accepted_tokens",
        Metric.REQUESTS_RUNNING: "running",
        Metric.REQUESTS_WAITING: "waiting",
    }
    values = {name: 0.0 for name in wanted.values()} | {"step_k_zero": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                values[wanted[sample.name]] += sample.value
            elif sample.name == Metric.STEP_K + "_bucket" and _is_zero_bucket(sample.labels.get("le")):
                values["step_k_zero"] += sample.value
    return ReplicaCounters(time=time, **values)


def _is_zero_bucket(le: str | None) -> bool:
    try:
        return le is not None and float(le) == 0.0
    except ValueError:
        return False


@dataclass(frozen=True)
class ReplicaRates:
    """What a replica did between two readings; None where nothing happened to measure."""

    seconds: float
    tokens_per_s: float
    decode_steps: float
    mean_batch: float | None
    mean_k: float | None
    speculating_fraction: float | None  # share of decode steps with K > 0
    acceptance: float | None  # accepted / drafted tokens
    running: float
    waiting: float


def rates(old: ReplicaCounters, new: ReplicaCounters) -> ReplicaRates:
    """The difference of two readings of the same replica, as rates and means.

    A counter that went down means the replica restarted in between; its new total is then
    the increase (Prometheus' own `increase()` rule).
    """
    d = {}
    for f in fields(ReplicaCounters):
        if f.name in _CUMULATIVE:
            before, after = getattr(old, f.name), getattr(new, f.name)
            d[f.name] = after - before if after >= before else after
    seconds = max(new.time - old.time, 1e-9)
    steps = d["decode_steps"]
    return ReplicaRates(
        seconds=seconds,
        tokens_per_s=d["generation_tokens"] / seconds,
        decode_steps=steps,
        mean_batch=d["decode_batch_sum"] / steps if steps else None,
        mean_k=d["step_k_sum"] / steps if steps else None,
        speculating_fraction=(steps - d["step_k_zero"]) / steps if steps else None,
        acceptance=d["accepted_tokens"] / d["draft_tokens"] if d["draft_tokens"] else None,
        running=new.running,
        waiting=new.waiting,
    )


async def scrape(client: httpx.AsyncClient, base_url: str, time: float) -> ReplicaCounters | None:
    """One reading of a replica, or None when it does not answer."""
    try:
        response = await client.get(base_url.rstrip("/") + "/metrics")
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    counters = parse_counters(response.text, time)
    return counters if all(math.isfinite(getattr(counters, f.name)) for f in fields(counters)) else None
