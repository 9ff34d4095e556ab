"""The `specfleet` command. Each subcommand's module is imported only when it runs, so
`specfleet operator` and `specfleet render` never import torch."""

from __future__ import annotations

import importlib

import click
import typer

# name -> (module, attribute holding a typer.Typer or click command, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("specfleet_runtime.serve_cli", "app", "Run one runtime replica (OpenAI API, admin API, metrics)."),
    "operator": ("specfleet_operator.operator_cli", "app", "Run the kopf operator."),
    "render": ("specfleet_operator.render_cli", "app", "Print the manifests for a CR file, offline."),
    "up": ("specfleet.local.up_cli", "app", "Run a local speculative fleet (the embedded default)."),
    "bench": ("specfleet.bench.cli", "app", "Benchmarks: runtime, fleet."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, attr, help_text = SUBCOMMANDS[cmd_name]
        target = getattr(importlib.import_module(module_name), attr)
        command = typer.main.get_command(target) if isinstance(target, typer.Typer) else target
        command.help = command.help or help_text
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, spec[2]) for name, spec in SUBCOMMANDS.items()])


@click.group(cls=LazyGroup)
@click.version_option(package_name="specfleet")
def main() -> None:
    """specfleet: speculative-decoding fleets that learn when speculation pays."""
