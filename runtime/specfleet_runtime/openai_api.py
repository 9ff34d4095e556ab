"""OpenAI-compatible request and response bodies (field names exactly as OpenAI's API).

Requests are strict: an unknown field, a wrong type or a value out of range is a 422 that
names the field, and OpenAI fields this runtime does not implement are accepted only at
their neutral value (so `logprobs: null` from a generic client works, `logprobs: 5` fails
loudly instead of being silently ignored).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from specfleet_runtime.engine.api import FinishReason, SamplingParams

MAX_STOP_STRINGS = 16
SEED_RANGE = (-(1 << 63), (1 << 63) - 1)


def _integral_float_to_int(value: object) -> object:
    # JSON has one number type: 16.0 is the integer 16 (JSON Schema agrees), 16.5 is not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral_float_to_int)]
StopString = Annotated[str, StringConstraints(min_length=1)]
TokenIds = Annotated[list[Annotated[Int, Field(ge=0)]], Field(min_length=1)]


def neutral_only(default: object, schema: dict) -> object:
    """A field OpenAI has and this runtime does not implement: the schema admits only its
    neutral value, and a validator names the field when a client sends another."""
    return Field(default=default, json_schema_extra=schema)


def _reject_unless_neutral(value: object, info) -> object:
    if value not in (None, 0, False, {}, [], ""):
        raise ValueError(f"{info.field_name} is not supported (send it unset or at its default)")
    return value


class _Strict(BaseModel):
    # strict: "10" is not an integer and "yes" is not a boolean here, as in OpenAI's API.
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class _SamplingFields(_Strict):
    """What completions and chat share: sampling knobs, stop strings, streaming."""

    model: str
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    # Not an OpenAI field; vLLM's extension, same meaning (0 or -1: no top-k cut).
    top_k: Int = Field(default=0, ge=-1)
    seed: Int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = None
    n: Int = Field(default=1, ge=1, json_schema_extra={"maximum": 1})
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    presence_penalty: float | None = neutral_only(None, {"minimum": 0, "maximum": 0})
    frequency_penalty: float | None = neutral_only(None, {"minimum": 0, "maximum": 0})
    logit_bias: dict[str, float] | None = neutral_only(None, {"maxProperties": 0})

    _neutral = field_validator("presence_penalty", "frequency_penalty", "logit_bias")(_reject_unless_neutral)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=max(self.top_k, 0),
            seed=self.seed,
            stop=self.stop_strings(),
        )

    @property
    def include_usage_chunk(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_SamplingFields):
    # One prompt per request: text, or token ids; a one-element list of either also works.
    prompt: str | TokenIds | Annotated[list[str], Field(min_length=1, max_length=1)] | Annotated[
        list[TokenIds], Field(min_length=1, max_length=1)
    ]
    max_tokens: Int = Field(default=16, ge=1)
    echo: bool = neutral_only(False, {"enum": [False]})
    logprobs: Int | None = neutral_only(None, {"type": "null"})
    best_of: Int | None = neutral_only(None, {"minimum": 1, "maximum": 1})
    suffix: str | None = neutral_only(None, {"maxLength": 0})

    _neutral_completion = field_validator("echo", "logprobs", "suffix")(_reject_unless_neutral)

    @field_validator("prompt", mode="wrap")
    @classmethod
    def _one_prompt(cls, value: object, handler):
        # One line instead of pydantic's error per union member.
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(
                "must be a string, a list of token ids (integers >= 0), or a one-element list of either"
            ) from None

    @field_validator("best_of")
    @classmethod
    def _one_candidate(cls, best_of: int | None) -> int | None:
        if best_of not in (None, 1):
            raise ValueError("only best_of=1 is supported")
        return best_of

    def single_prompt(self) -> str | list[int]:
        prompt = self.prompt
        if isinstance(prompt, list) and isinstance(prompt[0], (str, list)):
            return prompt[0]
        return prompt


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    # Clients send extra per-message fields (name, tool_call_id, ...): kept out of the prompt.
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ResponseFormat(_Strict):
    type: Literal["text"]


class ChatCompletionRequest(_SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Int | None = Field(default=None, ge=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1)
    logprobs: bool | None = neutral_only(None, {"enum": [False, None]})
    top_logprobs: Int | None = neutral_only(None, {"type": "null"})
    tools: list[dict] | None = neutral_only(None, {"maxItems": 0})
    tool_choice: Literal["none", "auto"] | None = None  # without tools both mean: plain text
    response_format: ResponseFormat | None = None

    _neutral_chat = field_validator("logprobs", "top_logprobs", "tools")(_reject_unless_neutral)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def plain_messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> "Usage":
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


# "abort" only when the engine ends a request itself (shutdown); OpenAI has no such value.
OpenAIFinish = FinishReason


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: OpenAIFinish | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: OpenAIFinish | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: None = None
    finish_reason: OpenAIFinish | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "specfleet"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorBody


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
