"""`specfleet up -f CR.yaml [--demo]`: the local speculative fleet, the embedded default.

Exit codes: 0 on success (a demo whose summary shows speculation following the load, or
a fleet stopped by the demo's end); 1 when the fleet could not start or the demo's
summary contradicts the expected behaviour; 2 for a bad CR file or bad flags;
130 after Ctrl-C (SIGINT) and 143 after SIGTERM, each once every child has ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

if TYPE_CHECKING:
    from specfleet.local.fleet import DemoOptions, LocalFleet
    from specfleet.local.plan import FleetPlan

app = typer.Typer(add_completion=False)

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
DEFAULT_PORT = 8000


class _Stopped(BaseException):
    """A stop signal arrived while processes were starting (BaseException: nothing may
    swallow it on its way to the cleanup)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _fail(console: Console, message: str, code: int) -> None:
    console.print(f"specfleet up: error: {' '.join(message.split())}", markup=False, highlight=False, soft_wrap=True)
    raise SystemExit(code)


def pick_device(device: str) -> str:
    if device in ("cpu", "cuda"):
        return device
    import torch  # only here: choosing "auto" is the one reason `up` itself needs torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@app.command()
def up(
    file: Path = typer.Option(..., "--file", "-f", help="A SpeculativeDeployment YAML file (the same one kubectl applies)."),
    demo: bool = typer.Option(False, "--demo", help="Run a scripted low -> high -> low load, print a summary and a PNG, exit."),
    device: str = typer.Option("auto", help="auto|cpu|cuda (auto: CUDA when present)."),
    port: Optional[int] = typer.Option(
        None, help=f"Port of the OpenAI-compatible endpoint on 127.0.0.1 (0: a free one; default {DEFAULT_PORT}, or a free one if that is taken)."
    ),
    state_dir: Path = typer.Option(Path(".state/up"), help="Where logs and demo outputs go."),
    phase_seconds: float = typer.Option(40.0, help="Demo: length of each load phase."),
    settle_seconds: float = typer.Option(15.0, help="Demo: start of each phase left out of the summary."),
    warm_up_seconds: Optional[float] = typer.Option(
        None, help="Demo: unmeasured low load first (default: the CR's cooldown plus one control interval)."
    ),
    max_tokens: int = typer.Option(64, help="Demo: completion tokens per request."),
    prompts: Optional[Path] = typer.Option(None, help="Demo: JSONL prompts file (default: the bundled held-out prompts)."),
    view: Optional[bool] = typer.Option(None, "--view/--no-view", help="Live terminal view (default: when stdout is a terminal)."),
) -> None:
    """Run a local speculative fleet from a SpeculativeDeployment file."""
    console = Console()
    if not console.is_terminal:  # a log or a pipe: do not squeeze the summary table into 80 columns
        console = Console(width=160)
    err = Console(stderr=True)
    from specfleet.local.plan import plan_from_cr
    from specfleet_operator.spec import CRValidationError, load_cr_file

    if device not in ("auto", "cpu", "cuda"):
        _fail(err, f"--device must be auto, cpu or cuda, not {device!r}", EXIT_BAD_INPUT)
    if not file.is_file():
        _fail(err, f"{file}: no such file", EXIT_BAD_INPUT)
    try:
        plan = plan_from_cr(load_cr_file(file))
    except CRValidationError as exc:
        _fail(err, f"{file}: {exc}", EXIT_BAD_INPUT)
    for name, value in (("--phase-seconds", phase_seconds), ("--max-tokens", max_tokens)):
        if value <= 0:
            _fail(err, f"{name} must be > 0", EXIT_BAD_INPUT)

    from specfleet.local.processes import free_port, port_is_listening

    if port is None:
        router_port = DEFAULT_PORT
        if port_is_listening(router_port):
            router_port = free_port()
            err.print(f"specfleet up: port {DEFAULT_PORT} is in use; serving on {router_port} instead", markup=False)
    else:
        router_port = port or free_port()
        if port_is_listening(router_port):
            _fail(err, f"--port {router_port}: 127.0.0.1:{router_port} is in use", EXIT_FAILED)
    state_dir.mkdir(parents=True, exist_ok=True)
    _log_to(state_dir / "up.log")

    options = None
    if demo:
        from specfleet.local.fleet import DemoOptions
        from specfleet.local.load import load_prompts

        if prompts is not None and not prompts.is_file():
            _fail(err, f"--prompts {prompts}: no such file", EXIT_BAD_INPUT)
        try:
            demo_prompts = tuple(load_prompts(prompts))
        except ValueError as exc:  # json.JSONDecodeError included
            _fail(err, f"--prompts {prompts}: not JSONL of {{\"prompt\": ...}} rows ({exc})", EXIT_BAD_INPUT)
        options = DemoOptions(phase_seconds=phase_seconds, settle_seconds=settle_seconds, max_tokens=max_tokens,
                              warm_up_seconds=warm_up_seconds, prompts=demo_prompts)
    code = _run(plan, pick_device(device), router_port, state_dir, console, err, options,
                live_view=console.is_terminal if view is None else view)
    raise SystemExit(code)


