"""`specfleet bench runtime`: where speculation stops paying on this machine.

For every concurrency, runs the same greedy workload with speculation off and at each
constant K, side by side in one process (update_speculation between runs), and reports
output tokens/s, mean TPOT, the measured break-even concurrency (the smallest one where no
K beats off), and at batch 1 the speedup the measured acceptance and forward costs imply
against the one measured. On CUDA it also measures the device's copy bandwidth and puts
batch-1 decode against the bandwidth limit (weight bytes / bandwidth).

The pure parts (aggregation, break-even, analytic speedup) are functions of plain data;
the engine, the clock and the device sit in `run_benchmark` and `measure`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specfleet_runtime.engine.api import RequestOutput, SamplingParams, StepReport

if TYPE_CHECKING:
    from specfleet.contract import SpeculationUpdate
    from specfleet_runtime.engine.engine import Engine

OFF = 0  # the "K" of the speculation-off setting in results (no draft work at all)


@dataclass
class StepTotals:
    """What the engine did in one measured run, summed over its decode-only steps."""

    decode_steps: int = 0
    sequence_steps: int = 0  # sum of decode batch sizes
    accepted: int = 0
    drafted: int = 0
    target_seconds: float = 0.0
    draft_seconds: float = 0.0

    def add(self, report: StepReport) -> None:
        if report.decode_batch == 0 or report.prefill_tokens:  # prefill work is not decode cost
            return
        self.decode_steps += 1
        self.sequence_steps += report.decode_batch
        self.accepted += sum(report.accepted_per_pos)
        self.drafted += sum(report.draft_tokens_per_pos)
        for timing in report.forward_timings:
            if timing.model == "target":
                self.target_seconds += timing.seconds
            else:
                self.draft_seconds += timing.seconds

    def merge(self, other: "StepTotals") -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def tokens_per_sequence_step(self) -> float:
        """E(K) as measured: 1 (the target's own token) + accepted drafts, per sequence-step."""
        return 1.0 + self.accepted / self.sequence_steps if self.sequence_steps else 0.0

    @property
    def forward_seconds_per_step(self) -> float:
        return (self.target_seconds + self.draft_seconds) / self.decode_steps if self.decode_steps else 0.0


class StepRecorder:
    """The engine's StepObserver during a benchmark: totals for the run in progress."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals = StepTotals()

    def on_step(self, report: StepReport) -> None:
        with self._lock:
            self.totals.add(report)

    def take(self) -> StepTotals:
        with self._lock:
            totals, self.totals = self.totals, StepTotals()
        return totals


@dataclass
class RunResult:
    concurrency: int
    k: int  # OFF for speculation off
    output_tokens: int
    wall_seconds: float
    tokens_per_second: float
    mean_tpot_seconds: float
    acceptance_rate: float | None  # accepted / drafted draft tokens
    tokens_per_sequence_step: float
    forward_seconds_per_step: float

    @property
    def label(self) -> str:
        return "off" if self.k == OFF else f"K={self.k}"


@dataclass
class SpeedupCheck:
    k: int
    measured: float  # tokens/s at K over tokens/s off, batch 1
    analytic: float  # E(K) * T_step(off) / T_step(K), from measured acceptance and forward costs
    ratio: float  # measured / analytic


@dataclass
class BenchReport:
    command: str
    options: dict[str, Any]
    environment: dict[str, Any]
    results: list[RunResult]
    break_even_concurrency: int | None
    batch1_speedup: list[SpeedupCheck] = field(default_factory=list)
    bandwidth: dict[str, float] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def break_even_concurrency(results: list[RunResult]) -> int | None:
    """The smallest concurrency at which no K is faster than speculation off (None: some K
    wins at every measured concurrency)."""
    for c in sorted({r.concurrency for r in results}):
        at_c = [r for r in results if r.concurrency == c]
        off = next(r.tokens_per_second for r in at_c if r.k == OFF)
        if all(r.tokens_per_second <= off for r in at_c if r.k != OFF):
            return c
    return None


def batch1_speedups(results: list[RunResult]) -> list[SpeedupCheck]:
    """Measured vs analytic speedup at concurrency 1: the analytic one is what the measured
    acceptance buys at the measured forward-pass costs, so the ratio is the share the engine
    keeps after its own overheads (sampling, bookkeeping, host work)."""
    at_1 = {r.k: r for r in results if r.concurrency == 1}
    off = at_1.get(OFF)
    if off is None or not off.forward_seconds_per_step:
        return []
    checks = []
    for k, run in sorted(at_1.items()):
        if k == OFF or not run.forward_seconds_per_step:
            continue
        analytic = run.tokens_per_sequence_step * off.forward_seconds_per_step / run.forward_seconds_per_step
        measured = run.tokens_per_second / off.tokens_per_second
        checks.append(SpeedupCheck(k=k, measured=measured, analytic=analytic, ratio=measured / analytic))
    return checks


def bench_prompts(count: int, prompt_chars: int) -> list[str]:
    """Slices of Python's own standard library sources: public text on every machine,
    with the repetition real code has (which prompt-lookup drafting feeds on)."""
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    text = "\n".join((stdlib / name).read_text(encoding="utf-8") for name in ("textwrap.py", "shlex.py", "string.py"))
    text = "".join(ch for ch in text if ch.isascii())
    stride = max(1, (len(text) - prompt_chars) // max(1, count))
    return [text[i * stride : i * stride + prompt_chars] for i in range(count)]


def measure(engine: "Engine", prompts: list[list[int]], concurrency: int, max_tokens: int) -> tuple[int, float, float]:
    """Run `concurrency` greedy requests at once; (output tokens, wall seconds, mean TPOT)."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    done = threading.Event()
    lock = threading.Lock()
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    tokens: dict[str, int] = {}
    remaining = [concurrency]

    def on_output(out: RequestOutput) -> None:
        now = time.perf_counter()
        with lock:
            if out.new_token_ids:
                first.setdefault(out.request_id, now)
                last[out.request_id] = now
            tokens[out.request_id] = out.completion_tokens
            if out.finished:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

    start = time.perf_counter()
    for i in range(concurrency):
        engine.add_request(prompts[i % len(prompts)], params, on_output)
    done.wait()
    wall = time.perf_counter() - start
    tpots = [(last[r] - first[r]) / (tokens[r] - 1) for r in tokens if tokens[r] > 1]
    return sum(tokens.values()), wall, statistics.fmean(tpots) if tpots else 0.0


def speculation_update(k: int) -> "SpeculationUpdate":
    from specfleet.contract import SpeculationUpdate, constant_schedule

    if k == OFF:
        return SpeculationUpdate(enabled=False)
    return SpeculationUpdate(enabled=True, schedule=constant_schedule(k))


def summarize(concurrency: int, k: int, runs: list[tuple[int, float, float]], totals: StepTotals) -> RunResult:
    """One setting at one concurrency over its repeats: medians of the timed quantities."""
    return RunResult(
        concurrency=concurrency, k=k,
        output_tokens=int(statistics.median(r[0] for r in runs)),
        wall_seconds=statistics.median(r[1] for r in runs),
        tokens_per_second=statistics.median(r[0] / r[1] for r in runs),
        mean_tpot_seconds=statistics.median(r[2] for r in runs),
        acceptance_rate=totals.accepted / totals.drafted if totals.drafted else None,
        tokens_per_sequence_step=totals.tokens_per_sequence_step,
        forward_seconds_per_step=totals.forward_seconds_per_step,
    )


def copy_bandwidth(device: str, megabytes: int = 2048, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    import torch

    src = torch.empty(megabytes << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(repeats):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    seconds = begin.elapsed_time(end) / 1000
    return 2 * src.numel() * repeats / seconds


def environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Shared machines: the load next to the run says how much to trust its timings.
        "load_average_1m_at_end": os.getloadavg()[0],
        "device": device,
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    try:
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        env["git_commit"] = None
    try:
        from importlib.metadata import version

        env["specfleet"] = version("specfleet")
    except Exception:  # not installed as a distribution (running from a bare checkout)
        env["specfleet"] = None
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@dataclass
class BenchOptions:
    model_dir: Path
    draft_dir: Path | None
    method: str
    k_max: int
    concurrency: list[int]
    max_tokens: int
    prompt_chars: int
    device: str
    dtype: str | None
    max_model_len: int
    warmup_tokens: int
    repeats: int
    command: str
    compile_layers: bool = False


def run_benchmark(opts: BenchOptions, progress=None) -> BenchReport:
    from specfleet.contract import SpeculationConfig
    from specfleet_runtime.engine.engine import Engine, EngineConfig

    recorder = StepRecorder()
    config = EngineConfig(
        model_dir=opts.model_dir, draft_dir=opts.draft_dir,
        speculation=SpeculationConfig(enabled=False, method=opts.method, k_max=opts.k_max),
        device=opts.device, dtype=opts.dtype, max_batch=max(opts.concurrency), max_model_len=opts.max_model_len,
        compile_layers=opts.compile_layers,
    )
    engine = Engine.from_config(config, observer=recorder)
    engine.start()
    try:
        prompts = [engine.tokenizer.encode(p) for p in bench_prompts(max(opts.concurrency), opts.prompt_chars)]
        settings = [OFF, *range(1, opts.k_max + 1)]
        results: list[RunResult] = []
        for c in opts.concurrency:
            runs: dict[int, list[tuple[int, float, float]]] = {k: [] for k in settings}
            totals = {k: StepTotals() for k in settings}
            # Side by side: rounds of every setting back to back, so drift hits all alike.
            for round_ in range(opts.repeats):
                for k in settings:
                    engine.update_speculation(speculation_update(k))
                    if round_ == 0 and opts.warmup_tokens:
                        measure(engine, prompts, c, opts.warmup_tokens)
                    recorder.take()
                    runs[k].append(measure(engine, prompts, c, opts.max_tokens))
                    totals[k].merge(recorder.take())
            for k in settings:
                results.append(summarize(c, k, runs[k], totals[k]))
                if progress is not None:
                    progress(results[-1])
        bandwidth = None
        if opts.device.startswith("cuda"):
            bandwidth = bandwidth_report(opts.model_dir, opts.device, results)
    finally:
        engine.shutdown()
    return BenchReport(
        command=opts.command,
        options={k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items() if k != "command"},
        environment=environment(opts.device),
        results=results,
        break_even_concurrency=break_even_concurrency(results),
        batch1_speedup=batch1_speedups(results),
        bandwidth=bandwidth,
    )


def bandwidth_report(model_dir: Path, device: str, results: list[RunResult]) -> dict[str, float] | None:
    from specfleet.bench.random_llama import safetensors_weight_bytes

    off_1 = next((r for r in results if r.concurrency == 1 and r.k == OFF), None)
    bytes_per_s = copy_bandwidth(device)
    weight_bytes = safetensors_weight_bytes(model_dir)
    limit = bytes_per_s / weight_bytes
    report = {"copy_bandwidth_bytes_per_s": bytes_per_s, "weight_bytes": weight_bytes,
              "bandwidth_limit_tokens_per_s": limit}
    if off_1 is not None:
        report["batch1_off_tokens_per_s"] = off_1.tokens_per_second
        report["batch1_off_fraction_of_limit"] = off_1.tokens_per_second / limit
    return report


def plot(report: BenchReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tps, ax_ratio) = plt.subplots(1, 2, figsize=(12, 4.5))
    ks = sorted({r.k for r in report.results})
    off = {r.concurrency: r.tokens_per_second for r in report.results if r.k == OFF}
    for k in ks:
        runs = sorted((r for r in report.results if r.k == k), key=lambda r: r.concurrency)
        xs = [r.concurrency for r in runs]
        style = dict(color="black", linewidth=2.5) if k == OFF else {}
        ax_tps.plot(xs, [r.tokens_per_second for r in runs], marker="o", label=runs[0].label, **style)
        ax_ratio.plot(xs, [r.tokens_per_second / off[r.concurrency] for r in runs], marker="o",
                      label=runs[0].label, **style)
    levels = sorted({r.concurrency for r in report.results})
    for ax in (ax_tps, ax_ratio):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrency (requests in flight)")
        ax.grid(alpha=0.3)
    ax_tps.set_ylabel("output tokens/s")
    ax_ratio.set_ylabel("tokens/s relative to speculation off")
    if report.break_even_concurrency is not None:
        ax_ratio.axvline(report.break_even_concurrency, color="red", linestyle="--",
                         label=f"break-even c={report.break_even_concurrency}")
    ax_ratio.legend(fontsize=8, ncol=2)
    env = report.environment
    fig.suptitle(f"specfleet bench runtime: {Path(report.options['model_dir']).name}, "
                 f"{report.options['method']}, {env.get('gpu') or env.get('cpu')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
