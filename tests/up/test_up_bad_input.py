"""`specfleet up` refuses a bad CR file before starting anything: exit code 2 and one line
naming the field path and the problem."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "speculative-deployment.yaml"
SPECFLEET = [sys.executable, "-m", "specfleet.cli"]


def run_up(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*SPECFLEET, "up", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def write_cr(tmp_path: Path, edit) -> Path:
    body = yaml.safe_load(EXAMPLE.read_text())
    edit(body)
    path = tmp_path / "cr.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _set(path: str, value):
    def edit(body):
        node = body
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return edit


def _unset(path: str):
    def edit(body):
        node = body
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        del node[leaf]
    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set("spec.replicas", -1), "spec.replicas: must be >= 0"),
        (_set("spec.speculation.kMax", 1000), "spec.speculation.kMax: must be <= 64"),
        (_set("spec.speculation.mode", "sometimes"), "spec.speculation.mode: must be one of"),
        (_set("spec.serving.maxBatchSize", 4), "spec.serving.maxBatchSize: is not a known field"),
        (_unset("spec.model"), "spec.model: is required"),
        (_set("spec.speculation.control.interval", "soon"), "spec.speculation.control.interval: 'soon' is not a duration"),
        # Valid for a cluster, but not runnable here: named as precisely.
        (_set("spec.model.source", "hf://Qwen/Qwen2.5-0.5B"), "spec.model.source: 'hf://Qwen/Qwen2.5-0.5B' is not a local model source"),
        (_set("spec.replicas", 0), "spec.replicas: specfleet up needs at least 1 replica"),
        (_set("spec.engine.kind", "vllm"), "spec.engine.kind: vllm is not implemented in this release; use torch"),
    ],
)
def test_a_bad_cr_file_exits_2_naming_the_field(tmp_path, edit, expected):
    cr = write_cr(tmp_path, edit)
    result = run_up("-f", str(cr), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"specfleet up: error: {cr}: ")
    assert expected in lines[0]
    assert result.stdout == ""  # nothing was started


def test_an_invalid_yaml_file_exits_2(tmp_path):
    cr = tmp_path / "broken.yaml"
    cr.write_text("spec: [unclosed\n")
    result = run_up("-f", str(cr), cwd=tmp_path)
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr


def test_a_missing_file_exits_2(tmp_path):
    result = run_up("-f", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"specfleet up: error: {tmp_path / 'nope.yaml'}: no such file"


def test_a_bad_device_exits_2(tmp_path):
    result = run_up("-f", str(EXAMPLE), "--device", "tpu", cwd=tmp_path)
    assert result.returncode == 2
    assert "--device must be auto, cpu or cuda" in result.stderr


def test_a_missing_or_broken_prompts_file_exits_2(tmp_path):
    missing = run_up("-f", str(EXAMPLE), "--demo", "--prompts", str(tmp_path / "none.jsonl"), cwd=tmp_path)
    assert missing.returncode == 2 and "--prompts" in missing.stderr and "no such file" in missing.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    result = run_up("-f", str(EXAMPLE), "--demo", "--prompts", str(broken), cwd=tmp_path)
    assert result.returncode == 2 and "not JSONL" in result.stderr
