"""Every kind of bad request gets a clear 4xx naming the problem, and none of them
disturbs the requests already in flight."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from server_harness import ADMIN_TOKEN, MAX_MODEL_LEN, MODEL_NAME, Replica

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LONG_PROMPT = "x" * (MAX_MODEL_LEN * 8)  # at least MAX_MODEL_LEN tokens whatever the merges

# (method, path, request kwargs, status, text the error message must contain)
BAD_REQUESTS = [
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": LONG_PROMPT}), 400,
     f"max_model_len={MAX_MODEL_LEN}"),
    ("POST", "/v1/chat/completions",
     dict(json={"model": MODEL_NAME, "messages": [{"role": "user", "content": LONG_PROMPT}]}), 400,
     f"max_model_len={MAX_MODEL_LEN}"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": ""}), 400, "at least one token"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": [5, 99999]}), 400, "99999"),
    ("POST", "/v1/completions",
     dict(content=b'{"model": "tiny-target", "prompt": ', headers={"content-type": "application/json"}), 422,
     "JSON"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "max_tokens": 0}), 422, "max_tokens"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "max_tokens": -3}), 422,
     "max_tokens"),
    ("POST", "/v1/chat/completions",
     dict(json={"model": MODEL_NAME, "messages": [{"role": "user", "content": "a"}], "max_tokens": 0}), 422,
     "max_tokens"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "max_tokens": "ten"}), 422,
     "max_tokens"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "temperature": "hot"}), 422,
     "temperature"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "top_p": 0}), 422, "top_p"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "stream": "yes"}), 422, "stream"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": 7}), 422, "prompt"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "stop": [""]}), 422, "stop"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "n": 2}), 422, "n=1"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "logprobs": 3}), 422,
     "logprobs is not supported"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "presence_penalty": 0.5}), 422,
     "presence_penalty is not supported"),
    ("POST", "/v1/completions", dict(json={"model": MODEL_NAME, "prompt": "a", "bogus": 1}), 422, "bogus"),
    ("POST", "/v1/completions", dict(json={"prompt": "a"}), 422, "model"),
    ("POST", "/v1/chat/completions", dict(json={"model": MODEL_NAME, "messages": []}), 422, "messages"),
    ("POST", "/v1/chat/completions",
     dict(json={"model": MODEL_NAME, "messages": [{"role": "wizard", "content": "a"}]}), 422, "role"),
    ("POST", "/v1/completions", dict(json={"model": "gpt-4", "prompt": "a"}), 404, "gpt-4"),
    ("POST", "/v1/chat/completions",
     dict(json={"model": "nope", "messages": [{"role": "user", "content": "a"}]}), 404, "nope"),
    ("GET", "/admin/speculation", {}, 401, "missing bearer token"),
    ("PUT", "/admin/speculation", dict(json={"enabled": False}), 401, "missing bearer token"),
    ("GET", "/admin/speculation", dict(headers={"Authorization": "Bearer wrong"}), 401, "wrong bearer token"),
    ("PUT", "/admin/speculation", dict(json={"enabled": False}, headers={"Authorization": "Basic Zm9vOmJhcg=="}),
     401, "missing bearer token"),
    ("PUT", "/admin/speculation", dict(json={"schedule": [[1, 8, 2], [5, 16, 1]]}, headers=AUTH), 422,
     "schedule[1] = [5, 16, ...] overlaps schedule[0]"),
    ("PUT", "/admin/speculation", dict(json={"schedule": [[1, 4, 9]]}, headers=AUTH), 422,
     "schedule[0] = [1, 4, 9]: K=9 exceeds k_max=8"),
    ("PUT", "/admin/speculation", dict(json={"k_max": 2, "schedule": [[1, 4, 3]]}, headers=AUTH), 422,
     "K=3 exceeds k_max=2"),
    ("PUT", "/admin/speculation", dict(json={"schedule": [[6, 2, 1]]}, headers=AUTH), 422,
     "schedule[0] = [6, 2, 1]: batch_lo > batch_hi"),
    ("PUT", "/admin/speculation", dict(json={"schedule": [[1, 2]]}, headers=AUTH), 422, "schedule[0]"),
    ("PUT", "/admin/speculation", dict(json={"method": "eagle"}, headers=AUTH), 422, "method"),
    ("PUT", "/admin/speculation", dict(json={"k_max": 0}, headers=AUTH), 422, "k_max"),
    ("PUT", "/admin/speculation", dict(json={"enabled": True, "surprise": 1}, headers=AUTH), 422, "surprise"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "needle"), BAD_REQUESTS,
                         ids=[f"{m} {p} {s} {n[:30]}" for m, p, _, s, n in BAD_REQUESTS])
def test_bad_request_gets_a_4xx_naming_the_problem(
    replica: Replica, method: str, path: str, kwargs: dict, status: int, needle: str
) -> None:
    response = httpx.request(method, replica.url + path, timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"]
    assert error["code"] == status
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_rejected_speculation_update_leaves_the_config_in_force(replica: Replica) -> None:
    before = httpx.get(f"{replica.url}/admin/speculation", headers=AUTH).json()
    assert httpx.put(f"{replica.url}/admin/speculation", json={"schedule": [[1, 4, 9]]}, headers=AUTH).status_code == 422
    assert httpx.get(f"{replica.url}/admin/speculation", headers=AUTH).json() == before


async def _stream_text(client: httpx.AsyncClient, prompt: str) -> str:
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": 40, "temperature": 0, "stream": True}
    text = []
    async with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        text.append(json.loads(line.removeprefix("data: "))["choices"][0]["text"])
    return "".join(text)


def test_bad_requests_do_not_disturb_requests_in_flight(replica: Replica) -> None:
    prompts = [f"def handler_{i}(event):" for i in range(6)]
    reference = [
        httpx.post(f"{replica.url}/v1/completions", timeout=60,
                   json={"model": MODEL_NAME, "prompt": p, "max_tokens": 40, "temperature": 0}).json()
        ["choices"][0]["text"]
        for p in prompts
    ]

    async def scenario() -> tuple[list[str], list[int]]:
        async with httpx.AsyncClient(base_url=replica.url, timeout=60) as client:
            good = [asyncio.create_task(_stream_text(client, p)) for p in prompts]
            await asyncio.sleep(0.2)  # the good ones are decoding by now
            bad = [client.request(m, p, **kw) for m, p, kw, _, _ in BAD_REQUESTS]
            statuses = [r.status_code for r in await asyncio.gather(*bad)]
            return await asyncio.gather(*good), statuses

    texts, statuses = asyncio.run(scenario())
    assert texts == reference
    assert all(400 <= s < 500 for s in statuses)
    assert httpx.get(f"{replica.url}/health").status_code == 200