def _log_to(path: Path) -> None:
    path.write_text("")
    # Append mode: uvicorn's logging.config.dictConfig closes every existing handler, and
    # only an append-mode FileHandler reopens its file on the next record.
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("specfleet")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False  # the terminal belongs to the live view


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _run(plan: "FleetPlan", device: str, router_port: int, state_dir: Path, console: Console, err: Console,
         options: "DemoOptions | None", *, live_view: bool) -> int:
    from specfleet.local.fleet import LocalFleet
    from specfleet.local.processes import ProcessStartError
    from specfleet.local.prometheus import LocalPrometheus, ScrapeTarget, find_prometheus
    from specfleet.local.replicas import start_replicas
    from specfleet_operator.control.metrics_source import PrometheusSource, ScrapeSource

    # Until the asyncio loop takes over, SIGTERM unwinds like Ctrl-C through the finally below.
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in SIGNAL_EXIT}
    prometheus: LocalPrometheus | None = None
    replicas = None
    prometheus_dir = Path(tempfile.mkdtemp(prefix="specfleet-up-prometheus-"))
    try:
        if find_prometheus() is not None:
            prometheus = LocalPrometheus(prometheus_dir, scrape_interval=1.0)
            prometheus.start()
            source, described = PrometheusSource(prometheus.url, replica_label="pod"), f"Prometheus {prometheus.url}"
        else:
            err.print("specfleet up: warning: no prometheus binary found (apt install prometheus); "
                      "the controller scrapes the replicas directly", markup=False)
            source, described = ScrapeSource(), "direct scrape (no Prometheus)"
        env = dict(os.environ) | dict(plan.env)
        console.print(f"specfleet up: starting {plan.replicas} replicas of {plan.served_model_name} on {device} "
                      f"(logs in {state_dir / 'logs'})")
        replicas = start_replicas(
            plan.replicas, model=plan.model_dir, draft=plan.draft_dir, method=plan.method, k_max=plan.k_max,
            max_batch=plan.max_batch, max_model_len=plan.max_model_len, speculation=plan.initial,
            device=device, extra_args=plan.extra_args, served_model_name=plan.served_model_name,
            state_dir=state_dir, name_prefix=plan.name, env=env,
        )
        if prometheus is not None:
            prometheus.set_targets([ScrapeTarget(r.name, r.address, {"deployment": plan.name}) for r in replicas])
        return _serve(LocalFleet(plan, list(replicas), source, described, router_port, state_dir, console, live_view),
                      options, console)
    except _Stopped as stopped:
        return SIGNAL_EXIT[signal.Signals(stopped.signum)]
    except ProcessStartError as exc:
        first = str(exc).splitlines()[0]
        err.print(f"specfleet up: error: {first}", markup=False, highlight=False)
        err.print(str(exc).split("\n", 1)[1] if "\n" in str(exc) else "", markup=False, highlight=False)
        return EXIT_FAILED
    finally:
        # Signals now only mark the stop; the cleanup itself must not be interrupted.
        for sig in SIGNAL_EXIT:
            signal.signal(sig, signal.SIG_IGN)
        if replicas is not None:
            replicas.stop()
        if prometheus is not None:
            prometheus.stop()
        shutil.rmtree(prometheus_dir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(fleet: "LocalFleet", options: "DemoOptions | None", console: Console) -> int:
    received: list[int] = []

    async def main():
        loop = asyncio.get_running_loop()
        for sig in SIGNAL_EXIT:
            loop.add_signal_handler(sig, lambda s=sig: (received.append(s), fleet.stop.set()))
        try:
            return await fleet.run(options)
        finally:
            for sig in SIGNAL_EXIT:
                loop.remove_signal_handler(sig)
                signal.signal(sig, _raise_stopped)

    result = asyncio.run(main())
    if received:
        console.print(f"specfleet up: stopped by {signal.Signals(received[0]).name}; all replicas ended")
        return SIGNAL_EXIT[signal.Signals(received[0])]
    if result is None:
        return 0
    console.print(f"timeline: {result.png}")
    console.print(f"summary:  {result.json}")
    if result.problems:
        for problem in result.problems:
            console.print(f"[red]not as expected:[/red] {problem}")
        return EXIT_FAILED
    console.print("[green]as expected:[/green] every replica speculated (K>0) at low load and ran K=0 at high load")
    return 0
