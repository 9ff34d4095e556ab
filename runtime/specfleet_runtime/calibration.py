"""Startup sweep: forward-pass time of each model over power-of-two token counts, in the
shapes the controller's cost model reads: decode-shaped (n rows of one token, while they
fit in max_batch) for both models, and for the target verify-shaped too (n // W rows of
W = CALIBRATION_VERIFY_WIDTH tokens, while those rows fit).

Bounded in time: the sweep stops at the deadline, so a slow device reports fewer points
rather than a slow start. It takes the counts from both ends inwards (1, the largest, 2,
the next largest, ...): the ends are what the controller cannot interpolate, and the
largest is where speculation stops paying, so a cut sweep loses middle points, which
interpolate. Passes write only to the cache's scratch position, so a sweep never
disturbs a running sequence.
"""

from __future__ import annotations

import statistics
import time

from specfleet.contract import CALIBRATION_VERIFY_WIDTH

from .engine.api import ForwardTiming, pass_shape
from .engine.runner import ModelRunner

REPEATS = 3
CONTEXT = 128  # cache positions each pass attends over: a short, typical context


def token_counts(max_tokens: int) -> list[int]:
    """1, 2, 4, ... up to the smallest power of two >= max_tokens."""
    counts, n = [], 1
    while n < max_tokens:
        counts.append(n)
        n *= 2
    return counts + [n]


def ends_inwards(counts: list[int]) -> list[int]:
    """counts[0], counts[-1], counts[1], counts[-2], ..."""
    order = []
    lo, hi = 0, len(counts) - 1
    while lo <= hi:
        order.append(counts[lo])
        if hi != lo:
            order.append(counts[hi])
        lo, hi = lo + 1, hi - 1
    return order


def pass_shapes(n: int, max_batch: int, verify: bool) -> list[tuple[int, int]]:
    """(rows, tokens per row) timed for n tokens: n rows of one token while n <= max_batch
    (the last power of two past max_batch as max_batch rows), and for the target also n // W
    rows of W tokens while those rows fit in max_batch (the controller reads a calibrated
    verify pass of n tokens as that shape)."""
    shapes = [(min(n, max_batch), 1)] if n // 2 < max_batch else []
    verify_rows = n // CALIBRATION_VERIFY_WIDTH
    if verify and 1 <= verify_rows <= max_batch:
        shapes.append((verify_rows, CALIBRATION_VERIFY_WIDTH))
    return shapes


def calibrate(runners: list[ModelRunner], max_batch: int, max_seconds: float) -> list[ForwardTiming]:
    """Median wall time per (model, pass shape, token count) over the shapes of `pass_shapes`."""
    deadline = time.perf_counter() + max_seconds
    results: list[ForwardTiming] = []
    for n in ends_inwards(token_counts(CALIBRATION_VERIFY_WIDTH * max_batch)):
        for runner in runners:
            for rows, width in pass_shapes(n, max_batch, verify=runner.name == "target"):
                if time.perf_counter() > deadline:
                    return results
                span = min(CONTEXT + width, runner.max_cache_len - 1)
                timings: list[ForwardTiming] = []
                runner.timed_pass(rows, width, span, timings)  # warm-up
                timings.clear()
                for _ in range(REPEATS):
                    runner.timed_pass(rows, width, span, timings)
                seconds = statistics.median(t.seconds for t in timings)
                results.append(ForwardTiming(runner.name, rows * width, seconds, pass_shape(width), rows))
    return results
