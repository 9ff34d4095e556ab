"""Startup sweep: forward-pass time of each model over power-of-two token counts, in the
shapes the controller's cost model reads (decode-shaped, and for the target verify-shaped).

Bounded in time: counts run smallest first and the sweep stops at the deadline, so a
slow device reports fewer points rather than a slow start. Passes write only to the
cache's scratch position, so a sweep never disturbs a running sequence.
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
    counts, n = [], 1
    while n < max_tokens:
        counts.append(n)
        n *= 2
    return counts + [n]


def pass_shapes(n: int, max_batch: int, verify: bool) -> list[tuple[int, int]]:
    """(rows, tokens per row) timed for n tokens: n rows of one token while they fit in
    max_batch (beyond, max_batch rows of several), and for the target also n // W rows of
    W = CALIBRATION_VERIFY_WIDTH tokens, the shape its verify passes have, while those rows
    fit (the controller reads a calibrated verify pass of n tokens as that shape)."""
    rows = min(n, max_batch)
    shapes = [(rows, -(-n // rows))]
    verify_rows = max(1, n // CALIBRATION_VERIFY_WIDTH)
    if verify and n > 1 and verify_rows <= max_batch:
        shapes = [s for s in shapes if s[1] == 1] + [(verify_rows, -(-n // verify_rows))]
    return shapes


def calibrate(runners: list[ModelRunner], max_tokens: int, max_batch: int, max_seconds: float) -> list[ForwardTiming]:
    """Median wall time per (model, pass shape, token count); token counts 1, 2, 4, ... up
    to the smallest power of two >= max_tokens, in the shapes of `pass_shapes`."""
    deadline = time.perf_counter() + max_seconds
    results: list[ForwardTiming] = []
    for n in token_counts(max_tokens):
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
                results.append(ForwardTiming(runner.name, n, seconds, pass_shape(width), rows))
    return results
