"""When speculation pays, and with how many draft tokens: the decision model (pure).

Inputs in, schedule out; no clocks, no I/O. The controller feeds it one replica's window of
measurements; the tests feed it synthetic curves.

The model (DESIGN.md §4)
------------------------
Acceptance. Position i (1-based) of a draft is accepted only if positions 1..i-1 were, so
the counters give the *cumulative* probability directly:
``P(accept >= i) = accepted_per_pos[i-1] / draft_tokens_per_pos[i-1]`` (the denominator
counts drafts that reached position i, which matters when K varies per step). Each position
is estimated with ``pseudo_count`` pseudo-observations of a reference value: the previous
estimate, decayed toward the prior (``prior_rate ** i``) with a half-life, and taken as a
*conditional* on the position before (``reference_i / reference_{i-1}`` times the estimate
just made for i-1). So a cold replica starts at the prior, a measured one follows its data,
and one that stops drafting (always above b*) drifts back to the prior instead of freezing a
stale number. Positions deeper than any the window drafted are chained with the larger of
the reference's conditional and the one just measured at the deepest drafted position
(``est_m / est_{m-1}``): the conditional acceptance of a draft does not fall with depth (a
prefix it got right marks an easy context; the bundled pair's rises from 0.75 to 0.86 over
8 positions), and the prior's 0.6 there would keep a replica that drafts 2 tokens from ever
trying 4 (nor at the prior's absolute level, for the same reason). Estimates are made
non-increasing in i (a longer prefix can never be likelier than a shorter one).

Expected tokens per sequence per step at draft length K: ``E(K) = 1 + sum_{i<=K} P(accept >= i)``.

Costs. ``T_t(n)``, ``T_d(n)``: one forward pass of the target/draft over n tokens (all
sequences together), one token per sequence (decode-shaped passes). ``V_t(b, w)``: the
target's verify pass, b rows of w = K + 1 tokens. Its cost depends on the rows and the
width apart, not on b * w alone: each row reads its own cache once however wide it is, and
per-op costs come per pass, so on the 2-core CPU 4 rows of 5 tokens cost what 4 rows of 3
do (14 ms) and half what 8 rows of 4 do (29 ms), which one token-indexed curve cannot say.
So ``V_t(b, w) = T_t(b) + (w - 1) * S(b)``: the decode pass over the same rows, plus each
row's extra tokens at ``S(b)`` apiece. A verify bucket gives a point of S at its passes'
mean rows, ``(V - T_t(rows)) / (width - 1)``, from the passes' totals of time, tokens and
rows (``specfleet_forward_rows_total``), where decode passes over as many rows were
measured too (a difference of two timings taken at different levels is noise: a verify
pass measured under load against a calibrated decode pass can make drafting look free);
elsewhere the startup calibration's verify passes (rows of ``CALIBRATION_VERIFY_WIDTH``
tokens) against its own decode passes, scaled, unless the verify passes measured there
against the decode curve say S is dearer (or the calibration never reached those rows:
a slope extrapolated from a few memory-bound rows makes drafting look free at high
batch). Without verify-shaped data, ``V_t(b, w) = T_t(b * w)``. A curve's point per
power-of-two bucket: where the window has ``min_samples`` passes in it, their mean time at
their mean size (a bucket spans (n/2, n]; placing a pass of 20 tokens at 32 would make it
look a third cheaper than it is); else the calibration, which times exactly n tokens in
each shape (scaled by how the measured points of the model's shapes compare with it).
Between points: linear. Below the first: flat. Beyond the last: proportional to n (compute
bound), the conservative guess, so an unmeasured regime never looks free. Points are
repaired into physical shape: non-decreasing in n, and never more per token at larger n.
A bucket the window lacks keeps its last measured point for ``cost_memory_s``
(``remember_passes``), and a model with no measured pass at all (the draft of a replica
that stopped drafting) has its calibration scaled by the target's ratio: under load on a
GPU a pass costs several times its startup timing for both models, and the draft's bare
calibration would make drafting look cheap again at every window.

Per-step overhead. A decode step is more than its forward passes: sampling, acceptance,
cache bookkeeping and the server's Python all take time, and that time is paid per step,
so it weighs more on a step that emits one token per sequence than on one that emits
E(K). The runtime measures it: the step wall time less the forward passes inside the same
steps (``specfleet_step_duration_seconds`` and ``specfleet_step_forward_seconds_total``,
by K and power-of-two batch bucket; a bucket stands for the mean batch it covers, (n/2, n]).
Most of it is per position (sampling and acceptance run over every verified token), so
``O(n)`` is a curve over the positions a step verifies, ``n = b`` at K = 0 and
``n = b * (K + 1)`` with drafts, with the cost curves' rules: linear between points, flat
below the first, proportional beyond the last (a longer step than any measured never
looks cheap), non-decreasing and never more per position at larger n. No data: 0, the
passes-only model. Forward passes: ``F(b, 0) = T_t(b)``, ``F(b, K) = V_t(b, K + 1) + K * T_d(b)``.

Goodput per step, b sequences decoding:
``G(b, 0) = b / (T_t(b) + O(b))`` and
``G(b, K) = b * E(K) / (V_t(b, K + 1) + K * T_d(b) + O(b * (K + 1)))``.
``K*(b) = argmax_K G(b, K)``, kept only if ``G(b, K*) >= (1 + min_gain) * G(b, 0)``, else 0.
The break-even batch b* is the smallest b with K*(b) = 0 (None: speculation pays up to
max_batch), and K*(b) = 0 for every b >= b*: past b* the verify pass is compute bound, so
a larger batch that seems to pay again is read as timing noise. The schedule is the
run-length encoding of K*(b), b = 1..max_batch (rows with K = 0 are left out: a batch
outside every row runs without drafting).

A new schedule replaces the one in force only if its expected goodput, weighted by the
replica's observed decode-batch distribution, differs by more than ``change_threshold``
(relative), and not within ``cooldown_s`` of the last push. Coarse mode (engines without
per-step schedules): one K for the replica, K*(median batch), 0 when the median >= b*.

Worked example (checked by ``tests/control/test_policy.py``)
-----------------------------------------------------------
Target: T_t = 10 ms for 1, 2 and 4 tokens, 20 ms for 8, 40 ms for 16 (memory bound up to 4
tokens, then compute bound). Draft: T_d = 1 ms at every bucket up to 8. Acceptance
P(>=1) = 0.8, P(>=2) = 0.6, so E(1) = 1.8, E(2) = 2.4. k_max = 2, min_gain = 0.1, max_batch = 8.

- b = 1: G(1,0) = 1/0.010 = 100. G(1,1) = 1.8/(T_t(2) + 0.001) = 1.8/0.011 = 163.6.
  G(1,2) = 2.4/(T_t(3) + 0.002) = 2.4/0.012 = 200  ->  K* = 2.
- b = 2: G(2,0) = 200. G(2,1) = 3.6/(T_t(4) + 0.001) = 327.3.
  G(2,2) = 4.8/(T_t(6) + 0.002) = 4.8/0.017 = 282.4 (T_t(6) = 15 ms)  ->  K* = 1.
- b = 3: G(3,0) = 300. G(3,1) = 5.4/(T_t(6) + 0.001) = 337.5 >= 1.1 * 300 = 330.
  G(3,2) = 7.2/(T_t(9) + 0.002) = 7.2/0.0245 = 293.9  ->  K* = 1.
- b = 4: G(4,0) = 400. G(4,1) = 7.2/(T_t(8) + 0.001) = 342.9. G(4,2) = 9.6/0.032 = 300  ->  K* = 0.
- b = 5..8: T_t is on its compute-bound line, G(b,0) = 400 > G(b,K)  ->  K* = 0.

Schedule ``[[1, 1, 2], [2, 3, 1]]``, break-even b* = 4.

The same replica with a measured overhead of 10 ms per step at every step size (its steps
last 10 ms longer than the passes inside them, O(n) = 10 ms): each step costs its passes + 10 ms, which amortises over E(K) tokens with speculation and over one
without, so speculation pays up to a larger batch.

- b = 1: G(1,0) = 1/0.020 = 50. G(1,1) = 1.8/0.021 = 85.7. G(1,2) = 2.4/0.022 = 109.1  ->  K* = 2.
- b = 2: G(2,0) = 100. G(2,1) = 3.6/0.021 = 171.4. G(2,2) = 4.8/(0.015 + 0.012) = 177.8  ->  K* = 2.
- b = 3: G(3,0) = 150. G(3,1) = 5.4/(0.015 + 0.011) = 207.7.
  G(3,2) = 7.2/(0.0225 + 0.012) = 208.7 (T_t(9) = 22.5 ms)  ->  K* = 2.
- b = 4: G(4,0) = 4/0.020 = 200. G(4,1) = 7.2/(0.020 + 0.011) = 232.3 >= 220.
  G(4,2) = 9.6/(0.030 + 0.012) = 228.6  ->  K* = 1.
- b = 5: G(5,0) = 5/(0.0125 + 0.010) = 222.2. G(5,1) = 9/(0.025 + 0.011) = 250 >= 244.4.
  G(5,2) = 12/(0.0375 + 0.012) = 242.4  ->  K* = 1.
- b = 6: G(6,0) = 6/0.025 = 240. G(6,1) = 10.8/(0.030 + 0.011) = 263.4 < 1.1 * 240 = 264.
  G(6,2) = 14.4/(0.045 + 0.012) = 252.6  ->  K* = 0.

Schedule ``[[1, 3, 2], [4, 5, 1]]``, break-even b* = 6.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

from specfleet.contract import CALIBRATION_VERIFY_WIDTH, token_bucket

Schedule = list[tuple[int, int, int]]
PassKind = tuple[str, str]  # (model, pass shape): ("target", "verify")


@dataclass(frozen=True)
class PolicyParams:
    k_max: int = 8
    max_batch: int = 64
    min_gain: float = 0.05
    change_threshold: float = 0.02
    cooldown_s: float = 30.0
    prior_rate: float = 0.6
    pseudo_count: float = 32.0  # drafts at a position before the data outweighs the reference
    decay_half_life_s: float = 300.0
    cost_memory_s: float = 600.0  # how long a measured pass bucket stands in for one the window lacks
    min_samples: int = 8  # passes in a token bucket before its measured mean replaces calibration
    # Add the measured per-step overhead O(n) to the step costs (False: the passes alone).
    step_overhead: bool = True

    def __post_init__(self) -> None:
        if self.k_max < 1 or self.max_batch < 1:
            raise ValueError("k_max and max_batch must be >= 1")
        if not 0.0 <= self.prior_rate <= 1.0:
            raise ValueError("prior_rate must be in [0, 1]")
        if self.min_gain < 0 or self.change_threshold < 0 or self.cooldown_s < 0:
            raise ValueError("min_gain, change_threshold and cooldown_s must be >= 0")


# ---------------------------------------------------------------------------- acceptance


@dataclass(frozen=True)
class Acceptance:
    """``at_least[i - 1] = P(accept >= i)``, non-increasing, for i = 1..len."""

    at_least: tuple[float, ...]

    def __post_init__(self) -> None:
        if any(not 0.0 <= p <= 1.0 for p in self.at_least):
            raise ValueError(f"acceptance probabilities must lie in [0, 1]: {self.at_least}")

    def expected_tokens(self, k: int) -> float:
        """E(K): tokens one sequence gains from a step that drafts k tokens (1 + accepted)."""
        if k > len(self.at_least):
            raise ValueError(f"acceptance known for {len(self.at_least)} positions, asked for K={k}")
        return 1.0 + sum(self.at_least[:k])


def prior_acceptance(rate: float, k_max: int) -> Acceptance:
    """The cold-start guess: each position accepted with `rate` given the previous was."""
    return Acceptance(tuple(rate**i for i in range(1, k_max + 1)))


def _monotone_down(values: Sequence[float]) -> tuple[float, ...]:
    out: list[float] = []
    for v in values:
        out.append(min(v, out[-1]) if out else v)
    return tuple(out)


def decay_toward(previous: Acceptance, prior: Acceptance, factor: float) -> Acceptance:
    """Keep `factor` of the distance between `previous` and `prior` (1 = no decay)."""
    return Acceptance(
        _monotone_down([q + (p - q) * factor for p, q in zip(previous.at_least, prior.at_least)])
    )


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    if half_life_s <= 0:
        return 0.0
    return 0.5 ** (max(elapsed_s, 0.0) / half_life_s)


def estimate_acceptance(
    accepted_per_pos: Sequence[float],
    draft_tokens_per_pos: Sequence[float],
    reference: Acceptance,
    pseudo_count: float,
) -> Acceptance:
    """Blend a window's counters with `reference`, position by position (see module doc)."""
    drafted_per_pos = [max(float(d), 0.0) for d in draft_tokens_per_pos[: len(reference.at_least)]]
    deepest = max((i for i, d in enumerate(drafted_per_pos) if d > 0), default=-1)
    estimates: list[float] = []
    prev_ref = prev_est = 1.0
    measured_rate = 0.0  # est_m / est_{m-1} at the deepest drafted position m
    for i, ref in enumerate(reference.at_least):
        chained = prev_est * ref / prev_ref if prev_ref > 0 else 0.0
        if i > deepest >= 0:
            chained = max(chained, prev_est * measured_rate)
        drafted = drafted_per_pos[i] if i < len(drafted_per_pos) else 0.0
        accepted = accepted_per_pos[i] if i < len(accepted_per_pos) else 0.0
        accepted = min(max(accepted, 0.0), drafted)
        weight = drafted + pseudo_count
        estimate = (accepted + pseudo_count * chained) / weight if weight > 0 else chained
        estimate = min(estimate, estimates[-1]) if estimates else estimate
        if i == deepest:
            measured_rate = estimate / prev_est if prev_est > 0 else 0.0
        estimates.append(estimate)
        prev_ref, prev_est = ref, estimate
    return Acceptance(tuple(estimates))


