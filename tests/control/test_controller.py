"""Controller rules against a real runtime replica: pinned modes, failing admin API, restarts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from periodic_model import make_periodic_model

from specfleet.contract import SpeculationConfig, constant_schedule
from specfleet.local.replicas import start_replicas
from specfleet_operator.control.controller import ControlSettings, Controller
from specfleet_operator.control.fleet import Replica
from specfleet_operator.control.local_backend import LocalBackend
from specfleet_operator.control.metrics_source import PrometheusSource, ScrapeSource
from specfleet_operator.control import policy
from specfleet_operator.control.policy import PolicyParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    model = make_periodic_model(tmp_path_factory.mktemp("model") / "periodic", hidden=128, layers=2)
    with start_replicas(
        1, model=model, method="ngram", k_max=4, max_batch=8, state_dir=tmp_path_factory.mktemp("replica"),
        extra_args=["--calibration-seconds", "0.5"],
    ) as started:
        yield started[0]


def in_force(replica) -> SpeculationConfig:
    response = httpx.get(
        f"{replica.base_url}/admin/speculation", headers={"Authorization": f"Bearer {replica.admin_token}"}
    )
    return SpeculationConfig.model_validate(response.json())


def settings(mode: str, **changes) -> ControlSettings:
    return ControlSettings(
        mode=mode, method="ngram", k_max=4, window_s=5.0,
        params=PolicyParams(k_max=4, max_batch=8, cooldown_s=3600.0, prior_rate=0.9), **changes,
    )


UNREACHABLE_PROMETHEUS = "http://127.0.0.1:9"


async def test_mode_on_and_off_pin_the_config_even_without_metrics(replica) -> None:
    backend = LocalBackend(lambda: [Replica(replica.name, replica.base_url, replica.admin_token, "1")])
    source = PrometheusSource(UNREACHABLE_PROMETHEUS, timeout_s=1)

    record = await Controller(backend, source, settings("on", k=3)).tick()
    assert in_force(replica) == SpeculationConfig(method="ngram", k_max=4, schedule=constant_schedule(3))
    assert record.condition("MetricsAvailable").status == "False"
    assert record.speculating_replicas == 1 and [e.reason for e in record.events] == ["SpeculationOn"]

    record = await Controller(backend, source, settings("off")).tick()
    assert in_force(replica).enabled is False
    assert record.speculating_replicas == 0


async def test_auto_without_metrics_changes_nothing(replica) -> None:
    pinned = SpeculationConfig(method="ngram", k_max=4, schedule=[(1, 2, 1)])
    httpx.put(
        f"{replica.base_url}/admin/speculation", json=pinned.model_dump(mode="json"),
        headers={"Authorization": f"Bearer {replica.admin_token}"},
    ).raise_for_status()
    backend = LocalBackend(lambda: [Replica(replica.name, replica.base_url, replica.admin_token, "2")])
    await backend.record_applied(Replica(replica.name, replica.base_url, replica.admin_token, "2"), pinned)
    controller = Controller(backend, PrometheusSource(UNREACHABLE_PROMETHEUS, timeout_s=1), settings("auto"))
    for _ in range(3):
        record = await controller.tick()
        assert record.condition("MetricsAvailable").reason == "PrometheusUnreachable"
        assert record.last_decision_time is None
        # The break-even reported is the one of the schedule in force, decision or not.
        assert record.break_even == 3 and record.replicas[0].break_even == 3
        assert record.estimated_break_even is None and record.replicas[0].estimated_break_even is None
    assert in_force(replica) == pinned


async def test_a_replica_refusing_the_token_is_retried_each_tick_then_reported_degraded(replica) -> None:
    backend = LocalBackend(lambda: [Replica(replica.name, replica.base_url, "not-the-token", "3")])
    controller = Controller(backend, ScrapeSource(), settings("on", k=2, degraded_after=3))
    before = in_force(replica)
    records = [await controller.tick() for _ in range(4)]

    assert [r.condition("Degraded").status for r in records] == ["False", "False", "True", "True"]
    assert records[2].condition("Degraded").reason == "AdminApiFailing"
    assert [e.reason for r in records for e in r.events] == ["AdminApiFailing"]  # once, not every tick
    assert "HTTP 401" in (records[0].replicas[0].error or "")
    assert in_force(replica) == before


async def test_a_restarted_replica_gets_its_schedule_at_once_despite_the_cooldown(replica) -> None:
    incarnation = ["10"]
    backend = LocalBackend(lambda: [Replica(replica.name, replica.base_url, replica.admin_token, incarnation[0])])
    controller = Controller(backend, ScrapeSource(), settings("auto"))
    first = await controller.tick()
    assert first.replicas[0].pushed
    assert first.replicas[0].break_even == policy.schedule_break_even(in_force(replica).schedule, 8)
    assert first.replicas[0].estimated_break_even == controller._state[replica.name].decision.break_even
    assert not (await controller.tick()).replicas[0].pushed  # in force, and the cooldown is an hour

    incarnation[0] = "11"  # the process was replaced: back on its startup flags
    again = await controller.tick()
    assert again.replicas[0].pushed
    assert in_force(replica) == backend.applied(replica.name)
