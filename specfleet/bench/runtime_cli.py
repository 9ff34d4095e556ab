"""`specfleet bench runtime`: the command line of specfleet/bench/runtime.py.

Its own module (and a one-command typer app) so the GPU run can start it with
`python -m specfleet.bench.runtime_cli` without importing the other benchmarks.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path
from typing import NoReturn, Optional

import typer


def _fail(message: str) -> NoReturn:
    # Plain SystemExit: a one-line message and an exit code however the command is invoked
    # (typer app, the `specfleet` group, `python -m`), never a usage box or traceback.
    print(f"specfleet bench: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _concurrency_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        _fail(f"--concurrency {text!r} is not a comma-separated list of integers")
    if not values or min(values) < 1:
        _fail("--concurrency values must be integers >= 1")
    return sorted(set(values))


def runtime(
    model: Optional[str] = typer.Option(None, help="Target model: folder, file:// or bundled://NAME."),
    random_model: Optional[str] = typer.Option(
        None, help="Build a random-weight Llama instead of --model: llama-1b or llama-tiny."
    ),
    draft: Optional[str] = typer.Option(None, help="Draft model for --method draft."),
    method: Optional[str] = typer.Option(None, help="draft|ngram (default: draft with --draft, else ngram)."),
    k_max: int = typer.Option(4, help="Measure K=1..k_max against speculation off."),
    concurrency: str = typer.Option("1,2,4,8,16,32,64", help="Comma-separated concurrencies."),
    max_tokens: int = typer.Option(64, help="Output tokens per request."),
    prompt_chars: int = typer.Option(256, help="Prompt length in characters (slices of Python's stdlib)."),
    warmup_tokens: int = typer.Option(4, help="A short run of each shape before its first measured run."),
    repeats: int = typer.Option(3, help="Rounds of every setting per concurrency; medians are reported."),
    device: str = typer.Option("cpu", help="cpu|cuda"),
    dtype: Optional[str] = typer.Option(None, help="Engine dtype (default per device)."),
    max_model_len: int = typer.Option(2048),
    compile_layers: bool = typer.Option(False, "--compile", help="torch.compile the decoder layers (CUDA)."),
    out: Path = typer.Option(Path("bench/results"), help="Folder for the JSON and PNG."),
    name: Optional[str] = typer.Option(None, help="File stem for the results (default runtime-<model>-<device>)."),
) -> None:
    """Tokens/s and TPOT with speculation off vs K=1..k_max per concurrency; break-even."""
    from specfleet.bench.runtime import BenchOptions, plot, run_benchmark
    from specfleet.model_sources import resolve_local_model

    if (model is None) == (random_model is None):
        _fail("give exactly one of --model and --random-model")
    method = method or ("draft" if draft else "ngram")
    if method not in ("draft", "ngram") or (method == "draft" and draft is None):
        _fail("--method is draft (with --draft DIR) or ngram")
    levels = _concurrency_list(concurrency)
    scratch = tempfile.TemporaryDirectory(prefix="specfleet-bench-") if random_model else None
    try:
        if random_model:
            model_dir = _build_random_model(random_model, Path(scratch.name), device)
        else:
            model_dir = resolve_local_model(model)
        draft_dir = resolve_local_model(draft) if draft else None
    except ValueError as exc:
        _fail(str(exc))

    options = BenchOptions(
        model_dir=model_dir, draft_dir=draft_dir, method=method, k_max=k_max, concurrency=levels,
        max_tokens=max_tokens, prompt_chars=prompt_chars, device=device, dtype=dtype,
        max_model_len=max_model_len, warmup_tokens=warmup_tokens, repeats=repeats, compile_layers=compile_layers,
        command=shlex.join(["specfleet", "bench", "runtime", *_own_args(sys.argv)]),
    )
    from rich.console import Console

    # Wide when piped (tee, CI logs) so the table does not wrap into two lines per row.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    try:
        report = run_benchmark(options, progress=lambda r: console.print(
            f"c={r.concurrency:<3} {r.label:<4} {r.tokens_per_second:>10,.1f} tok/s  "
            f"TPOT {r.mean_tpot_seconds * 1e3:7.2f} ms  acceptance {r.acceptance_rate or 0:.2f}", highlight=False))
    finally:
        if scratch is not None:
            scratch.cleanup()
    if random_model:
        report.options["model_dir"] = f"random://{random_model}"
    out.mkdir(parents=True, exist_ok=True)
    stem = name or f"runtime-{random_model or model_dir.name}-{device.split(':')[0]}"
    (out / f"{stem}.json").write_text(report.to_json())
    plot(report, out / f"{stem}.png")
    _print_tables(console, report)
    console.print(f"wrote {out / stem}.json and .png")


def _own_args(argv: list[str]) -> list[str]:
    """This command's arguments, whether run as `specfleet bench runtime ...` or as a module."""
    return argv[argv.index("runtime") + 1:] if "runtime" in argv else argv[1:]


def _build_random_model(name: str, root: Path, device: str) -> Path:
    from specfleet.bench.random_llama import RANDOM_MODELS, write_random_llama

    if name not in RANDOM_MODELS:
        raise ValueError(f"unknown --random-model {name!r}; known: {', '.join(RANDOM_MODELS)}")
    return write_random_llama(root / name, RANDOM_MODELS[name], device=device)


def _print_tables(console, report) -> None:
    from rich.table import Table

    ks = sorted({r.k for r in report.results})
    table = Table(title="output tokens/s (mean TPOT ms)")
    table.add_column("concurrency", justify="right")
    for k in ks:
        table.add_column("off" if k == 0 else f"K={k}", justify="right")
    for c in sorted({r.concurrency for r in report.results}):
        by_k = {r.k: r for r in report.results if r.concurrency == c}
        best = max(by_k.values(), key=lambda r: r.tokens_per_second).k
        table.add_row(str(c), *(
            f"{'[bold]' if k == best else ''}{by_k[k].tokens_per_second:,.1f} ({by_k[k].mean_tpot_seconds * 1e3:.1f})"
            f"{'[/bold]' if k == best else ''}" for k in ks
        ))
    console.print(table)
    be = report.break_even_concurrency
    console.print(f"break-even concurrency (no K beats off): {be if be is not None else 'not reached'}")
    for check in report.batch1_speedup:
        console.print(f"batch 1, K={check.k}: measured speedup {check.measured:.2f}x, analytic {check.analytic:.2f}x, "
                      f"ratio {check.ratio:.2f}")
    if report.bandwidth:
        bw = report.bandwidth
        console.print(f"copy bandwidth {bw['copy_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s, weights "
                      f"{bw['weight_bytes'] / 1e9:.2f} GB, limit {bw['bandwidth_limit_tokens_per_s']:,.0f} tok/s, "
                      f"batch-1 off {bw.get('batch1_off_fraction_of_limit', float('nan')):.1%} of it")


app = typer.Typer(add_completion=False)
app.command()(runtime)


if __name__ == "__main__":  # `python -m specfleet.bench.runtime_cli` where specfleet is not installed
    app()
