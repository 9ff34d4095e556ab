"""The admin API body (DESIGN.md §3): what a schedule means and which ones are refused."""

import pytest
from pydantic import ValidationError

from specfleet.contract import (
    MAX_SCHEDULE_BATCH,
    SpeculationConfig,
    SpeculationUpdate,
    constant_schedule,
    token_bucket,
)

DESIGN_EXAMPLE = {"enabled": True, "method": "draft", "k_max": 8, "schedule": [[1, 6, 5], [7, 12, 3], [13, 4096, 0]]}


def test_design_example_maps_batch_sizes_to_rows():
    config = SpeculationConfig.model_validate(DESIGN_EXAMPLE)
    assert [config.k_for_batch(b) for b in (1, 6, 7, 12, 13, 4096)] == [5, 5, 3, 3, 0, 0]


def test_batch_outside_every_row_gets_k_zero():
    config = SpeculationConfig(schedule=[(2, 4, 3)])
    assert config.k_for_batch(1) == 0
    assert config.k_for_batch(5) == 0


def test_disabled_means_k_zero_whatever_the_schedule():
    config = SpeculationConfig(enabled=False, schedule=[(1, 100, 4)])
    assert config.k_for_batch(1) == 0


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([[1, 6, 5], [5, 12, 3]], "schedule[1] = [5, 12, ...] overlaps schedule[0]"),
        ([[1, 6, 9]], "schedule[0] = [1, 6, 9]: K=9 exceeds k_max=8"),
        ([[7, 6, 1]], "schedule[0] = [7, 6, 1]: batch_lo > batch_hi"),
        ([[0, 6, 1]], "batch_lo must be >= 1"),
        ([[1, 6, -1]], "K must be >= 0"),
        ([[1, MAX_SCHEDULE_BATCH + 1, 1]], "batch_hi must be <="),
    ],
)
def test_malformed_schedules_are_refused_naming_the_row(schedule, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SpeculationConfig(k_max=8, schedule=schedule)


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError, match="k_maxx"):
        SpeculationUpdate.model_validate({"k_maxx": 3})


def test_update_keeps_fields_it_leaves_out():
    current = SpeculationConfig.model_validate(DESIGN_EXAMPLE)
    updated = SpeculationUpdate(enabled=False).apply_to(current)
    assert updated.enabled is False
    assert updated.schedule == current.schedule
    assert updated.k_max == 8


def test_update_is_validated_against_the_merged_config():
    current = SpeculationConfig(k_max=8, schedule=[(1, 4, 8)])
    with pytest.raises(ValidationError, match="exceeds k_max=4"):
        SpeculationUpdate(k_max=4).apply_to(current)


def test_constant_schedule_covers_every_batch():
    config = SpeculationConfig(k_max=4, schedule=constant_schedule(4))
    assert config.k_for_batch(1) == config.k_for_batch(MAX_SCHEDULE_BATCH) == 4
    assert constant_schedule(0) == []


@pytest.mark.parametrize(("tokens", "bucket"), [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (72, 128)])
def test_token_bucket_is_the_next_power_of_two(tokens, bucket):
    assert token_bucket(tokens) == bucket