# ---------------------------------------------------------------------------- costs


@dataclass(frozen=True)
class CostCurve:
    """Seconds for one forward pass over n tokens, from points at token buckets."""

    points: tuple[tuple[float, float], ...]  # (tokens, seconds), tokens strictly increasing

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a cost curve needs at least one point")
        tokens = [n for n, _ in self.points]
        if tokens != sorted(set(tokens)) or tokens[0] < 1:
            raise ValueError(f"cost points must have strictly increasing token counts >= 1: {tokens}")
        if any(s < 0 or not math.isfinite(s) for _, s in self.points):
            raise ValueError(f"cost points must be finite and >= 0: {self.points}")

    @classmethod
    def of(cls, points: Mapping[float, float]) -> "CostCurve":
        """A curve through `points`, repaired into physical shape: more tokens never cost
        less, and never cost more per token (a pass over 2n tokens costs at most two passes
        over n). Single noisy points (a timing taken while the machine was busy) are
        clipped by their neighbours instead of bending the whole decision."""
        shaped: list[tuple[int, float]] = []
        for n, s in sorted(points.items()):
            if shaped:
                prev_n, prev_s = shaped[-1]
                s = min(max(s, prev_s), prev_s * n / prev_n)
            shaped.append((n, s))
        return cls(tuple(shaped))

    @classmethod
    def non_decreasing(cls, points: Mapping[float, float]) -> "CostCurve":
        """A curve through `points` made non-decreasing only: for a marginal cost such as
        the verify slope S, which is about 0 while a pass is memory bound and grows with
        the rows once it is compute bound (capping it per row would pin the whole curve to
        its smallest, noisiest point)."""
        shaped: list[tuple[float, float]] = []
        for n, s in sorted(points.items()):
            shaped.append((n, max(s, shaped[-1][1]) if shaped else s))
        return cls(tuple(shaped))

    def __call__(self, n: float) -> float:
        tokens = [p[0] for p in self.points]
        if n <= tokens[0]:
            return self.points[0][1]
        if n >= tokens[-1]:
            last_n, last_s = self.points[-1]
            return last_s * n / last_n
        j = bisect.bisect_left(tokens, n)
        (n0, s0), (n1, s1) = self.points[j - 1], self.points[j]
        return s0 + (s1 - s0) * (n - n0) / (n1 - n0)


