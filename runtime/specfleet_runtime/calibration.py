"""Startup sweep: forward-pass time of each model over power-of-two token counts.

Bounded in time: counts run smallest first and the sweep stops at the deadline, so a
slow device reports fewer points rather than a slow start. Passes write only to the
cache's scratch position, so a sweep never disturbs a running sequence.
"""

from __future__ import annotations

import statistics
import time

from .engine.api import ForwardTiming
from .engine.runner import ModelRunner

REPEATS = 3
CONTEXT = 128  # cache positions each pass attends over: a short, typical context


def token_counts(max_tokens: int) -> list[int]:
    counts, n = [], 1
    while n < max_tokens:
        counts.append(n)
        n *= 2
    return counts + [n]


def calibrate(runners: list[ModelRunner], max_tokens: int, max_batch: int, max_seconds: float) -> list[ForwardTiming]:
    """Median wall time per (model, token count); token counts 1, 2, 4, ... up to the
    smallest power of two >= max_tokens, as a batch of min(n, max_batch) rows."""
    deadline = time.perf_counter() + max_seconds
    results: list[ForwardTiming] = []
    for n in token_counts(max_tokens):
        for runner in runners:
            if time.perf_counter() > deadline:
                return results
            batch = min(n, max_batch)
            width = -(-n // batch)
            span = min(CONTEXT + width, runner.max_cache_len - 1)
            timings: list[ForwardTiming] = []
            runner.timed_pass(batch, width, span, timings)  # warm-up
            timings.clear()
            for _ in range(REPEATS):
                runner.timed_pass(batch, width, span, timings)
            results.append(ForwardTiming(runner.name, n, statistics.median(t.seconds for t in timings)))
    return results
