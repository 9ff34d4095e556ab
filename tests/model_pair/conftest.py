"""The recipe lives in scripts/ (it runs on a bare GPU machine, outside the package), so
its modules are imported from there."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def heldout_prompts() -> list[dict]:
    from pycode_pair.prompts import read_jsonl

    return read_jsonl(MODELS / "heldout_prompts.jsonl")
