"""The demo's results: per phase and replica what the fleet did, the verdict, and a PNG."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from rich.table import Table

from specfleet.local.probe import ReplicaCounters, ReplicaRates, rates


@dataclass(frozen=True)
class PhaseRecord:
    """One load phase: its offered concurrency and each replica's counters at the start of
    its steady part (after `settle` seconds, so ramp-up steps do not count) and at its end."""

    name: str
    streams: int
    replicas: int
    start: float
    steady_from: float
    end: float
    counters_start: dict[str, ReplicaCounters]
    counters_end: dict[str, ReplicaCounters]

    def rates(self) -> dict[str, ReplicaRates]:
        return {
            name: rates(self.counters_start[name], self.counters_end[name])
            for name in self.counters_end
            if name in self.counters_start
        }


@dataclass(frozen=True)
class PhaseSummary:
    phase: str
    replica: str
    offered: int  # concurrent streams over the fleet
    offered_per_replica: float
    mean_batch: float | None
    mean_k: float | None
    speculating_fraction: float | None
    tokens_per_s: float
    acceptance: float | None


def summarize(phases: list[PhaseRecord]) -> list[PhaseSummary]:
    out = []
    for phase in phases:
        for name, r in sorted(phase.rates().items()):
            out.append(
                PhaseSummary(
                    phase=phase.name,
                    replica=name,
                    offered=phase.streams,
                    offered_per_replica=phase.streams / max(phase.replicas, 1),
                    mean_batch=r.mean_batch,
                    mean_k=r.mean_k,
                    speculating_fraction=r.speculating_fraction,
                    tokens_per_s=r.tokens_per_s,
                    acceptance=r.acceptance,
                )
            )
    return out


# "Speculation on at low load" means on for most decode steps, not for a stray few.
LOW_LOAD_MIN_SPECULATING = 0.5


def verdict(summary: list[PhaseSummary], high_phases: set[str]) -> list[str]:
    """What contradicts "speculate at low load, not at high load", one line per problem
    (empty: in every low phase each replica speculated on most decode steps, and in every
    high phase on none)."""
    problems = []
    for row in summary:
        where = f"{row.replica} in phase {row.phase}"
        fraction = row.speculating_fraction
        if row.mean_k is None or fraction is None:
            problems.append(f"{where}: no decode steps measured")
        elif row.phase in high_phases and fraction > 0:
            problems.append(f"{where}: speculated on {fraction:.1%} of steps (mean K {row.mean_k:.2f}) under high load")
        elif row.phase not in high_phases and fraction < LOW_LOAD_MIN_SPECULATING:
            problems.append(f"{where}: speculated on only {fraction:.1%} of steps under low load")
    return problems


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summary_table(summary: list[PhaseSummary]) -> Table:
    table = Table(title="specfleet up --demo: per phase, per replica (steady part of each phase)")
    for col, justify in (
        ("phase", "left"), ("replica", "left"), ("offered", "right"), ("per replica", "right"),
        ("decode batch", "right"), ("mean K", "right"), ("steps speculating", "right"),
        ("tokens/s", "right"), ("acceptance", "right"),
    ):
        table.add_column(col, justify=justify)
    for row in summary:
        table.add_row(
            row.phase, row.replica, str(row.offered), f"{row.offered_per_replica:g}",
            _fmt(row.mean_batch, ".1f"), _fmt(row.mean_k, ".2f"), _fmt(row.speculating_fraction, ".0%"),
            f"{row.tokens_per_s:.1f}", _fmt(row.acceptance, ".2f"),
        )
    return table


BEYOND_MAX_BATCH = math.inf
"""A break-even sample for a schedule that keeps K > 0 up to the max batch."""


@dataclass
class Timeline:
    """Once-a-second samples: offered streams, each replica's rates over the last second, and
    the break-even batch its schedule in force implies (None: no schedule known yet)."""

    times: list[float] = field(default_factory=list)
    offered: list[int] = field(default_factory=list)
    per_replica: dict[str, list[ReplicaRates | None]] = field(default_factory=dict)
    break_even: dict[str, list[float | None]] = field(default_factory=dict)

    def add(
        self, t: float, offered: int, replica_rates: dict[str, ReplicaRates | None],
        break_even: Mapping[str, float | None] | None = None,
    ) -> None:
        for name in replica_rates.keys() - self.per_replica.keys():
            self.per_replica[name] = [None] * len(self.times)
            self.break_even[name] = [None] * len(self.times)
        self.times.append(t)
        self.offered.append(offered)
        for name, series in self.per_replica.items():
            series.append(replica_rates.get(name))
            self.break_even[name].append((break_even or {}).get(name))


def plot_timeline(timeline: Timeline, phases: list[PhaseRecord], path: Path) -> Path:
    """Offered concurrency, K per replica and tokens/s over time, phases shaded; the
    break-even drawn is each replica's schedule in force at that moment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = phases[0].start if phases else (timeline.times[0] if timeline.times else 0.0)
    # Start a few seconds before the first phase: the idle time before it says nothing.
    keep = [i for i, t in enumerate(timeline.times) if t >= t0 - 5]
    xs = [timeline.times[i] - t0 for i in keep]
    offered = [timeline.offered[i] for i in keep]
    per_replica = {name: [series[i] for i in keep] for name, series in timeline.per_replica.items()}
    break_even = {name: [series[i] for i in keep] for name, series in timeline.break_even.items()}
    fig, (ax_load, ax_k, ax_tps) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    ax_load.step(xs, offered, where="post", color="black", label="offered concurrency (fleet)")
    for name, series in sorted(per_replica.items()):
        ax_load.plot(xs, [r.mean_batch if r and r.mean_batch is not None else float("nan") for r in series],
                     label=f"{name} decode batch", alpha=0.8)
        ax_k.plot(xs, [r.mean_k if r and r.mean_k is not None else float("nan") for r in series],
                  label=f"{name} K", marker=".", linestyle="-", alpha=0.8)
        ax_tps.plot(xs, [r.tokens_per_s if r else float("nan") for r in series], label=f"{name}", alpha=0.8)
    for name, series in sorted(break_even.items()):
        # No line where nothing is in force yet or K > 0 up to the max batch.
        ys = [b if b is not None and math.isfinite(b) else float("nan") for b in series]
        if any(math.isfinite(y) for y in ys):
            ax_load.step(xs, ys, where="post", linestyle="--", linewidth=1, label=f"{name} b* in force")
    ax_load.set_ylabel("concurrency / batch")
    ax_k.set_ylabel("K per step (mean)")
    ax_tps.set_ylabel("output tokens/s")
    ax_tps.set_xlabel("seconds since the demo started")
    for ax in (ax_load, ax_k, ax_tps):
        for i, phase in enumerate(phases):
            ax.axvspan(phase.start - t0, phase.end - t0, color="tab:gray" if i % 2 else "tab:blue", alpha=0.08)
        ax.legend(loc="upper right", fontsize="small")
        ax.grid(alpha=0.3)
    for phase in phases:
        ax_load.annotate(phase.name, ((phase.start + phase.end) / 2 - t0, 1.0), xycoords=("data", "axes fraction"),
                         ha="center", va="bottom")
    fig.suptitle("specfleet: speculation follows the load (K per replica vs offered concurrency)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_summary_json(summary: list[PhaseSummary], problems: list[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"phases": [asdict(r) for r in summary], "problems": problems}, indent=2))
    return path
