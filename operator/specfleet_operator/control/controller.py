"""One control tick per deployment: read metrics -> policy -> actuate -> a decision record.

Fail static: without fresh metrics for a replica nothing about it changes (a new replica
still gets the fleet's current schedule, so it does not run on its startup defaults).
A replica whose admin API fails is retried at the next tick, and reported Degraded after
`degraded_after` consecutive failures. `mode: on|off` pins the config; `auto` learns.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

from specfleet.contract import SpeculationConfig, SpeculationMethod, constant_schedule
from specfleet_operator.control import policy
from specfleet_operator.control.actuation import ApplyResult, apply_configs
from specfleet_operator.control.fleet import FleetBackend, Replica
from specfleet_operator.control.metrics_source import MetricsSource, MetricsUnavailable, ReplicaWindow
from specfleet_operator.control.policy import Acceptance, CostCurve, Decision, PolicyParams, VerifyCosts

if TYPE_CHECKING:
    from specfleet_operator.spec import Spec

log = logging.getLogger("specfleet.control")

Mode = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class ControlSettings:
    mode: Mode = "auto"
    method: SpeculationMethod = "draft"
    k_max: int = 8
    k: int | None = None  # mode on: fixed K (k_max when None)
    window_s: float = 120.0
    params: PolicyParams = field(default_factory=PolicyParams)
    coarse: bool = False  # one K per replica, for engines that cannot follow a schedule
    degraded_after: int = 3

    @classmethod
    def from_spec(cls, spec: "Spec") -> "ControlSettings":
        """The settings a SpeculativeDeployment's spec asks for."""
        from specfleet_operator.durations import parse_duration

        s, control = spec.speculation, spec.speculation.control
        return cls(
            mode=s.mode,
            method=s.method,
            k_max=s.k_max,
            k=s.k,
            window_s=parse_duration(control.window),
            params=PolicyParams(
                k_max=s.k_max,
                max_batch=spec.serving.max_batch,
                min_gain=control.min_gain,
                cooldown_s=parse_duration(control.cooldown),
                prior_rate=control.prior_acceptance,
            ),
            coarse=spec.engine.kind == "vllm",
        )

    def pinned(self) -> SpeculationConfig | None:
        if self.mode == "off":
            return SpeculationConfig(enabled=False, method=self.method, k_max=self.k_max)
        if self.mode == "on":
            return SpeculationConfig(method=self.method, k_max=self.k_max, schedule=constant_schedule(self.k or self.k_max))
        return None

    def config(self, schedule: policy.Schedule) -> SpeculationConfig:
        return SpeculationConfig(method=self.method, k_max=self.k_max, schedule=schedule)


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    replica: str | None = None


@dataclass(frozen=True)
class ConditionState:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


@dataclass(frozen=True)
class ReplicaReport:
    name: str
    in_force: SpeculationConfig | None
    break_even: int | None  # of the schedule in force (None: K > 0 up to max batch, or nothing in force)
    acceptance: float | None  # P(accept >= 1) as estimated
    pushed: bool = False
    error: str | None = None
    estimated_break_even: int | None = None  # of the latest decision, which the change threshold may not push


@dataclass
class DecisionRecord:
    time: float
    mode: Mode
    replicas: list[ReplicaReport]
    conditions: list[ConditionState]
    events: list[Event]
    acceptance: float | None  # accepted / drafted tokens over the fleet's window
    break_even: int | None  # of the schedules in force, median over replicas (None: K > 0 up to max batch)
    speculating_replicas: int
    mean_k: float | None  # mean K per decode step over the fleet's window
    last_decision_time: float | None
    estimated_break_even: int | None = None  # of the latest decisions, median over replicas

    def condition(self, type_: str) -> ConditionState:
        return next(c for c in self.conditions if c.type == type_)


@dataclass
class _ReplicaState:
    acceptance: Acceptance
    acceptance_time: float
    passes: dict[policy.PassKind, dict[int, tuple[policy.PassTotals, float]]] = field(default_factory=dict)
    decision: Decision | None = None
    pushed_at: float | None = None
    failures: int = 0
    speculating: bool | None = None
    pushed_break_even: int | None = None
    has_pushed_decision: bool = False


def _speculating(config: SpeculationConfig | None) -> bool:
    return bool(config and config.enabled and any(k > 0 for _, _, k in config.schedule))


