"""Replica lifecycle: /health before and after the weights load, aborting requests whose
client went away, and `specfleet serve` as a real subprocess (ready line, clean SIGTERM,
one-line startup errors)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server_harness import MODEL_NAME, Replica, build_engine, serve_replica
from model_factory import make_random_model
from specfleet.contract import SpeculationConfig
from specfleet_runtime.metrics import RuntimeMetrics
from specfleet_runtime.server import create_app

SERVE = [str(Path(sys.executable).with_name("specfleet")), "serve"]  # the installed console script


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_health_is_503_until_the_engine_is_attached(model_pair: tuple[Path, Path]) -> None:
    import threading

    import uvicorn

    metrics = RuntimeMetrics(MODEL_NAME)
    app = create_app(None, admin_token="t", served_model_name=MODEL_NAME, metrics=metrics)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    engine = None
    try:
        assert httpx.get(f"{url}/health").status_code == 503
        loading = httpx.post(f"{url}/v1/completions", json={"model": MODEL_NAME, "prompt": "a"})
        assert loading.status_code == 503 and "loading" in loading.json()["error"]["message"]
        assert httpx.get(f"{url}/metrics").status_code == 200
        engine = build_engine(model_pair, metrics, SpeculationConfig(enabled=False))
        engine.start()
        app.state.runtime.attach(engine)
        assert httpx.get(f"{url}/health").status_code == 200
        ok = httpx.post(f"{url}/v1/completions", json={"model": MODEL_NAME, "prompt": "a", "max_tokens": 2}, timeout=30)
        assert ok.status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if engine is not None:
            engine.shutdown()


def generated_tokens(replica: Replica) -> float:
    return sum(s.value for s in replica.scrape()["vllm:generation_tokens"] if s.name.endswith("_total"))


def test_a_stream_whose_client_disconnects_is_aborted(replica: Replica) -> None:
    before = generated_tokens(replica)
    body = {"model": MODEL_NAME, "prompt": "def long(", "max_tokens": 200, "temperature": 0, "stream": True}
    with httpx.Client(base_url=replica.url, timeout=30) as client:
        with client.stream("POST", "/v1/completions", json=body) as response:
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
    assert wait_until(lambda: replica.engine.num_running == 0 and replica.engine.num_waiting == 0)
    assert generated_tokens(replica) - before < 200


def test_an_unstreamed_request_whose_client_gives_up_is_aborted(replica: Replica) -> None:
    before = generated_tokens(replica)
    body = {"model": MODEL_NAME, "prompt": "def long(", "max_tokens": 220, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{replica.url}/v1/completions", json=body, timeout=httpx.Timeout(30, read=0.2))
    assert wait_until(lambda: replica.engine.num_running == 0 and replica.engine.num_waiting == 0)
    assert generated_tokens(replica) - before < 220


def run_serve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*SERVE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "SPECFLEET_ADMIN_TOKEN": "t"})


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("specfleet serve: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]


def test_serve_exits_with_a_one_line_cause_when_vocabularies_differ(
    model_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    other = make_random_model(tmp_path / "other-vocab", vocab_size=300)
    result = run_serve("--model", str(model_pair[0]), "--draft", str(other), "--port", "0")
    assert_one_line_error(result, "vocabulary", "300", "512")


@pytest.mark.parametrize(("args", "needles"), [
    (["--schedule", "[[1, 4, 9]]"], ["schedule[0] = [1, 4, 9]", "k_max=8"]),
    (["--schedule", "[[1, 8, 2], [4, 9, 1]]"], ["overlaps"]),
    (["--method", "draft"], ["--draft"]),
    (["--speculation", "maybe"], ["--speculation"]),
    (["--dtype", "float8"], ["--dtype", "float32"]),
    (["--max-batch", "0"], ["--max-batch", "greater than or equal to 1"]),
    (["--threads", "0"], ["--threads 0", ">= 1"]),
])
def test_serve_rejects_bad_flags_with_a_one_line_cause(
    model_pair: tuple[Path, Path], args: list[str], needles: list[str]
) -> None:
    assert_one_line_error(run_serve("--model", str(model_pair[0]), *args), *needles)


def test_serve_rejects_a_missing_model_folder(tmp_path: Path) -> None:
    assert_one_line_error(run_serve("--model", str(tmp_path / "absent")), "no config.json")


def test_serve_prints_ready_serves_and_stops_cleanly_on_sigterm(model_pair: tuple[Path, Path], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    target, draft = model_pair
    proc = subprocess.Popen(
        [*SERVE, "--model", str(target), "--draft", str(draft), "--port", "0", "--k-max", "4", "--schedule", "2",
         "--admin-token-file", str(token_file), "--served-model-name", "served", "--calibration-seconds", "0.5",
         "--max-batch", "4", "--max-model-len", "128"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("specfleet serve: ready on http://127.0.0.1:"), proc.stderr.read()
        url = ready.split(" on ")[1].strip()
        assert httpx.get(f"{url}/health").status_code == 200
        admin = httpx.get(f"{url}/admin/speculation", headers={"Authorization": "Bearer s3cret"}).json()
        assert admin == {"enabled": True, "method": "draft", "k_max": 4, "schedule": [[1, 1 << 20, 2]]}
        result = httpx.post(f"{url}/v1/completions", json={"model": "served", "prompt": "hi", "max_tokens": 3},
                            timeout=30)
        assert result.status_code == 200
        assert 'specfleet_calibrated_forward_seconds{model="draft"' in httpx.get(f"{url}/metrics").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read().strip() == "specfleet serve: stopped"  # after the engine thread joined
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_importing_the_cli_modules_loads_no_torch_and_no_web_stack() -> None:
    # `specfleet --help` and `specfleet operator` go through these modules' import.
    probe = ("import sys, specfleet_runtime.serve_cli, specfleet.bench.cli; "
             "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
