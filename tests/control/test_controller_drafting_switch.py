"""When the controller switches drafting off entirely (`enabled: false`) and back on: a pure
step of the tick, fed a synthetic window and a decision on the docstring's worked curves."""

from __future__ import annotations

from specfleet.contract import SpeculationConfig
from specfleet_operator.control import policy
from specfleet_operator.control.controller import ControlSettings, Controller
from specfleet_operator.control.fleet import Replica
from specfleet_operator.control.local_backend import LocalBackend
from specfleet_operator.control.metrics_source import ReplicaWindow, ScrapeSource
from specfleet_operator.control.policy import Acceptance, CostCurve, PolicyParams

PARAMS = PolicyParams(k_max=2, max_batch=8, min_gain=0.1, cooldown_s=30.0)
SETTINGS = ControlSettings(mode="auto", method="draft", k_max=2, params=PARAMS)
# The module docstring's example: schedule [[1, 1, 2], [2, 3, 1]], break-even 4.
DECISION = policy.decide(
    Acceptance((0.8, 0.6)),
    CostCurve.of({1: 0.010, 2: 0.010, 4: 0.010, 8: 0.020, 16: 0.040}),
    CostCurve.of({1: 0.001, 2: 0.001, 4: 0.001, 8: 0.001}),
    PARAMS,
)
ON = SpeculationConfig(method="draft", k_max=2, schedule=DECISION.schedule)
OFF = SpeculationConfig(enabled=False, method="draft", k_max=2, schedule=DECISION.schedule)


def window_at(batch: int, steps: float = 100.0) -> ReplicaWindow:
    return ReplicaWindow(batch_histogram=[(batch - 1.0, 0.0), (float(batch), steps), (float("inf"), steps)])


def proposal(applied: SpeculationConfig | None, window: ReplicaWindow, seconds_since_push: float | None):
    controller = Controller(LocalBackend(lambda: []), ScrapeSource(), SETTINGS, clock=lambda: 1000.0)
    state = controller._replica_state("r", 1000.0)
    state.pushed_at = None if seconds_since_push is None else 1000.0 - seconds_since_push
    return controller._proposal(Replica("r", "http://127.0.0.1:1", "t", "1", applied), window, DECISION, 1000.0)


def test_every_step_past_the_break_even_switches_drafting_off_after_the_cooldown() -> None:
    assert DECISION.break_even == 4
    assert proposal(ON, window_at(8), seconds_since_push=60.0) == OFF
    assert proposal(ON, window_at(8), seconds_since_push=5.0) is None  # within the cooldown


def test_off_stays_off_while_the_load_stays_high_and_comes_back_on_when_batches_drop() -> None:
    assert proposal(OFF, window_at(8), seconds_since_push=60.0) is None
    assert proposal(OFF, window_at(1), seconds_since_push=60.0) == ON


def test_a_fresh_or_idle_replica_drafts() -> None:
    assert proposal(None, window_at(8, steps=0.0), seconds_since_push=None) == ON