def _in_force_break_even(config: SpeculationConfig | None, max_batch: int) -> int | None:
    if config is None:
        return None
    return policy.schedule_break_even(config.schedule if config.enabled else [], max_batch)


def _median_break_even(values: list[int | None], max_batch: int) -> int | None:
    """Median over replicas, None (K > 0 up to max batch) counted as beyond every batch."""
    if not values:
        return None
    middle = statistics.median_low([max_batch + 1 if b is None else b for b in values])
    return None if middle > max_batch else int(middle)


TARGET_SHAPES = ("decode", "verify")


def _step_costs(
    forward: dict[policy.PassKind, dict[int, policy.PassTotals]], window: ReplicaWindow, p: PolicyParams, method: str,
) -> tuple[CostCurve | None, VerifyCosts | None, CostCurve | None]:
    """T_t, V_t and T_d from `forward` (the window's passes, remembered buckets filled in)
    and the calibration. A model's calibration is scaled by its own measured passes, the
    draft's by the target's while it has none (the machine is slower than at startup for
    both); V_t's slope from the same passes (policy.verify_slope_points): a replica that
    stopped drafting at a batch keeps the verify passes it ran there, and they meet the
    decode passes it runs now."""

    def pair(model: str, shape: str) -> tuple[dict[int, policy.PassTotals], dict[int, float]]:
        return forward.get((model, shape), {}), window.calibrated.get((model, shape), {})

    target_scale = policy.calibration_scale([pair("target", s) for s in TARGET_SHAPES], p.min_samples)
    decode_points = policy.cost_points(*pair("target", "decode"), p.min_samples, target_scale)
    if method == "ngram":
        draft: CostCurve | None = policy.FREE
    else:
        draft_scale = policy.calibration_scale([pair("draft", "decode")], p.min_samples, default=target_scale)
        draft_points = policy.cost_points(*pair("draft", "decode"), p.min_samples, draft_scale)
        draft = CostCurve.of(draft_points) if draft_points else None
    if not decode_points:
        return None, None, draft
    decode = CostCurve.of(decode_points)
    slope = policy.verify_slope_points(
        pair("target", "verify"), pair("target", "decode"),
        decode, p.min_samples, target_scale, p.max_batch,
    )
    return decode, VerifyCosts.of(decode, slope) if slope else None, draft


