"""Chat prompts come from the model folder's template: a template that rejects a
conversation is a 400 naming it, and a folder without one uses the documented plain
fallback ("role: content" lines, then "assistant:")."""

from __future__ import annotations

from pathlib import Path

import httpx

from server_harness import MODEL_NAME, serve_replica
from model_factory import CHAT_TEMPLATE, make_random_model
from specfleet.contract import SpeculationConfig
from specfleet_runtime.engine.engine import Engine, EngineConfig
from specfleet_runtime.metrics import RuntimeMetrics

NO_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    + CHAT_TEMPLATE
)


def chat(url: str, messages: list[dict]) -> httpx.Response:
    body = {"model": MODEL_NAME, "messages": messages, "max_tokens": 4, "temperature": 0}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def serve_folder(folder: Path):
    metrics = RuntimeMetrics(MODEL_NAME)
    engine = Engine.from_config(EngineConfig(model_dir=folder, speculation=SpeculationConfig(enabled=False),
                                             max_batch=2, max_model_len=128), observer=metrics)
    engine.start()
    return engine, serve_replica(engine, metrics)


def test_a_template_that_rejects_the_conversation_is_a_400(tmp_path: Path) -> None:
    engine, server = serve_folder(make_random_model(tmp_path / "m", chat_template=NO_SYSTEM_TEMPLATE))
    try:
        with server as url:
            rejected = chat(url, [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}])
            assert rejected.status_code == 400
            assert "System role not supported" in rejected.json()["error"]["message"]
            assert chat(url, [{"role": "user", "content": "hi"}]).status_code == 200
    finally:
        engine.shutdown()


def test_a_folder_without_a_template_uses_the_plain_fallback(tmp_path: Path) -> None:
    engine, server = serve_folder(make_random_model(tmp_path / "m", chat_template=None))
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    try:
        with server as url:
            response = chat(url, messages)
            assert response.status_code == 200
            fallback = "system: be brief\nuser: hi\nassistant:"
            assert engine.tokenizer.apply_chat_template(messages) == fallback
            assert response.json()["usage"]["prompt_tokens"] == len(engine.tokenizer.encode(fallback))
    finally:
        engine.shutdown()