FREE = CostCurve(((1, 0.0),))
"""The draft cost of a method without a draft model (ngram lookup is negligible next to a pass)."""


class PassTotals(NamedTuple):
    """A token bucket's forward passes over the window."""

    seconds: float
    passes: float
    tokens: float  # 0: not reported (then the passes are taken at the bucket's edge)
    rows: float = 0.0  # sequences in those passes; 0: not reported

    def plus(self, other: "PassTotals") -> "PassTotals":
        return PassTotals(*(a + b for a, b in zip(self, other)))

    def mean_tokens(self, bucket: int) -> float:
        """Kept inside the bucket's sizes, (bucket/2, bucket]: Prometheus extrapolates each
        counter's increase on its own, so the ratio of two can stray a little outside."""
        if self.tokens <= 0 or self.passes <= 0:
            return float(bucket)
        return min(max(self.tokens / self.passes, float(bucket // 2 + 1)), float(bucket))


def _measured_means(histogram: Mapping[int, PassTotals], min_samples: int) -> dict[int, tuple[float, float]]:
    """bucket -> (mean tokens, mean seconds) of the buckets with min_samples passes."""
    return {
        bucket: (totals.mean_tokens(bucket), totals.seconds / totals.passes)
        for bucket, totals in histogram.items()
        if totals.passes >= min_samples and totals.seconds > 0
    }


def calibration_scale(
    curves: Sequence[tuple[Mapping[int, PassTotals], Mapping[int, float]]], min_samples: int, default: float = 1.0
) -> float:
    """How much slower (or faster) the machine runs now than at startup: the median ratio of
    measured passes to their calibration, over every (histogram, calibration) pair given
    (one model's pass shapes share it); `default` when nothing measured has a calibration."""
    ratios = []
    for histogram, calibrated in curves:
        calibration = {n: s for n, s in calibrated.items() if s > 0}
        if calibration:
            curve = CostCurve.of(calibration)
            ratios += [s / curve(n) for n, s in _measured_means(histogram, min_samples).values()]
    ratios.sort()
    return ratios[len(ratios) // 2] if ratios else default


def remember_passes(
    window: Mapping[PassKind, Mapping[int, PassTotals]],
    remembered: Mapping[PassKind, Mapping[int, tuple[PassTotals, float]]],
    now: float,
    min_samples: int,
    max_age_s: float,
) -> tuple[dict[PassKind, dict[int, PassTotals]], dict[PassKind, dict[int, tuple[PassTotals, float]]]]:
    """A window's pass totals with the buckets it has too few passes in filled from the
    last window that had them, if that was no more than `max_age_s` ago; and the memory,
    updated (bucket -> (totals, when measured)). A replica that stopped drafting keeps
    what its drafts cost instead of falling back to the startup calibration as soon as
    the window slides past them (on a GPU under load a draft pass costs several times its
    calibration, so the calibration would make drafting look cheap again each window)."""
    merged: dict[PassKind, dict[int, PassTotals]] = {}
    memory: dict[PassKind, dict[int, tuple[PassTotals, float]]] = {}
    for kind in set(window) | set(remembered):
        current, old = window.get(kind, {}), remembered.get(kind, {})
        merged[kind], memory[kind] = dict(current), {}
        for bucket in set(current) | set(old):
            totals = current.get(bucket)
            if totals is not None and totals.passes >= min_samples:
                memory[kind][bucket] = (totals, now)
            elif bucket in old and now - old[bucket][1] <= max_age_s:
                memory[kind][bucket] = old[bucket]
                merged[kind][bucket] = old[bucket][0]
    return merged, memory


def cost_points(
    histogram: Mapping[int, PassTotals],
    calibrated: Mapping[int, float],
    min_samples: int,
    scale: float | None = None,
) -> dict[float, float]:
    """Tokens -> seconds: per token bucket, the window's mean pass where it has min_samples
    passes (at the passes' mean token count), else the calibration gauge times `scale`
    (default: this curve's own `calibration_scale`), so a machine that is slower now than
    at startup does not mix two levels."""
    measured = _measured_means(histogram, min_samples)
    if scale is None:
        scale = calibration_scale([(histogram, calibrated)], min_samples)
    points = {float(n): s * scale for n, s in calibrated.items() if s > 0 and n not in measured}
    return points | dict(measured.values())


@dataclass(frozen=True)
class VerifyCosts:
    """``V_t(b, w) = T_t(b) + (w - 1) * S(b)``: the target's pass over b rows of w tokens."""

    decode: CostCurve  # T_t
    per_extra_token: CostCurve  # S, over rows

    @classmethod
    def of(cls, decode: CostCurve, slope_points: Mapping[float, float]) -> "VerifyCosts":
        return cls(decode, CostCurve.non_decreasing(slope_points))

    def __call__(self, rows: float, width: int) -> float:
        return self.decode(rows) + (width - 1) * self.per_extra_token(rows)


def verify_slope_points(
    verify: tuple[Mapping[int, PassTotals], Mapping[int, float]],
    decode: tuple[Mapping[int, PassTotals], Mapping[int, float]],
    decode_curve: CostCurve,
    min_samples: int,
    scale: float,
    max_batch: int,
) -> dict[float, float]:
    """Rows -> S from the target's (measured, calibrated) verify and decode passes.

    S is a difference of two timings, so it is best taken from one source: a verify bucket
    with min_samples passes and a rows count gives a point at its mean rows where decode
    passes over as many rows (same power-of-two bucket) were measured too (against
    `decode_curve`; a verify pass costing no more than that is timing noise and is
    dropped). Elsewhere the calibration gives the points, its verify passes (rows of
    CALIBRATION_VERIFY_WIDTH tokens, up to max_batch rows) against its own decode passes,
    times `scale`; but a measured verify bucket whose rows no decode pass covered still
    gives its point against `decode_curve` where that is dearer than the calibration's, or
    the calibration has none there. Only dearer: against a calibrated decode pass a verify
    pass measured under load can make drafting look free, while ignoring it where the
    startup sweep never got (its deadline cuts the widest shapes first) extrapolates a
    memory-bound slope into the compute-bound regime, which makes it look free too."""

    def slope(width: float, seconds: float, base: float) -> float | None:
        return (seconds - base) / (width - 1) if seconds > base else None

    measured_verify, calibrated_verify = verify
    measured_decode, calibrated_decode = decode
    decode_measured = {b for b, t in measured_decode.items() if t.passes >= min_samples and t.seconds > 0}
    by_rows: dict[int, PassTotals] = {}  # rows bucket -> the verify passes over such rows
    for totals in measured_verify.values():
        if totals.passes >= min_samples and totals.seconds > 0 and totals.tokens > totals.rows > 0:
            bucket = token_bucket(math.ceil(max(totals.rows / totals.passes, 1.0)))
            by_rows[bucket] = by_rows[bucket].plus(totals) if bucket in by_rows else totals
    covered: dict[int, tuple[float, float]] = {}  # bucket -> (rows, S), decode passes measured there
    uncovered: dict[int, tuple[float, float]] = {}  # the same, without
    for bucket, totals in by_rows.items():
        # Kept inside the bucket: Prometheus extrapolates each counter's increase apart.
        rows = min(max(totals.rows / totals.passes, float(bucket // 2 + 1)), float(bucket))
        value = slope(totals.tokens / totals.rows, totals.seconds / totals.passes, decode_curve(rows))
        if value is not None:
            (covered if bucket in decode_measured else uncovered)[bucket] = (rows, value)
    calibrated_points: dict[int, tuple[float, float]] = {}
    calibrated_positive = {n: t for n, t in calibrated_decode.items() if t > 0}
    if calibrated_positive:
        base = CostCurve.of(calibrated_positive)
        for n, seconds in calibrated_verify.items():
            rows = max(n // CALIBRATION_VERIFY_WIDTH, 1)
            if n > rows and rows <= max_batch and token_bucket(rows) not in covered:
                value = slope(n / rows, seconds, base(rows))
                if value is not None:
                    calibrated_points[token_bucket(rows)] = (float(rows), value * scale)
    for bucket, (rows, value) in uncovered.items():
        if value > calibrated_points.get(bucket, (rows, 0.0))[1]:
            calibrated_points[bucket] = (rows, value)
    return dict([*covered.values(), *calibrated_points.values()])


NO_OVERHEAD = FREE
"""Steps modelled as their forward passes alone (no step timings measured yet)."""


def bucket_batch(bucket: int) -> float:
    """The mean decode batch a power-of-two bucket stands for: the integers in (n/2, n]."""
    return (bucket // 2 + 1 + bucket) / 2


def step_tokens(b: float, k: int) -> float:
    """The positions a decode step verifies, what its overhead is filed under."""
    return b * (k + 1)


def step_overhead(steps: Mapping[tuple[int, int], tuple[float, float, float]], min_samples: int) -> CostCurve:
    """O(n) from the window's decode steps: `steps` maps (K, batch bucket) -> (sum of step
    wall seconds, sum of forward-pass seconds inside them, steps); buckets with fewer than
    `min_samples` steps are left out, kinds that verify the same n are pooled. Clipped at 0
    (timer jitter on a nearly pure step)."""
    pooled: dict[float, list[float]] = {}
    for (k, bucket), (wall, forward, count) in steps.items():
        if count >= min_samples and wall > 0:
            acc = pooled.setdefault(step_tokens(bucket_batch(bucket), k), [0.0, 0.0])
            acc[0] += wall - forward
            acc[1] += count
    if not pooled:
        return NO_OVERHEAD
    return CostCurve.of({n: max(extra / count, 0.0) for n, (extra, count) in pooled.items()})


# ---------------------------------------------------------------------------- goodput and K*


@dataclass(frozen=True)
class StepCosts:
    """What one decode step costs, as the model counts it."""

    target: CostCurve  # T_t: decode-shaped target passes
    draft: CostCurve  # T_d
    overhead: CostCurve = NO_OVERHEAD  # O(n)
    verify: VerifyCosts | None = None  # V_t (None: T_t(b * w), the passes' tokens alone)

    def forward(self, b: float, k: int) -> float:
        """F(b, K): the step's forward passes."""
        if k == 0:
            return self.target(b)
        verify = self.verify(b, k + 1) if self.verify is not None else self.target(b * (k + 1))
        return verify + k * self.draft(b)

    def seconds(self, b: float, k: int) -> float:
        return self.forward(b, k) + self.overhead(step_tokens(b, k))


def goodput(b: int, k: int, acceptance: Acceptance, costs: StepCosts) -> float:
    """Tokens per second of a decode step over b sequences drafting k tokens each."""
    tokens = b if k == 0 else b * acceptance.expected_tokens(k)
    return tokens / costs.seconds(b, k)


def best_k(b: int, acceptance: Acceptance, costs: StepCosts, k_max: int, min_gain: float) -> int:
    base = goodput(b, 0, acceptance, costs)
    k_max = min(k_max, len(acceptance.at_least))
    best, best_value = 0, base
    for k in range(1, k_max + 1):
        value = goodput(b, k, acceptance, costs)
        if value > best_value:
            best, best_value = k, value
    return best if best_value >= (1.0 + min_gain) * base else 0


def run_length_schedule(ks: Sequence[int]) -> Schedule:
    """``ks[b - 1]`` = K at batch b -> ``[lo, hi, K]`` rows, K = 0 runs left out."""
    rows: Schedule = []
    for b, k in enumerate(ks, start=1):
        if k == 0:
            continue
        if rows and rows[-1][1] == b - 1 and rows[-1][2] == k:
            rows[-1] = (rows[-1][0], b, k)
        else:
            rows.append((b, b, k))
    return rows


def schedule_k(schedule: Schedule, b: int) -> int:
    for lo, hi, k in schedule:
        if lo <= b <= hi:
            return k
    return 0


def break_even_of(ks: Sequence[int]) -> int | None:
    return next((b for b, k in enumerate(ks, start=1) if k == 0), None)


def schedule_break_even(schedule: Schedule, max_batch: int) -> int | None:
    """The break-even a schedule in force implies: the smallest batch it runs at K = 0
    (None: K > 0 up to max_batch)."""
    return break_even_of([schedule_k(schedule, b) for b in range(1, max_batch + 1)])


@dataclass(frozen=True)
class Decision:
    ks: tuple[int, ...]  # K*(b) for b = 1..max_batch
    schedule: Schedule
    break_even: int | None
    acceptance: Acceptance  # what it was decided from
    costs: StepCosts


def decide(
    acceptance: Acceptance, target: CostCurve, draft: CostCurve, params: PolicyParams,
    overhead: CostCurve = NO_OVERHEAD, verify: VerifyCosts | None = None,
) -> Decision:
    costs = StepCosts(target, draft, overhead, verify)
    ks = [best_k(b, acceptance, costs, params.k_max, params.min_gain) for b in range(1, params.max_batch + 1)]
    b_star = break_even_of(ks)
    if b_star is not None:
        # Past the break-even the verify pass is compute bound and only gets more so; a
        # larger batch that seems to pay again is a noisy timing, not a second regime.
        ks[b_star - 1:] = [0] * (len(ks) - b_star + 1)
    return Decision(tuple(ks), run_length_schedule(ks), b_star, acceptance, costs)


def coarse_k(decision: Decision, median_batch: int) -> int:
    """One K for a replica whose engine cannot follow a schedule: K*(median), 0 at/after b*."""
    if decision.break_even is not None and median_batch >= decision.break_even:
        return 0
    return decision.ks[min(max(median_batch, 1), len(decision.ks)) - 1]


# ---------------------------------------------------------------------------- batch distribution


def batch_weights(cumulative: Sequence[tuple[float, float]], max_batch: int) -> list[float]:
    """Histogram `[(le, cumulative count), ...]` of decode batch sizes -> weight per batch
    1..max_batch. A bucket's mass is spread evenly over the integer batches it covers."""
    weights = [0.0] * max_batch
    prev_le, prev_count = 0.0, 0.0
    for le, count in sorted(cumulative):
        mass = count - prev_count
        lo = math.floor(prev_le) + 1
        hi = max_batch if math.isinf(le) else min(math.floor(le), max_batch)
        if mass > 0:
            lo = min(lo, max_batch)
            hi = max(hi, lo)
            span = hi - lo + 1
            for b in range(lo, hi + 1):
                weights[b - 1] += mass / span
        prev_le, prev_count = le, max(count, prev_count)
    return weights


def median_batch(weights: Sequence[float]) -> int | None:
    total = sum(weights)
    if total <= 0:
        return None
    running = 0.0
    for b, w in enumerate(weights, start=1):
        running += w
        if running >= total / 2:
            return b
    return len(weights)


def weighted_goodput(
    schedule: Schedule, weights: Sequence[float], acceptance: Acceptance, costs: StepCosts
) -> float:
    """Expected step goodput under `schedule` when batch b occurs with weight weights[b-1];
    uniform over all batches when nothing was observed (a fresh or idle replica)."""
    if sum(weights) <= 0:
        weights = [1.0] * len(weights)
    total = sum(weights)
    k_limit = len(acceptance.at_least)
    return sum(
        w * goodput(b, min(schedule_k(schedule, b), k_limit), acceptance, costs)
        for b, w in enumerate(weights, start=1)
        if w > 0
    ) / total


def should_replace(
    current: Schedule,
    proposed: Schedule,
    weights: Sequence[float],
    decision: Decision,
    params: PolicyParams,
    seconds_since_push: float | None,
) -> bool:
    """Push `proposed` over `current`? Only if it changes expected goodput (under the
    measurements `decision` was made from) by more than the threshold and the cooldown has
    passed (None: never pushed, no cooldown)."""
    if proposed == current:
        return False
    if seconds_since_push is not None and seconds_since_push < params.cooldown_s:
        return False
    now_value = weighted_goodput(current, weights, decision.acceptance, decision.costs)
    new_value = weighted_goodput(proposed, weights, decision.acceptance, decision.costs)
    if now_value <= 0:
        return True
    return abs(new_value - now_value) / now_value > params.change_threshold


def bucket_moved(old: int | None, new: int | None) -> bool:
    """Did the break-even batch move into another power-of-two bucket (None = beyond max)?"""
    if old is None or new is None:
        return old != new
    return token_bucket(old) != token_bucket(new)
