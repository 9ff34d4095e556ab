"""Property-based: schemathesis generates requests from the live server's own OpenAPI
schema (OpenAI and admin endpoints; bodies that fit the schema and bodies that do not);
none may get a 5xx, and the engine must still serve afterwards.

(schemathesis' pytest plugin, `from_fixture`, does not run under this pytest version, so
its strategies are driven with hypothesis' `@given` directly, as its docs describe.)
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from server_harness import ADMIN_TOKEN, MODEL_NAME, Replica

WITH_BODY = [("/v1/completions", "POST"), ("/v1/chat/completions", "POST"), ("/admin/speculation", "PUT")]
WITHOUT = [("/v1/models", "GET"), ("/health", "GET"), ("/metrics", "GET"), ("/admin/speculation", "GET")]
# Operations without parameters have no invalid form: they only get the positive run.
CASES = [(p, m, GenerationMode.POSITIVE) for p, m in WITH_BODY + WITHOUT] + [
    (p, m, GenerationMode.NEGATIVE) for p, m in WITH_BODY
]
EXAMPLES = 20


@pytest.fixture(scope="module")
def api_schema(replica: Replica):
    return schemathesis.openapi.from_url(f"{replica.url}/openapi.json")


@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=[f"{m} {p} {g}" for p, m, g in CASES])
def test_no_generated_request_gets_a_server_error(
    api_schema, restore_speculation: None, path: str, method: str, mode: GenerationMode
) -> None:
    @given(api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def check(case: schemathesis.Case) -> None:
        if isinstance(case.body, dict) and isinstance(case.body.get("model"), str) and len(case.body) % 2:
            case.body["model"] = MODEL_NAME  # half the time, reach past the 404 into the engine
        case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, checks=[not_a_server_error],
                               timeout=60)

    check()


def test_engine_still_serves_after_the_fuzzing(replica: Replica) -> None:
    body = {"model": MODEL_NAME, "prompt": "still alive", "max_tokens": 4, "temperature": 0}
    response = httpx.post(f"{replica.url}/v1/completions", json=body, timeout=60)
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1
