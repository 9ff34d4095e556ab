"""The `specfleet` command. Each subcommand's module is imported only when it runs, so
`specfleet operator` and `specfleet render` never import torch.

The dispatcher hands the rest of the command line to the subcommand's own typer app, so
that app's help, exit codes and parameter errors behave exactly as when it runs alone.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from specfleet import __version__

if TYPE_CHECKING:
    import typer

# name -> (module, attribute holding the subcommand's typer.Typer, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("specfleet_runtime.serve_cli", "app", "Run one runtime replica (OpenAI API, admin API, metrics)."),
    "operator": ("specfleet_operator.operator_cli", "app", "Run the kopf operator."),
    "render": ("specfleet_operator.render_cli", "app", "Print the manifests for a CR file, offline."),
    "up": ("specfleet.local.up_cli", "app", "Run a local speculative fleet (the embedded default)."),
    "bench": ("specfleet.bench.cli", "app", "Benchmarks: runtime, fleet."),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [
        "Usage: specfleet COMMAND [ARGS]...",
        "",
        "  specfleet: speculative-decoding fleets that learn when speculation pays.",
        "",
        "Commands:",
        *(f"  {name.ljust(width)}  {spec[2]}" for name, spec in SUBCOMMANDS.items()),
        "",
        "Run `specfleet COMMAND --help` for a command's options.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    if args[0] == "--version":
        print(f"specfleet {__version__}")
        return
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"specfleet: unknown command {name!r} (one of: {', '.join(SUBCOMMANDS)})", file=sys.stderr)
        raise SystemExit(2)
    load_subcommand(name)(args=rest, prog_name=f"specfleet {name}")


def load_subcommand(name: str) -> "typer.Typer":
    """Import the module of one subcommand and return its typer app."""
    module_name, attr, _ = SUBCOMMANDS[name]
    return getattr(importlib.import_module(module_name), attr)


if __name__ == "__main__":
    main()
