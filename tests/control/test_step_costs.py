"""What the controller costs a step from: a replica's window, remembered passes and its calibration."""

from __future__ import annotations

import pytest

from specfleet_operator.control import policy
from specfleet_operator.control.controller import _step_costs
from specfleet_operator.control.metrics_source import ReplicaWindow
from specfleet_operator.control.policy import PassTotals, PolicyParams

PARAMS = PolicyParams(k_max=4, max_batch=16, min_samples=8)
CALIBRATED = {
    ("target", "decode"): {1: 0.010, 4: 0.010, 16: 0.020},
    ("target", "verify"): {4: 0.011, 16: 0.013, 64: 0.040},
    ("draft", "decode"): {1: 0.001, 4: 0.001, 16: 0.002},
}


def totals(seconds_each: float, tokens_each: float, rows_each: float, passes: int = 10) -> PassTotals:
    return PassTotals(seconds_each * passes, passes, tokens_each * passes, rows_each * passes)


def test_a_draft_never_measured_is_scaled_like_the_target() -> None:
    # The target runs 3x its calibration under load (K = 0: no draft pass in the window);
    # the draft's calibration alone would make a draft pass look 3x cheaper than it is.
    window = ReplicaWindow(forward={("target", "decode"): {4: totals(0.030, 4, 4)}}, calibrated=CALIBRATED)
    target, _, draft = _step_costs(window.forward, window, PARAMS, "draft")
    assert target(4) == pytest.approx(0.030)
    assert draft(4) == pytest.approx(0.003) and draft(16) == pytest.approx(0.006)


def test_a_draft_measured_before_keeps_its_measured_cost_after_drafting_stops() -> None:
    drafting = ReplicaWindow(
        forward={("target", "verify"): {32: totals(0.033, 20, 4)}, ("draft", "decode"): {4: totals(0.008, 4, 4)}},
        calibrated=CALIBRATED,
    )
    _, memory = policy.remember_passes(drafting.forward, {}, 0.0, PARAMS.min_samples, PARAMS.cost_memory_s)
    stopped = ReplicaWindow(forward={("target", "decode"): {4: totals(0.030, 4, 4)}}, calibrated=CALIBRATED)
    forward, _ = policy.remember_passes(stopped.forward, memory, 60.0, PARAMS.min_samples, PARAMS.cost_memory_s)
    _, _, draft = _step_costs(forward, stopped, PARAMS, "draft")
    assert draft(4) == pytest.approx(0.008)


def test_ngram_drafts_are_free_and_verify_costs_follow_the_rows() -> None:
    window = ReplicaWindow(forward={("target", "decode"): {4: totals(0.010, 4, 4)}}, calibrated=CALIBRATED)
    target, verify, draft = _step_costs(window.forward, window, PARAMS, "ngram")
    assert draft is policy.FREE
    # Calibrated verify over 16 tokens = 4 rows of 4: S(4) = (13 - 10) / 3 ms, at scale 1.
    assert verify is not None and verify(4, 5) == pytest.approx(0.010 + 4 * 0.001)
