"""Fixtures for the local-fleet tests: a tiny random model pair and a CR file naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_cr import write_fleet_cr
from model_factory import make_random_pair


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    return make_random_pair(tmp_path_factory.mktemp("up-models") / "pair")


@pytest.fixture
def fleet_cr(tmp_path, tiny_pair) -> Path:
    return write_fleet_cr(tmp_path / "tiny.yaml", tiny_pair)
