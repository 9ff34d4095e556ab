"""The running local fleet: router, controller loop, one-second readings, view, demo.

Processes (replicas, Prometheus) are started and stopped by the caller, in the main
thread, so a Ctrl-C at any moment reaches code that stops them; this module runs the
asyncio part on top of them until `stop` is set or the demo ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import uvicorn
from rich.console import Console
from rich.live import Live

from specfleet.local.load import LoadGenerator, Phase, demo_phases
from specfleet.local.plan import FleetPlan
from specfleet.local.probe import ReplicaCounters, ReplicaRates, rates, scrape
from specfleet.local.replicas import LocalReplica
from specfleet.local.report import (
    BEYOND_MAX_BATCH,
    PhaseRecord,
    PhaseSummary,
    Timeline,
    plot_timeline,
    summarize,
    summary_table,
    verdict,
    write_summary_json,
)
from specfleet.local.router import KEEP_ALIVE_SECONDS, Backend, Router
from specfleet.local.view import ReplicaView, ViewState, format_schedule, render
from specfleet_operator.control.controller import Controller, DecisionRecord
from specfleet_operator.control.fleet import Replica
from specfleet_operator.control.local_backend import LocalBackend
from specfleet_operator.control.metrics_source import MetricsSource

log = logging.getLogger("specfleet.up")


@dataclass(frozen=True)
class DemoOptions:
    phase_seconds: float = 40.0
    settle_seconds: float = 15.0  # the start of each phase that the summary leaves out
    warm_up_seconds: float | None = None  # None: the CR's cooldown plus one control interval
    max_tokens: int = 64
    ready_timeout: float = 90.0  # for the controller's first decision on every replica
    prompts: tuple[str, ...] = ()


@dataclass
class DemoResult:
    summary: list[PhaseSummary]
    problems: list[str]
    png: Path
    json: Path


def _log_failure(task: asyncio.Task) -> None:
    """A background loop that died would otherwise vanish without a word (until shutdown)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_coro().__qualname__, exc_info=task.exception())


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: `specfleet up` owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class LocalFleet:
    plan: FleetPlan
    replicas: list[LocalReplica]
    source: MetricsSource
    metrics_description: str
    router_port: int
    state_dir: Path
    console: Console
    live_view: bool
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.router = Router([Backend(r.name, r.base_url) for r in self.replicas])
        self.backend = LocalBackend(lambda: self._control_replicas())
        self.controller = Controller(self.backend, self.source, self.plan.control)
        self.view = ViewState(
            deployment=self.plan.name,
            router_url=self.router_url,
            metrics_source=self.metrics_description,
            control_interval_s=self.plan.interval_s,
            max_batch=self.plan.max_batch,
            replicas=[ReplicaView(r.name, r.base_url) for r in self.replicas],
        )
        self.record: DecisionRecord | None = None
        self.timeline = Timeline()
        self._counters: dict[str, ReplicaCounters] = {}
        self._offered = 0

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    def _control_replicas(self) -> list[Replica]:
        # A replica's process id is its incarnation: a restarted one is a new runtime.
        return [Replica(r.name, r.base_url, r.admin_token, str(r.process.pid)) for r in self.replicas]

    # -------------------------------------------------------------------- loops

    async def _control_loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self._take(await self.controller.tick())
            except Exception:  # a bad tick must not end the fleet; the next one retries
                log.exception("controller tick failed")
            await asyncio.sleep(max(0.0, self.plan.interval_s - (time.monotonic() - started)))

    def _take(self, record: DecisionRecord) -> None:
        self.record = record
        by_name = {r.name: r for r in record.replicas}
        for view in self.view.replicas:
            report = by_name.get(view.name)
            if report is not None:
                if report.in_force != view.in_force or report.break_even != view.break_even:
                    log.info("%s: schedule %s, break-even %s, acceptance estimate %s", view.name,
                             format_schedule(report.in_force), report.break_even,
                             None if report.acceptance is None else round(report.acceptance, 3))
                view.in_force = report.in_force
                view.break_even = report.break_even
                view.estimated_break_even = report.estimated_break_even
                view.acceptance_estimate = report.acceptance
                view.note = report.error
        self.view.last_decision_at = record.last_decision_time
        self.view.conditions = [(c.type, c.status, c.reason) for c in record.conditions]
        for event in record.events:
            line = f"{time.strftime('%H:%M:%S')} {event.replica or 'fleet'} {event.reason}: {event.message}"
            self.view.events.append(line)
            log.info(line)
        del self.view.events[:-20]

    async def read_counters(self, client: httpx.AsyncClient) -> dict[str, ReplicaCounters]:
        now = time.monotonic()
        readings = await asyncio.gather(*(scrape(client, r.base_url, now) for r in self.replicas))
        return {r.name: c for r, c in zip(self.replicas, readings) if c is not None}

    async def _probe_loop(self) -> None:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                readings = await self.read_counters(client)
                current: dict[str, ReplicaRates | None] = {}
                for view in self.view.replicas:
                    new, old = readings.get(view.name), self._counters.get(view.name)
                    view.rates = rates(old, new) if new is not None and old is not None else None
                    current[view.name] = view.rates
                self._counters.update(readings)
                in_force_b = {
                    v.name: (BEYOND_MAX_BATCH if v.break_even is None else float(v.break_even))
                    for v in self.view.replicas if v.in_force is not None
                }
                self.timeline.add(time.time(), self._offered, current, in_force_b)
                await asyncio.sleep(1.0)

    async def _view_loop(self) -> None:
        if not self.live_view:
            return
        with Live(render(self.view), console=self.console, auto_refresh=False, transient=True) as live:
            while True:
                live.update(render(self.view), refresh=True)
                await asyncio.sleep(1.0)

    # -------------------------------------------------------------------- demo

    async def _wait_controlled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.record
            if record is not None and record.replicas and all(r.in_force is not None for r in record.replicas):
                if len(record.replicas) == len(self.replicas):
                    return True
            await asyncio.sleep(0.5)
        return False

    def _say(self, message: str) -> None:
        log.info(message)
        if not self.live_view:
            self.console.print(message)

    async def run_demo(self, options: DemoOptions) -> DemoResult:
        n = len(self.replicas)
        if not await self._wait_controlled(options.ready_timeout):
            self._say("demo: not every replica has a controller decision yet; starting anyway")
        load = LoadGenerator(self.router_url, self.plan.served_model_name, list(options.prompts), max_tokens=options.max_tokens)
        phases: list[PhaseRecord] = []
        warm_up = options.warm_up_seconds
        if warm_up is None:  # one cooldown plus one interval: time for a decision from live data
            warm_up = self.plan.control.params.cooldown_s + self.plan.interval_s
        plan = demo_phases(n, self.plan.max_batch, options.phase_seconds, warm_up)
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
                for phase in plan:
                    if phase.high and self.record is not None:
                        self._say(f"demo: break-even batch now {self.record.break_even or f'>{self.plan.max_batch}'}; "
                                  f"offering {phase.streams // n} streams per replica")
                    phases.append(await self._run_phase(client, load, phase, options.settle_seconds))
        finally:
            self._offered = 0
            self.view.phase = None
            await load.aclose()
        measured = {p.name for p in plan if p.measured}
        summary = summarize([p for p in phases if p.name in measured])
        problems = verdict(summary, {p.name for p in plan if p.high})
        if load.stats.failed:
            problems.append(f"{load.stats.failed} of {load.stats.failed + load.stats.completed} demo requests failed (last: {load.stats.last_error})")
        png = plot_timeline(self.timeline, phases, self.state_dir / "demo-timeline.png")
        summary_json = write_summary_json(summary, problems, self.state_dir / "demo-summary.json")
        return DemoResult(summary, problems, png, summary_json)

    async def _run_phase(self, client: httpx.AsyncClient, load: LoadGenerator, phase: Phase, settle: float) -> PhaseRecord:
        start = time.time()
        self._offered = phase.streams
        self.view.phase, self.view.offered, self.view.phase_ends_at = phase.name, phase.streams, start + phase.seconds
        self._say(f"demo: phase {phase.name}, {phase.streams} concurrent streams for {phase.seconds:g}s")
        load.set_streams(phase.streams)
        settle = min(settle, phase.seconds / 2)
        await asyncio.sleep(settle)
        steady_from = time.time()
        first = await self.read_counters(client)
        await asyncio.sleep(max(0.0, phase.seconds - settle))
        last = await self.read_counters(client)
        return PhaseRecord(phase.name, phase.streams, len(self.replicas), start, steady_from, time.time(), first, last)

    # -------------------------------------------------------------------- run

    async def run(self, demo: DemoOptions | None) -> DemoResult | None:
        """Serve until `stop` is set (or the demo ends); returns the demo's result."""
        server = _EmbeddedServer(uvicorn.Config(self.router.app, host="127.0.0.1", port=self.router_port,
                                                log_level="warning", lifespan="on",
                                                timeout_keep_alive=KEEP_ALIVE_SECONDS))
        tasks = [asyncio.create_task(coro) for coro in (self._control_loop(), self._probe_loop(), self._view_loop())]
        for task in tasks:
            task.add_done_callback(_log_failure)
        serving = asyncio.create_task(server.serve())
        result: DemoResult | None = None
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                    raise RuntimeError(f"the router could not listen on port {self.router_port}")
                await asyncio.sleep(0.05)
            self.console.print(
                f"specfleet up: serving {self.router_url}/v1 ({len(self.replicas)} replicas of "
                f"{self.plan.served_model_name}; metrics: {self.metrics_description}; Ctrl-C stops)"
            )
            stopped = asyncio.create_task(self.stop.wait())
            if demo is None:
                await stopped
            else:
                demo_task = asyncio.create_task(self.run_demo(demo))
                done, _ = await asyncio.wait({demo_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if demo_task in done:
                    result = demo_task.result()
                else:
                    demo_task.cancel()
                    await asyncio.gather(demo_task, return_exceptions=True)
            stopped.cancel()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            server.should_exit = True
            await asyncio.gather(serving, return_exceptions=True)
        if result is not None:
            self.console.print(summary_table(result.summary))
        return result
