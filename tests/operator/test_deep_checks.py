"""Specs the CRD schema admits but this release cannot run are refused with the field named."""

import copy
from pathlib import Path

import pytest
import yaml

from specfleet_operator.checks import check_deep
from specfleet_operator.spec import CRValidationError, parse_cr

EXAMPLE = yaml.safe_load((Path(__file__).parents[2] / "examples" / "speculative-deployment.yaml").read_text())


def with_spec(**changes: object) -> dict:
    body = copy.deepcopy(EXAMPLE)
    body["spec"].update(changes)
    return body


def test_the_example_passes_every_deep_check():
    check_deep(parse_cr(EXAMPLE))


def test_the_vllm_engine_is_refused_until_it_exists():
    with pytest.raises(CRValidationError, match=r"^spec\.engine\.kind: vllm is not implemented in this release; use torch$"):
        check_deep(parse_cr(with_spec(engine={"kind": "vllm"})))


def test_requests_above_limits_name_the_resource():
    cr = parse_cr(with_spec(resources={"gpus": 0, "requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}))
    with pytest.raises(CRValidationError, match=r"^spec\.resources\.requests\.cpu: request 2 exceeds limit 1500m$"):
        check_deep(cr)
