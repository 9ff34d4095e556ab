"""`specfleet bench ...`: benchmarks are commands, never timed tests (DESIGN.md §7).

Each subcommand's module imports its heavy machinery only when it runs.
"""

from __future__ import annotations

import typer

from specfleet.bench.fleet import command as fleet_command  # torch-free; owned by the control plane
from specfleet.bench.runtime_cli import runtime as runtime_command

app = typer.Typer(add_completion=False, help="Benchmarks: runtime, fleet.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Benchmarks: JSON + PNG into --out, a short table on the terminal."""


app.command("runtime")(runtime_command)
app.command("fleet")(fleet_command)


if __name__ == "__main__":  # `python -m specfleet.bench.cli` where the package is not installed
    app()
