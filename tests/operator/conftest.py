"""Fixtures: an emulated API server, and the real operator running against it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from operator_harness import ApiServer, running_operator, started_api


@pytest.fixture()
async def api() -> AsyncIterator[ApiServer]:
    async with started_api() as server:
        yield server


@pytest.fixture()
async def operator(api: ApiServer) -> AsyncIterator[ApiServer]:
    async with running_operator(api) as running:
        yield running
