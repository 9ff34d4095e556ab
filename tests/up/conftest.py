"""Fixtures for the local-fleet tests: a tiny random model pair and a CR file naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from model_factory import make_random_pair


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    return make_random_pair(tmp_path_factory.mktemp("up-models") / "pair")


def write_fleet_cr(path: Path, pair: tuple[Path, Path], *, replicas: int = 2, mode: str = "auto",
                   interval: str = "2s", max_batch: int = 8) -> Path:
    target, draft = pair
    body = {
        "apiVersion": "specfleet.io/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": "tiny"},
        "spec": {
            "replicas": replicas,
            "model": {"name": "tiny", "source": f"file://{target}"},
            "speculation": {
                "mode": mode,
                "method": "draft",
                "draft": {"source": f"file://{draft}"},
                "kMax": 4,
                "control": {"interval": interval, "window": "30s", "cooldown": "2s"},
            },
            "resources": {"gpus": 0},
            "serving": {"maxBatch": max_batch, "maxModelLen": 512},
        },
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture
def fleet_cr(tmp_path, tiny_pair) -> Path:
    return write_fleet_cr(tmp_path / "tiny.yaml", tiny_pair)
