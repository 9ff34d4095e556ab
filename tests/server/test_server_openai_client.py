"""The official openai client works against a live replica unchanged."""

from __future__ import annotations

import threading

import openai
import pytest

from server_harness import MODEL_NAME, Replica
from specfleet_runtime.engine.api import RequestOutput, SamplingParams


@pytest.fixture
def client(replica: Replica) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0, timeout=60)


def engine_text(replica: Replica, prompt: str, max_tokens: int) -> str:
    """The text the engine itself streams for a greedy request: what the API must pass on."""
    pieces: list[str] = []
    done = threading.Event()

    def on_output(out: RequestOutput) -> None:
        pieces.append(out.new_text)
        if out.finished:
            done.set()

    replica.engine.add_request(replica.engine.tokenizer.encode(prompt),
                               SamplingParams(max_tokens=max_tokens, temperature=0), on_output)
    assert done.wait(60)
    return "".join(pieces)


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL_NAME]


def test_completion_returns_the_engines_greedy_text_and_usage(client: openai.OpenAI, replica: Replica) -> None:
    prompt = "def wrap(text, width):"
    result = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0)
    assert result.choices[0].text == engine_text(replica, prompt, 12)
    assert result.choices[0].finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens == len(replica.engine.tokenizer.encode(prompt))
    assert 1 <= result.usage.completion_tokens <= 12
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_completion_accepts_token_id_prompts(client: openai.OpenAI, replica: Replica) -> None:
    ids = replica.engine.tokenizer.encode("import string")
    by_ids = client.completions.create(model=MODEL_NAME, prompt=ids, max_tokens=8, temperature=0)
    by_text = client.completions.create(model=MODEL_NAME, prompt="import string", max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text


def test_streamed_completion_concatenates_to_the_unstreamed_text(client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL_NAME, prompt="class Template:", max_tokens=16, temperature=0)
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text_chunks = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in text_chunks) == whole
    assert text_chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_chat_completion_uses_the_chat_template(client: openai.OpenAI, replica: Replica) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    result = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=10, temperature=0)
    prompt = replica.engine.tokenizer.apply_chat_template(messages)
    assert prompt.startswith("<|im_start|>system\nbe brief<|im_end|>")
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content == engine_text(replica, prompt, 10)
    assert result.usage.prompt_tokens == len(replica.engine.tokenizer.encode(prompt))


def test_streamed_chat_sends_role_then_content_then_finish(client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL_NAME, messages=[{"role": "user", "content": "count"}], max_tokens=12, temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_seeded_sampling_is_reproducible_through_the_api(client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL_NAME, prompt="x = ", max_tokens=12, temperature=1.0, top_p=0.9, seed=1234)
    first = client.completions.create(**kwargs).choices[0].text
    assert client.completions.create(**kwargs).choices[0].text == first


def test_stop_string_ends_the_completion_before_it(client: openai.OpenAI) -> None:
    free = client.completions.create(model=MODEL_NAME, prompt="def f(", max_tokens=24, temperature=0).choices[0].text
    assert len(free) > 4, "the random model should produce some text"
    stop = free[2:4]
    stopped = client.completions.create(model=MODEL_NAME, prompt="def f(", max_tokens=24, temperature=0, stop=[stop])
    assert stopped.choices[0].text == free[: free.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
