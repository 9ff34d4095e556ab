"""The decision model on synthetic cost curves and acceptance profiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specfleet.contract import SpeculationConfig
from specfleet_operator.control import policy
from specfleet_operator.control.policy import Acceptance, CostCurve, PassTotals, PolicyParams

WORKED_TARGET = CostCurve.of({1: 0.010, 2: 0.010, 4: 0.010, 8: 0.020, 16: 0.040})
WORKED_DRAFT = CostCurve.of({1: 0.001, 2: 0.001, 4: 0.001, 8: 0.001})
WORKED_ACCEPTANCE = Acceptance((0.8, 0.6))
WORKED_PARAMS = PolicyParams(k_max=2, max_batch=8, min_gain=0.1)


def test_worked_example_from_the_module_docstring() -> None:
    costs = policy.StepCosts(WORKED_TARGET, WORKED_DRAFT)
    g = lambda b, k: policy.goodput(b, k, WORKED_ACCEPTANCE, costs)  # noqa: E731
    assert g(1, 0) == pytest.approx(100.0)
    assert g(1, 1) == pytest.approx(163.636, abs=1e-3)
    assert g(1, 2) == pytest.approx(200.0)
    assert g(2, 1) == pytest.approx(327.273, abs=1e-3)
    assert g(2, 2) == pytest.approx(282.353, abs=1e-3)
    assert g(3, 1) == pytest.approx(337.5)
    assert g(3, 2) == pytest.approx(293.878, abs=1e-3)
    assert g(4, 0) == pytest.approx(400.0)
    assert g(4, 1) == pytest.approx(342.857, abs=1e-3)

    decision = policy.decide(WORKED_ACCEPTANCE, WORKED_TARGET, WORKED_DRAFT, WORKED_PARAMS)

    assert decision.ks == (2, 1, 1, 0, 0, 0, 0, 0)
    assert decision.schedule == [(1, 1, 2), (2, 3, 1)]
    assert decision.break_even == 4
    # The runtime accepts what the policy builds.
    assert SpeculationConfig(k_max=2, schedule=decision.schedule).k_for_batch(3) == 1


WORKED_OVERHEAD = CostCurve.of({1 << i: 0.010 for i in range(6)})  # 10 ms at every step size up to 32 positions


def test_worked_example_with_a_per_step_overhead_from_the_module_docstring() -> None:
    costs = policy.StepCosts(WORKED_TARGET, WORKED_DRAFT, WORKED_OVERHEAD)
    g = lambda b, k: policy.goodput(b, k, WORKED_ACCEPTANCE, costs)  # noqa: E731
    assert [round(g(1, k), 1) for k in (0, 1, 2)] == [50.0, 85.7, 109.1]
    assert [round(g(2, k), 1) for k in (0, 1, 2)] == [100.0, 171.4, 177.8]
    assert [round(g(3, k), 1) for k in (0, 1, 2)] == [150.0, 207.7, 208.7]
    assert [round(g(4, k), 1) for k in (0, 1, 2)] == [200.0, 232.3, 228.6]
    assert [round(g(5, k), 1) for k in (0, 1, 2)] == [222.2, 250.0, 242.4]
    assert [round(g(6, k), 1) for k in (0, 1, 2)] == [240.0, 263.4, 252.6]

    decision = policy.decide(WORKED_ACCEPTANCE, WORKED_TARGET, WORKED_DRAFT, WORKED_PARAMS, WORKED_OVERHEAD)

    assert decision.ks == (2, 2, 2, 1, 1, 0, 0, 0)
    assert decision.schedule == [(1, 3, 2), (4, 5, 1)]
    assert decision.break_even == 6


def test_overhead_is_the_step_time_less_the_passes_inside_it_by_positions_verified() -> None:
    # (K, batch bucket) -> (step seconds, forward seconds in those steps, steps).
    # Bucket 1 is batch 1; bucket 4 stands for batches 3 and 4 (mean 3.5).
    steps = {(0, 1): (0.30, 0.20, 20), (2, 1): (0.40, 0.24, 20), (0, 4): (0.37, 0.20, 20), (2, 4): (0.02, 0.0, 1)}
    overhead = policy.step_overhead(steps, min_samples=8)
    assert overhead.points == ((1, pytest.approx(0.005)), (3, pytest.approx(0.008)), (3.5, pytest.approx(0.0085)))
    assert overhead(policy.step_tokens(1, 0)) == pytest.approx(0.005)
    assert overhead(policy.step_tokens(1, 2)) == pytest.approx(0.008)
    assert overhead(policy.step_tokens(1, 1)) == pytest.approx(0.0065)  # between n = 1 and 3
    # (2, 4) has one step, too few; beyond the last point overhead grows with the positions.
    assert overhead(policy.step_tokens(3.5, 2)) == pytest.approx(0.0085 * 3)


def test_kinds_that_verify_as_many_positions_are_pooled() -> None:
    # K 3 at batch 1 and K 1 at batch 2 both verify 4 positions: one point, their mean per step.
    overhead = policy.step_overhead({(3, 1): (0.5, 0.4, 10), (1, 2): (0.9, 0.6, 30)}, min_samples=8)
    assert overhead.points == ((4, pytest.approx((0.1 + 0.3) / 40)),)


def test_timer_jitter_never_makes_a_negative_overhead() -> None:
    overhead = policy.step_overhead({(0, 1): (0.100, 0.101, 10)}, min_samples=8)
    assert overhead(1) == 0.0


def test_without_step_timings_the_decision_is_the_passes_only_one() -> None:
    overhead = policy.step_overhead({}, min_samples=8)
    assert overhead == policy.NO_OVERHEAD and overhead(40) == 0.0
    with_empty = policy.decide(WORKED_ACCEPTANCE, WORKED_TARGET, WORKED_DRAFT, WORKED_PARAMS, overhead)
    assert with_empty.ks == policy.decide(WORKED_ACCEPTANCE, WORKED_TARGET, WORKED_DRAFT, WORKED_PARAMS).ks


def test_verify_passes_are_costed_by_their_rows_and_width() -> None:
    # The worked example's target, but each row's extra tokens cost S = 2.5 ms apiece up to
    # 4 rows and 5 ms at 8: V(4, 2) = T_t(4) + S(4) = 12.5 ms, where the token count alone
    # would charge T_t(8) = 20 ms.
    # b = 1: G(1,1) = 1.8 / (0.0125 + 0.001) = 133.3, G(1,2) = 2.4 / (0.015 + 0.002) = 141.2 -> K* = 2.
    # b = 4: G(4,0) = 400, G(4,1) = 7.2 / 0.0135 = 533.3, G(4,2) = 9.6 / 0.017 = 564.7 -> K* = 2.
    # b = 8: G(8,0) = 400, G(8,1) = 14.4 / (0.025 + 0.001) = 553.8, G(8,2) = 19.2 / (0.030 + 0.002) = 600 -> K* = 2.
    verify = policy.VerifyCosts(WORKED_TARGET, CostCurve.of({1: 0.0025, 4: 0.0025, 8: 0.005}))
    costs = policy.StepCosts(WORKED_TARGET, WORKED_DRAFT, verify=verify)
    assert costs.forward(4, 1) == pytest.approx(0.0125 + 0.001)
    assert costs.forward(8, 2) == pytest.approx(0.030 + 0.002)
    assert costs.forward(4, 0) == pytest.approx(0.010)
    decision = policy.decide(WORKED_ACCEPTANCE, WORKED_TARGET, WORKED_DRAFT, WORKED_PARAMS, verify=verify)
    assert decision.schedule == [(1, 8, 2)] and decision.break_even is None
    assert policy.decide(WORKED_ACCEPTANCE, WORKED_TARGET, WORKED_DRAFT, WORKED_PARAMS).break_even == 4


def test_a_verify_slope_rises_from_about_nothing_without_a_per_row_cap() -> None:
    # Memory bound at 1 row (an extra token costs ~0), compute bound at 32: S must follow,
    # not stay within 32x its noisy first point as a pass-time curve would.
    verify = policy.VerifyCosts.of(WORKED_TARGET, {1: 0.00001, 8: 0.002, 16: 0.0015, 32: 0.012})
    assert verify.per_extra_token.points == ((1, 0.00001), (8, 0.002), (16, 0.002), (32, 0.012))
    assert verify(32, 3) == pytest.approx(WORKED_TARGET(32) + 2 * 0.012)


def test_verify_slope_points_come_from_measured_rows_then_calibration() -> None:
    decode_curve = CostCurve.of({1: 0.010, 4: 0.012, 8: 0.016})
    decode = ({4: PassTotals(seconds=10 * 0.012, passes=10, tokens=40, rows=40)}, {4: 0.006, 8: 0.008})
    # 10 passes of 4 rows x 5 tokens (K = 4 at batch 4), 14.4 ms each, with decode passes
    # over 4 rows measured too: S(4) = (14.4 - 12) / 4 ms.
    measured = {32: PassTotals(seconds=10 * 0.0144, passes=10, tokens=200, rows=40)}
    # Calibrated n tokens are n // 4 rows of 4, against the calibrated decode pass over as
    # many rows: 16 -> 4 rows (covered by the measured point); 32 -> 8 rows:
    # S(8) = (14.75 - 8) / 3 ms, times the scale 2; 512 -> 128 rows, beyond max_batch.
    calibrated = {16: 0.0095, 32: 0.01475, 512: 0.1}
    points = policy.verify_slope_points((measured, calibrated), decode, decode_curve, 8, 2.0, 64)
    assert points == pytest.approx({4.0: 0.0006, 8.0: 0.0045})


def test_a_verify_slope_without_decode_passes_over_its_rows_is_trusted_only_where_dearer() -> None:
    decode_curve = CostCurve.of({1: 0.010, 4: 0.012, 8: 0.016})
    calibrated_decode = {4: 0.006, 8: 0.008}
    measured = {32: PassTotals(seconds=10 * 0.0144, passes=10, tokens=200, rows=40)}
    calibrated = {16: 0.0095, 32: 0.01475}
    from_calibration = {4.0: (0.0095 - 0.006) / 3 * 2.0, 8.0: 0.0045}
    # No decode passes over 4 rows measured: S(4) against the decode curve is 0.6 ms, the
    # calibration says 2.3 ms, and the dearer one stands.
    alone = policy.verify_slope_points((measured, calibrated), ({}, calibrated_decode), decode_curve, 8, 2.0, 64)
    assert alone == pytest.approx(from_calibration)
    # A measured pass dearer than the calibration says (32 ms: S = 5 ms) replaces its point.
    dear = {32: PassTotals(seconds=10 * 0.032, passes=10, tokens=200, rows=40)}
    points = policy.verify_slope_points((dear, calibrated), ({}, calibrated_decode), decode_curve, 8, 2.0, 64)
    assert points == pytest.approx({4.0: 0.005, 8.0: 0.0045})
    # Rows the startup sweep never reached (its deadline came first): the measured point,
    # where extrapolating S(8) to 30 rows would make the compute-bound regime look cheap.
    wide = {256: PassTotals(seconds=10 * 0.136, passes=10, tokens=1500, rows=300)}
    points = policy.verify_slope_points((wide, calibrated), ({}, calibrated_decode), decode_curve, 8, 2.0, 64)
    assert points == pytest.approx({4.0: from_calibration[4.0], 8.0: 0.0045, 30.0: (0.136 - decode_curve(30)) / 4})
    # A rows count missing (an older runtime), or a verify pass no dearer than the decode
    # pass over its rows (noise): the calibration.
    unrowed = {32: PassTotals(seconds=10 * 0.0144, passes=10, tokens=200)}
    cheap = {32: PassTotals(seconds=10 * 0.011, passes=10, tokens=200, rows=40)}
    decode = ({4: PassTotals(seconds=10 * 0.012, passes=10, tokens=40, rows=40)}, calibrated_decode)
    for verify in (unrowed, cheap):
        points = policy.verify_slope_points((verify, calibrated), decode, decode_curve, 8, 2.0, 64)
        assert points == pytest.approx(from_calibration)


def test_verify_passes_over_the_same_rows_make_one_slope_point() -> None:
    # One row at K = 1 (2 tokens, bucket 2) and at K = 3 (4 tokens, bucket 4), with the
    # rows counter's increase extrapolated a little below the passes': one point at 1 row,
    # from all 20 passes together: a mean pass of 14 ms, 3 tokens a row, so (14 - 10) / 2 ms.
    decode_curve = CostCurve.of({1: 0.010, 4: 0.012})
    verify = {
        2: PassTotals(seconds=10 * 0.012, passes=10, tokens=19.6, rows=9.8),
        4: PassTotals(seconds=10 * 0.016, passes=10, tokens=39.2, rows=9.8),
    }
    decode = ({1: PassTotals(seconds=10 * 0.010, passes=10, tokens=10, rows=10)}, {})
    points = policy.verify_slope_points((verify, {}), decode, decode_curve, 8, 1.0, 64)
    assert points == pytest.approx({1.0: 0.002})


def test_one_calibration_scale_serves_every_shape_of_a_model() -> None:
    # Decode passes ran 2x their calibration; verify passes were never measured, so their
    # calibration follows the decode shape's level.
    decode = {8: PassTotals(seconds=10 * 0.040, passes=10, tokens=80)}
    curves = [(decode, {8: 0.020}), ({}, {8: 0.012, 16: 0.024})]
    scale = policy.calibration_scale(curves, min_samples=8)
    assert scale == pytest.approx(2.0)
    assert policy.cost_points({}, {8: 0.012, 16: 0.024}, 8, scale) == pytest.approx({8: 0.024, 16: 0.048})


def test_break_even_of_a_schedule_in_force() -> None:
    assert policy.schedule_break_even([(1, 3, 2), (4, 5, 1)], max_batch=8) == 6
    assert policy.schedule_break_even([], max_batch=8) == 1
    assert policy.schedule_break_even([(1, 1 << 20, 4)], max_batch=8) is None
    assert policy.schedule_break_even([(2, 8, 4)], max_batch=8) == 1


def test_min_gain_margin_turns_a_small_win_into_k_zero() -> None:
    # At b = 3 speculation wins by 12.5 %: kept at a 10 % margin, dropped at 15 %.
    strict = PolicyParams(k_max=2, max_batch=8, min_gain=0.15)
    decision = policy.decide(WORKED_ACCEPTANCE, WORKED_TARGET, WORKED_DRAFT, strict)
    assert decision.ks[:4] == (2, 1, 0, 0)
    assert decision.break_even == 3


def test_cost_curve_interpolates_linearly_and_extrapolates_proportionally() -> None:
    curve = CostCurve.of({1: 1.0, 4: 4.0, 8: 4.0})
    assert curve(0.5) == 1.0
    assert curve(2) == pytest.approx(2.0)
    assert curve(6) == pytest.approx(4.0)
    assert curve(16) == pytest.approx(8.0)  # beyond the last point: compute bound


def test_cost_curve_never_decreases_with_more_tokens() -> None:
    noisy = CostCurve.of({1: 2.0, 2: 1.5, 4: 3.0})
    assert noisy(2) == 2.0 and noisy(4) == 3.0


def test_cost_curve_clips_a_point_that_costs_more_per_token_than_its_neighbour() -> None:
    spiky = CostCurve.of({1: 1.0, 2: 5.0, 4: 3.0})
    assert spiky(2) == 2.0 and spiky(4) == 3.0


def test_measured_bucket_replaces_calibration_only_with_enough_samples() -> None:
    points = policy.cost_points(
        {1: PassTotals(0.5, 10, 10), 2: PassTotals(0.9, 3, 6)}, {1: 0.05, 2: 0.06, 4: 0.08}, min_samples=8
    )
    assert points == pytest.approx({1: 0.05, 2: 0.06, 4: 0.08})


def test_calibration_is_rescaled_to_the_level_the_window_measured() -> None:
    # The machine runs 2x slower than at startup: the unmeasured bucket 4 follows.
    points = policy.cost_points(
        {1: PassTotals(1.0, 10, 10), 2: PassTotals(1.2, 10, 20)}, {1: 0.05, 2: 0.06, 4: 0.08}, min_samples=8
    )
    assert points == pytest.approx({1: 0.1, 2: 0.12, 4: 0.16})


def test_a_measured_bucket_sits_at_the_mean_size_of_its_passes() -> None:
    # Verify passes of 32 x 3 = 96 tokens are filed under bucket 128. At 128 they would
    # read as T(96) = T(64) + (T(128) - T(64)) / 2, a quarter cheaper than measured.
    totals = PassTotals(seconds=10 * 0.060, passes=10, tokens=10 * 96)
    points = policy.cost_points({128: totals}, {64: 0.040, 128: 0.080}, min_samples=8)
    assert points == pytest.approx({64: 0.040, 96: 0.060})
    assert CostCurve.of(points)(96) == pytest.approx(0.060)


def test_passes_without_a_token_count_sit_at_their_bucket() -> None:
    assert PassTotals(seconds=1.0, passes=10, tokens=0).mean_tokens(128) == 128.0


def test_a_mean_pass_size_never_leaves_its_bucket() -> None:
    # Two counters' increases, each extrapolated by Prometheus, can disagree a little.
    assert PassTotals(seconds=1.0, passes=10, tokens=10 * 130).mean_tokens(128) == 128.0
    assert PassTotals(seconds=1.0, passes=10, tokens=10 * 60).mean_tokens(128) == 65.0
    assert PassTotals(seconds=1.0, passes=10, tokens=5).mean_tokens(1) == 1.0


def test_cold_start_uses_the_prior_and_data_then_dominates() -> None:
    prior = policy.prior_acceptance(0.6, 3)
    assert prior.at_least == pytest.approx((0.6, 0.36, 0.216))
    cold = policy.estimate_acceptance([], [], prior, pseudo_count=32)
    assert cold == prior
    measured = policy.estimate_acceptance([9000, 8000, 1000], [10000, 10000, 10000], prior, 32)
    assert measured.at_least == pytest.approx((0.9, 0.8, 0.1), abs=0.005)


def test_a_position_never_drafted_is_chained_at_the_deepest_measured_conditional() -> None:
    # Drafts of 2 tokens only: positions 3 and 4 have no data. The prior's level there
    # (0.216, 0.13) or its conditional (0.6) would undersell a pair accepting 0.9/0.8, whose
    # conditional at position 2 is 0.8/0.9.
    prior = policy.prior_acceptance(0.6, 4)
    estimate = policy.estimate_acceptance([9000, 8000], [10000, 10000], prior, 32)
    rate = estimate.at_least[1] / estimate.at_least[0]
    assert rate == pytest.approx(0.8 / 0.9, abs=0.005)
    assert estimate.at_least == pytest.approx((0.9, 0.8, 0.8 * rate, 0.8 * rate**2), abs=0.005)


def test_an_undrafted_position_keeps_a_reference_conditional_above_the_measured_one() -> None:
    # Measured earlier at K=3 (conditional 0.95 at position 3), drafting 2 tokens now.
    reference = Acceptance((0.8, 0.6, 0.57))
    estimate = policy.estimate_acceptance([8000, 6000], [10000, 10000], reference, 32)
    assert estimate.at_least[2] == pytest.approx(0.6 * 0.95, abs=0.005)


def test_a_replica_that_drafts_nothing_keeps_the_references_shape() -> None:
    reference = Acceptance((0.8, 0.4, 0.1))
    estimate = policy.estimate_acceptance([0, 0, 0], [0, 0, 0], reference, 32)
    assert estimate.at_least == pytest.approx(reference.at_least)


def test_a_barely_drafted_deepest_position_extrapolates_near_the_reference() -> None:
    # 2 drafts at position 2 against 32 pseudo-drafts: its conditional is mostly the
    # reference's, so the tail is too (not the 2 drafts' 100%).
    prior = policy.prior_acceptance(0.6, 3)
    estimate = policy.estimate_acceptance([9000, 2], [10000, 2], prior, 32)
    assert estimate.at_least[2] / estimate.at_least[1] == pytest.approx(estimate.at_least[1] / estimate.at_least[0])
    assert estimate.at_least[1] / estimate.at_least[0] < 0.65


def test_estimates_never_increase_with_position() -> None:
    prior = policy.prior_acceptance(0.6, 3)
    estimate = policy.estimate_acceptance([100, 900, 50], [1000, 1000, 1000], prior, 0)
    assert estimate.at_least == pytest.approx((0.1, 0.1, 0.05))


def test_an_idle_drafter_decays_toward_the_prior() -> None:
    prior = policy.prior_acceptance(0.6, 2)
    learned = Acceptance((0.9, 0.8))
    half = policy.decay_toward(learned, prior, policy.decay_factor(300, 300))
    assert half.at_least == pytest.approx((0.75, 0.58))
    gone = policy.decay_toward(learned, prior, policy.decay_factor(1e9, 300))
    assert gone.at_least == pytest.approx(prior.at_least)


def test_batch_weights_spread_each_histogram_bucket_over_its_batches() -> None:
    cumulative = [(1, 4), (2, 4), (4, 8), (8, 10), (math.inf, 12)]
    # (4, 8] is cut at max_batch = 6, and what lies beyond max_batch counts at max_batch.
    weights = policy.batch_weights(cumulative, max_batch=6)
    assert weights == pytest.approx([4, 0, 2, 2, 1, 3])
    assert policy.median_batch(weights) == 3
    assert policy.median_batch([0.0] * 4) is None


def test_change_threshold_ignores_schedules_that_differ_only_where_traffic_never_goes() -> None:
    params = PolicyParams(k_max=2, max_batch=8, min_gain=0.1, change_threshold=0.02, cooldown_s=10)
    decision = policy.decide(WORKED_ACCEPTANCE, WORKED_TARGET, WORKED_DRAFT, params)
    best = decision.schedule
    only_batch_one = [1.0] + [0.0] * 7
    # Same K at b = 1, different at b = 2..3: traffic sits at b = 1, so no push.
    in_force = [(1, 1, 2)]
    args = (only_batch_one, decision, params)
    assert not policy.should_replace(in_force, best, *args, seconds_since_push=100)
    # Speculation off in force, traffic at b = 1: a 2x gain, pushed once the cooldown passed.
    assert policy.should_replace([], best, *args, seconds_since_push=100)
    assert not policy.should_replace([], best, *args, seconds_since_push=5)
    assert policy.should_replace([], best, *args, seconds_since_push=None)


def test_coarse_mode_uses_k_at_the_median_batch_and_is_off_past_break_even() -> None:
    decision = policy.decide(WORKED_ACCEPTANCE, WORKED_TARGET, WORKED_DRAFT, WORKED_PARAMS)
    assert policy.coarse_k(decision, 1) == 2
    assert policy.coarse_k(decision, 3) == 1
    assert policy.coarse_k(decision, 4) == 0
    assert policy.coarse_k(decision, 50) == 0


def test_break_even_bucket_moves() -> None:
    assert not policy.bucket_moved(5, 7)  # both in bucket 8
    assert policy.bucket_moved(4, 5)
    assert policy.bucket_moved(None, 12)
    assert not policy.bucket_moved(None, None)


# ---------------------------------------------------------------------------- properties

probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def acceptances(draw: st.DrawFn, k_max: int = 6) -> Acceptance:
    raw = draw(st.lists(probabilities, min_size=k_max, max_size=k_max))
    return Acceptance(policy._monotone_down(raw))


@st.composite
def cost_curves(draw: st.DrawFn) -> CostCurve:
    base = draw(st.floats(min_value=1e-4, max_value=1.0))
    increments = draw(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=10))
    points, running = {}, base
    for i, inc in enumerate(increments):
        running += inc * base
        points[1 << i] = running
    return CostCurve.of(points)


@settings(max_examples=60, deadline=None)
@given(
    seconds=st.floats(min_value=1e-4, max_value=1.0),
    acceptance=acceptances(),
    max_batch=st.integers(min_value=1, max_value=64),
)
def test_flat_verify_cost_and_free_drafts_speculate_at_every_batch(
    seconds: float, acceptance: Acceptance, max_batch: int
) -> None:
    # Verifying b*(K+1) tokens costs what one token costs, everywhere the policy can look.
    flat = CostCurve.of({1 << i: seconds for i in range(0, 16)})
    params = PolicyParams(k_max=6, max_batch=max_batch, min_gain=0.05)
    decision = policy.decide(acceptance, flat, policy.FREE, params)
    gain = acceptance.expected_tokens(6)  # G(b, K) / G(b, 0) at the best K, at every b
    if gain > 1.05 + 1e-9:
        assert all(k > 0 for k in decision.ks)
        assert decision.break_even is None
    elif gain < 1.05 - 1e-9:
        assert decision.break_even == 1
    # exactly at the margin, rounding decides either way


@settings(max_examples=60, deadline=None)
@given(target=cost_curves(), draft=cost_curves(), max_batch=st.integers(min_value=1, max_value=64))
def test_zero_acceptance_never_speculates(target: CostCurve, draft: CostCurve, max_batch: int) -> None:
    params = PolicyParams(k_max=6, max_batch=max_batch, min_gain=0.0)
    decision = policy.decide(Acceptance((0.0,) * 6), target, draft, params)
    assert decision.schedule == []
    assert decision.break_even == 1


@settings(max_examples=80, deadline=None)
@given(
    target=cost_curves(),
    draft=cost_curves(),
    acceptance=acceptances(),
    lift=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=6, max_size=6),
    min_gain=st.floats(min_value=0.0, max_value=0.3),
)
def test_raising_acceptance_at_every_position_never_lowers_break_even(
    target: CostCurve, draft: CostCurve, acceptance: Acceptance, lift: list[float], min_gain: float
) -> None:
    raised = Acceptance(
        policy._monotone_down([p + (1 - p) * u for p, u in zip(acceptance.at_least, lift)])
    )
    assert all(r >= p for r, p in zip(raised.at_least, acceptance.at_least))
    params = PolicyParams(k_max=6, max_batch=48, min_gain=min_gain)
    before = policy.decide(acceptance, target, draft, params).break_even
    after = policy.decide(raised, target, draft, params).break_even
    as_number = lambda b: math.inf if b is None else b  # noqa: E731
    assert as_number(after) >= as_number(before)


# A replica's situation: its measured curves, acceptance and the configured margin.
SITUATIONS = dict(
    target=cost_curves(), draft=cost_curves(), acceptance=acceptances(), min_gain=st.floats(min_value=0.0, max_value=0.3)
)


def assert_speculates_no_less(before: policy.Decision, after: policy.Decision) -> None:
    """Every batch that speculated still does, and b* did not drop."""
    assert all(k_after > 0 for k_before, k_after in zip(before.ks, after.ks) if k_before > 0)
    as_number = lambda b: math.inf if b is None else b  # noqa: E731
    assert as_number(after.break_even) >= as_number(before.break_even)


@settings(max_examples=80, deadline=None)
@given(**SITUATIONS, overhead=st.floats(min_value=0.0, max_value=2.0), more=st.floats(min_value=0.0, max_value=2.0))
def test_a_larger_fixed_per_step_overhead_never_lowers_break_even_nor_stops_speculation(
    target: CostCurve, draft: CostCurve, acceptance: Acceptance, overhead: float, more: float, min_gain: float
) -> None:
    # The same overhead c at every K: G(b,K)/G(b,0) = E(K) (F(b,0) + c) / (F(b,K) + c), and
    # F(b,K) >= F(b,0), so the ratio only grows with c: speculation amortises a step's fixed
    # cost over E(K) tokens. Every batch that speculated still does, and b* never drops.
    params = PolicyParams(k_max=6, max_batch=48, min_gain=min_gain)
    fixed = lambda c: CostCurve.of({1 << i: c for i in range(16)})  # noqa: E731
    before = policy.decide(acceptance, target, draft, params, fixed(overhead))
    after = policy.decide(acceptance, target, draft, params, fixed(overhead + more))
    assert_speculates_no_less(before, after)


@settings(max_examples=80, deadline=None)
@given(**SITUATIONS, discount=st.floats(min_value=0.0, max_value=1.0))
def test_a_cheaper_verify_pass_never_lowers_break_even_nor_stops_speculation(
    target: CostCurve, draft: CostCurve, acceptance: Acceptance, discount: float, min_gain: float
) -> None:
    # A row's extra tokens cost less: only the cost of K > 0 falls, so no batch that speculated stops.
    params = PolicyParams(k_max=6, max_batch=48, min_gain=min_gain)
    dearer = policy.VerifyCosts(target, target)
    cheaper = policy.VerifyCosts(target, CostCurve.of({n: s * discount for n, s in target.points}))
    assert_speculates_no_less(
        policy.decide(acceptance, target, draft, params, verify=dearer),
        policy.decide(acceptance, target, draft, params, verify=cheaper),
    )


@settings(max_examples=40, deadline=None)
@given(target=cost_curves(), draft=cost_curves(), acceptance=acceptances())
def test_every_schedule_the_policy_builds_is_valid_for_the_runtime(
    target: CostCurve, draft: CostCurve, acceptance: Acceptance
) -> None:
    params = PolicyParams(k_max=6, max_batch=32)
    decision = policy.decide(acceptance, target, draft, params)
    config = SpeculationConfig(k_max=6, schedule=decision.schedule)
    assert [config.k_for_batch(b) for b in range(1, 33)] == list(decision.ks)


def test_no_speculation_past_the_break_even_even_where_a_noisy_point_makes_it_look_cheap() -> None:
    # Verifying 64 tokens costs what 32 do (a noisy flat stretch): without the rule,
    # batches 13..24 would speculate again above a break-even of 2.
    noisy = CostCurve.of({1: 0.01, 2: 0.01, 4: 0.02, 8: 0.04, 16: 0.08, 32: 0.16, 64: 0.16})
    decision = policy.decide(Acceptance((0.9, 0.8)), noisy, policy.FREE, PolicyParams(k_max=2, max_batch=24))
    assert decision.break_even is not None
    assert all(k == 0 for k in decision.ks[decision.break_even - 1:])
    assert decision.schedule[-1][1] < decision.break_even


def test_a_bucket_the_window_lacks_is_filled_from_the_last_window_that_measured_it() -> None:
    draft = ("draft", "decode")
    measured = PassTotals(seconds=10 * 0.004, passes=10, tokens=160, rows=160)
    merged, memory = policy.remember_passes({draft: {16: measured}}, {}, now=0.0, min_samples=8, max_age_s=600)
    assert merged[draft] == {16: measured} and memory[draft] == {16: (measured, 0.0)}
    # Drafting stopped: later windows have no draft passes (or too few to count).
    few = PassTotals(seconds=0.001, passes=1, tokens=16, rows=16)
    merged, memory = policy.remember_passes({draft: {16: few}}, memory, now=300.0, min_samples=8, max_age_s=600)
    assert merged[draft] == {16: measured}
    merged, memory = policy.remember_passes({}, memory, now=600.0, min_samples=8, max_age_s=600)
    assert merged[draft] == {16: measured}
    # Older than max_age_s: the calibration takes over again.
    merged, memory = policy.remember_passes({}, memory, now=601.0, min_samples=8, max_age_s=600)
    assert merged[draft] == {} and memory[draft] == {}


def test_a_fresh_measurement_replaces_the_remembered_one() -> None:
    target = ("target", "decode")
    old = PassTotals(seconds=10 * 0.010, passes=10, tokens=40, rows=40)
    new = PassTotals(seconds=10 * 0.020, passes=10, tokens=40, rows=40)
    _, memory = policy.remember_passes({target: {4: old}}, {}, 0.0, 8, 600)
    merged, memory = policy.remember_passes({target: {4: new}}, memory, 5.0, 8, 600)
    assert merged[target] == {4: new} and memory[target] == {4: (new, 5.0)}


def test_a_scale_with_nothing_measured_is_the_default_given() -> None:
    assert policy.calibration_scale([({}, {8: 0.010})], min_samples=8, default=3.0) == 3.0
