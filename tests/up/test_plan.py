"""What `specfleet up` runs for a CR: the operator's own reading of the file, for one host."""

from pathlib import Path

import pytest
import yaml

from specfleet.contract import MAX_SCHEDULE_BATCH
from specfleet.local.plan import plan_from_cr
from specfleet_operator.spec import CRValidationError, load_cr_file, parse_cr

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "speculative-deployment.yaml"


def example(**spec_changes) -> dict:
    body = yaml.safe_load(EXAMPLE.read_text())
    for path, value in spec_changes.items():
        node = body["spec"]
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return body


def test_the_example_runs_the_bundled_pair_with_the_crs_control_settings():
    plan = plan_from_cr(load_cr_file(EXAMPLE))
    assert plan.replicas == 2
    assert plan.model_dir.name == "pycode-target" and plan.draft_dir.name == "pycode-draft"
    assert plan.served_model_name == "pycode"
    assert (plan.max_batch, plan.max_model_len, plan.k_max) == (64, 1024, 8)
    assert plan.interval_s == 15
    c = plan.control
    assert (c.mode, c.method, c.window_s) == ("auto", "draft", 120)
    assert (c.params.cooldown_s, c.params.min_gain, c.params.prior_rate, c.params.max_batch) == (60, 0.05, 0.6, 64)
    assert plan.initial is None  # auto: plain decoding until the first decision


def test_mode_on_starts_every_replica_at_the_fixed_k():
    plan = plan_from_cr(parse_cr(example(speculation__mode="on", speculation__k=3)))
    assert plan.initial.enabled and plan.initial.schedule == [(1, MAX_SCHEDULE_BATCH, 3)]
    assert plan.control.pinned() == plan.initial


def test_engine_args_and_env_reach_the_replicas():
    plan = plan_from_cr(parse_cr(example(engine__args=["--seed", "7"], engine__env=[{"name": "X", "value": "1"}])))
    assert plan.extra_args == ("--seed", "7")
    assert plan.env == (("X", "1"),)


def test_env_from_a_secret_cannot_run_locally():
    body = example(engine__env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    with pytest.raises(CRValidationError, match=r"spec.engine.env: TOKEN: valueFrom needs a cluster"):
        plan_from_cr(parse_cr(body))
