"""A real replica for the server tests: random-weight target/draft pair, the real engine
thread, the FastAPI app under uvicorn on a free loopback port (in a thread of the test
process, so tests can also read the engine directly)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from specfleet.contract import SpeculationConfig, SpeculationUpdate
from specfleet_runtime.engine.engine import Engine, EngineConfig
from specfleet_runtime.metrics import RuntimeMetrics
from specfleet_runtime.server import create_app
from asgi_thread import serve_in_thread
from model_factory import make_random_pair

ADMIN_TOKEN = "test-admin-token"
MODEL_NAME = "tiny-target"
MAX_MODEL_LEN = 256
# Mixed on purpose: the shared server speculates at small batches, plain above.
INITIAL_SPECULATION = SpeculationConfig(enabled=True, method="draft", k_max=8, schedule=[(1, 4, 3), (5, 8, 2)])

torch.set_num_threads(1)


@dataclass
class Replica:
    url: str
    engine: Engine
    metrics: RuntimeMetrics

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def put_speculation(self, client: httpx.Client, **body) -> httpx.Response:
        return client.put(f"{self.url}/admin/speculation", json=body, headers=self.admin_headers)

    def scrape(self) -> dict[str, list]:
        """/metrics parsed by prometheus_client's own parser: family name -> samples."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {family.name: family.samples for family in text_string_to_metric_families(text)}


def serve_replica(engine: Engine, metrics: RuntimeMetrics, calibration=()) -> contextlib.AbstractContextManager[str]:
    app = create_app(engine, admin_token=ADMIN_TOKEN, served_model_name=MODEL_NAME, metrics=metrics,
                     calibration=calibration)
    return serve_in_thread(app)


@pytest.fixture(scope="session")
def model_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_random_pair(tmp_path_factory.mktemp("pair"), vocab_size=512)


def build_engine(model_pair: tuple[Path, Path], metrics: RuntimeMetrics, speculation: SpeculationConfig) -> Engine:
    target, draft = model_pair
    # float64: batching K+1 positions must not flip a near-tied argmax (greedy equality checks).
    config = EngineConfig(model_dir=target, draft_dir=draft, speculation=speculation, dtype="float64",
                          max_batch=16, max_model_len=MAX_MODEL_LEN)
    return Engine.from_config(config, observer=metrics)


@pytest.fixture(scope="session")
def replica(model_pair: tuple[Path, Path]) -> Iterator[Replica]:
    metrics = RuntimeMetrics(MODEL_NAME)
    engine = build_engine(model_pair, metrics, INITIAL_SPECULATION)
    calibration = engine.calibrate(max_seconds=1.0)
    engine.start()
    try:
        with serve_replica(engine, metrics, calibration) as url:
            yield Replica(url=url, engine=engine, metrics=metrics)
    finally:
        engine.shutdown()


@pytest.fixture
def restore_speculation(replica: Replica) -> Iterator[None]:
    """For tests that PUT: the shared replica goes back to its initial config afterwards."""
    yield
    replica.engine.update_speculation(SpeculationUpdate(**INITIAL_SPECULATION.model_dump()))
