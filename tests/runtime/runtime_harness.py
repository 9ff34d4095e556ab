"""Shared fixtures: a random-weight target/draft pair and prompts of code and prose."""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_factory import make_random_pair  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return make_random_pair(tmp_path_factory.mktemp("pair"))


def code_prompts(n: int) -> list[str]:
    """Consecutive 3-line chunks of a stdlib module's source."""
    lines = [line for line in inspect.getsource(textwrap).splitlines() if line.strip()]
    return ["\n".join(lines[i : i + 3]) + "\n" for i in range(0, 3 * n, 3)]


def prose_prompts(n: int) -> list[str]:
    """First sentences of stdlib docstrings."""
    docs = []
    for module in (json, textwrap, inspect, str, dict, list, Path):
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj) if callable(obj) else None
            if doc and len(doc) > 30:
                docs.append(doc.split("\n\n")[0].replace("\n", " ")[:160])
    unique = list(dict.fromkeys(docs))
    assert len(unique) >= n
    return unique[:n]


@pytest.fixture(scope="session")
def prompt_texts() -> list[str]:
    return code_prompts(26) + prose_prompts(26)


class StepLog:
    """A StepObserver that keeps every report (the engine's real observer interface)."""

    def __init__(self) -> None:
        self.reports = []

    def on_step(self, report) -> None:
        self.reports.append(report)
