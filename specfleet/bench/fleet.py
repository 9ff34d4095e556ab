"""`specfleet bench fleet`: the control loop against fixed speculation policies, side by side.

One local fleet (real `specfleet serve` replicas); every policy runs on the same replicas,
so the comparison is a ratio measured in one sitting. Static policies are pushed over the
admin API; `auto` is the controller (ScrapeSource: the replicas' /metrics directly, a
short window) ticking every second while it runs.

- Concurrency sweep, made resolvable on a noisy machine: at each concurrency one load runs
  without a break while the policies take turns on it, `repeats` rounds, the order rotated
  each round (so a slow drift of the machine hits every policy alike); a point is the
  median of its rounds, and every round's value is kept in the JSON. Each turn starts with
  the same unmeasured warmup after its switch. Before the first round at a new concurrency
  auto runs for `settle` seconds (unmeasured): its controller learns the new load live, as
  it would in service. Between its turns auto's controller is paused, not replaced: it
  resumes with its own state and the schedules it had in force, and a fresh metrics window
  (never the static policies' data).
- Trace: low -> high -> low load, every compared policy and auto in turn, `repeats`
  rounds with the order rotated; a policy's goodput is the median of its rounds.

The JSON's top level carries `auto_vs_best_static_min_ratio` (min over concurrencies of auto
/ the best static policy at that concurrency, medians) and `trace_auto_vs_best_single_static`.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, TypeVar

import httpx
import typer

from specfleet.bench.load import ContinuousLoad, LoadResult, percentile, run_load
from specfleet.contract import ADMIN_SPECULATION_PATH, SpeculationConfig, constant_schedule
from specfleet.local.replicas import ReplicaSet
from specfleet_operator.control.controller import ControlSettings, Controller
from specfleet_operator.control.fleet import Replica
from specfleet_operator.control.local_backend import LocalBackend
from specfleet_operator.control.metrics_source import ScrapeSource
from specfleet_operator.control.policy import PolicyParams

AUTO = "auto"
T = TypeVar("T")


@dataclass(frozen=True)
class FleetBenchOptions:
    method: str
    k_max: int
    max_batch: int
    concurrency: list[int]
    k_candidates: list[int]
    hand_schedule: list[tuple[int, int, int]]
    seconds: float
    warmup_s: float
    trace: list[tuple[int, float]]  # (concurrency per replica, seconds)
    max_tokens: int
    prompts: list[str]
    model_name: str
    min_gain: float = 0.05
    step_overhead: bool = True
    repeats: int = 3
    settle_s: float = 6.0


@dataclass
class PointResult:
    goodput: float  # output tokens/s over the fleet, from the replicas' own counters (median of repeats)
    tpot_p50: float | None  # over the requests that completed (in the sweep: that lived inside a turn)
    tpot_p99: float | None
    completed: int
    failed: int
    goodput_repeats: list[float] | None = None  # each round's value, in round order


async def generated_tokens(replicas: ReplicaSet) -> float:
    """The fleet's `vllm:generation_tokens_total`: a window's goodput counts every token,
    including those of requests still streaming when it ends."""
    from prometheus_client.parser import text_string_to_metric_families

    from specfleet.contract import Metric

    total = 0.0
    async with httpx.AsyncClient(timeout=10) as client:
        for r in replicas:
            text = (await client.get(r.base_url + "/metrics")).text
            for family in text_string_to_metric_families(text):
                total += sum(s.value for s in family.samples if s.name == Metric.GENERATION_TOKENS)
    return total


def static_policies(opts: FleetBenchOptions) -> dict[str, SpeculationConfig]:
    policies = {"off": SpeculationConfig(enabled=False, method=opts.method, k_max=opts.k_max)}
    for k in opts.k_candidates:
        policies[f"on-k{k}"] = SpeculationConfig(method=opts.method, k_max=opts.k_max, schedule=constant_schedule(k))
    policies["hand-tuned"] = SpeculationConfig(method=opts.method, k_max=opts.k_max, schedule=opts.hand_schedule)
    return policies


async def _put(client: httpx.AsyncClient, replica: Any, config: SpeculationConfig) -> None:
    response = await client.put(
        replica.base_url + ADMIN_SPECULATION_PATH, json=config.model_dump(mode="json"),
        headers={"Authorization": f"Bearer {replica.admin_token}"},
    )
    response.raise_for_status()


async def push(replicas: ReplicaSet, config: SpeculationConfig) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for r in replicas:
            await _put(client, r, config)


class AutoLoop:
    """The controller, ticking in the background while `auto` has the fleet.

    Paused while a static policy runs and resumed after it, never rebuilt: its acceptance
    estimates and last decisions carry over, the schedules it had in force are put back
    first, and its metrics window restarts (the static policies' steps are not its data).
    """

    def __init__(self, replicas: ReplicaSet, opts: FleetBenchOptions) -> None:
        self.replicas = replicas
        self.backend = LocalBackend(
            lambda: [Replica(r.name, r.base_url, r.admin_token, str(r.process.pid)) for r in replicas]
        )
        settings = ControlSettings(
            mode="auto", method=opts.method, k_max=opts.k_max, window_s=4.0,
            params=PolicyParams(
                k_max=opts.k_max, max_batch=opts.max_batch, min_gain=opts.min_gain, cooldown_s=2.0, min_samples=4,
                step_overhead=opts.step_overhead,
            ),
        )
        self.controller = Controller(self.backend, ScrapeSource(), settings)
        self._task: asyncio.Task | None = None
        self.schedules: list[list] = []

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(1.0)  # first: a second of window for the fresh source
            record = await self.controller.tick()
            self.schedules.append([r.in_force.schedule if r.in_force else None for r in record.replicas])

    async def _restore(self) -> None:
        """Put back what the controller had in force; a replica it never configured gets
        its first decision at the first tick."""
        async with httpx.AsyncClient(timeout=10) as client:
            for r in self.replicas:
                config = self.backend.applied(r.name)
                if config is not None:
                    await _put(client, r, config)

    async def __aenter__(self) -> "AutoLoop":
        await self._restore()
        source = ScrapeSource()
        await source.fetch({r.name: r.base_url for r in self.replicas}, 0.0)  # the window's start
        self.controller.source = source
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def _window_goodput(replicas: ReplicaSet, seconds: float) -> float:
    """Output tokens/s the fleet generated over the next `seconds` (every token, including
    those of requests still streaming when the window ends)."""
    before, started = await generated_tokens(replicas), time.perf_counter()
    await asyncio.sleep(seconds)
    return (await generated_tokens(replicas) - before) / (time.perf_counter() - started)


def _rotated(names: list[str], round_: int) -> list[str]:
    """The turn order of a round: each round starts one policy later."""
    shift = round_ % len(names)
    return names[shift:] + names[:shift]


async def _under_policy(
    name: str, replicas: ReplicaSet, statics: dict[str, SpeculationConfig], auto: AutoLoop,
    work: Callable[[], Awaitable[T]],
) -> T:
    """`work` with policy `name` in force: a static config pushed first, or auto's
    controller resumed for its duration."""
    if name == AUTO:
        async with auto:
            return await work()
    await push(replicas, statics[name])
    return await work()


async def _sweep_concurrency(
    replicas: ReplicaSet, opts: FleetBenchOptions, concurrency: int, statics: dict[str, SpeculationConfig],
    auto: AutoLoop, say: Callable[[str], None],
) -> tuple[dict[str, PointResult], Any]:
    """Every policy at one concurrency: `repeats` rotated rounds on one unbroken load."""
    names = [*statics, AUTO]
    goodputs: dict[str, list[float]] = {n: [] for n in names}
    tpots: dict[str, list[float]] = {n: [] for n in names}
    load = ContinuousLoad(
        [r.base_url for r in replicas], concurrency, model=opts.model_name, max_tokens=opts.max_tokens,
        prompts=opts.prompts,
    )
    async with load:
        async with auto:
            await asyncio.sleep(opts.settle_s)
        async def measured_turn() -> float:
            await asyncio.sleep(opts.warmup_s)
            return await _window_goodput(replicas, opts.seconds)

        for round_ in range(opts.repeats):
            for name in _rotated(names, round_):
                switched = time.perf_counter()
                goodputs[name].append(await _under_policy(name, replicas, statics, auto, measured_turn))
                tpots[name] += [r.tpot_s for r in load.requests_within(switched, time.perf_counter())]
            say(f"c={concurrency:<3} round {round_ + 1}: " + "  ".join(f"{n} {goodputs[n][-1]:.0f}" for n in names))
    failed, completed = load.result.failed, load.result.completed
    points = {
        n: PointResult(
            statistics.median(goodputs[n]), percentile(tpots[n], 50), percentile(tpots[n], 99),
            # The load is shared by all policies: its counts go to the fleet, once, under auto.
            completed if n == AUTO else 0, failed if n == AUTO else 0, goodputs[n],
        )
        for n in names
    }
    return points, auto.schedules[-1] if auto.schedules else None


async def _trace(replicas: ReplicaSet, opts: FleetBenchOptions) -> tuple[float, LoadResult]:
    """The low-high-low trace, requests of each phase run to completion: the goodput over
    all of it, and its requests."""
    before, started = await generated_tokens(replicas), time.perf_counter()
    total: LoadResult | None = None
    for concurrency, seconds in opts.trace:
        part = await run_load(
            [r.base_url for r in replicas], concurrency, seconds,
            model=opts.model_name, max_tokens=opts.max_tokens, prompts=opts.prompts,
        )
        total = part if total is None else total.merge(part)
    generated, elapsed = await generated_tokens(replicas) - before, time.perf_counter() - started
    assert total is not None
    return generated / elapsed, total


async def _trace_rounds(
    replicas: ReplicaSet, opts: FleetBenchOptions, statics: dict[str, SpeculationConfig], auto: AutoLoop,
    say: Callable[[str], None],
) -> dict[str, PointResult]:
    """The trace once per policy in each of `repeats` rounds, the order rotated as in the
    sweep; a policy's goodput is the median of its rounds, its TPOT and counts over all."""
    names = [*statics, AUTO]
    runs: dict[str, list[tuple[float, LoadResult]]] = {n: [] for n in names}
    for round_ in range(opts.repeats):
        for name in _rotated(names, round_):
            runs[name].append(await _under_policy(name, replicas, statics, auto, lambda: _trace(replicas, opts)))
        say(f"trace round {round_ + 1}: " + "  ".join(f"{n} {runs[n][-1][0]:.0f}" for n in names))
    return {n: _trace_point(rs) for n, rs in runs.items()}


def _trace_point(runs: list[tuple[float, LoadResult]]) -> PointResult:
    goodputs = [g for g, _ in runs]
    load = runs[0][1]
    for _, other in runs[1:]:
        load = load.merge(other)
    return PointResult(
        statistics.median(goodputs), load.tpot_percentile(50), load.tpot_percentile(99),
        load.completed, load.failed, goodputs,
    )


async def run_fleet_benchmark(
    replicas: ReplicaSet, opts: FleetBenchOptions, say: Callable[[str], None] = print
) -> dict[str, Any]:
    statics = static_policies(opts)
    auto = AutoLoop(replicas, opts)
    sweep: dict[str, dict[int, PointResult]] = {name: {} for name in [*statics, AUTO]}
    auto_schedules: dict[int, Any] = {}
    for c in opts.concurrency:
        points, auto_schedules[c] = await _sweep_concurrency(replicas, opts, c, statics, auto, say)
        for name, point in points.items():
            sweep[name][c] = point
        say(f"c={c:<3} medians: " + "  ".join(f"{n} {p.goodput:.0f}" for n, p in points.items())
            + f"  auto's schedules {auto_schedules[c]}")

    fixed = [f"on-k{k}" for k in opts.k_candidates]
    best_k_name = max(fixed, key=lambda n: sum(sweep[n][c].goodput / max(sweep["off"][c].goodput, 1e-9) for c in opts.concurrency))
    compared = sorted({"off", "on-k4", best_k_name, "hand-tuned"})
    per_c_ratio = {
        c: sweep[AUTO][c].goodput / max(sweep[n][c].goodput for n in compared) for c in opts.concurrency
    }
    # The same ratio within each round (auto / the best compared static of that round): the spread.
    per_round_ratio = {
        c: [
            round(sweep[AUTO][c].goodput_repeats[i] / max(sweep[n][c].goodput_repeats[i] for n in compared), 4)
            for i in range(opts.repeats)
        ]
        for c in opts.concurrency
    }

    trace = await _trace_rounds(replicas, opts, {n: statics[n] for n in compared}, auto, say)
    best_single = max(compared, key=lambda n: trace[n].goodput)

    return {
        "auto_vs_best_static_min_ratio": round(min(per_c_ratio.values()), 4),
        "trace_auto_vs_best_single_static": round(trace[AUTO].goodput / trace[best_single].goodput, 4),
        "best_fixed_k_policy": best_k_name,
        "compared_static_policies": compared,
        "best_single_static_on_trace": best_single,
        "auto_vs_best_static_by_concurrency": {str(c): round(v, 4) for c, v in per_c_ratio.items()},
        "auto_vs_best_static_by_concurrency_per_round": {str(c): v for c, v in per_round_ratio.items()},
        "sweep_method": {
            "repeats": opts.repeats, "measured_seconds": opts.seconds, "warmup_seconds_after_each_switch": opts.warmup_s,
            "auto_settle_seconds_per_concurrency": opts.settle_s,
            "note": "one unbroken load per concurrency; policies take turns, order rotated each round; "
                    "goodput = median over rounds; TPOT over requests that lived wholly inside a turn "
                    "(at high concurrency a request outlives a turn, so few or none qualify); "
                    "completed/failed counts are the whole load's, listed under auto",
        },
        "sweep": {name: {str(c): vars(p) for c, p in points.items()} for name, points in sweep.items()},
        "trace": {name: vars(p) for name, p in trace.items()},
        "trace_shape": [{"concurrency_per_replica": c, "seconds": s} for c, s in opts.trace],
        "auto_schedules_by_concurrency": {str(c): s for c, s in auto_schedules.items()},
        "failed_requests": sum(p.failed for pts in sweep.values() for p in pts.values())
        + sum(p.failed for p in trace.values()),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_g, ax_t, ax_trace) = plt.subplots(1, 3, figsize=(16, 4.8))
    for name, points in report["sweep"].items():
        cs = sorted(points, key=int)
        style = dict(linewidth=2.5, color="black") if name == AUTO else dict(linewidth=1.2, alpha=0.8)
        ax_g.plot([int(c) for c in cs], [points[c]["goodput"] for c in cs], marker="o", label=name, **style)
        # No completed request in a window (long queues at high concurrency): no point, not 0.
        tpot = [points[c]["tpot_p50"] * 1000 if points[c]["tpot_p50"] is not None else float("nan") for c in cs]
        ax_t.plot([int(c) for c in cs], tpot, marker="o", label=name, **style)
    for ax, label in ((ax_g, "goodput (output tokens/s, fleet)"), (ax_t, "p50 TPOT (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency per replica")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_g.legend(fontsize=8)
    names = list(report["trace"])
    ax_trace.bar(names, [report["trace"][n]["goodput"] for n in names],
                 color=["black" if n == AUTO else "tab:blue" for n in names])
    ax_trace.set_ylabel("goodput over the low-high-low trace (tokens/s)")
    ax_trace.tick_params(axis="x", rotation=30)
    fig.suptitle(
        f"auto / best static: min {report['auto_vs_best_static_min_ratio']:.3f} over concurrencies, "
        f"{report['trace_auto_vs_best_single_static']:.3f} on the trace"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, png_path)
    return json_path, png_path


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

# ---------------------------------------------------------------------------- command line


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise SystemExit(f"specfleet bench fleet: error: {flag} {text!r} is not a comma-separated list of integers")
    if not values or values[0] < 1:
        raise SystemExit(f"specfleet bench fleet: error: {flag} values must be integers >= 1")
    return values


def _trace_arg(text: str) -> list[tuple[int, float]]:
    try:
        parts = [p.split(":") for p in text.split(",")]
        trace = [(int(c), float(s)) for c, s in parts]
    except ValueError:
        raise SystemExit(f"specfleet bench fleet: error: --trace {text!r} is not CONCURRENCY:SECONDS,...")
    if any(c < 1 or s <= 0 for c, s in trace):
        raise SystemExit("specfleet bench fleet: error: --trace concurrencies must be >= 1 and seconds > 0")
    return trace


def _prompts(path: Path | None) -> list[str]:
    from specfleet.bench.load import DEFAULT_PROMPTS

    if path is None or not path.is_file():
        return list(DEFAULT_PROMPTS)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["prompt"] for r in rows][:64]


def command(
    model: str = typer.Option("bundled://pycode-target", help="Target model: folder, file:// or bundled://NAME."),
    draft: Optional[str] = typer.Option("bundled://pycode-draft", help="Draft model (method draft)."),
    method: str = typer.Option("draft", help="draft|ngram"),
    replicas: int = typer.Option(2, min=1, help="Local replicas."),
    k_max: int = typer.Option(8, min=1),
    max_batch: int = typer.Option(64, min=1),
    concurrency: str = typer.Option("1,2,4,8,16,32,64", help="Concurrencies per replica for the sweep."),
    k_candidates: str = typer.Option("2,4,8", help="Fixed K policies to try (4 is always included)."),
    hand_schedule: str = typer.Option("[[1,4,4],[5,16,2]]", help="The hand-tuned static schedule, JSON rows."),
    seconds: float = typer.Option(4.0, help="Measured seconds per policy, concurrency and round."),
    warmup: float = typer.Option(1.0, help="Unmeasured seconds after each policy switch."),
    repeats: int = typer.Option(3, min=1, help="Rounds per concurrency; a point is the median."),
    settle: float = typer.Option(6.0, min=0.0, help="Unmeasured seconds of auto at each new concurrency."),
    trace: str = typer.Option("1:10,32:10,1:10", help="The low-high-low trace, CONCURRENCY:SECONDS,..."),
    max_tokens: int = typer.Option(48, min=2),
    min_gain: float = typer.Option(0.05, min=0.0, help="The controller's minGain."),
    step_overhead: bool = typer.Option(
        True, "--step-overhead/--no-step-overhead", help="The controller adds the measured per-step overhead O(n) to step costs."
    ),
    device: str = typer.Option("cpu", help="cpu|cuda"),
    out: Path = typer.Option(Path("bench/results"), help="Folder for the JSON and PNG."),
    name: str = typer.Option("fleet-cpu", help="File stem for the results."),
) -> None:
    """Fleet goodput and TPOT: off, on(K=4), best fixed K, a hand-tuned schedule and auto."""
    import shlex
    import signal
    import sys

    from specfleet.bench.runtime import environment
    from specfleet.local.replicas import start_replicas
    from specfleet.model_sources import bundled_models_dir, resolve_local_model

    if method not in ("draft", "ngram"):
        raise SystemExit("specfleet bench fleet: error: --method is draft or ngram")
    try:
        model_dir = resolve_local_model(model)
        draft_dir = resolve_local_model(draft) if method == "draft" and draft else None
        schedule = [tuple(row) for row in json.loads(hand_schedule)]
        SpeculationConfig(k_max=k_max, schedule=schedule)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"specfleet bench fleet: error: {exc}")
    if method == "draft" and draft_dir is None:
        raise SystemExit("specfleet bench fleet: error: --method draft needs --draft")
    opts = FleetBenchOptions(
        method=method, k_max=k_max, max_batch=max_batch, concurrency=_ints(concurrency, "--concurrency"),
        k_candidates=sorted(set(_ints(k_candidates, "--k-candidates")) | {4}), hand_schedule=schedule,
        seconds=seconds, warmup_s=warmup, trace=_trace_arg(trace), max_tokens=max_tokens,
        prompts=_prompts(bundled_models_dir() / "heldout_prompts.jsonl"), model_name="bench", min_gain=min_gain,
        step_overhead=step_overhead,
        repeats=repeats, settle_s=settle,
    )
    if max(opts.k_candidates) > k_max:
        raise SystemExit(f"specfleet bench fleet: error: --k-candidates exceed --k-max {k_max}")
    # A plain `kill` (or `timeout`) must still stop the replicas: run the context managers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    with start_replicas(
        replicas, model=model_dir, draft=draft_dir, method=method, k_max=k_max, max_batch=max_batch,
        device=device, served_model_name="bench",
    ) as fleet:
        report = asyncio.run(run_fleet_benchmark(fleet, opts))
    report = {
        **report,
        "command": shlex.join(["specfleet", "bench", *sys.argv[sys.argv.index("fleet"):]]),
        "when": now_iso(),
        "wall_seconds": round(time.time() - started, 1),
        "replicas": replicas,
        "model": model, "draft": draft if method == "draft" else None, "method": method,
        "k_max": k_max, "max_batch": max_batch, "max_tokens": max_tokens, "step_overhead": step_overhead,
        "hand_schedule": schedule,
        "environment": environment(device),
    }
    json_path, png_path = write_report(report, out, name)
    print(
        f"auto / best static: min {report['auto_vs_best_static_min_ratio']:.3f} over concurrencies; "
        f"trace auto / best single static: {report['trace_auto_vs_best_single_static']:.3f}"
    )
    print(f"wrote {json_path} and {png_path}")