class Controller:
    def __init__(
        self,
        backend: FleetBackend,
        source: MetricsSource,
        settings: ControlSettings,
        *,
        clock: Callable[[], float] = time.time,
        actuation_timeout_s: float = 2.0,
    ) -> None:
        self.backend = backend
        self.source = source
        self.settings = settings
        self._clock = clock
        self._actuation_timeout = actuation_timeout_s
        self._state: dict[str, _ReplicaState] = {}
        self._last_decision: float | None = None
        self._pending_events: list[Event] = []

    def _replica_state(self, name: str, now: float) -> _ReplicaState:
        if name not in self._state:
            p = self.settings.params
            self._state[name] = _ReplicaState(policy.prior_acceptance(p.prior_rate, p.k_max), now)
        return self._state[name]

    def _decide(self, replica: Replica, window: ReplicaWindow, now: float) -> tuple[Decision | None, str | None]:
        """The replica's new Decision from its window, or why it has none."""
        p = self.settings.params
        state = self._replica_state(replica.name, now)
        prior = policy.prior_acceptance(p.prior_rate, p.k_max)
        reference = policy.decay_toward(
            state.acceptance, prior, policy.decay_factor(now - state.acceptance_time, p.decay_half_life_s)
        )
        state.acceptance = policy.estimate_acceptance(
            window.accepted_per_pos, window.draft_tokens_per_pos, reference, p.pseudo_count
        )
        state.acceptance_time = now
        forward, state.passes = policy.remember_passes(window.forward, state.passes, now, p.min_samples, p.cost_memory_s)
        target, verify, draft = _step_costs(forward, window, p, self.settings.method)
        if target is None or draft is None:
            return None, "no forward-pass timings or calibration for the " + ("target" if target is None else "draft")
        overhead = policy.step_overhead(window.steps, p.min_samples) if p.step_overhead else policy.NO_OVERHEAD
        decision = policy.decide(state.acceptance, target, draft, p, overhead, verify)
        log.debug(
            "%s: P(accept>=i) %s, T_t %s, V_t %s, T_d %s, overhead %s -> schedule %s, break-even %s", replica.name,
            [round(x, 3) for x in state.acceptance.at_least], target.points, verify and verify.per_extra_token.points,
            draft.points, overhead.points, decision.schedule, decision.break_even,
        )
        return decision, None

    def _proposal(self, replica: Replica, window: ReplicaWindow, decision: Decision, now: float) -> SpeculationConfig | None:
        """A config to push to `replica`, or None to keep what is in force."""
        p = self.settings.params
        weights = policy.batch_weights(window.batch_histogram, p.max_batch)
        if self.settings.coarse:
            k = policy.coarse_k(decision, policy.median_batch(weights) or 1)
            schedule = [(1, p.max_batch, k)] if k else []
        else:
            schedule = decision.schedule
        proposed = self.settings.config(schedule)
        applied = replica.applied
        if applied is None or (applied.enabled, applied.method, applied.k_max) != (True, proposed.method, proposed.k_max):
            return proposed
        state = self._state[replica.name]
        since = None if state.pushed_at is None else now - state.pushed_at
        if policy.should_replace(applied.schedule, schedule, weights, decision, p, since):
            return proposed
        return None

    def _fleet_schedule(self, replicas: list[Replica]) -> SpeculationConfig | None:
        """The config most replicas run now: what a newcomer gets while its metrics are missing."""
        configs = [r.applied for r in replicas if r.applied is not None]
        if not configs:
            return None
        counts = Counter(c.model_dump_json() for c in configs)
        return SpeculationConfig.model_validate_json(counts.most_common(1)[0][0])

    def _note_break_even(self, name: str, state: "_ReplicaState", pushed: dict[str, int | None]) -> None:
        """An Event when a pushed schedule moves the replica's break-even by a bucket or more
        (tied to pushes, so noise the change threshold absorbs makes no Events)."""
        if name not in pushed:
            return
        new = pushed[name]
        if state.has_pushed_decision and policy.bucket_moved(state.pushed_break_even, new):
            self._pending_events.append(
                Event("Normal", "BreakEvenMoved",
                      f"break-even batch {_fmt_b(state.pushed_break_even)} -> {_fmt_b(new)}", name)
            )
        state.pushed_break_even, state.has_pushed_decision = new, True

    async def tick(self) -> DecisionRecord:
        now = self._clock()
        settings = self.settings
        replicas = await self.backend.list_ready()
        pinned = settings.pinned()

        windows: dict[str, ReplicaWindow] = {}
        metrics_error: MetricsUnavailable | None = None
        try:
            windows = await self.source.fetch({r.name: r.base_url for r in replicas}, settings.window_s)
        except MetricsUnavailable as exc:
            metrics_error = exc
            log.warning("metrics unavailable (%s): %s", exc.reason, exc.message)

        pushes: list[tuple[Replica, SpeculationConfig]] = []
        notes: dict[str, str] = {}
        pushed_break_even: dict[str, int | None] = {}  # replica -> b* of the decision pushed to it
        decided = False
        fallback = self._fleet_schedule(replicas)
        for replica in replicas:
            state = self._replica_state(replica.name, now)
            if pinned is not None:
                if replica.applied != pinned:
                    pushes.append((replica, pinned))
                continue
            window = windows.get(replica.name)
            if window is None:
                notes[replica.name] = "no fresh metrics: keeping the config in force"
                if replica.applied is None and fallback is not None:
                    pushes.append((replica, fallback))
                continue
            decision, why_not = self._decide(replica, window, now)
            if decision is None:
                notes[replica.name] = str(why_not)
                continue
            decided = True
            state.decision = decision
            proposal = self._proposal(replica, window, decision, now)
            if proposal is not None and proposal != replica.applied:
                pushes.append((replica, proposal))
                pushed_break_even[replica.name] = _in_force_break_even(proposal, settings.params.max_batch)
        if decided:
            self._last_decision = now

        results = await apply_configs(pushes, timeout_s=self._actuation_timeout)
        by_name: dict[str, ApplyResult] = {res.replica: res for res in results}
        for (replica, _), res in zip(pushes, results):
            state = self._state[replica.name]
            if res.ok:
                assert res.config is not None
                await self.backend.record_applied(replica, res.config)
                state.pushed_at = now
                state.failures = 0
                self._note_break_even(replica.name, state, pushed_break_even)
            else:
                state.failures += 1
                log.warning("replica %s: PUT /admin/speculation failed: %s", replica.name, res.error)

        record = self._record(replicas, windows, by_name, notes, metrics_error, now)
        await self.backend.publish(record)
        return record

    def _record(
        self,
        replicas: list[Replica],
        windows: dict[str, ReplicaWindow],
        results: dict[str, ApplyResult],
        notes: dict[str, str],
        metrics_error: MetricsUnavailable | None,
        now: float,
    ) -> DecisionRecord:
        events, self._pending_events = self._pending_events, []
        p = self.settings.params
        reports = []
        for replica in replicas:
            state = self._state[replica.name]
            res = results.get(replica.name)
            in_force = res.config if res is not None and res.ok else replica.applied
            speculating = _speculating(in_force)
            # A replica first seen is taken as not speculating: its first K > 0 is news.
            if in_force is not None and speculating != bool(state.speculating):
                events.append(
                    Event(
                        "Normal", "SpeculationOn" if speculating else "SpeculationOff",
                        f"schedule {in_force.schedule if in_force else []}", replica.name,
                    )
                )
            if in_force is not None:
                state.speculating = speculating
            if res is not None and not res.ok and state.failures == self.settings.degraded_after:
                events.append(Event("Warning", "AdminApiFailing", f"{state.failures} failed pushes: {res.error}", replica.name))
            reports.append(
                ReplicaReport(
                    replica.name,
                    in_force,
                    _in_force_break_even(in_force, p.max_batch),
                    state.acceptance.at_least[0] if state.acceptance.at_least else None,
                    pushed=res is not None and res.ok,
                    error=(res.error if res is not None and not res.ok else notes.get(replica.name) or None),
                    estimated_break_even=state.decision.break_even if state.decision else None,
                )
            )

        total_drafted_tokens = sum(sum(w.draft_tokens_per_pos) for w in windows.values())
        total_accepted_tokens = sum(sum(w.accepted_per_pos) for w in windows.values())
        acceptance = total_accepted_tokens / total_drafted_tokens if total_drafted_tokens > 0 else None
        steps = [(w.decode_steps, w.mean_step_k()) for w in windows.values()]
        weighted = [(n, k) for n, k in steps if n > 0 and k is not None]
        mean_k = sum(n * k for n, k in weighted) / sum(n for n, _ in weighted) if weighted else None
        # What the fleet runs, not what it last estimated: the change threshold and the
        # cooldown can keep an older schedule in force while the estimate moves.
        break_even = _median_break_even([r.break_even for r in reports if r.in_force is not None], p.max_batch)
        estimated = _median_break_even(
            [r.estimated_break_even for r in reports if self._state[r.name].decision], p.max_batch
        )

        conditions = [self._metrics_condition(replicas, windows, metrics_error)]
        controlled = [r for r in reports if r.in_force is not None]
        conditions.append(
            ConditionState(
                "SpeculationControlled",
                "True" if replicas and len(controlled) == len(replicas) else "False",
                "AllReplicasControlled" if replicas and len(controlled) == len(replicas)
                else ("NoReadyReplicas" if not replicas else "ReplicasPending"),
                f"{len(controlled)}/{len(replicas)} ready replicas run a config set by the controller",
            )
        )
        failing = sorted(r.name for r in replicas if self._state[r.name].failures >= self.settings.degraded_after)
        conditions.append(
            ConditionState(
                "Degraded",
                "True" if failing else "False",
                "AdminApiFailing" if failing else "AsExpected",
                ("admin API failing on " + ", ".join(failing)) if failing else "",
            )
        )
        return DecisionRecord(
            time=now,
            mode=self.settings.mode,
            replicas=reports,
            conditions=conditions,
            events=events,
            acceptance=acceptance,
            break_even=break_even,
            speculating_replicas=sum(_speculating(r.in_force) for r in reports),
            mean_k=mean_k,
            last_decision_time=self._last_decision,
            estimated_break_even=estimated,
        )

    def _metrics_condition(
        self, replicas: list[Replica], windows: dict[str, ReplicaWindow], error: MetricsUnavailable | None
    ) -> ConditionState:
        if error is not None:
            return ConditionState("MetricsAvailable", "False", error.reason, error.message)
        missing = sorted(r.name for r in replicas if r.name not in windows)
        if missing:
            return ConditionState(
                "MetricsAvailable", "False", "SeriesStale", "no fresh series for " + ", ".join(missing)
            )
        return ConditionState("MetricsAvailable", "True", "SeriesFresh", f"fresh series for {len(replicas)} replicas")


def _fmt_b(b: int | None) -> str:
    return "beyond max batch" if b is None else str(b)
