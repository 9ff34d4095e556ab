"""`specfleet serve`: one runtime replica. Importing this module is cheap (no torch, no
FastAPI): the heavy imports happen inside the command."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional

import typer

if TYPE_CHECKING:
    from specfleet.contract import SpeculationConfig

ADMIN_TOKEN_ENV = "SPECFLEET_ADMIN_TOKEN"
DEFAULT_K = 4

app = typer.Typer(add_completion=False)


class StartupError(Exception):
    """A cause the person starting the server can fix: printed as one line, no traceback."""


@dataclass(frozen=True)
class ServeSettings:
    """Everything the flags resolve to, checked before anything heavy loads."""

    model_dir: Path
    draft_dir: Path | None
    speculation: "SpeculationConfig"
    served_model_name: str
    admin_token: str | None


def parse_schedule(text: str, k_max: int) -> list[tuple[int, int, int]]:
    """`N` (that K at every batch size) or a JSON list of [lo, hi, K] rows."""
    from specfleet.contract import check_schedule, constant_schedule

    text = text.strip()
    if text.isdigit():
        return constant_schedule(int(text))
    try:
        schedule = [(int(lo), int(hi), int(k)) for lo, hi, k in json.loads(text)]
    except (ValueError, TypeError) as exc:
        raise StartupError(f"--schedule must be an integer K or a JSON list of [lo, hi, K] rows ({exc})") from exc
    try:
        check_schedule(schedule, k_max)
    except ValueError as exc:
        raise StartupError(f"--schedule: {exc}") from exc
    return schedule


def read_admin_token(token_file: Path | None) -> str | None:
    if token_file is None:
        return os.environ.get(ADMIN_TOKEN_ENV) or None
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise StartupError(f"--admin-token-file {token_file}: {exc.strerror}") from exc
    if not token:
        raise StartupError(f"--admin-token-file {token_file} is empty")
    return token


def check_ports(port: int, admin_port: int | None) -> None:
    for flag, value in (("--port", port), ("--admin-port", admin_port)):
        if value is not None and not 0 <= value <= 65535:
            raise StartupError(f"{flag} {value} is not a TCP port (0-65535)")
    if admin_port is not None and admin_port == port and port != 0:
        raise StartupError(
            f"--admin-port {admin_port} is also --port: the admin API needs a port of its own "
            "(leave --admin-port out to serve it on --port)"
        )


def resolve_settings(
    model: str, draft: str | None, method: str | None, k_max: int, schedule: str | None, speculation: str,
    admin_token_file: Path | None, served_model_name: str | None,
) -> ServeSettings:
    from specfleet.contract import SpeculationConfig, constant_schedule
    from specfleet.model_sources import resolve_local_model

    if speculation not in ("on", "off"):
        raise StartupError(f"--speculation must be on or off, not {speculation!r}")
    method = method or ("draft" if draft else "ngram")
    if method not in ("draft", "ngram"):
        raise StartupError(f"--method must be draft or ngram, not {method!r}")
    if method == "draft" and draft is None:
        raise StartupError("--method draft needs --draft DIR")
    try:
        model_dir = resolve_local_model(model)
        draft_dir = resolve_local_model(draft) if draft else None
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    rows = parse_schedule(schedule, k_max) if schedule is not None else constant_schedule(min(DEFAULT_K, k_max))
    try:
        config = SpeculationConfig(enabled=speculation == "on", method=method, k_max=k_max, schedule=rows)
    except ValueError as exc:
        raise StartupError(f"speculation settings: {exc}") from exc
    return ServeSettings(
        model_dir=model_dir,
        draft_dir=draft_dir,
        speculation=config,
        served_model_name=served_model_name or model_dir.resolve().name,
        admin_token=read_admin_token(admin_token_file),
    )


@app.command()
def serve(
    model: str = typer.Option(..., help="Target model: a folder, file:///path or bundled://NAME."),
    draft: Optional[str] = typer.Option(None, help="Draft model sharing the target's tokenizer."),
    method: Optional[str] = typer.Option(None, help="draft|ngram (default: draft with --draft, else ngram)."),
    k_max: int = typer.Option(8, help="Largest K a schedule may use."),
    schedule: Optional[str] = typer.Option(
        None, help=f"K at every batch size, or JSON [[lo, hi, K], ...] (default: K={DEFAULT_K})."
    ),
    speculation: str = typer.Option("on", help="on|off: whether speculation starts enabled."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000, help="0 picks a free port (printed in the ready line)."),
    admin_port: Optional[int] = typer.Option(
        None, help="Serve the admin API on this port only, not on --port (0 picks a free one); default: on --port."
    ),
    admin_token_file: Optional[Path] = typer.Option(
        None, help=f"File with the admin bearer token (else ${ADMIN_TOKEN_ENV}; neither: admin API refuses all)."
    ),
    device: str = typer.Option("cpu", help="cpu|cuda"),
    dtype: Optional[str] = typer.Option(None, help="float32|float64|bfloat16|float16 (default per device)."),
    max_batch: int = typer.Option(16, help="Most sequences decoded together."),
    max_model_len: int = typer.Option(2048, help="Most tokens (prompt + output) per sequence."),
    served_model_name: Optional[str] = typer.Option(None, help="Name clients send (default: the folder's name)."),
    calibration_seconds: float = typer.Option(3.0, help="Budget for the startup forward-time sweep (0: skip)."),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads for the model's ops (default: one per core). Replicas on one host should split the cores."
    ),
    seed: int = typer.Option(0, help="Engine seed."),
    cuda_graphs: bool = typer.Option(True, help="CUDA: replay captured graphs for decode passes."),
    compile_layers: bool = typer.Option(
        False, "--compile", help="CUDA: torch.compile the decoder layers (faster steps; new shapes compile mid-serving)."
    ),
) -> None:
    """Run one runtime replica: OpenAI API, admin API and Prometheus metrics."""
    from pydantic import ValidationError

    try:
        check_ports(port, admin_port)
        if threads is not None and threads < 1:
            raise StartupError(f"--threads {threads}: must be >= 1")
        settings = resolve_settings(
            model, draft, method, k_max, schedule, speculation, admin_token_file, served_model_name
        )
        from specfleet_runtime.engine.engine import EngineConfig

        engine_config = EngineConfig(
            model_dir=settings.model_dir, draft_dir=settings.draft_dir, speculation=settings.speculation,
            device=device, dtype=dtype, max_batch=max_batch, max_model_len=max_model_len, seed=seed,
            cuda_graphs=cuda_graphs, compile_layers=compile_layers,
        )
    except ValidationError as exc:  # an engine setting out of range: name the flag
        _fail(StartupError("; ".join(
            f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()
        )), code=2)
    except (StartupError, ValueError) as exc:
        _fail(exc, code=2)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        _run(settings, engine_config, host=host, port=port, admin_port=admin_port,
             calibration_seconds=calibration_seconds)
    except StartupError as exc:
        _fail(exc, code=1)


def _fail(exc: Exception, code: int) -> NoReturn:
    message = " ".join(str(exc).split())  # one line, whatever the exception's text looks like
    print(f"specfleet serve: error: {message}", file=sys.stderr)
    # Plain SystemExit: a one-line message and an exit code however the command is invoked
    # (typer app, the `specfleet` group, or a direct call), never a usage box or traceback.
    raise SystemExit(code)


def _bind(host: str, port: int, flag: str) -> socket.socket:
    from specfleet_runtime.server_group import bind_socket

    try:
        return bind_socket(host, port)
    except OSError as exc:
        raise StartupError(f"{flag} {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc


def _exit_after_signal(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def _run(
    settings: ServeSettings, engine_config, *, host: str, port: int, admin_port: int | None,
    calibration_seconds: float,
) -> None:
    """Serve until SIGTERM/SIGINT. The HTTP servers are up (answering /health with 503)
    while the weights load in a thread; the engine thread is stopped on the way out."""
    import asyncio
    import threading
    import time

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from specfleet_runtime.engine.engine import Engine
    from specfleet_runtime.metrics import RuntimeMetrics
    from specfleet_runtime.server import create_admin_app, create_app
    from specfleet_runtime.server_group import ServerGroup

    sockets = [_bind(host, port, "--port")]
    if admin_port is not None:
        sockets.append(_bind(host, admin_port, "--admin-port"))
    bound = [sock.getsockname()[1] for sock in sockets]
    metrics = RuntimeMetrics(settings.served_model_name)
    app = create_app(
        None, admin_token=settings.admin_token, served_model_name=settings.served_model_name, metrics=metrics,
        include_admin=admin_port is None,
    )
    apps = [app] + ([create_admin_app(app.state.runtime, settings.admin_token)] if admin_port is not None else [])
    servers = ServerGroup(list(zip(apps, sockets)))
    engines: list[Engine] = []
    failures: list[BaseException] = []
    stopping = threading.Event()
    lock = threading.Lock()
    console = Console(stderr=True)

    def load() -> None:
        try:
            with Progress(TextColumn("loading weights"), BarColumn(), DownloadColumn(), console=console,
                          transient=True) as bar:
                task = bar.add_task("load", total=None)
                engine = Engine.from_config(
                    engine_config, observer=metrics,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
            with lock:  # the main thread may have given up while we were loading
                if stopping.is_set():
                    engine.shutdown()
                    return
                engines.append(engine)
            calibration = engine.calibrate(calibration_seconds) if calibration_seconds > 0 else []
            engine.start()
            app.state.runtime.attach(engine, calibration)
            while not servers.started and not servers.should_exit:
                time.sleep(0.02)
            if servers.started:
                print(f"specfleet serve: ready on http://{host}:{bound[0]}", flush=True)
                if admin_port is not None:
                    print(f"specfleet serve: admin API on http://{host}:{bound[1]}", flush=True)
        except BaseException as exc:  # reported by the main thread once the servers stop
            failures.append(exc)
            servers.stop()

    if settings.admin_token is None:
        print(f"specfleet serve: no admin token (--admin-token-file or ${ADMIN_TOKEN_ENV}): admin API refuses all",
              file=sys.stderr)
    threading.Thread(target=load, name="specfleet-load", daemon=True).start()
    # Until the event loop handles SIGTERM/SIGINT itself (ServerGroup.serve), a signal is a
    # normal exit through `finally`.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_after_signal)
    try:
        with asyncio.Runner(loop_factory=servers.loop_factory) as runner:
            runner.run(servers.serve())
    finally:
        with lock:
            stopping.set()
        for engine in engines:
            engine.shutdown()
        if engines:
            print("specfleet serve: stopped", flush=True)
    if failures:
        failure = failures[0]
        if isinstance(failure, (ValueError, OSError)):  # IncompatibleModelsError is a ValueError
            raise StartupError(str(failure)) from failure
        raise failure
