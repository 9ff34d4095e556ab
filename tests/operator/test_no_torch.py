"""The operator image has no torch: importing the operator and running its commands never
imports it (DESIGN.md §2). Each check runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "speculative-deployment.yaml"

IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
import specfleet_operator
for module in pkgutil.walk_packages(specfleet_operator.__path__, "specfleet_operator."):
    importlib.import_module(module.name)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "specfleet_runtime")))
"""

RUN_COMMAND = """
import sys
from specfleet.cli import main
sys.argv = ["specfleet", *{args!r}]
code = None
try:
    main()
except BaseException as exit:  # SystemExit, or whatever escapes the CLI: reported, not hidden
    code = getattr(exit, "code", getattr(exit, "exit_code", None)) if isinstance(exit, SystemExit) else repr(exit)
print("TORCH", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")), file=sys.stderr)
print("EXIT", code, file=sys.stderr)
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_every_operator_module_imports_no_torch() -> None:
    result = run_python(IMPORT_EVERYTHING)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_operator_help_and_render_import_no_torch() -> None:
    for args in (["operator", "--help"], ["render", "-f", str(EXAMPLE)]):
        result = run_python(RUN_COMMAND.format(args=args))
        *_, torch_line, exit_line = result.stderr.strip().splitlines()
        assert torch_line == "TORCH []", args
        assert exit_line == "EXIT 0", (args, result.stderr[-2000:])
