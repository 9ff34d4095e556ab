"""The live terminal view of `specfleet up`: one row per replica, refreshed every second.

Rendering is a pure function of a `ViewState`; the fleet loop fills the state from the
controller's decision records (what is in force, break-even, acceptance estimate) and from
its own one-second readings of the replicas (decode batch, K used, tokens/s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from specfleet.contract import MAX_SCHEDULE_BATCH, SpeculationConfig
from specfleet.local.probe import ReplicaRates


def format_schedule(config: SpeculationConfig | None) -> str:
    """A schedule as `b1-4:K5 b5-6:K2 b7+:K0`, `off`, or `-` when none is known."""
    if config is None:
        return "-"
    if not config.enabled:
        return "off"
    rows = sorted(config.schedule)
    parts = []
    for lo, hi, k in rows:
        span = f"b{lo}+" if hi >= MAX_SCHEDULE_BATCH else (f"b{lo}" if lo == hi else f"b{lo}-{hi}")
        parts.append(f"{span}:K{k}")
    last_hi = max((hi for _, hi, _ in rows), default=0)
    if last_hi < MAX_SCHEDULE_BATCH:
        parts.append(f"b{last_hi + 1}+:K0")
    return " ".join(parts)


@dataclass
class ReplicaView:
    name: str
    base_url: str
    rates: ReplicaRates | None = None  # over the last second
    in_force: SpeculationConfig | None = None
    break_even: int | None = None  # of the schedule in force (None: K > 0 up to max batch)
    estimated_break_even: int | None = None  # the controller's latest estimate, not yet pushed if it differs
    acceptance_estimate: float | None = None  # the controller's P(accept >= 1)
    note: str | None = None


@dataclass
class ViewState:
    deployment: str
    router_url: str
    metrics_source: str
    control_interval_s: float
    max_batch: int
    replicas: list[ReplicaView] = field(default_factory=list)
    phase: str | None = None
    phase_ends_at: float | None = None
    offered: int | None = None
    last_decision_at: float | None = None
    conditions: list[tuple[str, str, str]] = field(default_factory=list)  # (type, status, reason)
    events: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _b(value: int | None, max_batch: int) -> str:
    return f">{max_batch}" if value is None else str(value)


def _break_even(replica: ReplicaView, max_batch: int) -> str:
    """The in-force schedule's break-even, and the estimate beside it where they differ."""
    if replica.in_force is None:
        return "-"
    shown = _b(replica.break_even, max_batch)
    if replica.estimated_break_even != replica.break_even:
        shown += f" (est {_b(replica.estimated_break_even, max_batch)})"
    return shown


def render(state: ViewState, now: float | None = None) -> Group:
    now = time.time() if now is None else now
    header = Text()
    header.append(f"specfleet up: {state.deployment}", style="bold")
    header.append(f"   OpenAI endpoint {state.router_url}/v1   metrics: {state.metrics_source}")
    header.append(f"   up {now - state.started_at:.0f}s\n")
    if state.phase is not None:
        left = "" if state.phase_ends_at is None else f", {max(0.0, state.phase_ends_at - now):.0f}s left"
        header.append(f"demo phase: {state.phase} (offered concurrency {state.offered}{left})   ", style="cyan")
    last = "never" if state.last_decision_at is None else f"{now - state.last_decision_at:.0f}s ago"
    header.append(f"controller every {state.control_interval_s:g}s, last decision {last}")
    if state.conditions:
        header.append("\n" + "  ".join(f"{t}={s} ({r})" for t, s, r in state.conditions), style="dim")

    table = Table(expand=True)
    for col, justify in (
        ("replica", "left"), ("decode batch", "right"), ("running", "right"), ("K now", "right"),
        ("acceptance", "right"), ("schedule in force", "left"), ("break-even b*", "right"), ("tokens/s", "right"),
    ):
        table.add_column(col, justify=justify)
    for replica in state.replicas:
        r = replica.rates
        measured = r.acceptance if r is not None and r.acceptance is not None else replica.acceptance_estimate
        table.add_row(
            replica.name,
            _fmt(r.mean_batch if r else None, ".1f"),
            _fmt(r.running if r else None, ".0f"),
            _fmt(r.mean_k if r else None, ".1f"),
            _fmt(measured, ".2f"),
            format_schedule(replica.in_force) + (f"  [dim]{replica.note}[/dim]" if replica.note else ""),
            _break_even(replica, state.max_batch),
            _fmt(r.tokens_per_s if r else None, ".1f"),
        )
    parts: list = [header, table]
    if state.events:
        parts.append(Panel("\n".join(state.events[-5:]), title="controller events", title_align="left"))
    parts.append(Text("Ctrl-C stops the fleet", style="dim"))
    return Group(*parts)
